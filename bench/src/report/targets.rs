//! The targets for history pages and reconnects, checked against
//! Centrifugo in the same set of runs, with the floors that bound them.

use super::comparison::{ratio, Check, TARGETS};
use super::run::{HistoryReport, ReconnectReport};

fn at<'a, T>(runs: [Option<&'a T>; 4], target: &str) -> Option<&'a T> {
    TARGETS
        .iter()
        .position(|t| *t == target)
        .and_then(|i| runs[i])
}

/// History: pages/s against Centrifugo's, counted only where neither run
/// was harness-bound; and, where a closed loop on two cores saturates the
/// harness before the node, the same margin in what a page costs the
/// server (1.5x the pages on the same core is 1/1.5 of the CPU per page).
pub(super) fn history_checks(pages: [Option<&HistoryReport>; 4], checks: &mut Vec<Check>) {
    let (Some(c), Some(cf)) = (at(pages, "chat"), at(pages, "centrifugo")) else {
        return;
    };
    let vs = ratio(Some(c.pages_per_s), Some(cf.pages_per_s)).unwrap_or(0.0);
    let p99 = format!(
        "p99 {:.2} ms vs {:.2} ms",
        c.latency_ms.p99, cf.latency_ms.p99
    );
    let bound = c.harness_bound || cf.harness_bound;
    checks.push(Check {
        target: "history: pages/s >= 1.5x Centrifugo's, p99 <= Centrifugo's".into(),
        measured: format!(
            "{vs:.2}x, {p99}{}",
            if bound {
                " (HARNESS-BOUND: not counted)"
            } else {
                ""
            }
        ),
        met: (!bound).then_some(vs >= 1.5 && c.latency_ms.p99 <= cf.latency_ms.p99),
    });
    let cpu = ratio(c.server_cpu_us_per_page, cf.server_cpu_us_per_page);
    checks.push(Check {
        target: "history: server CPU per page <= 1/1.5 of Centrifugo's, p99 <= Centrifugo's".into(),
        measured: cpu
            .map(|v| format!("{v:.2}x, {p99}"))
            .unwrap_or_else(|| "not measured (no --pid)".into()),
        met: cpu.map(|v| v <= 1.0 / 1.5 && c.latency_ms.p99 <= cf.latency_ms.p99),
    });
}

/// Reconnect: seconds until every client caught up against Centrifugo's,
/// beside the floor (the ceiling: the connections alone, nothing to catch
/// up).
pub(super) fn reconnect_checks(storms: [Option<&ReconnectReport>; 4], checks: &mut Vec<Check>) {
    let (Some(c), Some(cf)) = (at(storms, "chat"), at(storms, "centrifugo")) else {
        return;
    };
    let vs = ratio(Some(c.all_caught_up_s), Some(cf.all_caught_up_s)).unwrap_or(0.0);
    let floor = at(storms, "ceiling")
        .map(|f| {
            format!(
                "; the floor (ceiling) {:.2}x{}",
                f.all_caught_up_s / cf.all_caught_up_s.max(1e-9),
                if f.harness_bound {
                    ", harness-bound"
                } else {
                    ""
                }
            )
        })
        .unwrap_or_default();
    checks.push(Check {
        target: "reconnect: s until all caught up <= 0.5x Centrifugo's".into(),
        measured: format!(
            "{:.3} s vs {:.3} s: {vs:.2}x{floor}",
            c.all_caught_up_s, cf.all_caught_up_s
        ),
        met: (!c.harness_bound && !cf.harness_bound).then_some(vs <= 0.5),
    });
}
