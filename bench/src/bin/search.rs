//! What search costs at a million messages (`scripts/bench-search.sh` runs
//! it against a fresh node, on the embedded index and on OpenSearch).
//!
//! 1. Load: `--messages` sent over the WebSocket API into `--conversations`
//!    groups, `--window` sends in flight per loader connection; each body
//!    is 12 words drawn Zipf-like from a 50,000-word vocabulary (a few words
//!    in most messages, most words rare, as in chat), the last message of
//!    each conversation also holds the word `omegadone`.
//! 2. Indexing: the messages/s from the first send until every `omegadone`
//!    is found (the live path: the outbox feeds the index as messages are
//!    stored), and the lag after the last acknowledged send.
//! 3. Queries, one at a time, as users who each belong to about
//!    `conversations * members / users` groups (membership is checked at
//!    query time): a common word, a mid word, a rare word, two words, a
//!    quoted phrase taken from a sent message, a word from one sender.
//!    Latency is the whole HTTP exchange (a fresh connection each).
//!
//! The node must run with `CHAT__AUTH__REQUIRE_SESSION=false` (tokens are
//! minted with `--jwt-secret`) and send limits raised.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use chat_bench::auth::{http_as, mint, register, run_prefix};
use chat_bench::client::{created_id, ChatConn};
use chat_bench::incoming::Incoming;
use chat_bench::stats::histogram;
use chat_bench::sys::{cpu_seconds, rss_bytes};
use chat_protocol::ConversationKind;
use clap::Parser;
use hdrhistogram::Histogram;

#[derive(Parser, Debug)]
#[command(about = "Search at scale: indexing messages/s and query latency")]
struct Args {
    /// The node.
    #[arg(long)]
    node: SocketAddr,
    /// Processes whose CPU time counts as the server's (the node, and
    /// OpenSearch when it holds the index); the first is the node.
    #[arg(long = "pid", required = true)]
    pids: Vec<u32>,
    /// The node's JWT secret.
    #[arg(long)]
    jwt_secret: String,
    #[arg(long, default_value_t = 1_000_000)]
    messages: usize,
    #[arg(long, default_value_t = 1000)]
    conversations: usize,
    /// Users who search (each in `conversations * members / users` groups).
    #[arg(long, default_value_t = 100)]
    users: usize,
    /// Searching members per group (plus one loader).
    #[arg(long, default_value_t = 5)]
    members: usize,
    /// Loader connections (each in its share of the groups).
    #[arg(long, default_value_t = 4)]
    loaders: usize,
    /// Sends in flight per loader.
    #[arg(long, default_value_t = 256)]
    window: usize,
    #[arg(long, default_value_t = 2000)]
    queries: usize,
    /// Where to write the results as JSON.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
}

const VOCABULARY: usize = 50_000;
const WORDS_PER_MESSAGE: usize = 12;
const SENTINEL: &str = "omegadone";

/// A small deterministic generator: runs are repeatable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Words by rank, and the Zipf (s = 1) distribution over them.
struct Words {
    words: Vec<String>,
    cdf: Vec<f64>,
}

impl Words {
    fn new() -> Words {
        const SYLLABLES: [&str; 16] = [
            "ka", "lo", "mi", "ne", "ru", "ta", "vo", "si", "pe", "du", "ga", "ho", "ji", "be",
            "fa", "zo",
        ];
        // Pronounceable, letters only, distinct: the rank's four base-16
        // digits, a syllable each (stemming sees real-looking words, and
        // no word is a stop word).
        let words: Vec<String> = (0..VOCABULARY)
            .map(|rank| {
                let mut n = rank;
                let mut w = String::new();
                for _ in 0..4 {
                    w.push_str(SYLLABLES[n % 16]);
                    n /= 16;
                }
                w
            })
            .collect();
        let mut total = 0.0;
        let mut cdf = Vec::with_capacity(VOCABULARY);
        for rank in 1..=VOCABULARY {
            total += 1.0 / rank as f64;
            cdf.push(total);
        }
        for c in &mut cdf {
            *c /= total;
        }
        Words { words, cdf }
    }

