//! A client of protocol v1 (JSON codec): chat-node and the ceiling server.
//!
//! Requests are built from chat-protocol's [`ClientFrame`] and rare replies
//! decoded into its [`ServerFrame`], so the harness breaks when the contract
//! does. The two frames that make up nearly all traffic, `message` events and
//! the `ok` of a `send`, are read through borrowed views that pick out only
//! the fields the harness needs: the harness shares the machine's cores with
//! the server it measures, and every microsecond it spends decoding is one the
//! server does not get.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};

use anyhow::{anyhow, bail, Context, Result};
use chat_protocol::{
    ClientFrame, ClientMsgId, Codec, ConversationId, ConversationKind, MessageId, MessageKind,
    OkReply, ReqId, ServerFrame, UserId,
};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio_tungstenite::tungstenite::Message as WsMessage;

// Still reachable by its old path here; it moved below every client.
pub use crate::body::body_sent_us;
use crate::client_sio::Packet;
use crate::incoming::Incoming;
use crate::net::{ws_connect, Ws};

/// A protocol v1 connection.
pub struct ChatConn {
    ws: Ws,
    /// The one control request (create, history) awaiting its reply: its
    /// `ok` is decoded in full, every other `ok` is a send's.
    control: Option<u64>,
    /// When the control request is a `history`: its answer is a page.
    history: Option<u64>,
    /// Over the node's Socket.IO endpoint (`client_sio.rs`): whether an
    /// Engine.IO pong is owed.
    sio: Option<bool>,
}

/// What the harness reads of a frame, in one pass: the type, the request
/// it answers, a message's id and body, a page's ids and `more`. Every other
/// field is skipped unread (as the Centrifugo client reads its replies);
/// frames the harness needs in full are decoded again ([`decode_full`]).
#[derive(Deserialize)]
struct Lite<'a> {
    #[serde(rename = "type", borrow)]
    ty: Cow<'a, str>,
    #[serde(default)]
    req: Option<u64>,
    #[serde(default, borrow)]
    message: Option<LiteMessage<'a>>,
    #[serde(default, borrow)]
    messages: Option<Vec<LiteId<'a>>>,
    #[serde(default)]
    more: bool,
}

#[derive(Deserialize)]
struct LiteMessage<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(default, borrow)]
    body: Cow<'a, str>,
}

#[derive(Deserialize)]
struct LiteId<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
}

/// When the edit an update carries was sent: the harness edits with a
/// timed body (reactions come as their own event, see [`crate::reactions`]).
pub fn update_sent_us(m: &chat_protocol::Message) -> Option<u64> {
    body_sent_us(&m.body)
}

impl ChatConn {
    /// Connects to `/v1/ws` with a bearer token, offering the JSON codec.
    pub async fn connect(addr: SocketAddr, token: &str, source: Option<IpAddr>) -> Result<Self> {
        let headers = [
            ("authorization", format!("Bearer {token}")),
            ("sec-websocket-protocol", Codec::JSON_PROTOCOL.to_string()),
        ];
        let (ws, proto) = ws_connect(addr, "/v1/ws", &headers, source).await?;
        if let Some(p) = proto {
            if p != Codec::JSON_PROTOCOL {
                bail!(
                    "{addr} picked subprotocol {p:?}, not {}",
                    Codec::JSON_PROTOCOL
                );
            }
        }
        Ok(ChatConn {
            ws,
            control: None,
            history: None,
            sio: None,
        })
    }

    /// The same client over a Socket.IO session already connected.
    pub fn over_socketio(ws: Ws, pong_due: bool) -> ChatConn {
        ChatConn {
            ws,
            control: None,
            history: None,
            sio: Some(pong_due),
        }
    }

    async fn send_frame(&mut self, frame: &ClientFrame) -> Result<()> {
        let text = if self.sio.is_some() {
            crate::client_sio::encode(frame)?
        } else {
            let bytes = Codec::Json.encode(frame).map_err(|e| anyhow!("{e}"))?;
            String::from_utf8(bytes).context("JSON is UTF-8")?
        };
        self.ws
            .send(WsMessage::Text(text.into()))
            .await
            .context("writing to the server")
    }

