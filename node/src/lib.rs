//! The chat node: one process of the cluster.
//!
//! ```text
//!  TCP ─► axum ─┬─ /v1/ws ──────► ws: one task pair per connection ─► Dispatch ─► actors
//!               ├─ /v1/auth/* ──► auth (argon2, JWT, rotating refresh tokens)
//!               ├─ /v1/conversations/{id}/messages ─► Dispatch ─► ConversationActor
//!               ├─ /healthz /readyz /metrics /v1/cluster
//!               └─ / /admin /assets/ ─► web: the app's pages (and where they may connect)
//!  cluster port ─► membership (ractor_cluster) ─► Router ◄─► other nodes' Routers
//! ```
//!
//! `main.rs` only parses flags and loads the configuration; [`run`] does the
//! rest, so tests start real nodes in-process on port 0 as easily as the
//! binary does. Shutdown drains: stop accepting, close every WebSocket with
//! 1001, let conversation actors finish their batches, flush the store, return.
#![deny(missing_docs, unreachable_pub, unsafe_code)]
#![warn(clippy::mod_module_files)]

pub mod admin;
pub mod app;
pub mod auth;
pub mod avatars;
pub mod config;
pub mod dead_letters;
pub mod downloads;
pub mod error;
pub mod gate;
pub mod health;
pub mod http;
pub mod listener;
pub mod media;
pub mod membership;
pub mod memory;
pub mod notifications;
pub mod notifier;
pub mod oidc;
pub mod operator;
pub mod origin;
pub mod people;
pub mod profiles;
pub mod reindex;
pub mod relations;
pub mod reports;
pub mod results;
pub mod roles;
pub mod search;
pub mod security;
pub mod serve;
pub mod socketio;
pub mod telemetry;
pub mod tls;
pub mod uploads;
pub mod web;
pub mod ws;

pub use app::{App, NodeError};
pub use config::Config;
pub use serve::run;