    fn draw(&self, rng: &mut Rng) -> &str {
        let u = rng.unit();
        let rank = self.cdf.partition_point(|c| *c < u).min(VOCABULARY - 1);
        &self.words[rank]
    }

    fn body(&self, rng: &mut Rng) -> String {
        let mut body = String::with_capacity(WORDS_PER_MESSAGE * 9);
        for i in 0..WORDS_PER_MESSAGE {
            if i > 0 {
                body.push(' ');
            }
            body.push_str(self.draw(rng));
        }
        body
    }
}

/// Who is in which group: searching users round-robin, and one loader.
struct Plan {
    users: Vec<String>,
    loaders: Vec<String>,
    /// Per group: its searching members (indexes into `users`).
    members: Vec<Vec<usize>>,
}

impl Plan {
    fn new(a: &Args) -> Plan {
        let prefix = run_prefix();
        let users = (0..a.users).map(|i| format!("{prefix}s{i}")).collect();
        let loaders = (0..a.loaders).map(|i| format!("{prefix}l{i}")).collect();
        let members = (0..a.conversations)
            .map(|g| (0..a.members).map(|k| (g + k * 7) % a.users).collect())
            .collect();
        Plan {
            users,
            loaders,
            members,
        }
    }
}

/// Creates the groups (each loader creates its share); their ids in order.
async fn create_groups(a: &Args, plan: &Plan, tokens: &[String]) -> Result<Vec<String>> {
    let mut ids = vec![String::new(); a.conversations];
    for (l, token) in tokens.iter().enumerate() {
        let mut conn = ChatConn::connect(a.node, token, None).await?;
        for g in (l..a.conversations).step_by(a.loaders) {
            let members: Vec<String> = plan.members[g]
                .iter()
                .map(|&u| plan.users[u].clone())
                .collect();
            conn.create(g as u64 + 1, ConversationKind::Group, &members)
                .await?;
            loop {
                match conn.next().await? {
                    Some(Incoming::Reply { ok, .. }) => {
                        ids[g] = created_id(&ok)?;
                        break;
                    }
                    Some(Incoming::Error { code, message, .. }) => {
                        bail!("creating group {g}: {code} {message}")
                    }
                    Some(_) => continue,
                    None => bail!("closed while creating group {g}"),
                }
            }
        }
        conn.close().await;
    }
    Ok(ids)
}

/// A sent message kept for phrase queries: its group and body.
type Sample = (usize, String);

/// One loader's sends: round-robin over its groups, `window` in flight.
async fn load(
    a: Arc<Args>,
    words: Arc<Words>,
    token: String,
    groups: Vec<(usize, String)>,
    per_group: usize,
    seed: u64,
) -> Result<Vec<Sample>> {
    let mut conn = ChatConn::connect(a.node, &token, None).await?;
    let mut rng = Rng(seed);
    let total = groups.len() * per_group;
    let mut samples = Vec::new();
    let (mut sent, mut acked) = (0usize, 0usize);
    while acked < total {
        while sent < total && sent - acked < a.window {
            let (g, id) = &groups[sent % groups.len()];
            let round = sent / groups.len();
            let mut body = words.body(&mut rng);
            if round + 1 == per_group {
                body = format!("{SENTINEL} {body}");
            } else if rng.below(500) == 0 {
                samples.push((*g, body.clone()));
            }
            sent += 1;
            conn.send_message(id, sent as u64, body).await?;
        }
        match conn.next().await? {
            Some(Incoming::Ack { .. }) => acked += 1,
            Some(Incoming::Error { code, message, .. }) => bail!("send refused: {code} {message}"),
            Some(_) => {}
            None => bail!("the node closed a loader"),
        }
    }
    conn.close().await;
    Ok(samples)
}

