//! What indexing costs the embedded index in CPU, merges included: 100
//! conversations indexed together, round after round, the way a node's
//! outbox passes feed it (each round's applies share a commit), then the
//! process's CPU time (every thread: the writer, its merges) per message.
//!
//!   cargo run --release -p chat-search --example index_cost [ROUNDS] [PER_ROUND]
//!
//! ROUNDS (default 400) rounds of PER_ROUND (default 10) messages in each
//! of the 100 conversations. It ends when the process has been idle for
//! a second (the writer's merges done), so that merges left pending do not
//! go uncounted.

use std::sync::Arc;
use std::time::Instant;

use chat_protocol::{ConversationId, MessageId, UserId};
use chat_search::embedded::EmbeddedIndex;
use chat_search::{Doc, SearchIndex};

const CONVERSATIONS: u64 = 100;

fn cpu_seconds() -> f64 {
    // SAFETY: rusage is plain integers, for which zeroes are valid, and
    // getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(usage.ru_utime) + t(usage.ru_stime)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: u64 = args.next().map_or(400, |a| a.parse().expect("ROUNDS"));
    let per_round: u64 = args.next().map_or(10, |a| a.parse().expect("PER_ROUND"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let index = Arc::new(EmbeddedIndex::open(dir.path()).expect("index"));
    let sender = UserId::new("bench").expect("id");
    let (cpu, wall) = (cpu_seconds(), Instant::now());
    runtime.block_on(async {
        for round in 0..rounds {
            let mut applies = Vec::new();
            for c in 0..CONVERSATIONS {
                let conversation = ConversationId::new(&format!("g:{c}")).expect("id");
                let docs = (0..per_round)
                    .map(|k| {
                        let n = round * per_round + k + 1;
                        Doc {
                            conversation: conversation.clone(),
                            id: MessageId(n),
                            sender: sender.clone(),
                            ts: n,
                            body: format!("message {n} of round {round} says hello to the room"),
                            has_attachment: false,
                            has_link: false,
                        }
                    })
                    .collect();
                let index = index.clone();
                let cursor = (round + 1) * per_round;
                applies.push(tokio::spawn(async move {
                    index.apply(&conversation, docs, Vec::new(), cursor).await
                }));
            }
            for a in applies {
                a.await.expect("task").expect("apply");
            }
        }
    });
    let indexed = std::time::Duration::from_secs_f64(cpu_seconds() - cpu);
    // Merges run on after the last commit: done when the process idles.
    let mut last = cpu_seconds();
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
        let now = cpu_seconds();
        if now - last < 0.01 {
            break;
        }
        last = now;
    }
    let total = last - cpu;
    let messages = rounds * per_round * CONVERSATIONS;
    println!(
        "{messages} messages in {rounds} rounds: {:.2} us CPU per message ({:.2} while indexing, \
         the rest merging after), {:.1} s wall",
        total * 1e6 / messages as f64,
        indexed.as_secs_f64() * 1e6 / messages as f64,
        wall.elapsed().as_secs_f64(),
    );
}
