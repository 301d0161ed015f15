//! The actors of one chat node, and the tables they share.
//!
//! ```text
//!  node (ws, http) ─► dispatch ─► ConversationActor (one per live conversation)
//!                        │  ▲          │ append_new (group commit) ─► chat-storage
//!                        │  │          └─ Fanout ─► LocalSessions ─► connections' queues
//!                        ▼  │                    └► Cluster ─► other nodes' Routers
//!                      Router (starts actors; forwards to owner nodes)
//!                        └─► UserSession (one per user here) ─► chat-presence
//! ```
//!
//! Modules form layers; each imports only the layers below it (checked by
//! `scripts/layers.sh`):
//!
//! 1. leaves: [`error`], [`maps`], [`placement`], [`metrics`], [`rate`];
//! 2. [`conn`]: handles on client connections;
//! 3. [`msg`]: every actor's messages and their wire forms;
//! 4. shared tables: [`cluster`] (this node's view), [`leases`] (its lease
//!    on a shared store), [`running`]
//!    (conversation actors here), [`watchers`] (presence watches);
//! 5. [`interest`]: which local users listen to which conversations;
//! 6. [`fanout`]: delivering a conversation's events, and the directory of
//!    local sessions and their connections it delivers through;
//! 7. the actors [`conversation`] and [`session`], and [`dispatch`];
//! 8. [`services`]: the composition;
//! 9. [`router`]: starts the actors, and the node's side of the cluster.
//!
//! No sockets here: the node crate owns I/O, so everything in this crate can be
//! driven by tests through channels.
#![deny(missing_docs, unreachable_pub, unsafe_code)]
#![warn(clippy::mod_module_files)]

pub mod catch_up;
pub mod cluster;
pub mod conn;
pub mod conversation;
pub mod dispatch;
pub mod error;
pub mod events;
pub mod fanout;
pub mod interest;
pub mod leases;
pub mod maps;
pub mod media;
pub mod metrics;
pub mod msg;
pub mod placement;
pub mod rate;
pub mod router;
pub mod running;
pub mod services;
pub mod session;
pub mod telemetry;
pub mod tuning;
pub mod watchers;

#[cfg(test)]
mod testing;

pub use error::ChatError;
pub use services::Services;
pub use tuning::Tuning;
