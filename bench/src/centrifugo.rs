//! A Centrifugo client: its bidirectional JSON protocol (v2) over
//! `/connection/websocket`, by hand. Every command is a JSON object with an
//! `id` and one request (`connect`, `subscribe`, `publish`, `history`); its
//! reply carries the same `id` and the result, or an `error`. Publications
//! arrive as `{"push":{"channel":..,"pub":{"data":..,"info":..,"offset":N}}}`.
//! One WebSocket frame may hold several messages separated by `\n`: every
//! frame is split before parsing. The server's application-level ping is an
//! empty `{}`, answered with `{}` (the bench's configuration pings once an
//! hour, so none comes during a run).
//!
//! A conversation is a channel `chat:<room>` of the namespace `chat`
//! (scripts/centrifugo.sh writes the configuration); a message is a
//! publication whose `data` is `{"body":"<send micros>:<padding>",
//! "client_msg_id":"m<req>"}`, the body the other targets carry. The
//! publisher receives its own publication too: that one is not a delivery
//! ([`Incoming::Echo`]). Offsets in a channel's stream stand for message ids
//! (history paging, recovery after a reconnect).

use std::borrow::Cow;
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::body::body_sent_us;
use crate::incoming::Incoming;
use crate::net::{ws_connect, Ws};

/// The WebSocket endpoint of the JSON protocol.
pub const PATH: &str = "/connection/websocket";
/// The channel namespace the bench's configuration declares.
pub const NAMESPACE: &str = "chat";
/// Command id of `connect` (ids are 32-bit; the scenarios count up from 1).
const CONNECT_ID: u64 = u32::MAX as u64;

/// The channel of conversation `room`.
pub fn channel_of(room: &str) -> String {
    format!("{NAMESPACE}:{room}")
}

/// A connection to Centrifugo, authenticated and connected.
pub struct CfConn {
    ws: Ws,
    /// This connection's client id (from the connect reply): publications
    /// whose `info.client` is this one are the client's own.
    client: String,
    /// Messages of a frame not handed out yet.
    pending: VecDeque<Incoming>,
    /// A ping arrived and its `{}` is not written yet: written before the
    /// next read, so a cancelled read never loses it.
    pong_due: bool,
    /// The stream epoch of each channel subscribed (from its subscribe
    /// reply): a history position or a recovery names it.
    epochs: Vec<(String, String)>,
    /// Subscribe requests awaiting their reply: (id, channel).
    subscribing: Vec<(u64, String)>,
    /// The request awaiting a history reply: (id, limit, reverse).
    history: Option<(u64, u32, bool)>,
}

#[derive(Serialize)]
struct Command<'a, T: Serialize> {
    id: u64,
    #[serde(flatten)]
    request: Request<'a, T>,
}

#[derive(Serialize)]
#[serde(rename_all = "lowercase")]
enum Request<'a, T: Serialize> {
    Connect {
        token: &'a str,
        name: &'a str,
    },
    Subscribe {
        channel: &'a str,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        recover: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        epoch: Option<&'a str>,
    },
    Publish {
        channel: &'a str,
        data: T,
    },
    History {
        channel: &'a str,
        limit: u32,
        reverse: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        since: Option<Since<'a>>,
    },
}

/// A request without publication data.
type Plain<'a> = Request<'a, ()>;

#[derive(Serialize)]
struct Since<'a> {
    offset: u64,
    epoch: &'a str,
}

#[derive(Serialize)]
struct Body<'a> {
    body: &'a str,
    client_msg_id: &'a str,
}

/// Any message from the server, as far as the harness reads it.
#[derive(Deserialize)]
struct Reply<'a> {
    #[serde(default)]
    id: u64,
    #[serde(default, borrow)]
    error: Option<ErrorBody<'a>>,
    #[serde(default, borrow)]
    push: Option<Push<'a>>,
    #[serde(default, borrow)]
    connect: Option<ConnectResult<'a>>,
    #[serde(default, borrow)]
    subscribe: Option<SubscribeResult<'a>>,
    #[serde(default)]
    publish: Option<IgnoredAny>,
    #[serde(default, borrow)]
    history: Option<HistoryResult<'a>>,
}

#[derive(Deserialize)]
struct ErrorBody<'a> {
    #[serde(default)]
    code: u32,
    #[serde(default, borrow)]
    message: Cow<'a, str>,
}