    /// Sends a message; its `ok` comes back as [`Incoming::Ack`] with `req`.
    pub async fn send_message(&mut self, conversation: &str, req: u64, body: String) -> Result<()> {
        let frame = ClientFrame::Send {
            attachments: Vec::new(),
            req: Some(ReqId::UInt(req)),
            conversation: ConversationId::new(conversation)?,
            client_msg_id: ClientMsgId::new(&format!("m{req}"))?,
            body,
            kind: MessageKind::default(),
            reply_to: None,
        };
        self.send_frame(&frame).await
    }

    /// Edits message `id`; answered like a send.
    pub async fn edit_message(
        &mut self,
        conversation: &str,
        req: u64,
        id: u64,
        body: String,
    ) -> Result<()> {
        self.send_frame(&ClientFrame::Edit {
            req: Some(ReqId::UInt(req)),
            conversation: ConversationId::new(conversation)?,
            message: MessageId(id),
            body,
        })
        .await
    }

    /// Reacts to message `id` with `emoji`; answered like a send.
    pub async fn react(
        &mut self,
        conversation: &str,
        req: u64,
        id: u64,
        emoji: String,
    ) -> Result<()> {
        self.send_frame(&ClientFrame::React {
            req: Some(ReqId::UInt(req)),
            conversation: ConversationId::new(conversation)?,
            message: MessageId(id),
            emoji,
            on: true,
        })
        .await
    }

    /// Creates a conversation; its `ok` comes back as [`Incoming::Reply`].
    pub async fn create(
        &mut self,
        req: u64,
        kind: ConversationKind,
        members: &[String],
    ) -> Result<()> {
        let members = members
            .iter()
            .map(|m| UserId::new(m))
            .collect::<Result<Vec<_>, _>>()?;
        self.control = Some(req);
        self.send_frame(&ClientFrame::Create {
            req: Some(ReqId::UInt(req)),
            kind,
            members,
            title: None,
        })
        .await
    }

    /// Adds members to a conversation (creates may name at most 1000).
    pub async fn invite(&mut self, req: u64, conversation: &str, users: &[String]) -> Result<()> {
        let users = users
            .iter()
            .map(|m| UserId::new(m))
            .collect::<Result<Vec<_>, _>>()?;
        self.control = Some(req);
        self.send_frame(&ClientFrame::Invite {
            req: Some(ReqId::UInt(req)),
            conversation: ConversationId::new(conversation)?,
            users,
        })
        .await
    }

    /// Asks for a page of history; the answer comes as [`Incoming::Page`].
    pub async fn history(
        &mut self,
        req: u64,
        conversation: &str,
        before: Option<u64>,
        after: Option<u64>,
        limit: u32,
    ) -> Result<()> {
        self.control = Some(req);
        self.history = Some(req);
        self.send_frame(&ClientFrame::History {
            req: Some(ReqId::UInt(req)),
            conversation: ConversationId::new(conversation)?,
            before: before.map(MessageId),
            after: after.map(MessageId),
            limit: Some(limit),
        })
        .await
    }

