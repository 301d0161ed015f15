//! One client connection to any target, and what it reads: scenarios are
//! written once against [`Conn`] and run unchanged against chat-node, the
//! ceiling server (same wire format), Socket.IO and Centrifugo.

use std::net::{IpAddr, SocketAddr};

use anyhow::{anyhow, bail, Result};
use chat_protocol::{ConversationKind, OkReply};

use crate::body::body_sent_us;
use crate::centrifugo::{channel_of, CfConn};
use crate::cli::Target;
use crate::client::{created_id, ChatConn};
// Its own module, below every client, so that the clients need not import
// this module that imports them; still reachable by its old path.
pub use crate::incoming::Incoming;
use crate::socketio::SioConn;

/// What a client needs to know about its conversation to join it.
#[derive(Debug)]
pub struct GroupPlan {
    /// Index of the group in the run.
    pub index: usize,
    /// Direct or group.
    pub kind: ConversationKind,
    /// Members; the first one creates it.
    pub members: Vec<String>,
    /// The last this many members never connect (`--offline-share`): they
    /// are reached by push only.
    pub offline: usize,
    /// Room name for Socket.IO (protocol v1 servers choose their own ids).
    pub room: String,
    /// The id the server gave the conversation, once created. Members learn
    /// it from here rather than only from the `conversation` event, which a
    /// server sends only to members whose connection it has already
    /// attached: a member whose upgrade finished a moment before the create
    /// may never see it.
    pub created: tokio::sync::watch::Sender<Option<String>>,
}

impl GroupPlan {
    /// A conversation of `members` (the first creates it).
    pub fn new(index: usize, kind: ConversationKind, members: Vec<String>, room: String) -> Self {
        GroupPlan {
            index,
            kind,
            members,
            offline: 0,
            room,
            created: tokio::sync::watch::channel(None).0,
        }
    }
}

/// A connection to some target.
pub enum Conn {
    /// chat-node or ceiling-server.
    Chat(ChatConn),
    /// Socket.IO.
    Sio(SioConn),
    /// Centrifugo.
    Cf(CfConn),
}

/// Largest member list of one `create` or `invite`.
const MEMBERS_PER_REQUEST: usize = chat_protocol::limits::MAX_MEMBERS_PER_REQUEST;

impl Conn {
    /// Connects as the user `token` stands for.
    pub async fn connect(
        target: Target,
        addr: SocketAddr,
        token: &str,
        source: Option<IpAddr>,
    ) -> Result<Conn> {
        Ok(match target {
            Target::Chat | Target::Ceiling => {
                Conn::Chat(ChatConn::connect(addr, token, source).await?)
            }
            Target::ChatSocketio => {
                let (ws, pong_due) = SioConn::connect(addr, token, source).await?.into_ws();
                Conn::Chat(ChatConn::over_socketio(ws, pong_due))
            }
            Target::Socketio => Conn::Sio(SioConn::connect(addr, token, source).await?),
            Target::Centrifugo => Conn::Cf(CfConn::connect(addr, token, source).await?),
        })
    }

    /// The next frame; `None` once the server closed the connection.
    pub async fn next(&mut self) -> Result<Option<Incoming>> {
        match self {
            Conn::Chat(c) => c.next().await,
            Conn::Sio(c) => c.next().await,
            Conn::Cf(c) => c.next().await,
        }
    }

    /// Sends a message carrying `body`; answered by an `Ack` or `Error` with `req`.
    pub async fn send_message(&mut self, conversation: &str, req: u64, body: String) -> Result<()> {
        match self {
            Conn::Chat(c) => c.send_message(conversation, req, body).await,
            Conn::Sio(c) => c.send_message(conversation, req, &body).await,
            Conn::Cf(c) => c.send_message(conversation, req, &body).await,
        }
    }

    /// Edits message `id` with a timed body, or (`react`: the index of an
    /// emoji of [`crate::reactions::EMOJI`]) reacts to it, the time noted
    /// for its receivers; answered like a send (chat target only).
    pub async fn change_message(
        &mut self,
        conversation: &str,
        req: u64,
        id: u64,
        react: Option<usize>,
        timed_body: String,
    ) -> Result<()> {
        match self {
            Conn::Chat(c) if react.is_some() => {
                let emoji = react.unwrap_or(0) % crate::reactions::EMOJI.len();
                crate::reactions::note(id, emoji, body_sent_us(&timed_body).unwrap_or(0));
                let e = crate::reactions::EMOJI[emoji].to_string();
                c.react(conversation, req, id, e).await
            }
            Conn::Chat(c) => c.edit_message(conversation, req, id, timed_body).await,
            Conn::Sio(_) | Conn::Cf(_) => bail!("only the chat target has edits and reactions"),
        }
    }

