//! `chat-node`: parses flags, loads the configuration, runs the node until
//! SIGTERM or Ctrl-C, then drains.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use chat_node::Config;
use clap::{Parser, Subcommand};

// mimalloc, not glibc's malloc: the hot path allocates and frees small
// buffers on several threads, and the search index takes and returns a
// fresh arena each commit (glibc handed it back to the kernel, so every
// commit paid page faults again). bench-ab: about 6 % less CPU per
// delivery and 0.3 KiB less per idle connection.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "chat-node", version, about = "A node of the chat cluster")]
struct Cli {
    /// Configuration file (TOML); `CHAT__SECTION__KEY` variables override it.
    #[arg(long, short, env = "CHAT_CONFIG")]
    config: Option<PathBuf>,
    /// HTTP and WebSocket address (overrides listen.http); port 0 picks one.
    #[arg(long)]
    http: Option<SocketAddr>,
    /// Data directory (overrides node.data_dir).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Node name (overrides node.name).
    #[arg(long)]
    name: Option<String>,
    /// Node id 0-1023 (overrides node.id).
    #[arg(long)]
    id: Option<u16>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Print the default configuration as TOML and exit.
    DefaultConfig,
    /// Load and validate the configuration, print it, and exit.
    CheckConfig,
    /// Apply the storage backend's schema migrations and exit (a node also
    /// applies them when it starts; this is for deploy pipelines that
    /// migrate first).
    Migrate,
    /// Make an admin's account, or give or take the admin role (the admin
    /// console, `/v1/admin/`).
    Admin {
        #[command(subcommand)]
        action: AdminAction,
    },
    /// Rebuild the search index from the history, with the node stopped;
    /// a run stopped half-way goes on where it stopped when started again.
    Reindex {
        /// Empty the index first.
        #[arg(long)]
        fresh: bool,
    },
}

#[derive(Subcommand)]
enum AdminAction {
    /// Make the account USER, an admin, with the password read from the
    /// first line of standard input: how an admin named in `[admin] users`
    /// gets an account, since registration refuses those names.
    CreateUser {
        /// The login name (case-insensitive; the id is it in lower case).
        user: String,
    },
    /// Make USER an admin.
    Grant {
        /// The user id (login name).
        user: String,
    },
    /// Take the admin role from USER.
    Revoke {
        /// The user id (login name).
        user: String,
    },
}

/// What a node logs when `RUST_LOG` is unset. The embedded store's engine
/// logs two lines per keyspace at every start (some eighty, every one
/// "recovering"): kept to its warnings, they no longer bury the node's own.
const DEFAULT_LOG: &str = "info,lsm_tree=warn,fjall=warn";

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG)),
        )
        .with_writer(std::io::stderr)
        .init();

    if let Some(Command::DefaultConfig) = cli.command {
        print!("{}", Config::default_toml());
        return Ok(());
    }
    let mut config = Config::load(cli.config.as_deref(), std::env::vars())?;
    if let Some(http) = cli.http {
        config.listen.http = http;
    }
    if let Some(dir) = cli.data_dir {
        config.node.data_dir = dir;
    }
    if let Some(name) = cli.name {
        config.node.name = name;
    }
    if let Some(id) = cli.id {
        config.node.id = id;
    }
    config.validate()?;
    if let Some(Command::CheckConfig) = cli.command {
        print!("{}", toml::to_string_pretty(&config)?);
        return Ok(());
    }

    if !config.node.huge_pages {
        if let Err(e) = chat_node::memory::refuse_huge_pages() {
            tracing::warn!(error = %e, "transparent huge pages stay on");
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    match cli.command {
        Some(Command::Migrate) => return runtime.block_on(migrate(&config)),
        Some(Command::Reindex { fresh }) => {
            let done = runtime.block_on(chat_node::reindex::reindex(&config, fresh))?;
            println!(
                "reindexed {} conversations ({} batches)",
                done.conversations, done.batches
            );
            return Ok(());
        }
        Some(Command::Admin { action }) => {
            let (user, on) = match action {
                AdminAction::CreateUser { user } => {
                    let password = read_password(&user)?;
                    let made = chat_node::operator::create_admin(&config, &user, &password);
                    let id = runtime.block_on(made)?;
                    println!("{id} is made, an admin");
                    return Ok(());
                }
                AdminAction::Grant { user } => (user, true),
                AdminAction::Revoke { user } => (user, false),
            };
            runtime.block_on(chat_node::operator::set_admin(&config, &user, on))?;
            println!(
                "{user} is {} an admin",
                if on { "now" } else { "no longer" }
            );
            return Ok(());
        }
        _ => {}
    }
    let telemetry = chat_node::telemetry::Telemetry::init(&config)?;
    let served = runtime.block_on(async move {
        let listener = chat_node::serve::bind(config.listen.http, config.listen.backlog)
            .with_context(|| format!("binding {}", config.listen.http))?;
        let addr = listener.local_addr()?;
        let app = chat_node::App::start(config).await?;
        let shutdown = shutdown_signal()?;
        // Scripts and tests read this line to find the port.
        let scheme = if app.tls.is_some() { "https" } else { "http" };
        println!("chat-node listening on {scheme}://{addr}");
        tracing::info!(%addr, "listening");
        chat_node::serve::serve(app, listener, shutdown).await?;
        tracing::info!("drained; exiting");
        anyhow::Ok(())
    });
    if let Some(t) = telemetry {
        t.shutdown();
    }
    served
}

/// The first line of standard input, without its line ending: a password
/// piped in stays out of the command line (and so of `ps` and shell
/// history).
fn read_password(user: &str) -> anyhow::Result<String> {
    use std::io::{BufRead, IsTerminal};
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        // Read as typed, shown: pipe it in to keep it off the screen.
        eprint!("password for {user}: ");
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    Ok(password.strip_suffix('\r').unwrap_or(password).to_owned())
}

async fn migrate(config: &Config) -> anyhow::Result<()> {
    match config.storage.backend {
        chat_node::config::StorageBackend::Embedded => {
            println!("the embedded store needs no migrations");
        }
        chat_node::config::StorageBackend::Scylla => {
            let scylla = &config.storage.scylla;
            let applied = chat_storage::scylladb::migrate(scylla).await?;
            if applied.is_empty() {
                println!(
                    "keyspace {} is at schema version {}",
                    scylla.keyspace,
                    chat_storage::scylladb::SCHEMA_VERSION
                );
            } else {
                println!(
                    "keyspace {}: applied migrations {applied:?}",
                    scylla.keyspace
                );
            }
        }
    }
    Ok(())
}

/// SIGINT or SIGTERM, as a future. The handlers are installed here, at
/// the call, not when the future is first polled: the call comes before
/// the "listening" line, so a SIGTERM sent once a node is seen serving
/// always drains it. (Installed lazily, a signal that came before the
/// polling task ran killed the process, exit status and all, under load.)
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    let (mut int, mut term) = {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
        )
    };
    Ok(async move {
        #[cfg(unix)]
        tokio::select! {
            _ = int.recv() => {},
            _ = term.recv() => {},
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutdown requested; draining");
    })
}
