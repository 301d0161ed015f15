//! [`AccessStore`] on ScyllaDB: the facts live in three tables, so the
//! trait's default asks for them at once, in parallel round trips.

use super::store::ScyllaStore;
use crate::AccessStore;

impl AccessStore for ScyllaStore {}
