//! `rooms`, `direct` and `burst`: users in conversations (groups of
//! `--group-size`, 1:1 pairs, or one conversation of everyone), each sending
//! `--rate` messages per second, open loop. Measured: messages accepted per
//! second, deliveries per second and end-to-end latency from the send to
//! each receiver.
//!
//! With `--fixed-rates a,b,c` a window runs at each of those rates first:
//! the same offered loads for every target, where the server's CPU per
//! delivery is compared. With `--ramp N` the rate then rises step by step
//! until a step cannot keep up (see [`StepReport::from_window`]) or the
//! harness is the limit (`harness_bound`) in `--step-tries` tries at its
//! rate; the best step that kept up and was not harness-bound is the peak,
//! and a last window runs at half the peak's rate, where the latency target
//! applies. Every window reads the server's and the harness's CPU time at
//! its start and end (see [`crate::cpu`]).
//! Senders pause between windows so each window's stragglers drain before
//! it is judged.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use chat_protocol::ConversationKind;
use tokio::sync::watch;
use tokio::time::Instant;

use super::progress::Progress;
use super::shared::{base_report, finish, members, user_names, Member, Phase, Shared};
use crate::cli::{RunArgs, ScenarioKind};
use crate::conn::{Conn, GroupPlan, Incoming};
use crate::cpu::{CpuWindow, Mark};
use crate::push_sink::{self, PushSink};
use crate::report::{RunReport, StepReport};
use crate::stats::now_us;

/// Unanswered sends one client may have; past it a send is skipped (and
/// counted), which keeps the harness bounded when the server falls behind.
pub(crate) const MAX_INFLIGHT: usize = 128;
/// Longest wait for a window's stragglers.
const DRAIN_MAX: Duration = Duration::from_secs(5);
/// Longest wait for a server to work off its backlog between windows.
const QUIET_MAX: Duration = Duration::from_secs(15);
/// Load before each ramp step's window, so it starts in a steady state.
const STEP_SETTLE: f64 = 1.0;
/// Load before each fixed-rate window after the first.
const FIXED_SETTLE: f64 = 2.0;

/// Conversations of a scenario: which users are in which conversation.
pub(crate) fn plan_groups(
    scenario: ScenarioKind,
    users: &[String],
    group_size: usize,
    offline_share: f64,
) -> Vec<Arc<GroupPlan>> {
    let (size, kind) = match scenario {
        ScenarioKind::Direct => (2, ConversationKind::Direct),
        ScenarioKind::Burst => (users.len(), ConversationKind::Group),
        _ => (group_size, ConversationKind::Group),
    };
    users
        .chunks(size)
        .enumerate()
        .map(|(index, chunk)| {
            // A leftover single user cannot have a direct conversation.
            let kind = if chunk.len() < 2 {
                ConversationKind::Group
            } else {
                kind
            };
            let mut plan = GroupPlan::new(
                index,
                kind,
                chunk.to_vec(),
                format!("{}-r{index}", users[0]),
            );
            // The creator and at least one other member stay online.
            plan.offline = ((chunk.len() as f64 * offline_share).round() as usize)
                .min(chunk.len().saturating_sub(2));
            Arc::new(plan)
        })
        .collect()
}

/// Sends awaiting their answer, by request id: a fixed ring, no allocation.
pub(crate) struct Inflight {
    reqs: Box<[u64]>,
    sent: Box<[u64]>,
}

impl Inflight {
    pub fn new() -> Inflight {
        Inflight {
            reqs: vec![0; MAX_INFLIGHT].into(),
            sent: vec![0; MAX_INFLIGHT].into(),
        }
    }
    fn slot(req: u64) -> usize {
        (req % MAX_INFLIGHT as u64) as usize
    }
    /// Whether `req` may be sent: the request `MAX_INFLIGHT` before it was answered.
    pub fn free(&self, req: u64) -> bool {
        self.reqs[Self::slot(req)] == 0
    }
    pub fn put(&mut self, req: u64, sent_us: u64) {
        let i = Self::slot(req);
        self.reqs[i] = req;
        self.sent[i] = sent_us;
    }
    /// The send time of `req`, if it was awaiting its answer.
    pub fn take(&mut self, req: u64) -> Option<u64> {
        let i = Self::slot(req);
        (self.reqs[i] == req && req != 0).then(|| {
            self.reqs[i] = 0;
            self.sent[i]
        })
    }
    /// Forgets everything (the connection they were sent on is gone).
    pub fn clear(&mut self) {
        self.reqs.fill(0);
    }
}

