//! A Socket.IO v4 client over a raw WebSocket, by hand: Engine.IO v4 packets
//! are a digit and a payload in one text frame (`0{...}` open, `2` ping, `3`
//! pong, `4` message), and Socket.IO packets ride inside `4`: `40` connect,
//! `42[...]` an event, `42<id>[...]` an event asking for an ack, `43<id>[...]`
//! the ack. Nothing else of the protocol (long-polling, binary attachments,
//! namespaces) is needed to drive the baseline server.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::body::body_sent_us;
use crate::incoming::Incoming;
use crate::net::{ws_connect, Ws};

/// Path of the Engine.IO endpoint, WebSocket transport straight away.
pub const PATH: &str = "/socket.io/?EIO=4&transport=websocket";

/// A Socket.IO connection to the default namespace.
pub struct SioConn {
    ws: Ws,
    /// A ping arrived and its pong is not written yet: written before the
    /// next read, so a cancelled read never loses it.
    pong_due: bool,
}

#[derive(Serialize)]
struct SendPayload<'a> {
    room: &'a str,
    body: &'a str,
    client_msg_id: &'a str,
}

#[derive(Deserialize)]
struct MessagePayload<'a> {
    #[serde(borrow)]
    body: Cow<'a, str>,
}

#[derive(Deserialize)]
struct AckPayload<'a> {
    #[serde(default)]
    ok: bool,
    #[serde(default, borrow)]
    error: Option<Cow<'a, str>>,
}

impl SioConn {
    /// Opens the Engine.IO session and connects to the default namespace with
    /// `token` as `auth.token` (the baseline takes it as the user name).
    pub async fn connect(addr: SocketAddr, token: &str, source: Option<IpAddr>) -> Result<Self> {
        let (ws, _) = ws_connect(addr, PATH, &[], source).await?;
        let mut conn = SioConn {
            ws,
            pong_due: false,
        };
        let handshake = async {
            let open = conn.next_text().await?;
            if !open.starts_with('0') {
                bail!("expected an Engine.IO open packet, got {open:.100}");
            }
            let auth = serde_json::json!({ "token": token });
            conn.write(format!("40{auth}")).await?;
            loop {
                let t = conn.next_text().await?;
                if t.starts_with("40") {
                    return Ok(());
                }
                if let Some(err) = t.strip_prefix("44") {
                    bail!("Socket.IO connect refused: {err:.200}");
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(30), handshake)
            .await
            .map_err(|_| anyhow!("Socket.IO handshake with {addr} timed out"))??;
        Ok(conn)
    }

    /// The WebSocket under the session (and whether a pong is owed), for a
    /// client that speaks its own events over it (`client_sio.rs`).
    pub fn into_ws(self) -> (Ws, bool) {
        (self.ws, self.pong_due)
    }

    async fn write(&mut self, text: String) -> Result<()> {
        self.ws
            .send(WsMessage::Text(text.into()))
            .await
            .context("writing to the server")
    }

    /// The next text frame, answering pings on the way.
    async fn next_text(&mut self) -> Result<String> {
        loop {
            if self.pong_due {
                self.write("3".into()).await?;
                self.pong_due = false;
            }
            match self.ws.next().await {
                None => bail!("server closed the connection"),
                Some(Err(e)) => bail!("reading from the server: {e}"),
                Some(Ok(WsMessage::Text(t))) if t.as_str() == "2" => self.pong_due = true,
                Some(Ok(WsMessage::Text(t))) => return Ok(t.as_str().to_string()),
                Some(Ok(WsMessage::Close(_))) => bail!("server closed the connection"),
                Some(Ok(_)) => {}
            }
        }
    }

    /// Emits `join` for `room`; the ack comes back as [`Incoming::Ack`].
    pub async fn join(&mut self, ack: u64, room: &str) -> Result<()> {
        let payload = serde_json::to_string(&("join", room))?;
        self.write(format!("42{ack}{payload}")).await
    }

    /// Emits `send`; the ack comes back as [`Incoming::Ack`] with `ack`.
    pub async fn send_message(&mut self, room: &str, ack: u64, body: &str) -> Result<()> {
        let cmid = format!("m{ack}");
        let payload = serde_json::to_string(&(
            "send",
            SendPayload {
                room,
                body,
                client_msg_id: &cmid,
            },
        ))?;
        self.write(format!("42{ack}{payload}")).await
    }

    /// The next packet from the server; `None` once it disconnected us.
    pub async fn next(&mut self) -> Result<Option<Incoming>> {
        loop {
            if self.pong_due {
                self.write("3".into()).await?;
                self.pong_due = false;
            }
            let msg = match self.ws.next().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(anyhow!("reading from the server: {e}")),
                Some(Ok(m)) => m,
            };
            let text = match msg {
                WsMessage::Text(t) => t,
                WsMessage::Close(_) => return Ok(None),
                _ => continue,
            };
            let t = text.as_str();
            match t.as_bytes().first() {
                Some(b'2') => {
                    self.pong_due = true;
                    continue;
                }
                Some(b'1') => return Ok(None),
                Some(b'4') => return Ok(Some(decode_packet(&t[1..]))),
                _ => continue,
            }
        }
    }

    /// Closes politely, without waiting long for the server.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let _ = self.write("41".into()).await;
            let _ = self.ws.close(None).await;
        })
        .await;
    }
}

