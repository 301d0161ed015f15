//! What both Redis suites name users and connections with.

use std::sync::Arc;

use chat_presence::ConnKey;
use chat_protocol::UserId;

pub fn user(s: &str) -> UserId {
    UserId::new(s).expect("valid user id")
}

pub fn conn(node: &str, n: u64) -> ConnKey {
    ConnKey {
        node: Arc::from(node),
        conn: n,
    }
}