/// A client's messaging state, kept across reconnects.
pub(crate) struct Traffic {
    pub conv: String,
    /// Other members: deliveries each accepted message should cause.
    pub fanout: u64,
    pub inflight: Inflight,
    pub next_req: u64,
    /// Highest message id delivered to this client: where catching up starts.
    pub last_delivered: u64,
    /// Deliveries at or below this id were already fetched with history.
    pub fetched_upto: u64,
    pub rate: f64,
    pub shard: usize,
    /// Where in each send period this client sends, in [0, 1): spreads
    /// clients evenly instead of all sending on the same tick.
    pub offset: f64,
    pub pad: Arc<str>,
    /// `--changes-share`, and how much of a change is owed.
    pub changes_share: f64,
    change_credit: f64,
    /// This client's latest acknowledged message: what it edits and reacts to.
    last_own: Option<u64>,
    /// Reactions it made to `last_own` (a message holds at most 20 emoji).
    reactions_on_last: usize,
    /// Alternates edits and reactions.
    next_change_reacts: bool,
}

/// Why [`traffic`] returned.
pub(crate) enum Exit {
    Stop,
    Storm,
}

impl Traffic {
    pub fn new(m: &Member, conv: String, next_req: u64, pad: Arc<str>) -> Traffic {
        Traffic {
            conv,
            fanout: (m.group.members.len() - m.group.offline).saturating_sub(1) as u64,
            inflight: Inflight::new(),
            next_req,
            last_delivered: 0,
            fetched_upto: 0,
            rate: 0.0,
            shard: m.idx,
            offset: (m.idx as f64 * 0.618_033_988_75).fract(),
            pad,
            changes_share: 0.0,
            change_credit: 0.0,
            last_own: None,
            reactions_on_last: 0,
            next_change_reacts: false,
        }
    }

    fn first_send(&self) -> Option<Instant> {
        (self.rate > 0.0).then(|| Instant::now() + Duration::from_secs_f64(self.offset / self.rate))
    }

    pub fn take_req(&mut self) -> u64 {
        let r = self.next_req;
        self.next_req += 1;
        r
    }

    async fn send_one(&mut self, conn: &mut Conn, sh: &Shared) -> Result<()> {
        let now = now_us();
        if !self.inflight.free(self.next_req) {
            sh.stats.backpressured(now);
            return Ok(());
        }
        let req = self.take_req();
        let mut body = String::with_capacity(self.pad.len() + 21);
        body.push_str(&now.to_string());
        body.push(':');
        body.push_str(&self.pad);
        self.change_credit += self.changes_share;
        match self.last_own {
            Some(id) if self.change_credit >= 1.0 => {
                self.change_credit -= 1.0;
                // At most 19 reactions per message: past that, edit.
                let react = (self.next_change_reacts && self.reactions_on_last < 19)
                    .then_some(self.reactions_on_last);
                self.next_change_reacts = !self.next_change_reacts;
                self.reactions_on_last += usize::from(react.is_some());
                conn.change_message(&self.conv, req, id, react, body)
                    .await?;
            }
            _ => conn.send_message(&self.conv, req, body).await?,
        }
        self.inflight.put(req, now);
        sh.stats.sent(now);
        Ok(())
    }

    /// Accounts for one frame from the server.
    pub fn handle(&mut self, ev: Incoming, sh: &Shared) {
        let now = now_us();
        match ev {
            Incoming::Ack { req, id } => {
                if let Some(id) = id.filter(|id| Some(*id) != self.last_own) {
                    self.last_own = Some(id);
                    self.reactions_on_last = 0;
                }
                if let Some(sent) = self.inflight.take(req) {
                    sh.stats.acked(self.shard, sent, now, self.fanout);
                }
            }
            Incoming::Error { req, code, message } => {
                let at = req.and_then(|r| self.inflight.take(r)).unwrap_or(now);
                sh.stats.error(&code, &message, at);
            }
            Incoming::Delivery { id, sent_us } => {
                if let Some(id) = id {
                    if id <= self.fetched_upto {
                        return;
                    }
                    self.last_delivered = self.last_delivered.max(id);
                }
                match sent_us {
                    Some(s) => sh.stats.delivered(self.shard, s, now),
                    None => sh
                        .stats
                        .error("bad_body", "a delivery without a send time", now),
                }
            }
            Incoming::Echo { id } => {
                if let Some(id) = id {
                    self.last_delivered = self.last_delivered.max(id);
                }
            }
            Incoming::Reply { .. } | Incoming::Joined { .. } | Incoming::Page { .. } => {}
            Incoming::Other(note) if note.is_empty() => {}
            Incoming::Other(note) => sh.stats.error("unexpected", &note, now),
        }
    }
}