/// Decodes a Socket.IO packet (an Engine.IO `4` message without its `4`).
fn decode_packet(p: &str) -> Incoming {
    let (kind, rest) = p.split_at(p.len().min(1));
    match kind {
        "2" => {
            // Events from the server never ask for acks here: `2[...]`.
            let json = rest.trim_start_matches(|c: char| c.is_ascii_digit());
            match serde_json::from_str::<(Cow<str>, MessagePayload)>(json) {
                Ok((event, m)) if event == "message" => Incoming::Delivery {
                    id: None,
                    sent_us: body_sent_us(&m.body),
                },
                Ok((event, _)) => Incoming::Other(format!("event {event}")),
                Err(_) => Incoming::Other(format!("undecodable event: {p:.200}")),
            }
        }
        "3" => {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            let Ok(req) = rest[..digits].parse::<u64>() else {
                return Incoming::Other(format!("ack without id: {p:.200}"));
            };
            match serde_json::from_str::<Vec<AckPayload>>(&rest[digits..]) {
                Ok(args) => match args.first() {
                    Some(a) if a.ok => Incoming::Ack { req, id: None },
                    Some(a) => Incoming::Error {
                        req: Some(req),
                        code: a.error.as_deref().unwrap_or("error").to_string(),
                        message: "the Socket.IO server refused".into(),
                    },
                    None => Incoming::Ack { req, id: None },
                },
                Err(e) => Incoming::Error {
                    req: Some(req),
                    code: "bad_ack".into(),
                    message: format!("undecodable ack ({e}): {p:.200}"),
                },
            }
        }
        "1" => Incoming::Other("disconnected from the namespace".into()),
        "4" => Incoming::Error {
            req: None,
            code: "connect_error".into(),
            message: rest.to_string(),
        },
        _ => Incoming::Other(String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_events_and_acks() {
        match decode_packet(r#"2["message",{"room":"r","body":"42:xx","id":"1-1"}]"#) {
            Incoming::Delivery { sent_us, .. } => assert_eq!(sent_us, Some(42)),
            other => panic!("{other:?}"),
        }
        match decode_packet(r#"317[{"ok":true,"message":{"id":"1"}}]"#) {
            Incoming::Ack { req, .. } => assert_eq!(req, 17),
            other => panic!("{other:?}"),
        }
        match decode_packet(r#"35[{"error":"forbidden"}]"#) {
            Incoming::Error { req, code, .. } => {
                assert_eq!(req, Some(5));
                assert_eq!(code, "forbidden");
            }
            other => panic!("{other:?}"),
        }
    }
}
