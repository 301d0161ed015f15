use clap::Parser;

use super::{Comparison, RunReport, StepReport, Summary};
use crate::cli::RunArgs;
use crate::cpu::CpuWindow;

fn rooms_run(target: &str, fixed: &[(f64, bool, f64)]) -> RunReport {
    let args = RunArgs::try_parse_from(["chat-bench"]).unwrap();
    let mut r = RunReport::new(&args, &[]);
    r.target = target.into();
    r.fixed = fixed
        .iter()
        .map(|&(rate, kept_up, us)| StepReport {
            rate_per_user: rate,
            senders: 1000,
            offered_msgs_per_s: rate * 1000.0,
            accepted: 100,
            expected_deliveries: 900,
            kept_up,
            server_cpu_s: Some(1.0),
            server_cpu_us_per_delivery: Some(us),
            server_cpu_share: Some(0.5),
            ..StepReport::default()
        })
        .collect();
    r
}

fn cpu_line(s: &Summary) -> &Comparison {
    s.comparisons
        .iter()
        .find(|c| c.metric == "rooms: server CPU us per delivery")
        .expect("the CPU line")
}

/// The ceiling fsyncing its history (`ceiling-server --journal`), at
/// `us` of CPU per delivery at 5.27 msgs/s per user.
fn journal_run(us: f64) -> RunReport {
    let mut floor = rooms_run("ceiling", &[(5.27, true, us)]);
    floor.storage = "journal".into();
    floor
}

/// Whether each CPU-per-delivery target was met, in the summary's order.
fn cpu_checks_met(s: &Summary) -> Vec<Option<bool>> {
    s.checks
        .iter()
        .filter(|c| c.target.starts_with("rooms: server CPU per delivery"))
        .map(|c| c.met)
        .collect()
}

#[test]
fn compares_cpu_per_delivery_at_the_standard_rate() {
    let rates = |us: f64| {
        [
            (1.0, true, us * 2.0),
            (2.5, true, us * 1.5),
            (5.27, true, us),
        ]
    };
    let s = Summary::of(vec![
        rooms_run("chat", &rates(10.0)),
        rooms_run("socketio", &rates(60.0)),
        rooms_run("ceiling", &rates(8.0)),
        rooms_run("centrifugo", &rates(25.0)),
    ]);
    let c = cpu_line(&s);
    assert_eq!(c.chat, Some(10.0));
    assert_eq!(c.centrifugo, Some(25.0));
    assert_eq!(c.vs_ceiling, Some(1.25));
    assert!(c.note.as_deref().unwrap().contains("5.27"));
    let met = cpu_checks_met(&s);
    // <= 1.15x the journaling ceiling (none ran: not measured), <= 0.85x
    // Centrifugo's (0.4: met).
    assert_eq!(met, vec![None, Some(true)]);
    assert!(s.table().contains("centrifugo"));
}

#[test]
fn sets_chat_against_the_ceiling_fsyncing_its_history() {
    let floor = journal_run(12.0);
    let s = Summary::of(vec![
        rooms_run("chat", &[(5.27, true, 18.0)]),
        rooms_run("ceiling", &[(5.27, true, 8.0)]),
        // Last, so a summary that took the last ceiling run for the bare
        // one would compare against it.
        floor,
    ]);
    assert_eq!(cpu_line(&s).ceiling, Some(8.0), "the bare ceiling");
    let f = s
        .comparisons
        .iter()
        .find(|c| c.metric.contains("ceiling fsyncing its history"))
        .expect("the floor line");
    assert_eq!(
        (f.chat, f.ceiling, f.vs_ceiling),
        (Some(18.0), Some(12.0), Some(1.5))
    );
    assert!(
        s.notes.iter().any(|n| n.contains("(1.50x)")),
        "{:?}",
        s.notes
    );
    let journal = check(&s, "rooms: server CPU per delivery <= 1.15x the journaling");
    assert_eq!(journal.met, Some(false), "1.5x is over 1.15x");
}

#[test]
fn a_centrifugo_target_under_the_journaling_floor_is_said_to_be() {
    let floor = journal_run(6.0);
    let s = Summary::of(vec![
        rooms_run("chat", &[(5.27, true, 6.6)]),
        rooms_run("centrifugo", &[(5.27, true, 7.0)]),
        floor,
    ]);
    let note = s
        .notes
        .iter()
        .find(|n| n.contains("journaling ceiling itself"))
        .expect("the floor's note");
    assert!(
        note.contains("0.86x") && note.contains("below that floor"),
        "{note}"
    );
    let met = cpu_checks_met(&s);
    // 6.6 / 6.0 = 1.10x the floor (met); 6.6 / 7.0 = 0.94x Centrifugo's.
    assert_eq!(met, vec![Some(true), Some(false)]);
}

#[test]
fn falls_back_to_the_highest_rate_every_target_kept_up() {
    let s = Summary::of(vec![
        rooms_run(
            "chat",
            &[(1.0, true, 20.0), (2.5, true, 15.0), (5.27, false, 9.0)],
        ),
        rooms_run(
            "socketio",
            &[(1.0, true, 90.0), (2.5, true, 70.0), (5.27, true, 60.0)],
        ),
    ]);
    let c = cpu_line(&s);
    assert_eq!((c.chat, c.socketio), (Some(15.0), Some(70.0)));
    assert!(c.note.as_deref().unwrap().contains("2.5 msgs/s"));
    assert_eq!(c.ceiling, None);
    let ceiling = s
        .checks
        .iter()
        .find(|c| c.target.contains("ceiling's") && c.target.contains("CPU"))
        .unwrap();
    assert_eq!(ceiling.met, None, "not measured");
}