#[derive(Deserialize)]
struct Push<'a> {
    #[serde(default, borrow, rename = "pub")]
    publication: Option<Publication<'a>>,
}

#[derive(Deserialize)]
struct Publication<'a> {
    #[serde(default, borrow)]
    data: Option<Data<'a>>,
    #[serde(default, borrow)]
    info: Option<Info<'a>>,
    #[serde(default)]
    offset: u64,
}

#[derive(Deserialize)]
struct Data<'a> {
    #[serde(default, borrow)]
    body: Cow<'a, str>,
}

#[derive(Deserialize)]
struct Info<'a> {
    #[serde(default, borrow)]
    client: Cow<'a, str>,
}

#[derive(Deserialize)]
struct ConnectResult<'a> {
    #[serde(default, borrow)]
    client: Cow<'a, str>,
}

#[derive(Deserialize)]
struct SubscribeResult<'a> {
    #[serde(default, borrow)]
    epoch: Cow<'a, str>,
    #[serde(default)]
    recovered: bool,
    #[serde(default)]
    was_recovering: bool,
    #[serde(default, borrow)]
    publications: Vec<Publication<'a>>,
}

#[derive(Deserialize)]
struct HistoryResult<'a> {
    #[serde(default, borrow)]
    publications: Vec<Publication<'a>>,
    /// The stream's top offset.
    #[serde(default)]
    offset: u64,
}

/// Oldest and newest offsets of publications.
fn span(pubs: &[Publication]) -> (Option<u64>, Option<u64>) {
    let offsets = pubs.iter().map(|p| p.offset);
    (offsets.clone().min(), offsets.max())
}

impl CfConn {
    /// Opens the WebSocket and connects with `token` (HS256, `sub` the user).
    pub async fn connect(addr: SocketAddr, token: &str, source: Option<IpAddr>) -> Result<Self> {
        let (ws, _) = ws_connect(addr, PATH, &[], source).await?;
        let mut conn = CfConn {
            ws,
            client: String::new(),
            pending: VecDeque::new(),
            pong_due: false,
            epochs: Vec::new(),
            subscribing: Vec::new(),
            history: None,
        };
        conn.command(
            CONNECT_ID,
            Plain::Connect {
                token,
                name: "chat-bench",
            },
        )
        .await?;
        let handshake = async {
            loop {
                let text = conn.next_text().await?;
                for line in text.split('\n').filter(|l| !l.trim().is_empty()) {
                    let r: Reply = serde_json::from_str(line)
                        .with_context(|| format!("undecodable connect reply: {line:.200}"))?;
                    if r.id != CONNECT_ID {
                        continue;
                    }
                    if let Some(e) = r.error {
                        bail!("Centrifugo refused the connect: {} {}", e.code, e.message);
                    }
                    let c = r
                        .connect
                        .ok_or_else(|| anyhow!("connect reply without a result"))?;
                    return Ok(c.client.into_owned());
                }
            }
        };
        conn.client = tokio::time::timeout(Duration::from_secs(30), handshake)
            .await
            .map_err(|_| anyhow!("Centrifugo connect with {addr} timed out"))??;
        Ok(conn)
    }

    async fn write(&mut self, text: String) -> Result<()> {
        self.ws
            .send(WsMessage::Text(text.into()))
            .await
            .context("writing to the server")
    }

    async fn command<T: Serialize>(&mut self, id: u64, request: Request<'_, T>) -> Result<()> {
        let text = serde_json::to_string(&Command { id, request })?;
        self.write(text).await
    }

    /// The next text frame, answering pings first.
    async fn next_text(&mut self) -> Result<String> {
        loop {
            if self.pong_due {
                self.write("{}".into()).await?;
                self.pong_due = false;
            }
            match self.ws.next().await {
                None => bail!("server closed the connection"),
                Some(Err(e)) => bail!("reading from the server: {e}"),
                Some(Ok(WsMessage::Text(t))) => return Ok(t.as_str().to_string()),
                Some(Ok(WsMessage::Close(f))) => bail!("server closed the connection: {}", why(f)),
                Some(Ok(_)) => {}
            }
        }
    }