/// Sends at the phase's rate and accounts for everything the server sends,
/// until the phase says stop or storm.
pub(crate) async fn traffic(
    conn: &mut Conn,
    phase: &mut watch::Receiver<Phase>,
    t: &mut Traffic,
    sh: &Shared,
) -> Result<Exit> {
    let mut next_send = t.first_send();
    loop {
        tokio::select! {
            changed = phase.changed() => {
                if changed.is_err() {
                    return Ok(Exit::Stop);
                }
                match *phase.borrow_and_update() {
                    Phase::Run { rate } => {
                        t.rate = rate;
                        next_send = t.first_send();
                    }
                    Phase::Storm => return Ok(Exit::Storm),
                    Phase::Stop => return Ok(Exit::Stop),
                    Phase::Connect | Phase::Setup => {}
                }
            }
            ev = conn.next() => match ev? {
                Some(ev) => t.handle(ev, sh),
                None => bail!("the server closed the connection"),
            },
            _ = tokio::time::sleep_until(next_send.unwrap_or_else(Instant::now)), if next_send.is_some() => {
                t.send_one(conn, sh).await?;
                let period = Duration::from_secs_f64(1.0 / t.rate);
                let now = Instant::now();
                let mut next = next_send.unwrap_or(now) + period;
                // Far behind schedule (the harness or the server starved):
                // skip the missed ticks rather than burst to catch up.
                if next + Duration::from_secs(1) < now {
                    next = now + period;
                }
                next_send = Some(next);
            }
        }
    }
}

/// Waits for the phase to reach one `ok` accepts, answering the server
/// meanwhile (pings, stray frames).
pub(crate) async fn wait_phase(
    conn: &mut Conn,
    phase: &mut watch::Receiver<Phase>,
    ok: impl Fn(Phase) -> bool,
) -> Result<Phase> {
    loop {
        let p = *phase.borrow_and_update();
        if ok(p) {
            return Ok(p);
        }
        tokio::select! {
            changed = phase.changed() => if changed.is_err() { return Ok(Phase::Stop) },
            ev = conn.next() => if ev?.is_none() { bail!("the server closed the connection") },
        }
    }
}

async fn client(m: Member, sh: Arc<Shared>, pad: Arc<str>) {
    if let Err(e) = client_inner(&m, &sh, pad).await {
        sh.fail(&m.user, &e);
    }
}

/// Connects `m`, waits for the setup phase and joins its group: its
/// connection, phase watch and traffic state, or `None` when the run stops
/// first.
pub(crate) async fn connect_and_join(
    m: &Member,
    sh: &Shared,
    pad: Arc<str>,
) -> Result<Option<(Conn, watch::Receiver<Phase>, Traffic)>> {
    let mut phase = sh.phase.subscribe();
    let mut conn = sh.connect(m).await?;
    sh.connected.fetch_add(1, Ordering::SeqCst);
    if wait_phase(&mut conn, &mut phase, |p| p != Phase::Connect).await? == Phase::Stop {
        return Ok(None);
    }
    let mut req = 1u64;
    let conv = conn
        .join(&m.user, &m.group, &mut || {
            req += 1;
            req - 1
        })
        .await?;
    let mut traffic = Traffic::new(m, conv, req, pad);
    traffic.changes_share = sh.changes_share;
    Ok(Some((conn, phase, traffic)))
}

/// A run of group conversations (rooms, direct, burst, history, reconnect)
/// about to start.
pub(crate) struct Groups {
    /// The members, with their tokens and groups.
    pub(crate) members: Vec<Member>,
    /// The counters they share.
    pub(crate) shared: Arc<Shared>,
    /// The progress line, running.
    pub(crate) progress: Progress,
    /// "U users in N conversations of G (kind)", for the report's notes.
    pub(crate) plan: String,
}

