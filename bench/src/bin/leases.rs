//! What conversation ownership leases cost a ScyllaDB/Cassandra cluster:
//! the lightweight transactions (LWTs) per second as the number of active
//! conversations grows, under two schemes, on `--nodes` simulated chat
//! nodes (one store handle each):
//!
//! - `claims` (this release): each node holds a node lease, renewed every
//!   third of the ttl, and claims each conversation once (one LWT); claims
//!   are never renewed, so the steady cost is nodes × 3 / ttl, whatever N.
//! - `per-conversation` (the previous release): an expiring lease per
//!   conversation, each renewed every third of the ttl (one LWT each), in
//!   rounds; a round longer than ttl/3 means the database could not keep up
//!   ("renewals fell behind").
//!
//! For each N of `--conversations` and each scheme: the activation time and
//! LWTs per activation, then the LWTs of `--seconds` of steady state with
//! nothing else happening. Fresh conversation ids each run.
//!
//! ```text
//! bash scripts/cql.sh start --dir /tmp/cql     # prints SCYLLA_NODES=...
//! cargo run --release -p chat-bench --bin lease-bench -- \
//!     --scylla $SCYLLA_NODES --conversations 1000,10000,100000
//! ```
//!
//! (`scripts/bench-leases.sh` does both, and stops the server after.)

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use chat_bench::auth::run_prefix;
use chat_protocol::ConversationId;
use chat_storage::scylladb::{ScyllaConfig, ScyllaStore};
use chat_storage::{Lease, LeaseGrant, LeaseStore, NodeLease, NodeLeaseGrant};
use clap::{Parser, ValueEnum};
use futures_util::future::{join_all, ready};
use futures_util::stream::{self, StreamExt};
use tokio::sync::{mpsc, watch};

#[derive(Parser, Debug)]
#[command(about = "Lightweight transactions per second of conversation leases")]
struct Args {
    /// Contact points, host:port[,host:port...].
    #[arg(long, required = true, value_delimiter = ',')]
    scylla: Vec<String>,
    #[arg(long, default_value = "chat_leasebench")]
    keyspace: String,
    /// Simulated chat nodes (one store handle each).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Active conversations, a run for each.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,100000")]
    conversations: Vec<usize>,
    /// The steady-state measuring window.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    #[arg(long, value_enum, default_value_t = Scheme::Claims)]
    scheme: Scheme,
    /// Lease requests in flight per node (claims, acquisitions, renewals).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Where to write the results as JSON.
    #[arg(long)]
    out: Option<PathBuf>,
    /// The lease term (`storage.scylla.lease_ms`); the previous release's
    /// per-conversation leases lasted 10000 ms by default.
    #[arg(long, default_value_t = ScyllaConfig::default().lease_ms)]
    lease_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scheme {
    Claims,
    PerConversation,
    /// Each N under both schemes (on the command line only).
    Both,
}

impl Scheme {
    fn name(self) -> &'static str {
        match self {
            Scheme::Claims => "claims",
            Scheme::PerConversation => "per-conversation",
            Scheme::Both => "both",
        }
    }
}

/// What a node renews: its node lease, or every conversation lease it
/// took (handed over by the activation as they are granted).
enum Renew {
    Node(NodeLease),
    Conversations(mpsc::UnboundedReceiver<Lease>),
}

/// What the renewers did, over all nodes.
#[derive(Default)]
struct Stats {
    /// Renewal requests (one LWT each).
    renewals: AtomicU64,
    /// Renewals that failed or found the lease gone.
    failed: AtomicU64,
    /// Rounds that took longer than ttl/3.
    behind: AtomicU64,
    worst_round_ms: AtomicU64,
}