    /// Subscribes to `channel`; the reply comes back as [`Incoming::Page`]
    /// with `req` (no publications).
    pub async fn subscribe(&mut self, req: u64, channel: &str) -> Result<()> {
        self.subscribing.push((req, channel.to_string()));
        self.command(
            req,
            Plain::Subscribe {
                channel,
                recover: false,
                offset: None,
                epoch: None,
            },
        )
        .await
    }

    /// Subscribes to `channel` again after a reconnect, recovering what
    /// came after `offset` of stream `epoch`. The reply comes back as
    /// [`Incoming::Page`] with the publications recovered; `more` when the
    /// server could not recover them all (more than its
    /// `recovery_max_publication_limit`, or a lost stream): page
    /// [`CfConn::history`] forward then.
    pub async fn recover(
        &mut self,
        req: u64,
        channel: &str,
        offset: u64,
        epoch: Option<&str>,
    ) -> Result<()> {
        self.subscribing.push((req, channel.to_string()));
        self.command(
            req,
            Plain::Subscribe {
                channel,
                recover: epoch.is_some(),
                offset: epoch.map(|_| offset),
                epoch,
            },
        )
        .await
    }

    /// Publishes `body` to `channel`; the reply comes back as
    /// [`Incoming::Ack`] with `req`.
    pub async fn send_message(&mut self, channel: &str, req: u64, body: &str) -> Result<()> {
        let cmid = format!("m{req}");
        self.command(
            req,
            Request::Publish {
                channel,
                data: Body {
                    body,
                    client_msg_id: &cmid,
                },
            },
        )
        .await
    }

    /// Asks for a page of `channel`'s history: older than `before`, newer
    /// than `after`, or the newest; the answer comes as [`Incoming::Page`].
    pub async fn history(
        &mut self,
        req: u64,
        channel: &str,
        before: Option<u64>,
        after: Option<u64>,
        limit: u32,
    ) -> Result<()> {
        let epoch = self.epoch(channel).map(str::to_string);
        let position = before.or(after);
        let since = match (position, epoch.as_deref()) {
            (Some(offset), Some(epoch)) => Some(Since { offset, epoch }),
            (Some(_), None) => bail!("history of {channel} before subscribing to it"),
            (None, _) => None,
        };
        let reverse = after.is_none();
        self.history = Some((req, limit, reverse));
        self.command(
            req,
            Plain::History {
                channel,
                limit,
                reverse,
                since,
            },
        )
        .await
    }

    /// The stream epoch of `channel`, once subscribed.
    pub fn epoch(&self, channel: &str) -> Option<&str> {
        self.epochs
            .iter()
            .find(|(c, _)| c == channel)
            .map(|(_, e)| e.as_str())
    }

