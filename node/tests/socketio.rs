//! Hostile Socket.IO clients, spoken by hand (Engine.IO v4 packets over a
//! real WebSocket, and long-polling over real HTTP): bounded as the native
//! path is. A flood of requests without reading gets every one answered
//! (the excess refused with `rate_limited`, nothing queued for it); a
//! payload over the frame limit closes only its own client; one that never
//! reads is cut and its connection freed; a polling
//! client that stops polling while messages pour in is cut as a slow
//! consumer, and the node goes on. web/tests/socketio.test.mjs runs the
//! real `socket.io-client`.

mod common;

use std::time::Duration;

use chat_protocol::Codec;
use common::frames::send;
use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message as WsMessage;

type Sio =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A Socket.IO client over the WebSocket transport, connected to `/` with
/// `token`: after the Engine.IO open packet and Socket.IO's connect.
async fn sio_ws(node: &TestNode, token: &str) -> Sio {
    let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", node.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("upgrade");
    let open = text(&mut ws).await;
    assert!(open.starts_with('0'), "engine.io open: {open}");
    ws.send(WsMessage::Text(
        format!("40{}", json!({"token": token})).into(),
    ))
    .await
    .unwrap();
    let connected = text(&mut ws).await;
    assert!(
        connected.starts_with("40"),
        "socket.io connect: {connected}"
    );
    ws
}

/// The next text packet, answering Engine.IO pings on the way.
async fn text(ws: &mut Sio) -> String {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .expect("a packet in time")
            .expect("open")
            .expect("readable");
        if let WsMessage::Text(t) = msg {
            if t.as_str() == "2" {
                ws.send(WsMessage::Text("3".into())).await.unwrap();
                continue;
            }
            return t.to_string();
        }
    }
}