/// Plans the groups, gets the tokens and starts the progress line.
pub(crate) async fn start_groups(
    args: &RunArgs,
    nodes: &[SocketAddr],
    kind: ScenarioKind,
) -> Result<Groups> {
    crate::sys::check_open_files(args.users)?;
    let users = user_names(args.users);
    let groups = plan_groups(kind, &users, args.group_size, args.offline_share);
    let group_size = groups.first().map(|g| g.members.len()).unwrap_or(0);
    let tokens = crate::auth::tokens(args, &users, nodes).await?;
    let all = members(args, nodes, &users, &tokens, |i| {
        groups[i / group_size].clone()
    });
    let (offline, ms): (Vec<Member>, Vec<Member>) = all.into_iter().partition(is_offline);
    let sink = if offline.is_empty() {
        None
    } else {
        let sink = PushSink::start().await?;
        subscribe_offline(&offline, &sink).await?;
        Some(sink)
    };
    let sh = Shared::new(args, ms.len());
    if let Some(sink) = sink {
        let _ = sh.push_sink.set(sink);
    }
    let title = format!("{}/{}", args.scenario.name(), args.target.name());
    let progress = Progress::start(sh.clone(), title, args.quiet);
    let mut plan = format!(
        "{} users in {} conversations of {} ({:?})",
        users.len(),
        groups.len(),
        group_size,
        groups[0].kind,
    );
    if !offline.is_empty() {
        plan.push_str(&format!(
            "; {} of them offline with a push subscription",
            offline.len()
        ));
    }
    Ok(Groups {
        members: ms,
        shared: sh,
        progress,
        plan,
    })
}

/// Whether `m` is one of its group's members that never connect.
fn is_offline(m: &Member) -> bool {
    let g = &m.group;
    g.members[g.members.len() - g.offline..].contains(&m.user)
}