fn encode(q: &str) -> String {
    percent_encoding::utf8_percent_encode(q, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Runs one search; (hits on the first page, whether more follow).
async fn search(node: SocketAddr, token: &str, query: &str) -> Result<(usize, Option<String>)> {
    let path = format!("/v1/search?{query}");
    let (status, text) = http_as(node, "GET", &path, Some(token), "").await?;
    if status != 200 {
        bail!("search {path}: {status} {text}");
    }
    let v: serde_json::Value = serde_json::from_str(&text).context("search answer")?;
    let hits = v["results"].as_array().map_or(0, Vec::len);
    Ok((hits, v["next_cursor"].as_str().map(str::to_string)))
}

/// How many messages holding `word` `token`'s user finds, every page read.
async fn count_all(node: SocketAddr, token: &str, word: &str) -> Result<usize> {
    let mut n = 0;
    let mut cursor = String::new();
    loop {
        let (hits, next) = search(node, token, &format!("q={word}&limit=100{cursor}")).await?;
        n += hits;
        match next {
            Some(c) => cursor = format!("&cursor={c}"),
            None => return Ok(n),
        }
    }
}

fn server_cpu(pids: &[u32]) -> f64 {
    pids.iter().filter_map(|&p| cpu_seconds(p)).sum()
}

/// One kind of query: its latencies and how many found something.
struct Kind {
    name: &'static str,
    latency: Histogram<u64>,
    runs: usize,
    found: usize,
}

#[tokio::main]
async fn main() -> Result<()> {
    let a = Arc::new(Args::parse());
    if a.messages % a.conversations != 0 || a.conversations % a.loaders != 0 {
        bail!("--messages must be a multiple of --conversations, and that of --loaders");
    }
    let words = Arc::new(Words::new());
    let plan = Plan::new(&a);
    // Members must be accounts: every user signs up once (tokens for
    // the run are minted after).
    for u in plan.users.iter().chain(&plan.loaders) {
        register(a.node, u).await?;
    }
    let user_tokens: Vec<String> = plan
        .users
        .iter()
        .map(|u| mint(&a.jwt_secret, u))
        .collect::<Result<_>>()?;
    let loader_tokens: Vec<String> = plan
        .loaders
        .iter()
        .map(|u| mint(&a.jwt_secret, u))
        .collect::<Result<_>>()?;
    let ids = create_groups(&a, &plan, &loader_tokens).await?;
    let per_group = a.messages / a.conversations;
    eprintln!(
        "{} groups made; sending {} messages ({} per group)",
        ids.len(),
        a.messages,
        per_group
    );

    let cpu0 = server_cpu(&a.pids);
    let t0 = Instant::now();
    let mut loaders = Vec::new();
    for (l, token) in loader_tokens.iter().enumerate() {
        let groups: Vec<(usize, String)> = (l..a.conversations)
            .step_by(a.loaders)
            .map(|g| (g, ids[g].clone()))
            .collect();
        loaders.push(tokio::spawn(load(
            a.clone(),
            words.clone(),
            token.clone(),
            groups,
            per_group,
            0x9E37_79B9_7F4A_7C15 ^ (l as u64 + 1),
        )));
    }
    let mut samples = Vec::new();
    for l in loaders {
        samples.extend(l.await??);
    }
    let sent_s = t0.elapsed().as_secs_f64();
    eprintln!(
        "sent in {sent_s:.1} s ({:.0}/s); waiting for the index",
        a.messages as f64 / sent_s
    );
    let share = a.conversations / a.loaders;
    loop {
        let mut all = true;
        for token in &loader_tokens {
            if count_all(a.node, token, SENTINEL).await? < share {
                all = false;
                break;
            }
        }
        if all {
            break;
        }
        if t0.elapsed() > Duration::from_secs(3600) {
            bail!("not indexed within an hour");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let indexed_s = t0.elapsed().as_secs_f64();
    let load_cpu = server_cpu(&a.pids) - cpu0;
    eprintln!(
        "indexed in {indexed_s:.1} s ({:.0}/s), {:.1} s after the last send",
        a.messages as f64 / indexed_s,
        indexed_s - sent_s
    );

    // Queries: one at a time, users and words drawn from a fixed seed.
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    let mut kinds: Vec<Kind> = [
        "common word",
        "mid word",
        "rare word",
        "two words",
        "phrase",
        "word from one sender",
    ]
    .into_iter()
    .map(|name| Kind {
        name,
        latency: histogram(),
        runs: 0,
        found: 0,
    })
    .collect();
    let mut all = histogram();
    let cpu1 = server_cpu(&a.pids);
    let q0 = Instant::now();
    for i in 0..a.queries {
        let k = i % kinds.len();
        let (user, query) = match k {
            0 => (rng.below(a.users), encode(&words.words[rng.below(20)])),
            1 => (
                rng.below(a.users),
                encode(&words.words[200 + rng.below(2000)]),
            ),
            2 => (
                rng.below(a.users),
                encode(&words.words[10_000 + rng.below(VOCABULARY - 10_000)]),
            ),
            3 => (
                rng.below(a.users),
                encode(&format!(
                    "{} {}",
                    words.words[rng.below(50)],
                    words.words[50 + rng.below(500)]
                )),
            ),
            4 => {
                let (g, body) = &samples[rng.below(samples.len())];
                let w: Vec<&str> = body.split(' ').collect();
                let at = rng.below(w.len() - 2);
                let member = plan.members[*g][rng.below(a.members)];
                (
                    member,
                    encode(&format!("\"{} {} {}\"", w[at], w[at + 1], w[at + 2])),
                )
            }
            _ => (
                rng.below(a.users),
                format!(
                    "{}&from={}",
                    encode(&words.words[rng.below(20)]),
                    plan.loaders[rng.below(a.loaders)]
                ),
            ),
        };
        let started = Instant::now();
        let (hits, _) = search(a.node, &user_tokens[user], &format!("q={query}&limit=20")).await?;
        let us = started.elapsed().as_micros() as u64;
        let kind = &mut kinds[k];
        kind.latency.saturating_record(us.max(1));
        all.saturating_record(us.max(1));
        kind.runs += 1;
        kind.found += usize::from(hits > 0);
    }
    let query_s = q0.elapsed().as_secs_f64();
    let query_cpu = server_cpu(&a.pids) - cpu1;
    let rss = rss_bytes(a.pids[0]).unwrap_or(0);

    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "messages {}  groups {}  users {} (each in ~{} groups)",
        a.messages,
        a.conversations,
        a.users,
        a.conversations * a.members / a.users
    );
    println!(
        "indexing: {:.0} messages/s (all searchable {:.1} s after the first send, {:.1} s after the last ack); server CPU {:.1} µs per message",
        a.messages as f64 / indexed_s,
        indexed_s,
        indexed_s - sent_s,
        load_cpu * 1e6 / a.messages as f64
    );
    println!(
        "queries: {} in {:.1} s, p50 {:.2} ms, p99 {:.2} ms; server CPU {:.2} ms per query; node RSS {} MiB",
        a.queries,
        query_s,
        ms(&all, 0.5),
        ms(&all, 0.99),
        query_cpu * 1000.0 / a.queries as f64,
        rss >> 20
    );
    let mut per_kind = Vec::new();
    for k in &kinds {
        println!(
            "  {:<22} p50 {:>7.2} ms  p99 {:>7.2} ms  found something {}/{}",
            k.name,
            ms(&k.latency, 0.5),
            ms(&k.latency, 0.99),
            k.found,
            k.runs
        );
        per_kind.push(serde_json::json!({
            "kind": k.name, "p50_ms": ms(&k.latency, 0.5), "p99_ms": ms(&k.latency, 0.99),
            "runs": k.runs, "found": k.found,
        }));
    }
    if let Some(out) = &a.out {
        let v = serde_json::json!({
            "messages": a.messages, "conversations": a.conversations, "users": a.users,
            "send_s": sent_s, "indexed_s": indexed_s,
            "indexing_per_s": a.messages as f64 / indexed_s,
            "index_cpu_us_per_message": load_cpu * 1e6 / a.messages as f64,
            "query_p50_ms": ms(&all, 0.5), "query_p99_ms": ms(&all, 0.99),
            "query_cpu_ms": query_cpu * 1000.0 / a.queries as f64,
            "node_rss_bytes": rss, "kinds": per_kind,
        });
        std::fs::write(out, serde_json::to_string_pretty(&v)?)?;
    }
    Ok(())
}