    /// The next frame from the server; `None` once the connection closed.
    pub async fn next(&mut self) -> Result<Option<Incoming>> {
        loop {
            if self.sio == Some(true) {
                self.ws
                    .send(WsMessage::Text("3".into()))
                    .await
                    .context("writing to the server")?;
                self.sio = Some(false);
            }
            let msg = match self.ws.next().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(anyhow!("reading from the server: {e}")),
                Some(Ok(m)) => m,
            };
            match msg {
                WsMessage::Text(t) if self.sio.is_some() => {
                    match crate::client_sio::decode(t.as_str()) {
                        Packet::Frame(json) => return Ok(Some(self.decode(&json))),
                        Packet::Ping => self.sio = Some(true),
                        Packet::Closed => return Ok(None),
                        Packet::Skip => {}
                    }
                }
                WsMessage::Text(t) => return Ok(Some(self.decode(t.as_str()))),
                WsMessage::Close(f) => {
                    let why = f
                        .map(|f| format!("{} {}", u16::from(f.code), f.reason))
                        .unwrap_or_else(|| "no close frame".into());
                    return Err(anyhow!("server closed the connection: {why}"));
                }
                WsMessage::Binary(_) => {
                    return Ok(Some(Incoming::Other(
                        "binary frame on a JSON connection".into(),
                    )))
                }
                // tungstenite queues the pong itself and sends it with the
                // next read or write.
                _ => continue,
            }
        }
    }

    fn decode(&mut self, text: &str) -> Incoming {
        // Frames whose `message` is not a message (a reaction names one by
        // id) are read in full, as are the rare ones the harness needs whole.
        let Ok(lite) = serde_json::from_str::<Lite>(text) else {
            return self.decode_full(text);
        };
        let req = lite.req;
        match (lite.ty.as_ref(), lite.message, lite.messages) {
            ("message", Some(m), _) => Incoming::Delivery {
                id: m.id.parse().ok(),
                sent_us: body_sent_us(&m.body),
            },
            ("ok", _, Some(page)) if req.is_some() && req == self.history => {
                self.history = None;
                let (mut oldest, mut newest) = (None, None);
                for id in page.iter().filter_map(|m| m.id.parse::<u64>().ok()) {
                    oldest = Some(oldest.map_or(id, |o: u64| o.min(id)));
                    newest = Some(newest.map_or(id, |n: u64| n.max(id)));
                }
                Incoming::Page {
                    req: req.unwrap_or(0),
                    oldest,
                    newest,
                    count: page.len(),
                    more: lite.more,
                }
            }
            ("ok", message, _) if req.is_some() && req != self.control => Incoming::Ack {
                req: req.unwrap_or(0),
                id: message.and_then(|m| m.id.parse().ok()),
            },
            _ => self.decode_full(text),
        }
    }

    fn decode_full(&mut self, text: &str) -> Incoming {
        let frame: ServerFrame = match Codec::Json.decode(text.as_bytes()) {
            Ok(f) => f,
            Err(e) => return Incoming::Other(format!("undecodable frame ({e}): {text:.200}")),
        };
        match frame {
            ServerFrame::Ok(ok) => {
                let req = req_u64(ok.req.as_ref());
                if req.is_some() && req == self.control {
                    self.control = None;
                }
                if req.is_some() && req == self.history {
                    self.history = None;
                    let messages = ok.messages.unwrap_or_default();
                    let ids = messages.iter().map(|m| m.id.0);
                    return Incoming::Page {
                        req: req.unwrap_or(0),
                        oldest: ids.clone().min(),
                        newest: ids.max(),
                        count: messages.len(),
                        more: ok.more.unwrap_or(false),
                    };
                }
                Incoming::Reply {
                    req: req.unwrap_or(0),
                    ok: Box::new(ok),
                }
            }
            ServerFrame::Error {
                req,
                code,
                message,
                retry_after_ms,
            } => {
                let req = req_u64(req.as_ref());
                if req.is_some() && req == self.control {
                    self.control = None;
                }
                if req.is_some() && req == self.history {
                    self.history = None;
                }
                Incoming::Error {
                    req,
                    code: code.as_str().to_string(),
                    message: match retry_after_ms {
                        Some(ms) => format!("{message} (retry after {ms} ms)"),
                        None => message,
                    },
                }
            }
            ServerFrame::Conversation { conversation } => Incoming::Joined {
                conversation: conversation.id.to_string(),
            },
            ServerFrame::Message { message } => Incoming::Delivery {
                id: Some(message.id.0),
                sent_us: body_sent_us(&message.body),
            },
            // No id: an update is of an old message, which the catch-up
            // bookkeeping (by id) must not mistake for one fetched already.
            ServerFrame::MessageUpdated { message } => Incoming::Delivery {
                id: None,
                sent_us: update_sent_us(&message),
            },
            ServerFrame::Reaction {
                message, reaction, ..
            } => Incoming::Delivery {
                id: None,
                sent_us: crate::reactions::sent_us(message.0, &reaction.emoji),
            },
            _ => Incoming::Other(String::new()),
        }
    }

    /// Closes politely, without waiting long for the server.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), self.ws.close(None)).await;
    }
}

fn req_u64(req: Option<&ReqId>) -> Option<u64> {
    match req? {
        ReqId::Int(i) => u64::try_from(*i).ok(),
        ReqId::UInt(u) => Some(*u),
        ReqId::Str(_) => None,
    }
}

/// The conversation id in a `create` reply.
pub fn created_id(ok: &OkReply) -> Result<String> {
    ok.conversation
        .as_ref()
        .map(|c| c.id.to_string())
        .ok_or_else(|| anyhow!("create answered without a conversation"))
}