/// Subscribes each offline member to push at `sink` (which also makes the
/// user, when its token was minted here, before anyone invites it).
async fn subscribe_offline(offline: &[Member], sink: &PushSink) -> Result<()> {
    use futures_util::{stream, StreamExt, TryStreamExt};
    stream::iter(offline)
        .map(|m| async move {
            let body = serde_json::json!({
                "endpoint": sink.endpoint(&m.user),
                "keys": {"p256dh": push_sink::P256DH, "auth": push_sink::AUTH},
            })
            .to_string();
            let path = "/v1/me/push-subscriptions";
            let (status, text) =
                crate::auth::http_as(m.addr, "POST", path, Some(&m.token), &body).await?;
            if status != 201 {
                bail!(
                    "subscribing {} to push: {status} {text} (does the node allow loopback \
                     push endpoints: notifications.push.allow_loopback_http?)",
                    m.user
                );
            }
            Ok(())
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

async fn client_inner(m: &Member, sh: &Shared, pad: Arc<str>) -> Result<()> {
    let Some((mut conn, mut phase, mut t)) = connect_and_join(m, sh, pad).await? else {
        return Ok(());
    };
    sh.ready.fetch_add(1, Ordering::SeqCst);
    if let Phase::Run { rate } = *phase.borrow_and_update() {
        t.rate = rate;
    }
    // A storm only happens in the reconnect scenario, which has its own client.
    let _ = traffic(&mut conn, &mut phase, &mut t, sh).await?;
    conn.close().await;
    Ok(())
}

/// Body padding so that `<send micros>:<padding>` is about `body_bytes` long.
pub(crate) fn padding(body_bytes: usize) -> Arc<str> {
    "x".repeat(body_bytes.saturating_sub(12)).into()
}

/// Runs one window at `rate`: `settle` seconds of load first, then `secs`
/// measured, then a pause while the window's stragglers arrive. The CPU
/// time of the server (`--pid`) and of the harness is read when the window
/// opens and when it closes.
pub(crate) async fn measure(
    sh: &Shared,
    rate: f64,
    settle: f64,
    secs: f64,
    senders: usize,
    slo_ms: f64,
) -> StepReport {
    sh.set_phase(Phase::Run { rate });
    tokio::time::sleep(Duration::from_secs_f64(settle)).await;
    let rate_env = ("CHAT_BENCH_RATE", format!("{rate}"));
    sh.run_hook(sh.hook_open.as_deref(), std::slice::from_ref(&rate_env))
        .await;
    let delivered = || sh.stats.totals.delivered.load(Ordering::Relaxed);
    let start = Mark::now(&sh.cpu_pids, delivered());
    let pushes_before = sh.pushes();
    sh.stats.open_window();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    sh.stats.close_window();
    let end = Mark::now(&sh.cpu_pids, delivered());
    let pushes = sh.pushes() - pushes_before;
    sh.set_phase(Phase::Run { rate: 0.0 });
    let deadline = Instant::now() + DRAIN_MAX;
    while !sh.stats.window_settled() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let w = sh.stats.take_window();
    sh.run_hook(
        sh.hook_settled.as_deref(),
        &[rate_env, ("CHAT_BENCH_DELIVERIES", w.delivered.to_string())],
    )
    .await;
    // An overloaded window leaves a backlog in the server's queues that
    // would land in the next window: wait until nothing moves any more.
    wait_quiet(sh).await;
    let mut step = StepReport::from_window(&w, rate, senders, slo_ms);
    let cpu = CpuWindow::between(&start, &end);
    if sh.push_sink.get().is_some() {
        step.add_pushes(pushes, cpu.secs);
    }
    step.add_cpu(
        &cpu,
        sh.server_cores,
        sh.harness_cores,
        sh.harness_bound_share,
    );
    step
}

/// Waits (at most [`QUIET_MAX`]) until no ack or delivery arrived for 300 ms.
async fn wait_quiet(sh: &Shared) {
    let t = &sh.stats.totals;
    let seen = || t.acked.load(Ordering::Relaxed) + t.delivered.load(Ordering::Relaxed);
    let deadline = Instant::now() + QUIET_MAX;
    let mut last = seen();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = seen();
        if now == last {
            return;
        }
        last = now;
    }
}

/// The rate schedule of a run: the fixed rates, then one window or a ramp
/// and its half-peak.
pub(crate) async fn drive(sh: &Shared, args: &RunArgs, report: &mut RunReport) {
    let senders = sh.clients;
    for (i, &rate) in args.fixed_rates.iter().enumerate() {
        // The run's first window also covers the warmup.
        let settle = if i == 0 {
            args.warmup.max(FIXED_SETTLE)
        } else {
            FIXED_SETTLE
        };
        let step = measure(sh, rate, settle, args.fixed_step, senders, args.slo_ms).await;
        report.fixed.push(step);
    }
    let warmed = !args.fixed_rates.is_empty();
    if args.ramp == 0 {
        if warmed {
            note_harness_bound(args, sh, report);
            return;
        }
        let step = measure(
            sh,
            args.rate,
            args.warmup,
            args.duration,
            senders,
            args.slo_ms,
        )
        .await;
        report.peak = step.counts().then(|| step.clone());
        report.steps.push(step);
        note_harness_bound(args, sh, report);
        return;
    }
    let mut rate = args.rate;
    for i in 0..args.ramp {
        let mut ok = false;
        for try_ in 0..args.step_tries {
            // The run's first window also covers the warmup.
            let settle = if i == 0 && try_ == 0 && !warmed {
                args.warmup.max(STEP_SETTLE)
            } else {
                STEP_SETTLE
            };
            let step = measure(sh, rate, settle, args.step, senders, args.slo_ms).await;
            ok = step.counts();
            report.steps.push(step);
            if ok {
                break;
            }
        }
        if !ok {
            break;
        }
        rate *= args.ramp_factor;
    }
    report.peak = report
        .steps
        .iter()
        .filter(|s| s.counts())
        .max_by(|a, b| a.deliveries_per_s.total_cmp(&b.deliveries_per_s))
        .cloned();
    note_harness_bound(args, sh, report);
    let last_bound = report.steps.last().is_some_and(|l| l.harness_bound);
    match &report.peak {
        None => report.notes.push(format!(
            "no ramp step kept up (p99 <= {} ms, >= 95% accepted, >= 99% delivered, no errors, \
             harness not the limit): start lower with --rate",
            args.slo_ms
        )),
        Some(p) if report.steps.last().is_some_and(|l| l.kept_up) && !last_bound => {
            report.notes.push(format!(
            "every ramp step kept up: the peak ({:.0} deliveries/s) is a lower bound; ramp further",
            p.deliveries_per_s
        ))
        }
        Some(p) if last_bound => report.notes.push(format!(
            "the ramp stopped where the harness became the limit: the peak ({:.0} deliveries/s) \
             is a lower bound of the server's",
            p.deliveries_per_s
        )),
        Some(_) => {}
    }
    if let (false, Some(p)) = (args.no_half_peak, &report.peak) {
        let half = measure(
            sh,
            p.rate_per_user / 2.0,
            2.0,
            args.duration,
            senders,
            args.slo_ms,
        )
        .await;
        report.half_peak = Some(half);
    }
}

/// Notes the windows in which the harness was the limit.
fn note_harness_bound(args: &RunArgs, sh: &Shared, report: &mut RunReport) {
    let bound: Vec<String> = report
        .fixed
        .iter()
        .chain(&report.steps)
        .filter(|s| s.harness_bound)
        .map(|s| format!("{:.2}", s.rate_per_user))
        .collect();
    if !bound.is_empty() {
        report.notes.push(format!(
            "harness-bound windows (the harness used more than {:.0}% of its {} core(s)) at \
             {} msgs/s per user: never counted as a peak; give the harness more cores",
            args.harness_bound_share * 100.0,
            sh.harness_cores,
            bound.join(", ")
        ));
    }
}

/// Runs `rooms`, `direct` or `burst`.
pub(crate) async fn run(args: &RunArgs, nodes: &[SocketAddr]) -> Result<RunReport> {
    let Groups {
        members: ms,
        shared: sh,
        progress,
        plan,
    } = start_groups(args, nodes, args.scenario).await?;
    let pad = padding(args.body_bytes);
    let t0 = std::time::Instant::now();
    let handles: Vec<_> = ms
        .into_iter()
        .map(|m| tokio::spawn(client(m, sh.clone(), pad.clone())))
        .collect();
    let mut report = base_report(args, nodes);
    let setup = sh
        .connect_then_set_up(
            &mut report,
            t0,
            "joined their conversations",
            args.setup_timeout,
        )
        .await;
    if setup.is_ok() {
        drive(&sh, args, &mut report).await;
    }
    sh.set_phase(Phase::Stop);
    finish(handles).await;
    progress.stop();
    setup?;
    report.errors = sh.stats.errors_by_code();
    report.first_error = sh.stats.first_error();
    report
        .notes
        .push(format!("{plan}; body {} bytes", args.body_bytes));
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inflight_ring_bounds_unanswered_sends() {
        let mut f = Inflight::new();
        for r in 1..=MAX_INFLIGHT as u64 {
            assert!(f.free(r));
            f.put(r, r * 10);
        }
        assert!(!f.free(MAX_INFLIGHT as u64 + 1), "slot of req 1 still busy");
        assert_eq!(f.take(1), Some(10));
        assert_eq!(f.take(1), None);
        assert!(f.free(MAX_INFLIGHT as u64 + 1));
    }

    #[test]
    fn groups_cover_every_user() {
        let users: Vec<String> = (0..25).map(|i| format!("u{i}")).collect();
        let g = plan_groups(ScenarioKind::Rooms, &users, 10, 0.0);
        assert_eq!(g.len(), 3);
        assert_eq!(g[2].members.len(), 5);
        let d = plan_groups(ScenarioKind::Direct, &users, 10, 0.0);
        assert_eq!(d.len(), 13);
        assert_eq!(d[0].kind, ConversationKind::Direct);
        assert_eq!(d[12].kind, ConversationKind::Group);
        assert_eq!(plan_groups(ScenarioKind::Burst, &users, 10, 0.0).len(), 1);
    }

    #[test]
    fn offline_members_are_the_last_of_each_group_and_never_the_creator() {
        let users: Vec<String> = (0..23).map(|i| format!("u{i}")).collect();
        let g = plan_groups(ScenarioKind::Rooms, &users, 10, 0.3);
        assert_eq!(
            g.iter().map(|g| g.offline).collect::<Vec<_>>(),
            vec![3, 3, 1]
        );
        let two = plan_groups(ScenarioKind::Rooms, &users[..2], 10, 0.8);
        assert_eq!(two[0].offline, 0, "a creator and one other stay online");
    }
}
