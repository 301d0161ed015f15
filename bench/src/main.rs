//! `chat-bench`: runs one scenario against one target and prints its table
//! (JSON with `--json`), or, with `summary`, sets the JSON of several runs
//! side by side as ratios. See bench/README.md.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use chat_bench::report::{read_runs, Summary};
use chat_bench::RunArgs;
use clap::{Parser, Subcommand};

// The harness shares the machine with the server it measures and must stay
// under 70 % of its core to count: glibc's malloc (its free-list walks and
// consolidations) took about 5 % of the harness's CPU in a reconnect
// storm, where mimalloc, the node's allocator, takes less.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "chat-bench",
    version,
    about = "Load generator for the chat cluster and its baselines",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Compares run reports (ours vs the baselines, as ratios) and checks the targets.
    Summary {
        /// Write the comparison and every run to this JSON file.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Run reports written with --json.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Summary { out, inputs }) => summary(out, &inputs),
        None => run(cli.run),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chat-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: RunArgs) -> Result<()> {
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(n) = args.threads {
        rt.worker_threads(n.max(1));
    }
    let report = rt
        .build()
        .context("starting the runtime")?
        .block_on(chat_bench::run(&args))?;
    print!("{}", report.table());
    if let Some(path) = &args.json {
        report.write_json(path)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn summary(out: Option<PathBuf>, inputs: &[PathBuf]) -> Result<()> {
    let summary = Summary::of(read_runs(inputs)?);
    print!("{}", summary.table());
    if let Some(path) = out {
        summary.write_json(&path)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