/// Renews `what` every `period` until `stop`; returns the conversation
/// leases it held. A late round starts the next one at once.
async fn renewer(
    store: Arc<ScyllaStore>,
    mut what: Renew,
    period: Duration,
    concurrency: usize,
    stats: Arc<Stats>,
    mut stop: watch::Receiver<bool>,
) -> Vec<Lease> {
    let mut held: Vec<Lease> = Vec::new();
    let mut next = tokio::time::Instant::now() + period;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = stop.changed() => break,
        }
        let start = Instant::now();
        let (renewed, failed) = match &mut what {
            Renew::Node(lease) => (
                1,
                u64::from(!matches!(store.renew_node_lease(lease).await, Ok(true))),
            ),
            Renew::Conversations(rx) => {
                while let Ok(lease) = rx.try_recv() {
                    held.push(lease);
                }
                // By index: a closure over `&Lease` is not `Send` enough for
                // tokio::spawn (a higher-ranked lifetime).
                let held = &held;
                let failed = stream::iter(0..held.len())
                    .map(|i| store.renew_lease(&held[i]))
                    .buffer_unordered(concurrency)
                    .filter(|r| ready(!matches!(r, Ok(true))))
                    .count()
                    .await;
                (held.len() as u64, failed as u64)
            }
        };
        let took = start.elapsed();
        stats.renewals.fetch_add(renewed, Ordering::Relaxed);
        stats.failed.fetch_add(failed, Ordering::Relaxed);
        stats
            .worst_round_ms
            .fetch_max(took.as_millis() as u64, Ordering::Relaxed);
        if took > period {
            stats.behind.fetch_add(1, Ordering::Relaxed);
        }
        next += period;
        next = next.max(tokio::time::Instant::now());
    }
    held
}

fn lwts(stores: &[Arc<ScyllaStore>]) -> u64 {
    stores.iter().map(|s| s.lease_transactions()).sum()
}

