//! WebSocket connections: authentication before the upgrade, the codec chosen
//! by subprotocol, and the two tasks of each connection.
//!
//! ```text
//!  socket ─► reader task: decode, validate ─► Dispatch (frame + reply port) ─► actors
//!               │ awaits replies (bounded in flight), pushes them ─┐
//!               ▼                                                  ▼
//!  socket ◄─ writer task ◄──────────── bounded outbound queue ◄── fan-out (events)
//! ```
//!
//! Every frame towards the client goes through one queue, bounded in frames
//! and in bytes ([`chat_actors::conn`]). The reader takes a new request only
//! while what is queued, what the requests in flight may answer with (a
//! reservation per request) and the pongs owed stay under the connection's
//! byte budget, and while the queue has room for every reply in flight: a
//! client that pipelines requests (or pings) without reading stalls, pushed
//! back through TCP, instead of growing the node's memory, and its replies
//! alone never overflow the queue. Events can, and then the connection is
//! closed with 4003; so is one whose socket accepts nothing for the idle
//! timeout. Frames over `max_frame_bytes` close with 1009, broken WebSocket
//! framing with 1002, text that is not UTF-8 with 1007, an expired token
//! with 4001, a node shutting down with 1001.
//!
//! ```text
//!  ws.rs         the picture (this page)
//!  upgrade.rs    authentication, the codec, the 101
//!  admission.rs  the connection attached to its session before the 101
//!  reader.rs     the reader task: frames in, requests dispatched, replies queued
//!  writer.rs     the writer task: the queue out, pings, pongs, the close
//!  io.rs         what both tasks share
//! ```

mod admission;
mod io;
mod reader;
mod upgrade;
mod writer;

pub use upgrade::upgrade;
// For transports other than a WebSocket (the Socket.IO bridge): the same
// admission and the same reader and writer.
pub(crate) use admission::{admit, take_slot, FULL};
pub(crate) use reader::serve;