#[test]
fn a_harness_bound_window_is_never_compared_or_a_peak() {
    let mut chat = rooms_run("chat", &[(1.0, true, 20.0), (5.27, true, 9.0)]);
    chat.fixed[1].harness_bound = true;
    assert!(!chat.fixed[1].counts());
    let s = Summary::of(vec![
        chat,
        rooms_run("ceiling", &[(1.0, true, 10.0), (5.27, true, 5.0)]),
    ]);
    assert_eq!(cpu_line(&s).chat, Some(20.0));
    assert!(s.notes.iter().any(|n| n.contains("harness-bound")));
}

#[test]
fn add_cpu_marks_a_busy_harness() {
    let mut st = StepReport::default();
    let w = CpuWindow {
        secs: 10.0,
        server_cpu_s: Some(4.0),
        server_cpu_s_by_pid: vec![4.0],
        server_kernel_s: Some(1.0),
        harness_cpu_s: Some(9.0),
        deliveries: 400_000,
    };
    st.add_cpu(&w, 1, 1, 0.85);
    assert_eq!(st.server_cpu_us_per_delivery, Some(10.0));
    assert_eq!(st.server_kernel_us_per_delivery, Some(2.5));
    assert_eq!(st.server_cpu_share, Some(0.4));
    assert_eq!(st.harness_cpu_share, Some(0.9));
    assert!(st.harness_bound);
    st.add_cpu(&w, 1, 2, 0.85);
    assert!(!st.harness_bound, "9 s of 2 cores over 10 s is 45%");
}

fn reconnect_run(target: &str, secs: f64, cpu_ms: f64, harness: f64) -> RunReport {
    let args = RunArgs::try_parse_from(["chat-bench", "--scenario", "reconnect"]).unwrap();
    let mut r = RunReport::new(&args, &[]);
    r.target = target.into();
    r.reconnect = Some(super::ReconnectReport {
        clients: 1000,
        caught_up: 1000,
        failed: 0,
        all_caught_up_s: secs,
        catch_up_ms: crate::stats::Latency::default(),
        recovered_messages: 0,
        server_cpu_ms_per_client: Some(cpu_ms),
        harness_cpu_share: Some(harness),
        harness_bound: harness > 0.7,
    });
    r
}

#[test]
fn reconnect_compares_server_cpu_and_marks_a_busy_harness() {
    let s = Summary::of(vec![
        reconnect_run("chat", 0.09, 0.09, 0.9),
        reconnect_run("centrifugo", 0.12, 0.12, 0.4),
    ]);
    let cpu = s
        .comparisons
        .iter()
        .find(|c| c.metric.starts_with("reconnect: server CPU ms per client"))
        .expect("the reconnect CPU line");
    assert_eq!(cpu.chat, Some(0.09));
    assert_eq!(cpu.centrifugo, Some(0.12));
    let bound: Vec<&String> = s
        .notes
        .iter()
        .filter(|n| n.starts_with("reconnect against"))
        .collect();
    assert_eq!(bound.len(), 1, "{bound:?}");
    assert!(bound[0].contains("chat") && bound[0].contains("harness-bound"));
}

fn history_run(target: &str, pages: f64, p99: f64, cpu_us: f64, bound: bool) -> RunReport {
    let args = RunArgs::try_parse_from(["chat-bench", "--scenario", "history"]).unwrap();
    let mut r = RunReport::new(&args, &[]);
    r.target = target.into();
    r.history = Some(super::HistoryReport {
        readers: 50,
        prefill: 1000,
        page_size: 50,
        window_s: 10.0,
        pages: (pages * 10.0) as u64,
        pages_per_s: pages,
        messages_per_s: pages * 50.0,
        errors: 0,
        latency_ms: crate::stats::Latency {
            p99,
            ..crate::stats::Latency::default()
        },
        server_cpu_us_per_page: Some(cpu_us),
        harness_cpu_share: Some(if bound { 0.9 } else { 0.5 }),
        harness_bound: bound,
    });
    r
}

fn check<'a>(s: &'a Summary, starts: &str) -> &'a super::Check {
    s.checks
        .iter()
        .find(|c| c.target.starts_with(starts))
        .unwrap_or_else(|| panic!("no check {starts}: {:?}", s.checks))
}

#[test]
fn history_pages_from_a_bound_harness_are_not_counted_but_their_cpu_is() {
    let s = Summary::of(vec![
        history_run("chat", 56_000.0, 1.3, 16.0, true),
        history_run("centrifugo", 28_000.0, 6.0, 34.0, false),
    ]);
    let pages = check(&s, "history: pages/s");
    assert_eq!(pages.met, None, "{pages:?}");
    assert!(pages.measured.contains("HARNESS-BOUND"));
    assert_eq!(check(&s, "history: server CPU per page").met, Some(true));

    let s = Summary::of(vec![
        history_run("chat", 30_000.0, 7.0, 30.0, false),
        history_run("centrifugo", 28_000.0, 6.0, 34.0, false),
    ]);
    assert_eq!(check(&s, "history: pages/s").met, Some(false));
    assert_eq!(check(&s, "history: server CPU per page").met, Some(false));
}

#[test]
fn reconnect_is_checked_against_centrifugo_beside_its_floor() {
    let s = Summary::of(vec![
        reconnect_run("chat", 0.2, 0.2, 0.5),
        reconnect_run("ceiling", 0.15, 0.12, 0.8),
        reconnect_run("centrifugo", 0.45, 0.44, 0.5),
    ]);
    let c = check(&s, "reconnect: s until all caught up");
    assert_eq!(c.met, Some(true), "{c:?}");
    assert!(
        c.measured.contains("floor (ceiling) 0.33x, harness-bound"),
        "{c:?}"
    );
    assert!(s.notes.iter().any(|n| n.contains("empty page")));
}