    /// Joins `group` as `me` and returns the conversation id. Protocol v1:
    /// the first member creates it and the others wait for the `conversation`
    /// event (so every member must be connected before the first creates);
    /// Socket.IO: each member joins the room by name; Centrifugo: each
    /// member subscribes to the room's channel. `next_req` gives
    /// request ids. Frames other than the awaited one are dropped: nothing
    /// else is expected before the conversation exists.
    pub async fn join(
        &mut self,
        me: &str,
        group: &GroupPlan,
        next_req: &mut impl FnMut() -> u64,
    ) -> Result<String> {
        match self {
            Conn::Sio(c) => {
                let req = next_req();
                c.join(req, &group.room).await?;
                loop {
                    match c.next().await? {
                        Some(Incoming::Ack { req: r, .. }) if r == req => {
                            return Ok(group.room.clone())
                        }
                        Some(Incoming::Error {
                            req: Some(r),
                            code,
                            message,
                        }) if r == req => {
                            bail!("join {} refused: {code}: {message}", group.room)
                        }
                        Some(_) => {}
                        None => bail!("server closed the connection while joining"),
                    }
                }
            }
            Conn::Cf(c) => {
                let channel = channel_of(&group.room);
                let req = next_req();
                c.subscribe(req, &channel).await?;
                loop {
                    match c.next().await? {
                        Some(Incoming::Page { req: r, .. }) if r == req => return Ok(channel),
                        Some(Incoming::Error {
                            req: Some(r),
                            code,
                            message,
                        }) if r == req => {
                            bail!("subscribe to {channel} refused: {code}: {message}")
                        }
                        Some(_) => {}
                        None => bail!("server closed the connection while subscribing"),
                    }
                }
            }
            Conn::Chat(c) => {
                let owner = group.members.first().map(String::as_str) == Some(me);
                if !owner {
                    let mut created = group.created.subscribe();
                    loop {
                        tokio::select! {
                            ev = c.next() => match ev? {
                                Some(Incoming::Joined { conversation }) => return Ok(conversation),
                                Some(Incoming::Error { code, message, .. }) => {
                                    bail!("while waiting to be added: {code}: {message}")
                                }
                                Some(_) => {}
                                None => bail!("server closed the connection while waiting to be added"),
                            },
                            id = created.wait_for(Option::is_some) => {
                                if let Ok(id) = id {
                                    if let Some(id) = id.as_ref() {
                                        return Ok(id.clone());
                                    }
                                }
                                bail!("the member creating the conversation is gone");
                            }
                        }
                    }
                }
                let others: Vec<String> = group.members[1..].to_vec();
                let (first, rest) = others.split_at(others.len().min(MEMBERS_PER_REQUEST));
                let req = next_req();
                c.create(req, group.kind, first).await?;
                let id = created_id(&await_reply(c, req, "create").await?)?;
                for chunk in rest.chunks(MEMBERS_PER_REQUEST) {
                    let req = next_req();
                    c.invite(req, &id, chunk).await?;
                    await_reply(c, req, "invite").await?;
                }
                group.created.send_replace(Some(id.clone()));
                Ok(id)
            }
        }
    }

    /// Closes politely, without waiting long.
    pub async fn close(self) {
        match self {
            Conn::Chat(c) => c.close().await,
            Conn::Sio(c) => c.close().await,
            Conn::Cf(c) => c.close().await,
        }
    }

    /// Asks for a page of `conversation`'s history, older than `before`,
    /// newer than `after`, or the newest; answered by a [`Incoming::Page`]
    /// with `req` (chat and centrifugo targets).
    pub async fn history(
        &mut self,
        req: u64,
        conversation: &str,
        before: Option<u64>,
        after: Option<u64>,
        limit: u32,
    ) -> Result<()> {
        match self {
            Conn::Chat(c) => c.history(req, conversation, before, after, limit).await,
            Conn::Cf(c) => c.history(req, conversation, before, after, limit).await,
            Conn::Sio(_) => Err(anyhow!("Socket.IO keeps no history")),
        }
    }

    /// The stream epoch of `conversation` (Centrifugo): what a recovery
    /// after a reconnect names.
    pub fn epoch(&self, conversation: &str) -> Option<String> {
        match self {
            Conn::Cf(c) => c.epoch(conversation).map(str::to_string),
            Conn::Chat(_) | Conn::Sio(_) => None,
        }
    }

    /// After a reconnect, makes the server send `conversation`'s messages
    /// again and recover those after `last` (of stream `epoch`): answered
    /// by a [`Incoming::Page`] with `req`, or `false` when the target needs
    /// nothing (chat-node attaches a user's conversations to every
    /// connection itself; the client catches up with history).
    pub async fn rejoin(
        &mut self,
        req: u64,
        conversation: &str,
        last: u64,
        epoch: Option<&str>,
    ) -> Result<bool> {
        match self {
            Conn::Cf(c) => {
                c.recover(req, conversation, last, epoch).await?;
                Ok(true)
            }
            Conn::Chat(_) | Conn::Sio(_) => Ok(false),
        }
    }
}

async fn await_reply(c: &mut ChatConn, req: u64, what: &str) -> Result<OkReply> {
    loop {
        match c.next().await? {
            Some(Incoming::Reply { req: r, ok }) if r == req => return Ok(*ok),
            Some(Incoming::Error {
                req: Some(r),
                code,
                message,
            }) if r == req => {
                bail!("{what} refused: {code}: {message}")
            }
            Some(_) => {}
            None => bail!("server closed the connection during {what}"),
        }
    }
}