    /// The next message from the server; `None` once the connection closed.
    pub async fn next(&mut self) -> Result<Option<Incoming>> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return Ok(Some(ev));
            }
            if self.pong_due {
                self.write("{}".into()).await?;
                self.pong_due = false;
            }
            let msg = match self.ws.next().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(anyhow!("reading from the server: {e}")),
                Some(Ok(m)) => m,
            };
            match msg {
                WsMessage::Text(t) => {
                    for line in t.as_str().split('\n') {
                        if let Some(ev) = self.decode(line) {
                            self.pending.push_back(ev);
                        }
                    }
                }
                WsMessage::Close(f) => {
                    return Err(anyhow!("server closed the connection: {}", why(f)))
                }
                _ => {}
            }
        }
    }

    /// One message of a frame; `None` for nothing to report (a ping).
    fn decode(&mut self, line: &str) -> Option<Incoming> {
        let line = line.trim();
        if line.is_empty() {
            return None;
        }
        if line == "{}" {
            self.pong_due = true;
            return None;
        }
        let r: Reply = match serde_json::from_str(line) {
            Ok(r) => r,
            Err(e) => return Some(Incoming::Other(format!("undecodable ({e}): {line:.200}"))),
        };
        if let Some(push) = r.push {
            let Some(p) = push.publication else {
                // join, leave, unsubscribe...: not configured, not counted.
                return Some(Incoming::Other(String::new()));
            };
            let own = p.info.as_ref().is_some_and(|i| i.client == self.client);
            let id = Some(p.offset).filter(|o| *o > 0);
            return Some(if own {
                Incoming::Echo { id }
            } else {
                Incoming::Delivery {
                    id,
                    sent_us: p.data.as_ref().and_then(|d| body_sent_us(&d.body)),
                }
            });
        }
        if let Some(e) = r.error {
            if self.history.is_some_and(|(req, ..)| req == r.id) {
                self.history = None;
            }
            self.subscribing.retain(|(req, _)| *req != r.id);
            return Some(Incoming::Error {
                req: (r.id > 0).then_some(r.id),
                code: error_code(e.code),
                message: format!("{} {}", e.code, e.message),
            });
        }
        if r.publish.is_some() {
            return Some(Incoming::Ack {
                req: r.id,
                id: None,
            });
        }
        if let Some(s) = r.subscribe {
            if let Some(i) = self.subscribing.iter().position(|(req, _)| *req == r.id) {
                let (_, channel) = self.subscribing.swap_remove(i);
                self.epochs.retain(|(c, _)| *c != channel);
                self.epochs.push((channel, s.epoch.to_string()));
            }
            let (oldest, newest) = span(&s.publications);
            return Some(Incoming::Page {
                req: r.id,
                oldest,
                newest,
                count: s.publications.len(),
                more: s.was_recovering && !s.recovered,
            });
        }
        if let Some(h) = r.history {
            let (limit, reverse) = match self.history.take() {
                Some((req, limit, reverse)) if req == r.id => (limit, reverse),
                _ => (0, true),
            };
            let (oldest, newest) = span(&h.publications);
            let count = h.publications.len();
            let more = if reverse {
                count as u64 >= u64::from(limit) && oldest.is_some_and(|o| o > 1)
            } else {
                newest.is_some_and(|n| n < h.offset)
            };
            return Some(Incoming::Page {
                req: r.id,
                oldest,
                newest,
                count,
                more,
            });
        }
        if r.connect.is_some() {
            return Some(Incoming::Other(String::new()));
        }
        Some(Incoming::Other(format!("unexpected: {line:.200}")))
    }

    /// Closes politely, without waiting long for the server.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.ws.close(None)).await;
    }
}

fn why(f: Option<tokio_tungstenite::tungstenite::protocol::CloseFrame>) -> String {
    f.map(|f| format!("{} {}", u16::from(f.code), f.reason))
        .unwrap_or_else(|| "no close frame".into())
}

/// A name for a Centrifugo error code, for the errors-by-code table.
fn error_code(code: u32) -> String {
    let name = match code {
        100 => "internal",
        101 => "unauthorized",
        102 => "unknown_channel",
        103 => "permission_denied",
        104 => "method_not_found",
        105 => "already_subscribed",
        106 => "limit_exceeded",
        107 => "bad_request",
        108 => "not_available",
        109 => "token_expired",
        110 => "expired",
        111 => "too_many_requests",
        112 => "unrecoverable_position",
        _ => "error",
    };
    format!("centrifugo_{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commands() -> Vec<String> {
        let pubcmd = Command {
            id: 3,
            request: Request::Publish {
                channel: "chat:g1",
                data: Body {
                    body: "12:xx",
                    client_msg_id: "m3",
                },
            },
        };
        let hist = Command {
            id: 4,
            request: Plain::History {
                channel: "chat:g1",
                limit: 50,
                reverse: true,
                since: Some(Since {
                    offset: 9,
                    epoch: "ab",
                }),
            },
        };
        let sub = Command {
            id: 2,
            request: Plain::Subscribe {
                channel: "chat:g1",
                recover: false,
                offset: None,
                epoch: None,
            },
        };
        [
            serde_json::to_string(&pubcmd),
            serde_json::to_string(&hist),
            serde_json::to_string(&sub),
        ]
        .into_iter()
        .map(Result::unwrap)
        .collect()
    }

    #[test]
    fn encodes_commands() {
        let c = commands();
        assert_eq!(
            c[0],
            r#"{"id":3,"publish":{"channel":"chat:g1","data":{"body":"12:xx","client_msg_id":"m3"}}}"#
        );
        assert_eq!(
            c[1],
            r#"{"id":4,"history":{"channel":"chat:g1","limit":50,"reverse":true,"since":{"offset":9,"epoch":"ab"}}}"#
        );
        assert_eq!(c[2], r#"{"id":2,"subscribe":{"channel":"chat:g1"}}"#);
    }
}
