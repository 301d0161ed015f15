//! Running a scenario: plan users and conversations, spawn one task per
//! client, move them through the phases together, measure windows, report.
//!
//! ```text
//!  Connect ──► Setup ──► Run{rate} ─┬─► Run{0} (pause: stragglers drain) ─► Run{rate'} ...
//!  (all up)   (joined)              └─► Storm (reconnect) ───────────────► Stop
//! ```
//!
//! The coordinator changes the phase through a watch channel; clients report
//! progress through counters. A setup that does not complete (a client could
//! not connect or join) fails the run with the first error rather than
//! measuring a different load than the one asked for.

mod history;
mod idle;
mod progress;
mod reconnect;
mod rooms;
mod shared;
mod storm;

use anyhow::Result;

use crate::cli::{RunArgs, ScenarioKind};
use crate::report::RunReport;

/// Runs the scenario `args` describe and returns its report (also written to
/// `--json` and printed by the binary).
pub async fn run(args: &RunArgs) -> Result<RunReport> {
    args.validate()?;
    let nodes = args.endpoints()?;
    let started = chat_protocol::now_ms();
    let t0 = std::time::Instant::now();
    let mut report = match args.scenario {
        ScenarioKind::Idle => idle::run(args, &nodes).await?,
        ScenarioKind::Rooms | ScenarioKind::Direct | ScenarioKind::Burst => {
            rooms::run(args, &nodes).await?
        }
        ScenarioKind::History => history::run(args, &nodes).await?,
        ScenarioKind::Reconnect => reconnect::run(args, &nodes).await?,
        ScenarioKind::Storm => storm::run(args, &nodes).await?,
    };
    report.started_unix_ms = started;
    report.wall_s = t0.elapsed().as_secs_f64();
    Ok(report)
}