/// One (scheme, N) run.
async fn run(
    stores: &[Arc<ScyllaStore>],
    scheme: Scheme,
    n: usize,
    run_id: &str,
    args: &Args,
    period: Duration,
) -> Result<serde_json::Value> {
    let tag = &scheme.name()[..1];
    let ids = (0..n)
        .map(|i| ConversationId::new(&format!("g:lb-{run_id}-{tag}{n}-{i}")))
        .collect::<Result<Vec<_>, _>>()?;
    let names: Vec<String> = (0..stores.len())
        .map(|k| format!("lease-bench-{run_id}-{k}"))
        .collect();
    let share = n.div_ceil(stores.len()).max(1);
    let stats = Arc::new(Stats::default());
    let (stop, stopped) = watch::channel(false);
    let c = args.concurrency.max(1);

    // The node leases (claims), or the channels to the renewers.
    let mut node_leases = Vec::new();
    let mut senders = Vec::new();
    let mut renewers = Vec::new();
    for (store, name) in stores.iter().zip(&names) {
        let what = match scheme {
            Scheme::Claims => match store.acquire_node_lease(name, None).await? {
                NodeLeaseGrant::Granted(lease) => {
                    node_leases.push(lease.clone());
                    Renew::Node(lease)
                }
                NodeLeaseGrant::Held { until_ms } => {
                    bail!("node lease {name} held until {until_ms}")
                }
            },
            _ => {
                let (tx, rx) = mpsc::unbounded_channel();
                senders.push(tx);
                Renew::Conversations(rx)
            }
        };
        let task = renewer(
            store.clone(),
            what,
            period,
            c,
            stats.clone(),
            stopped.clone(),
        );
        renewers.push(tokio::spawn(task));
    }

    // Activation: N conversations over the nodes, `c` requests in flight each.
    let (lwt0, ren0) = (lwts(stores), stats.renewals.load(Ordering::Relaxed));
    let started = Instant::now();
    let outcomes = join_all(stores.iter().zip(ids.chunks(share)).enumerate().map(
        |(k, (store, ids))| {
            let (names, node_leases, senders) = (&names, &node_leases, &senders);
            stream::iter(ids)
                .map(move |id| async move {
                    match scheme {
                        Scheme::Claims => store.claim(id, &node_leases[k]).await,
                        _ => store.acquire_lease(id, &names[k]).await,
                    }
                })
                .buffer_unordered(c)
                .filter_map(move |grant| {
                    ready(match grant {
                        Ok(LeaseGrant::Granted(lease)) => {
                            if let Some(tx) = senders.get(k) {
                                let _ = tx.send(lease);
                            }
                            None
                        }
                        Ok(LeaseGrant::Held { owner, .. }) => Some(format!("held by {owner}")),
                        Err(e) => Some(e.to_string()),
                    })
                })
                .fold((0usize, None), |(count, first), why| {
                    ready((count + 1, first.or(Some(why))))
                })
        },
    ))
    .await;
    let activation = started.elapsed();
    let refused: usize = outcomes.iter().map(|(count, _)| count).sum();
    if let Some(why) = outcomes.into_iter().find_map(|(_, first)| first) {
        let name = scheme.name();
        eprintln!("{name} n={n}: {refused} activations refused, the first: {why}");
    }
    let renewed = stats.renewals.load(Ordering::Relaxed) - ren0;
    let activation_lwts = lwts(stores) - lwt0 - renewed;
    drop(ids);

    // Steady state: only the renewals.
    for counter in [&stats.behind, &stats.failed, &stats.worst_round_ms] {
        counter.store(0, Ordering::Relaxed);
    }
    let (lwt0, t0) = (lwts(stores), Instant::now());
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let steady = (lwts(stores) - lwt0) as f64 / t0.elapsed().as_secs_f64();
    let [behind, failed, worst] = [&stats.behind, &stats.failed, &stats.worst_round_ms]
        .map(|counter| counter.load(Ordering::Relaxed));

    // Release: the node leases free every claim at once; expiring leases
    // one by one.
    stop.send(true)?;
    drop(senders);
    let held = join_all(renewers).await;
    for (store, lease) in stores.iter().zip(&node_leases) {
        store.release_node_lease(lease).await?;
    }
    for (store, held) in stores.iter().zip(held) {
        stream::iter(held.context("a renewer panicked")?)
            .for_each_concurrent(c, |lease| async move {
                let _ = store.release_lease(&lease).await;
            })
            .await;
    }

    let per_activation = activation_lwts as f64 / n.max(1) as f64;
    let verdict = if behind > 0 {
        format!("renewals fell behind ({behind} rounds over {period:?}, worst {worst} ms)")
    } else {
        format!("renewals kept up (worst round {worst} ms)")
    };
    println!(
        "{:<16} {n:>8} conversations  activation {:>8.2} s  {per_activation:>5.2} LWT/activation  steady {steady:>9.1} LWT/s  {:>9.1} LWT/s/node  {verdict}{}",
        scheme.name(),
        activation.as_secs_f64(),
        steady / stores.len() as f64,
        match (refused, failed) {
            (0, 0) => String::new(),
            _ => format!("  {refused} activations refused, {failed} renewals failed"),
        },
    );
    Ok(serde_json::json!({
        "scheme": scheme.name(),
        "conversations": n,
        "activation_s": activation.as_secs_f64(),
        "activation_lwts": activation_lwts,
        "lwt_per_activation": per_activation,
        "activations_refused": refused,
        "steady_lwt_per_s": steady,
        "steady_lwt_per_s_per_node": steady / stores.len() as f64,
        "renewals_fell_behind": behind > 0,
        "rounds_behind": behind,
        "worst_round_ms": worst,
        "renewals_failed": failed,
    }))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    let config = ScyllaConfig {
        nodes: args.scylla.clone(),
        keyspace: args.keyspace.clone(),
        lease_ms: args.lease_ms,
        ..ScyllaConfig::default()
    };
    let mut stores = Vec::with_capacity(args.nodes);
    for k in 0..args.nodes {
        let store = ScyllaStore::open(&config)
            .await
            .with_context(|| format!("opening store handle {k} on {:?}", args.scylla))?;
        stores.push(Arc::new(store));
    }
    let ttl = stores[0]
        .lease_ttl()
        .context("the store has no lease ttl")?;
    let period = ttl / 3;
    println!(
        "lease-bench: ttl {} ms (renewals every {} ms), {} nodes, {} requests in flight per node, {} s windows, keyspace {} on {}",
        ttl.as_millis(),
        period.as_millis(),
        args.nodes,
        args.concurrency,
        args.seconds,
        args.keyspace,
        args.scylla.join(","),
    );
    let schemes = match args.scheme {
        Scheme::Both => vec![Scheme::Claims, Scheme::PerConversation],
        one => vec![one],
    };
    let run_id = run_prefix();
    let mut results = Vec::new();
    for &n in &args.conversations {
        for &scheme in &schemes {
            results.push(run(&stores, scheme, n, &run_id, &args, period).await?);
        }
    }
    if let Some(out) = &args.out {
        let v = serde_json::json!({
            "ttl_ms": ttl.as_millis() as u64,
            "nodes": args.nodes,
            "concurrency": args.concurrency,
            "seconds": args.seconds,
            "results": results,
        });
        std::fs::write(out, serde_json::to_string_pretty(&v)?)
            .with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}
