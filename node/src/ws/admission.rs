//! Admission: a place among the node's `listen.max_connections` taken
//! before anything else (a storm of reconnects meets a bounded node, and
//! the clients past the bound try another), then the connection attached
//! to its user's session before its upgrade is answered, so that once a
//! client sees 101, whatever its conversations accept reaches it live.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use chat_actors::conn::{Connection, ConnectionEnd};
use chat_actors::msg::{RouterMsg, SessionHandle, SessionMsg};
use chat_actors::ChatError;
use chat_protocol::{close_code, Codec};

use crate::app::App;
use crate::auth::Claims;

/// A connection attached to its user's session before its upgrade, or the
/// close code and reason it gets instead.
pub(crate) struct Admitted {
    pub(crate) id: u64,
    pub(crate) conn: Connection,
    pub(crate) end: ConnectionEnd,
    pub(crate) attached: Result<Attachment, (u16, String)>,
}

/// Detaches the connection from its session when dropped: when it ends, or
/// when its upgrade never completes.
pub(crate) struct Attachment {
    pub(crate) session: SessionHandle,
    conn: u64,
}

impl Drop for Attachment {
    fn drop(&mut self) {
        let _ = self.session.send(SessionMsg::Detach { conn: self.conn });
    }
}

/// Attaches a new connection of `claims`' user to its session.
pub(crate) async fn admit(app: Arc<App>, claims: Claims, codec: Codec) -> Admitted {
    let limits = &app.config.limits;
    let id = app.next_conn.fetch_add(1, Ordering::Relaxed);
    let (conn, end) = Connection::new(id, codec, limits.outbound_queue, limits.outbound_bytes);
    let conn = conn.signed_in(claims.sid.as_deref().map(Arc::from));
    let attached = ractor::call!(app.router, |reply| RouterMsg::Connect {
        user: claims.sub.clone(),
        conn: conn.clone(),
        reply,
    });
    let attached = match attached {
        Ok(Ok(session)) => Ok(Attachment { session, conn: id }),
        Ok(Err(ChatError::TooManyConnections)) => Err((
            close_code::TOO_MANY_CONNECTIONS,
            "too many connections".to_string(),
        )),
        Ok(Err(e)) => Err((1011, e.to_string())),
        Err(_) => Err((close_code::GOING_AWAY, "node is shutting down".to_string())),
    };
    Admitted {
        id,
        conn,
        end,
        attached,
    }
}

/// A place among the node's `listen.max_connections`, held from the start
/// of an upgrade until its connection ends (or the upgrade fails).
pub(crate) struct Slot(Option<Arc<AtomicUsize>>);

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(open) = &self.0 {
            open.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Seconds a client refused for a full node is told to wait
/// (`Retry-After`), besides trying another node.
pub(crate) const FULL_RETRY_AFTER_SECS: u64 = 1;

/// A place for one more connection, or `None` when the node holds its
/// most (counted in `chat_connections_refused_total`).
pub(crate) fn take_slot(app: &App) -> Option<Slot> {
    let cap = app.config.listen.max_connections;
    if cap == 0 {
        return Some(Slot(None));
    }
    let open = &app.open_connections;
    if open.fetch_add(1, Ordering::AcqRel) >= cap {
        open.fetch_sub(1, Ordering::AcqRel);
        app.metrics.connections_refused.inc();
        return None;
    }
    Some(Slot(Some(open.clone())))
}

/// What a refused client is told.
pub(crate) const FULL: &str =
    "this node holds its most connections (listen.max_connections): try another node";
