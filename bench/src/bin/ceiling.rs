//! `ceiling-server`: the minimal fan-out server the chat node is measured
//! against (see `chat_bench::ceiling`).
//!
//!     ceiling-server --listen 127.0.0.1:9100

use anyhow::{Context, Result};
use clap::Parser;

#[derive(Parser)]
#[command(
    name = "ceiling-server",
    version,
    about = "Minimal protocol-v1 fan-out server: no actors, no auth, no storage"
)]
struct Args {
    /// Address to listen on (port 0 picks a free one and prints it).
    #[arg(long, default_value = "127.0.0.1:9100")]
    listen: std::net::SocketAddr,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Keep history: append each sent message to DIR/history.jsonl and
    /// fsync it (group commit) before fanning it out and acknowledging it.
    #[arg(long, value_name = "DIR")]
    journal: Option<std::path::PathBuf>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(n) = args.threads {
        rt.worker_threads(n.max(1));
    }
    rt.build()?.block_on(async {
        let listener = bind(args.listen).with_context(|| format!("binding {}", args.listen))?;
        println!(
            "READY listen={} pid={}",
            listener.local_addr()?,
            std::process::id()
        );
        let stop = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        let journal = match &args.journal {
            Some(dir) => Some(
                chat_bench::ceiling::Journal::open(dir)
                    .with_context(|| format!("opening the journal in {}", dir.display()))?,
            ),
            None => None,
        };
        chat_bench::ceiling::serve_with(listener, journal, async {
            tokio::select! { _ = stop => {}, _ = term => {} }
        })
        .await
        .context("serving")
    })
}

/// The listening socket with chat-node's default backlog: tokio's `bind`
/// gives 1,024, and a thousand clients reconnecting at once overflowed it
/// (the dropped SYNs come back a second later), which would make the
/// reconnect floor a measure of the kernel's retransmit timer.
fn bind(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}
