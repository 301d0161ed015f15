//! A set of runs compared: the [`Summary`] that sets ours against the
//! baselines, line by line, and checks the targets.

use serde::{Deserialize, Serialize};

use super::comparison::{ratio, Check, Comparison, TARGETS};
use super::cpu_per_delivery::cpu_per_delivery;
use super::run::RunReport;
use super::step::StepReport;
use super::targets::{history_checks, reconnect_checks};

/// A set of runs, compared.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    /// When the summary was made, Unix milliseconds.
    pub generated_unix_ms: u64,
    /// Cores of the machine.
    pub cores: usize,
    /// Ours against the baselines.
    pub comparisons: Vec<Comparison>,
    /// The targets.
    pub checks: Vec<Check>,
    /// Caveats of the comparison (e.g. a peak that is only a lower bound).
    #[serde(default)]
    pub notes: Vec<String>,
    /// Every run, in full.
    pub runs: Vec<RunReport>,
}

impl Summary {
    /// Compares `runs` (any order; the last run of a scenario and target wins).
    pub fn of(runs: Vec<RunReport>) -> Summary {
        // The baseline comparisons are of chat on its default storage and
        // the bare ceiling; chat on ScyllaDB (compared below) and the
        // ceiling keeping a journal are runs of their own, told apart by
        // their storage.
        let on = |scenario: &str, target: &str, storage: &str| {
            runs.iter().rev().find(|r| {
                r.scenario == scenario
                    && r.target == target
                    && (!matches!(target, "chat" | "ceiling") || r.storage == storage)
            })
        };
        let find = |scenario: &str, target: &str| on(scenario, target, "embedded");
        let all = |scenario: &str| TARGETS.map(|t| find(scenario, t));
        let mut comparisons = Vec::new();
        let mut checks = Vec::new();
        let mut notes = Vec::new();
        for r in &runs {
            let ramped = r.steps.len() > 1 || r.half_peak.is_some();
            let last_bound = r.steps.last().is_some_and(|s| s.harness_bound);
            if ramped && r.steps.last().is_some_and(|s| s.kept_up) && !last_bound {
                notes.push(format!(
                    "{} against {}: every ramp step kept up, so its peak is a lower bound \
                     (ramp further for a ratio that means something)",
                    r.scenario, r.target
                ));
            }
            if r.peak.is_none() && !r.steps.is_empty() {
                notes.push(format!(
                    "{} against {}: no step kept up; its last step is shown",
                    r.scenario, r.target
                ));
            }
            let bound = r
                .fixed
                .iter()
                .chain(&r.steps)
                .chain(&r.half_peak)
                .filter(|s| s.harness_bound)
                .count();
            if bound > 0 {
                notes.push(format!(
                    "{} against {}: {bound} window(s) harness-bound (the harness used more than \
                     its share of its cores): not peaks{}",
                    r.scenario,
                    r.target,
                    if last_bound {
                        "; the ramp ended there, so the peak is a lower bound"
                    } else {
                        ""
                    }
                ));
            }
        }
        // Server CPU per delivery at a fixed rate, shown after the rooms lines.
        let (mut cpu_lines, mut cpu_checks) = (Vec::new(), Vec::new());
        cpu_per_delivery(
            all("rooms"),
            on("rooms", "ceiling", "journal"),
            &mut cpu_lines,
            &mut cpu_checks,
            &mut notes,
        );
        for scenario in ["rooms", "direct", "burst"] {
            let heads = all(scenario).map(|r| r.and_then(|r| r.headline()));
            if heads.iter().all(Option::is_none) {
                continue;
            }
            let line = |metric: &str, f: &dyn Fn(&StepReport) -> f64| {
                Comparison::of(format!("{scenario}: {metric}"), heads.map(|h| h.map(f)))
            };
            comparisons.push(line("peak deliveries/s", &|st| st.deliveries_per_s));
            comparisons.push(line("accepted msgs/s at peak", &|st| st.accepted_per_s));
            comparisons.push(line("p50 ms at peak (lower is better)", &|st| {
                st.latency_ms.p50
            }));
            comparisons.push(line("p99 ms at peak (lower is better)", &|st| {
                st.latency_ms.p99
            }));
            comparisons.push(line("p999 ms at peak (lower is better)", &|st| {
                st.latency_ms.p999
            }));
            if scenario == "rooms" {
                let [c, _, _, cf] = heads;
                let (cd, cfd) = (
                    c.map(|s| s.deliveries_per_s),
                    cf.map(|s| s.deliveries_per_s),
                );
                let vs = ratio(cd, cfd);
                checks.push(Check {
                    target: "rooms: peak deliveries/s >= 1.25x Centrifugo's".into(),
                    measured: vs
                        .map(|v| format!("{v:.2}x"))
                        .unwrap_or_else(|| "not measured".into()),
                    met: vs.map(|v| v >= 1.25),
                });
                let half = find("rooms", "chat").and_then(|r| r.half_peak.as_ref());
                checks.push(Check {
                    target: "rooms: p99 send to receive < 5 ms at half chat's peak".into(),
                    measured: half
                        .map(|h| {
                            format!(
                                "p99 {:.2} ms at {:.0} deliveries/s",
                                h.latency_ms.p99, h.deliveries_per_s
                            )
                        })
                        .unwrap_or_else(|| "not measured".into()),
                    met: half.map(|h| h.latency_ms.p99 < 5.0 && h.kept_up),
                });
                let cores = find("rooms", "chat")
                    .map(|r| r.server_cores)
                    .unwrap_or(1)
                    .max(1);
                checks.push(Check {
                    target: "stretch: 125k deliveries/s per CPU core with durable history".into(),
                    measured: cd
                        .map(|d| {
                            format!(
                                "{:.0} per server core ({cores} server cores)",
                                d / cores as f64
                            )
                        })
                        .unwrap_or_else(|| "not measured".into()),
                    met: cd.map(|d| d / cores as f64 >= 125_000.0),
                });
            }
            if scenario == "rooms" {
                comparisons.append(&mut cpu_lines);
                checks.append(&mut cpu_checks);
            }
        }
        // Rooms runs with fixed windows only (no ramp): after the others.
        comparisons.append(&mut cpu_lines);
        checks.append(&mut cpu_checks);
        let idle_kib = all("idle").map(|r| {
            r.and_then(|r| r.memory.as_ref())
                .map(|m| m.kib_per_connection)
        });
        if idle_kib.iter().any(Option::is_some) {
            comparisons.push(Comparison::of(
                "idle: KiB per connection (lower is better)".into(),
                idle_kib,
            ));
        }
        if let Some(r) = find("idle", "chat") {
            let m = r.memory.as_ref();
            let held = m.map(|m| m.connections).unwrap_or(0);
            checks.push(Check {
                target: "idle: <= 6 KiB of node memory per idle connection".into(),
                measured: m
                    .map(|m| format!("{:.2} KiB at {} connections", m.kib_per_connection, held))
                    .unwrap_or_else(|| "not measured (no --pid)".into()),
                met: m.map(|m| m.kib_per_connection <= 6.0),
            });
            checks.push(Check {
                target: "idle: 50,000 connections held on one node".into(),
                measured: format!("{held} held in this run"),
                met: if held >= 50_000 { Some(true) } else { None },
            });
        }
        let only_chat = |scenario: &str, metric: &str, v: Option<f64>| {
            Comparison::of(format!("{scenario}: {metric}"), [v, None, None, None])
        };
        let pages = all("history").map(|r| r.and_then(|r| r.history.as_ref()));
        if pages.iter().any(Option::is_some) {
            comparisons.push(Comparison::of(
                "history: pages/s".into(),
                pages.map(|h| h.map(|h| h.pages_per_s)),
            ));
            comparisons.push(Comparison::of(
                "history: p99 ms (lower is better)".into(),
                pages.map(|h| h.map(|h| h.latency_ms.p99)),
            ));
            // What a page costs the server: the figure a harness near its
            // limit does not distort (a closed loop saturates one side).
            comparisons.push(Comparison::of(
                "history: server CPU us per page (lower is better)".into(),
                pages.map(|h| h.and_then(|h| h.server_cpu_us_per_page)),
            ));
            history_checks(pages, &mut checks);
            for (target, h) in TARGETS.iter().zip(pages) {
                if h.is_some_and(|h| h.harness_bound) {
                    notes.push(format!(
                        "history against {target} was harness-bound: its pages/s are the \
                         harness's limit, not a result"
                    ));
                }
            }
        }
        if let Some(scylla) = on("rooms", "chat", "scylla") {
            let line =
                |metric: &str, v: Option<f64>| only_chat("rooms, chat on ScyllaDB", metric, v);
            comparisons.push(line(
                "peak deliveries/s",
                scylla.headline().map(|s| s.deliveries_per_s),
            ));
            comparisons.push(line(
                "send-to-ack p99 ms at half peak (lower is better)",
                scylla.half_peak.as_ref().map(|h| h.ack_ms.p99),
            ));
            comparisons.push(line(
                "p99 ms at half peak (lower is better)",
                scylla.half_peak.as_ref().map(|h| h.latency_ms.p99),
            ));
            if let Some(h) = find("rooms", "chat").and_then(|r| r.half_peak.as_ref()) {
                comparisons.push(only_chat(
                    "rooms, chat on the embedded store",
                    "send-to-ack p99 ms at half peak (lower is better)",
                    Some(h.ack_ms.p99),
                ));
            }
            let half = scylla.half_peak.as_ref();
            checks.push(Check {
                target: "ScyllaDB: write (send-to-ack) p99 < 5 ms at half the node's peak \
                         (Discord reports 5 ms)"
                    .into(),
                measured: half
                    .map(|h| {
                        format!(
                            "ack p99 {:.2} ms at {:.0} msgs/s",
                            h.ack_ms.p99, h.accepted_per_s
                        )
                    })
                    .unwrap_or_else(|| "not measured".into()),
                met: half.map(|h| h.ack_ms.p99 < 5.0 && h.kept_up),
            });
        }
        if let Some(h) = on("history", "chat", "scylla").and_then(|r| r.history.as_ref()) {
            comparisons.push(only_chat(
                "history, chat on ScyllaDB",
                "pages/s",
                Some(h.pages_per_s),
            ));
            comparisons.push(only_chat(
                "history, chat on ScyllaDB",
                "p99 ms (lower is better)",
                Some(h.latency_ms.p99),
            ));
            checks.push(Check {
                target: "ScyllaDB: history page p99 < 15 ms (Discord reports 15 ms)".into(),
                measured: format!(
                    "p99 {:.2} ms at {:.0} pages/s",
                    h.latency_ms.p99, h.pages_per_s
                ),
                met: Some(h.latency_ms.p99 < 15.0),
            });
        }
        let storms = all("reconnect").map(|r| r.and_then(|r| r.reconnect.as_ref()));
        if storms.iter().any(Option::is_some) {
            comparisons.push(Comparison::of(
                "reconnect: s until all caught up (lower is better)".into(),
                storms.map(|s| s.map(|s| s.all_caught_up_s)),
            ));
            comparisons.push(Comparison::of(
                "reconnect: server CPU ms per client caught up (lower is better)".into(),
                storms.map(|s| s.and_then(|s| s.server_cpu_ms_per_client)),
            ));
            if storms[TARGETS.iter().position(|t| *t == "ceiling").unwrap_or(0)].is_some() {
                notes.push(
                    "reconnect: the ceiling keeps no history and answers each \
                     catch-up with an empty page, so its storm is the connections alone \
                     (accept, upgrade, one request): the floor under any server's catch-up"
                        .into(),
                );
            }
            reconnect_checks(storms, &mut checks);
            for (target, s) in TARGETS.iter().zip(storms) {
                if s.is_some_and(|s| s.harness_bound) {
                    notes.push(format!(
                        "reconnect against {target} was harness-bound: its seconds are the \
                         harness's limit, not a result"
                    ));
                }
            }
        }
        if runs.iter().any(|r| r.target == "centrifugo") {
            notes.push(CENTRIFUGO_FAIRNESS.into());
        }
        Summary {
            generated_unix_ms: chat_protocol::now_ms(),
            cores: crate::sys::machine_cores(),
            comparisons,
            checks,
            notes,
            runs,
        }
    }
}

/// What to read beside Centrifugo's numbers.
pub const CENTRIFUGO_FAIRNESS: &str =
    "centrifugo: Centrifugo v6 (free edition), JSON protocol v2, memory engine: its history \
     (the last history_size publications per channel) lives in RAM only and nothing is \
     fsynced, while chat-node fsyncs every message before its ok; see the run's label for \
     the version and whether the memory tuning (read_buffer_size, use_write_buffer_pool) \
     was on";
