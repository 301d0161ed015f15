//! Results: one [`RunReport`] per run (a human table on stdout, JSON in a
//! file), and the [`Summary`] of a set of runs that sets ours against the
//! baselines as ratios and checks the project's targets.
//!
//! By concern: `run` (the [`RunReport`] and its parts), `step` (one
//! measured window and its CPU figures), `comparison` (the lines of a
//! summary and their ratios), `cpu_per_delivery` (the server CPU per
//! delivery compared at one fixed rate), `summary` (the [`Summary`] of a set
//! of runs), `targets` (the history and reconnect targets against
//! Centrifugo and their floors), and the two outputs, `table` (the human tables) and `json` (the
//! files written and read back).

mod comparison;
mod cpu_per_delivery;
mod json;
mod run;
mod step;
mod summary;
mod table;
mod targets;

pub use comparison::{Check, Comparison, COMPARED_FIXED_RATE, TARGETS};
pub use json::read_runs;
pub use run::{ConnectReport, HistoryReport, MemoryReport, ReconnectReport, RunReport};
pub use step::StepReport;
pub use summary::{Summary, CENTRIFUGO_FAIRNESS};

#[cfg(test)]
mod tests;