/// An ack packet `43<id>[frame]`: (id, frame).
fn ack_of(packet: &str) -> Option<(u64, Value)> {
    let rest = packet.strip_prefix("43")?;
    let at = rest.find('[')?;
    let id = rest[..at].parse().ok()?;
    let v: Value = serde_json::from_str(&rest[at..]).ok()?;
    Some((id, v[0].clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_without_reading_is_answered_in_full_and_bounded() {
    let node = TestNode::start_with(|c| {
        c.limits.sends_per_second = 1_000_000;
        c.limits.send_burst = 1_000_000;
        c.limits.outbound_queue = 1024;
        c.limits.inflight_per_connection = 256;
    })
    .await;
    let ann = node.user(&unique("sann")).await;
    let mut native = connect(node.addr, &ann.access, Codec::Json).await;
    let conv = group(&mut native, &[]).await;
    let mut ws = sio_ws(&node, &ann.access).await;
    // All at once, none read: the bridge holds a reader's window of them
    // and refuses the rest. Socket.IO buffers up to the outbound queue's
    // worth of packets for a client that is not reading, and the bridge
    // owes up to a window's worth of refusals more: a flood within both is
    // answered in full even if the kernel buffered nothing.
    let n = (1024 + 256 - 16) as u64;
    for id in 1..=n {
        let event = json!(["send", {"conversation": conv.as_str(), "client_msg_id": format!("f{id}"), "body": "x"}]);
        ws.feed(WsMessage::Text(format!("42{id}{event}").into()))
            .await
            .unwrap();
    }
    ws.flush().await.unwrap();
    let (mut ok, mut refused) = (0, 0);
    let mut answered = std::collections::HashSet::new();
    while answered.len() < n as usize {
        let packet = text(&mut ws).await;
        let Some((id, frame)) = ack_of(&packet) else {
            continue;
        };
        assert!(answered.insert(id), "one answer per ack ({id})");
        match (frame["type"].as_str(), frame["code"].as_str()) {
            (Some("ok"), _) => ok += 1,
            (Some("error"), Some("rate_limited")) => refused += 1,
            other => panic!("unexpected answer {other:?}: {frame}"),
        }
    }
    eprintln!("{ok} stored, {refused} refused");
    assert!(ok > 0, "the window's worth is stored");
    assert!(refused > 0, "the excess is refused, not queued");
    // Still served, and what was stored is in the history.
    let stored = ok_reply(
        native
            .request(common::frames::history(&conv, None, None, Some(1)))
            .await,
    );
    assert_eq!(stored.messages.map(|m| m.len()), Some(1));
    ok_reply(
        native
            .request(send(&conv, "after", "after the flood"))
            .await,
    );
}

fn ok_reply(f: chat_protocol::ServerFrame) -> chat_protocol::OkReply {
    ok(f)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_that_never_reads_is_cut_and_its_connection_freed() {
    // Pings every second; a socket that takes no bytes is dropped by the
    // kernel a few seconds after the idle timeout.
    let node = TestNode::start_with(|c| {
        c.limits.sends_per_second = 1_000_000;
        c.limits.send_burst = 1_000_000;
        c.limits.idle_timeout_secs = 2;
    })
    .await;
    let ann = node.user(&unique("sann")).await;
    let mut native = connect(node.addr, &ann.access, Codec::Json).await;
    let conv = group(&mut native, &[]).await;
    let mut ws = sio_ws(&node, &ann.access).await;
    // Sends without ever reading (not even Engine.IO's pings): its answers
    // fill Socket.IO's buffer and the kernel's, the node cuts it, and then
    // stops reading it. Engine.IO's writer is left waiting to write to a
    // socket that takes nothing; the kernel's send timeout frees it, and
    // the client's write fails on the reset. Without it the client's writes
    // wait forever, and the node keeps the connection.
    // Bodies large enough that the messages' events outgrow every buffer.
    let body = "x".repeat(3000);
    let flood = async {
        for id in 0u64.. {
            let event = json!(["send", {"conversation": conv.as_str(), "client_msg_id": format!("n{id}"), "body": body}]);
            ws.send(WsMessage::Text(format!("42{id}{event}").into()))
                .await?;
        }
        Ok::<_, tokio_tungstenite::tungstenite::Error>(())
    };
    let ended = tokio::time::timeout(Duration::from_secs(60), flood).await;
    assert!(
        matches!(ended, Ok(Err(_))),
        "the node let go of a client that reads nothing: {ended:?}"
    );
    // The node goes on (for a new connection: the first one, unread for
    // the flood, was cut as idle).
    drop(native);
    let mut native = connect(node.addr, &ann.access, Codec::Json).await;
    ok_reply(
        native
            .request(send(&conv, "after", "after the flood"))
            .await,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_over_the_limit_closes_only_its_client() {
    let node = TestNode::start().await;
    let ann = node.user(&unique("sann")).await;
    let mut big = sio_ws(&node, &ann.access).await;
    let mut other = sio_ws(&node, &ann.access).await;
    let body = "x".repeat(node.app.config.limits.max_frame_bytes + 1);
    let event = json!(["send", {"conversation": "g:x", "client_msg_id": "big", "body": body}]);
    let _ = big
        .send(WsMessage::Text(format!("421{event}").into()))
        .await;
    // Closed: the stream ends (or errs) without an answer.
    let closed = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match big.next().await {
                None | Some(Err(_)) | Some(Ok(WsMessage::Close(_))) => return,
                Some(Ok(WsMessage::Text(t))) => assert!(!t.starts_with("43"), "answered: {t}"),
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the oversized client is closed");
    other
        .send(WsMessage::Text("42[\"ping\",{}]".into()))
        .await
        .unwrap();
    other
        .send(WsMessage::Text("427[\"ping\",{}]".into()))
        .await
        .unwrap();
    let (id, frame) = loop {
        if let Some(a) = ack_of(&text(&mut other).await) {
            break a;
        }
    };
    assert_eq!((id, frame["type"].as_str()), (7, Some("ok")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_polling_client_that_stops_polling_is_cut_and_the_node_goes_on() {
    let node = TestNode::start_with(|c| {
        c.limits.outbound_queue = 64;
        c.limits.sends_per_second = 1_000_000;
        c.limits.send_burst = 1_000_000;
        // The stall deadline: how long a write may wait for the client.
        c.limits.idle_timeout_secs = 4;
    })
    .await;
    let ann = node.user(&unique("sann")).await;
    let bob = node.user(&unique("sbob")).await;
    let mut a = connect(node.addr, &ann.access, Codec::Json).await;
    let conv = group(&mut a, &[&bob.id]).await;
    // Bob on long-polling: opens, connects, reads the connect, then never
    // polls again.
    let http = reqwest::Client::new();
    let base = format!("http://{}/socket.io/?EIO=4&transport=polling", node.addr);
    let open = http.get(&base).send().await.unwrap().text().await.unwrap();
    let sid = serde_json::from_str::<Value>(open.trim_start_matches('0')).unwrap()["sid"]
        .as_str()
        .unwrap()
        .to_string();
    let with_sid = format!("{base}&sid={sid}");
    let posted = http
        .post(&with_sid)
        .body(format!("40{}", json!({"token": bob.access})))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 200);
    // Socket.IO's connect (after a ping or two, answered, if the check of
    // the token took a while).
    eventually("bob connected", || {
        let (http, with_sid) = (http.clone(), with_sid.clone());
        async move {
            let got = http
                .get(&with_sid)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let got = got.text().await.map_err(|e| e.to_string())?;
            if got.split('\u{1e}').any(|p| p == "2") {
                http.post(&with_sid)
                    .body("3")
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
            }
            match got.contains("40{") {
                true => Ok(()),
                false => Err(got),
            }
        }
    })
    .await;
    // Messages pour into Bob's conversation.
    let body = "p".repeat(1000);
    for i in 0..400 {
        a.send_frame(&with_req(
            send(&conv, &format!("m{i}"), &body),
            chat_protocol::ReqId::UInt(i),
        ))
        .await;
    }
    // Cut as a slow consumer, as a WebSocket reader that stops reading is.
    until("bob cut as a slow consumer", || {
        node.app.metrics.slow_consumers.get() >= 1
    })
    .await;
    // Every send was stored and answered; the node goes on.
    let mut answered = 0;
    while answered < 400 {
        if let Some(chat_protocol::ServerFrame::Ok(_)) = a.recv().await {
            answered += 1;
        }
    }
    ok(a.request(send(&conv, "after", "after the cut")).await);
    // Bob's session ends: he answers no Engine.IO ping (the idle
    // timeout), and a poll is then refused.
    eventually_within("bob's session ended", Duration::from_secs(30), || {
        let (http, with_sid) = (http.clone(), with_sid.clone());
        async move {
            match http
                .get(&with_sid)
                .send()
                .await
                .map(|r| r.status().as_u16())
            {
                Ok(400) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
}
