//! The server CPU per delivery of the `rooms` runs, compared at one fixed
//! rate that every target ran (and, where one ran, against the ceiling
//! fsyncing its history), with the CPU targets.

use super::comparison::{same_rate, Check, Comparison, COMPARED_FIXED_RATE, TARGETS};
use super::run::RunReport;
use super::step::StepReport;

/// The server CPU per delivery of the `rooms` runs at one fixed rate for
/// every target, and the targets on it. `rooms[i]` is the rooms
/// run of `TARGETS[i]`; `floor` is the rooms run of the ceiling keeping
/// history (`ceiling-server --journal`, storage `journal`), if one ran.
pub(super) fn cpu_per_delivery(
    rooms: [Option<&RunReport>; 4],
    floor: Option<&RunReport>,
    comparisons: &mut Vec<Comparison>,
    checks: &mut Vec<Check>,
    notes: &mut Vec<String>,
) {
    let present: Vec<(usize, &RunReport)> = rooms
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.filter(|r| !r.fixed.is_empty()).map(|r| (i, r)))
        .collect();
    let Some(&(_, first)) = present.first() else {
        return;
    };
    // Rates every target with fixed windows measured.
    let mut common: Vec<f64> = first
        .fixed
        .iter()
        .map(|s| s.rate_per_user)
        .filter(|&rate| present.iter().all(|(_, r)| r.fixed_at(rate).is_some()))
        .collect();
    common.sort_by(|a, b| b.total_cmp(a));
    common.dedup_by(|a, b| same_rate(*a, *b));
    let all_ok = |rate: f64| {
        present.iter().all(|(_, r)| {
            r.fixed_at(rate)
                .is_some_and(|s| s.counts() && s.server_cpu_us_per_delivery.is_some())
        })
    };
    let preferred = common
        .iter()
        .copied()
        .find(|&r| same_rate(r, COMPARED_FIXED_RATE) && all_ok(r));
    let chosen = preferred
        .or_else(|| common.iter().copied().find(|&r| all_ok(r)))
        .map(|r| (r, true))
        .or_else(|| common.last().map(|&r| (r, false)));
    let Some((rate, everyone_ok)) = chosen else {
        notes.push(
            "rooms: the targets' fixed rates have none in common: server CPU per delivery \
             not compared"
                .into(),
        );
        return;
    };
    let step = |i: usize| rooms[i].and_then(|r| r.fixed_at(rate));
    let values = |f: &dyn Fn(&StepReport) -> Option<f64>| -> [Option<f64>; 4] {
        [0, 1, 2, 3].map(|i| step(i).and_then(f))
    };
    let offered = step(present[0].0)
        .map(|s| s.offered_msgs_per_s)
        .unwrap_or(0.0);
    let fanout = rooms
        .iter()
        .flatten()
        .find_map(|r| r.fixed_at(rate))
        .filter(|s| s.accepted > 0)
        .map(|s| s.expected_deliveries as f64 / s.accepted as f64);
    let why = if everyone_ok {
        if same_rate(rate, COMPARED_FIXED_RATE) {
            "the standard compared rate; every target kept up there".to_string()
        } else {
            format!(
                "the highest fixed rate at which every target kept up \
                 ({COMPARED_FIXED_RATE} was not measured or not kept up by all)"
            )
        }
    } else {
        let missed: Vec<&str> = present
            .iter()
            .filter(|(_, r)| !r.fixed_at(rate).is_some_and(StepReport::counts))
            .map(|(i, _)| TARGETS[*i])
            .collect();
        format!(
            "no fixed rate was kept up by every target: the lowest, where {} did not keep up \
             or were harness-bound",
            missed.join(", ")
        )
    };
    let note = format!(
        "at the fixed rate of {rate} msgs/s per user ({offered:.0} msgs/s offered{}): {why}; \
         server CPU is utime+stime of every server process (/proc) over the window, divided \
         by the deliveries received in it; lower is better",
        fanout
            .map(|f| format!(", about {:.0} deliveries/s", offered * f))
            .unwrap_or_default()
    );
    let cpu = values(&|s| s.server_cpu_us_per_delivery);
    comparisons
        .push(Comparison::of("rooms: server CPU us per delivery".into(), cpu).noted(note.clone()));
    comparisons.push(
        Comparison::of(
            "rooms: of which in the kernel, us per delivery".into(),
            values(&|s| s.server_kernel_us_per_delivery),
        )
        .noted(format!(
            "stime over the same window at {rate} msgs/s per user: socket writes (and the \
             loopback delivery they run), fsyncs, wake-ups"
        )),
    );
    comparisons.push(
        Comparison::of(
            "rooms: server CPU share at that fixed rate".into(),
            values(&|s| s.server_cpu_share),
        )
        .noted(format!(
            "of the server's cores, at {rate} msgs/s per user: near 1.0 is saturation"
        )),
    );
    comparisons.push(Comparison::of(
        format!("rooms: p99 ms at {rate} msgs/s/user (lower is better)"),
        values(&|s| Some(s.latency_ms.p99)),
    ));
    if !everyone_ok {
        notes.push(format!("rooms: server CPU per delivery {note}"));
    }
    let line = Comparison::of(String::new(), cpu);
    // The least a server that fsyncs its history spends here: the ceiling
    // doing just that. Shown in the ceiling's column, chat's ratio to it
    // beside.
    let floor_us = floor
        .and_then(|r| r.fixed_at(rate))
        .filter(|s| s.counts())
        .and_then(|s| s.server_cpu_us_per_delivery);
    if let Some(floor_us) = floor_us {
        comparisons.push(
            Comparison::of(
                "rooms: server CPU us per delivery vs the ceiling fsyncing its history".into(),
                [line.chat, None, Some(floor_us), None],
            )
            .noted(format!(
                "the ceiling column is ceiling-server --journal: each message appended to a \
                 file and fsynced (group commit) before its fan-out and ok, nothing else; at \
                 {rate} msgs/s per user, as above"
            )),
        );
        if let Some(bare) = line.ceiling.filter(|&c| c > 0.0) {
            notes.push(format!(
                "rooms: fsyncing history alone takes a bare fan-out from {bare:.2} to \
                 {floor_us:.2} us per delivery ({:.2}x) at {rate} msgs/s per user: a CPU \
                 target under that ratio to the bare ceiling is out of reach for any server \
                 that fsyncs each message here",
                floor_us / bare
            ));
        }
    }
    let bound = |what: &str, limit: f64, vs: Option<f64>, other: Option<f64>| Check {
        target: format!("rooms: server CPU per delivery <= {what}"),
        measured: match (line.chat, other, vs) {
            (Some(c), Some(o), Some(v)) => {
                format!("{c:.2} us vs {o:.2} us: {v:.2}x at {rate} msgs/s per user")
            }
            _ => "not measured".into(),
        },
        met: vs.map(|v| v <= limit),
    };
    let vs_floor = line.chat.zip(floor_us).map(|(c, f)| c / f);
    checks.push(bound(
        "1.15x the journaling ceiling's",
        1.15,
        vs_floor,
        floor_us,
    ));
    checks.push(bound(
        "0.85x Centrifugo's",
        0.85,
        line.vs_centrifugo,
        line.centrifugo,
    ));
    // Where the least a fsyncing server can do already costs about what
    // the Centrifugo target allows, that target is at (or under) the floor.
    if let (Some(f), Some(cf)) = (floor_us, line.centrifugo.filter(|&c| c > 0.0)) {
        let room = 0.85 / (f / cf) - 1.0;
        if room < 0.05 {
            let verdict = if room <= 0.0 {
                "is below that floor".to_string()
            } else {
                format!(
                    "leaves a server {:.0} % above that floor at most",
                    room * 100.0
                )
            };
            notes.push(format!(
                "rooms: the journaling ceiling itself spends {:.2}x Centrifugo's CPU per \
                 delivery at {rate} msgs/s per user: <= 0.85x Centrifugo's {verdict}",
                f / cf
            ));
        }
    }
}
