//! `chat-bench`: the load-test harness of the chat cluster.
//!
//! The numbers users choose a chat cluster by come from here. One process
//! opens many WebSocket clients (tokio tasks, spread over several loopback
//! source addresses to pass the ephemeral-port limit of one address) against
//! one node or a whole cluster and runs a scenario: `idle` connections held,
//! `rooms` of group conversations, `direct` pairs, one hot conversation
//! (`burst`), `history` paging and a `reconnect` storm.
//!
//! The same client code drives four kinds of server, so the ratios between
//! them are measured by the same harness on the same machine in the same run:
//!
//! ```text
//!   chat-bench ──► chat-node        protocol v1 (chat-protocol's frames, JSON)
//!             ├──► ceiling-server   same wire format: fan-out with no actors,
//!             │                     no auth, no storage (src/ceiling.rs)
//!             ├──► Socket.IO + Redis adapter (bench/baselines/socketio),
//!             │                     Engine.IO v4 spoken by hand (src/socketio.rs)
//!             └──► Centrifugo v6    JSON protocol v2, a channel per
//!                                   conversation (src/centrifugo.rs)
//! ```
//!
//! End-to-end latency is measured without clock sync: a sender writes its send
//! time (microseconds on the process-wide monotonic [`stats::now_us`] clock) into
//! the message body, and each receiver in the same process subtracts it from
//! its receive time. Every result goes to a human table on stdout and to a JSON
//! file ([`report`]); `scripts/bench.sh` runs the standard set and prints our
//! numbers as ratios of the baselines'.
#![deny(unsafe_code)]
#![warn(clippy::mod_module_files)]

pub mod auth;
pub mod body;
pub mod ceiling;
pub mod centrifugo;
pub mod cli;
pub mod client;
mod client_sio;
pub mod conn;
pub mod cpu;
pub mod incoming;
pub mod net;
pub mod push_sink;
pub mod reactions;
pub mod report;
pub mod scenario;
pub mod socketio;
pub mod stats;
pub mod sys;

pub use cli::{RunArgs, ScenarioKind, Target};
pub use report::RunReport;
pub use scenario::run;
