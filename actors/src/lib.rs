//! The actors of the chat cluster and the storage and presence they depend on.
//!
//! ```text
//!  node (connection tasks, HTTP) ──► Router ──► ConversationActor (one per live conversation)
//!                                      │            │ append (group commit)      ▲
//!                                      │            ▼                            │ interest
//!                                      └──► UserSession (one per user here) ◄── Deliver
//! ```
//!
//! - [`conversation`]: the single writer of a conversation (ids, dedupe,
//!   batches, fan-out).
//! - [`session`]: a user's connections on this node and their bounded queues.
//! - [`router`]: finds or starts actors, and forwards to the owner node.
//! - [`cluster`]: this node's view of the cluster and the wire forms of requests.
//! - [`store`]: the `MessageStore` trait and the embedded (fjall) backend.
//! - [`presence`]: the `Presence` trait, the in-memory backend, watchers.
//! - [`interest`]: which local users listen to which conversations.
//!
//! No sockets here: the node crate owns I/O, so everything in this crate can be
//! driven by tests through channels.
#![deny(missing_docs, unreachable_pub, unsafe_code)]
#![warn(clippy::mod_module_files)]

pub mod cluster;
pub mod conversation;
pub mod error;
pub mod interest;
pub mod metrics;
pub mod placement;
pub mod presence;
pub mod router;
pub mod services;
pub mod session;
pub mod store;

pub use error::ChatError;
pub use services::{Services, Tuning};
