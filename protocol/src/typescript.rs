//! The TypeScript SDK's wire types (`sdk/ts/src/protocol.ts`) are declared
//! from these Rust types: a change here that is not carried to the SDK
//! fails this test, which names the command that regenerates the file.

use std::path::PathBuf;

use ts_rs::{Config, TS};

use crate::conversation::{Conversation, ConversationKind, ConversationSummary, Member, Role};
use crate::error::ErrorCode;
use crate::frame::{ClientFrame, OkReply, ReceiptKind, ServerFrame};
use crate::ids::{ClientMsgId, ConversationId, MessageId, ReqId, UserId};
use crate::media::Attachment;
use crate::message::{Message, MessageKind, Reaction};
use crate::notify::{ConversationNotify, NotifyLevel};
use crate::people::Profile;
use crate::presence::{Presence, Status};

/// Where the SDK keeps the declarations.
fn target() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../sdk/ts/src/protocol.ts")
}

/// The file: every wire type, in an order a reader follows (frames first).
fn declarations() -> String {
    // Integers are JavaScript numbers: every u64 on the wire is a time, a
    // count or a revision, far below 2^53 (message ids are strings).
    let cfg = Config::new().with_large_int("number");
    let decls = [
        ClientFrame::decl(&cfg),
        ServerFrame::decl(&cfg),
        OkReply::decl(&cfg),
        Message::decl(&cfg),
        Reaction::decl(&cfg),
        Attachment::decl(&cfg),
        Conversation::decl(&cfg),
        ConversationSummary::decl(&cfg),
        Member::decl(&cfg),
        ConversationKind::decl(&cfg),
        Role::decl(&cfg),
        ConversationNotify::decl(&cfg),
        NotifyLevel::decl(&cfg),
        Presence::decl(&cfg),
        Status::decl(&cfg),
        Profile::decl(&cfg),
        ReceiptKind::decl(&cfg),
        ErrorCode::decl(&cfg),
        ReqId::decl(&cfg),
        MessageId::decl(&cfg),
        ConversationId::decl(&cfg),
        UserId::decl(&cfg),
        ClientMsgId::decl(&cfg),
        MessageKind::decl(&cfg),
    ];
    let mut out = String::from(
        "// The wire types of protocol v1.2, generated from the Rust protocol crate\n\
         // (protocol/src/typescript.rs): do not edit. After a protocol change run\n\
         // `CHAT_WRITE_TS=1 cargo test -p chat-protocol --lib typescript`.\n",
    );
    for d in decls {
        out.push_str("\nexport ");
        out.push_str(&d);
        out.push('\n');
    }
    out
}

#[test]
fn typescript_declarations_match_the_sdk() {
    let want = declarations();
    let path = target();
    if std::env::var_os("CHAT_WRITE_TS").is_some() {
        std::fs::write(&path, &want).expect("write the SDK's protocol.ts");
        return;
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "{} is not what the protocol crate declares: run \
         `CHAT_WRITE_TS=1 cargo test -p chat-protocol --lib typescript` and commit it",
        path.display()
    );
}
