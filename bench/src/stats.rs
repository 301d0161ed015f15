//! Measurements shared by every client task: counters and latency histograms
//! of the current measurement window, plus running totals for the progress
//! line.
//!
//! A window is a range of *send* times: a message counts (and its deliveries
//! and latencies count) only if it was sent inside the window, however late it
//! arrives. So closing a window, letting the stragglers arrive and then taking
//! the snapshot neither drops the slowest deliveries (which would flatter p99)
//! nor mixes in the previous step's backlog.
//!
//! Histograms are preallocated, sharded by client so tasks on different worker
//! threads rarely meet on a lock, and merged only when a snapshot is taken.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Histogram shards; a client records into shard `client index % SHARDS`.
pub const SHARDS: usize = 8;
/// Largest latency a histogram holds, in microseconds (longer ones saturate).
pub const MAX_LATENCY_US: u64 = 120_000_000;
/// Marks a window that is not open.
const CLOSED: u64 = u64::MAX;

static BASE: OnceLock<Instant> = OnceLock::new();

/// Microseconds since the process-wide base instant: the one clock every
/// sender and receiver of this process uses, so `receive - send` needs no
/// clock synchronisation.
pub fn now_us() -> u64 {
    let base = *BASE.get_or_init(Instant::now);
    base.elapsed().as_micros() as u64
}

/// An empty latency histogram, 1 µs to [`MAX_LATENCY_US`] at 3 significant
/// digits.
pub fn histogram() -> Histogram<u64> {
    // Bounds are constants that are valid for hdrhistogram.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking recorder cannot leave a histogram half-updated in a way
    // that matters for a benchmark; keep measuring.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Counters that only ever grow, for the progress line.
#[derive(Debug, Default)]
pub struct Totals {
    /// Messages sent.
    pub sent: AtomicU64,
    /// Sends acknowledged.
    pub acked: AtomicU64,
    /// Messages received by members.
    pub delivered: AtomicU64,
    /// Errors of any kind.
    pub errors: AtomicU64,
    /// Other operations (history pages, connects).
    pub ops: AtomicU64,
}

/// Counters of one window.
#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    acked: AtomicU64,
    expected: AtomicU64,
    delivered: AtomicU64,
    errors: AtomicU64,
    rate_limited: AtomicU64,
    backpressured: AtomicU64,
    ops: AtomicU64,
    items: AtomicU64,
}

/// Shared measurements of a run.
#[derive(Debug)]
pub struct Stats {
    start_us: AtomicU64,
    end_us: AtomicU64,
    window: Counters,
    latency: Vec<Mutex<Histogram<u64>>>,
    ack: Vec<Mutex<Histogram<u64>>>,
    /// Connect and catch-up times: rare events, one lock is enough.
    aux: Mutex<Histogram<u64>>,
    errors_by_code: Mutex<BTreeMap<String, u64>>,
    first_error: Mutex<Option<String>>,
    /// The worst send-to-receive latency (us) of the messages sent in each
    /// tenth of a second of the window: where a tail comes from is seen
    /// by when it happened (one stall, or a pause every second).
    worst: Vec<AtomicU64>,
    /// Running totals since the start.
    pub totals: Totals,
}

/// The tenths of a second [`Stats`] keeps the worst latency of: longer
/// windows keep their first ten minutes.
const WORST_SLOTS: usize = 6_000;
/// Microseconds per slot.
const SLOT_US: u64 = 100_000;

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

/// What a window measured.
#[derive(Debug, Clone)]
pub struct Window {
    /// Length in seconds.
    pub secs: f64,
    /// Messages sent.
    pub sent: u64,
    /// Sends acknowledged.
    pub acked: u64,
    /// Deliveries the acknowledged messages should cause.
    pub expected: u64,
    /// Deliveries seen.
    pub delivered: u64,
    /// Error replies (including rate limiting).
    pub errors: u64,
    /// `rate_limited` error replies.
    pub rate_limited: u64,
    /// Sends skipped because too many were unacknowledged.
    pub backpressured: u64,
    /// Operations (history pages).
    pub ops: u64,
    /// Items (messages in history pages).
    pub items: u64,
    /// End-to-end (or operation) latency.
    pub latency: Histogram<u64>,
    /// Send to acknowledgement latency.
    pub ack: Histogram<u64>,
    /// The worst end-to-end latency (us) of the messages sent in each tenth
    /// of a second of the window, in order (0: nothing delivered).
    pub worst_by_tenth: Vec<u64>,
}

/// Percentiles of a histogram, in milliseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest sample.
    pub max: f64,
}

impl Latency {
    /// Percentiles of `h` (microsecond samples) in milliseconds.
    pub fn of(h: &Histogram<u64>) -> Latency {
        let ms = |us: u64| us as f64 / 1000.0;
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            count: h.len(),
            mean: h.mean() / 1000.0,
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

impl Stats {
    /// Empty stats with a closed window.
    pub fn new() -> Stats {
        now_us();
        Stats {
            start_us: AtomicU64::new(CLOSED),
            end_us: AtomicU64::new(CLOSED),
            window: Counters::default(),
            latency: (0..SHARDS).map(|_| Mutex::new(histogram())).collect(),
            ack: (0..SHARDS).map(|_| Mutex::new(histogram())).collect(),
            aux: Mutex::new(histogram()),
            errors_by_code: Mutex::new(BTreeMap::new()),
            first_error: Mutex::new(None),
            worst: (0..WORST_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            totals: Totals::default(),
        }
    }

    /// Opens a window at now; returns its start.
    pub fn open_window(&self) -> u64 {
        let now = now_us();
        self.end_us.store(CLOSED, Ordering::SeqCst);
        self.start_us.store(now, Ordering::SeqCst);
        now
    }

    /// Closes the window at now: later sends no longer count, while the
    /// deliveries of earlier ones still do.
    pub fn close_window(&self) {
        self.end_us.store(now_us(), Ordering::SeqCst);
    }

    /// Whether a message sent at `sent_us` belongs to the window.
    pub fn in_window(&self, sent_us: u64) -> bool {
        self.window_start_for(sent_us).is_some()
    }

    /// The open window's start when `sent_us` belongs to it.
    fn window_start_for(&self, sent_us: u64) -> Option<u64> {
        let start = self.start_us.load(Ordering::Relaxed);
        (start != CLOSED && sent_us >= start && sent_us < self.end_us.load(Ordering::Relaxed))
            .then_some(start)
    }

    /// Whether the window has closed, and every message sent in it has been
    /// answered and delivered as often as expected.
    pub fn window_settled(&self) -> bool {
        let w = &self.window;
        let answered = w.acked.load(Ordering::Relaxed) + w.errors.load(Ordering::Relaxed);
        answered >= w.sent.load(Ordering::Relaxed)
            && w.delivered.load(Ordering::Relaxed) >= w.expected.load(Ordering::Relaxed)
    }

    /// Takes the window's numbers and resets it (closed) for the next one.
    pub fn take_window(&self) -> Window {
        let start = self.start_us.swap(CLOSED, Ordering::SeqCst);
        let end = self.end_us.swap(CLOSED, Ordering::SeqCst);
        let secs = if start == CLOSED {
            0.0
        } else {
            end.min(now_us()).saturating_sub(start) as f64 / 1e6
        };
        let take = |c: &AtomicU64| c.swap(0, Ordering::SeqCst);
        let merge = |shards: &[Mutex<Histogram<u64>>]| {
            let mut all = histogram();
            for s in shards {
                let mut h = lock(s);
                // Same bounds everywhere, so adding cannot fail.
                let _ = all.add(&*h);
                h.reset();
            }
            all
        };
        // A closed window's slots are those of its length; one taken open
        // (nothing does) ends now.
        let slots = match (start, end) {
            (CLOSED, _) => 0,
            (_, CLOSED) => now_us().saturating_sub(start).div_ceil(SLOT_US) as usize,
            _ => end.saturating_sub(start).div_ceil(SLOT_US) as usize,
        };
        // Only a window's own slots are ever written (a delivery counts
        // only for a message sent inside it), and taking them empties them.
        let worst_by_tenth = self.worst.iter().take(slots).map(take).collect();
        let w = &self.window;
        Window {
            secs,
            sent: take(&w.sent),
            acked: take(&w.acked),
            expected: take(&w.expected),
            delivered: take(&w.delivered),
            errors: take(&w.errors),
            rate_limited: take(&w.rate_limited),
            backpressured: take(&w.backpressured),
            ops: take(&w.ops),
            items: take(&w.items),
            latency: merge(&self.latency),
            ack: merge(&self.ack),
            worst_by_tenth,
        }
    }

    /// p99 of the open window so far, in milliseconds (for the progress line).
    pub fn peek_p99_ms(&self) -> Option<f64> {
        let mut all = histogram();
        for s in &self.latency {
            let _ = all.add(&*lock(s));
        }
        (!all.is_empty()).then(|| all.value_at_quantile(0.99) as f64 / 1000.0)
    }

    /// A message was sent at `sent_us`.
    pub fn sent(&self, sent_us: u64) {
        self.totals.sent.fetch_add(1, Ordering::Relaxed);
        if self.in_window(sent_us) {
            self.window.sent.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A send was skipped: too many of the client's sends are unanswered.
    pub fn backpressured(&self, at_us: u64) {
        if self.in_window(at_us) {
            self.window.backpressured.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The send of `sent_us` was acknowledged; its conversation has
    /// `fanout` other members who should receive it.
    pub fn acked(&self, shard: usize, sent_us: u64, now: u64, fanout: u64) {
        self.totals.acked.fetch_add(1, Ordering::Relaxed);
        if self.in_window(sent_us) {
            self.window.acked.fetch_add(1, Ordering::Relaxed);
            self.window.expected.fetch_add(fanout, Ordering::Relaxed);
            lock(&self.ack[shard % SHARDS]).saturating_record(now.saturating_sub(sent_us));
        }
    }

    /// A member received a message sent at `sent_us`.
    pub fn delivered(&self, shard: usize, sent_us: u64, now: u64) {
        self.totals.delivered.fetch_add(1, Ordering::Relaxed);
        if let Some(start) = self.window_start_for(sent_us) {
            self.window.delivered.fetch_add(1, Ordering::Relaxed);
            let us = now.saturating_sub(sent_us);
            lock(&self.latency[shard % SHARDS]).saturating_record(us);
            if let Some(slot) = self
                .worst
                .get((sent_us.saturating_sub(start) / SLOT_US) as usize)
            {
                slot.fetch_max(us, Ordering::Relaxed);
            }
        }
    }

    /// An operation started at `started_us` completed with `items` items
    /// (a history page); its latency goes to the main histogram.
    pub fn op(&self, shard: usize, started_us: u64, now: u64, items: u64) {
        self.totals.ops.fetch_add(1, Ordering::Relaxed);
        if self.in_window(started_us) {
            self.window.ops.fetch_add(1, Ordering::Relaxed);
            self.window.items.fetch_add(items, Ordering::Relaxed);
            lock(&self.latency[shard % SHARDS]).saturating_record(now.saturating_sub(started_us));
        }
    }

    /// An error reply or failure; `at_us` decides its window.
    pub fn error(&self, code: &str, detail: &str, at_us: u64) {
        self.totals.errors.fetch_add(1, Ordering::Relaxed);
        if self.in_window(at_us) {
            self.window.errors.fetch_add(1, Ordering::Relaxed);
            if code == "rate_limited" {
                self.window.rate_limited.fetch_add(1, Ordering::Relaxed);
            }
        }
        *lock(&self.errors_by_code)
            .entry(code.to_string())
            .or_insert(0) += 1;
        let mut first = lock(&self.first_error);
        if first.is_none() {
            *first = Some(format!("{code}: {detail}"));
        }
    }

    /// Records a connect or catch-up duration.
    pub fn aux(&self, us: u64) {
        lock(&self.aux).saturating_record(us);
    }

    /// Takes the connect or catch-up durations recorded so far.
    pub fn take_aux(&self) -> Histogram<u64> {
        let mut h = lock(&self.aux);
        let out = h.clone();
        h.reset();
        out
    }

    /// Errors by code over the whole run.
    pub fn errors_by_code(&self) -> BTreeMap<String, u64> {
        lock(&self.errors_by_code).clone()
    }

    /// The first error seen, with its detail.
    pub fn first_error(&self) -> Option<String> {
        lock(&self.first_error).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_counts_by_send_time() {
        let s = Stats::new();
        let before = now_us();
        std::thread::sleep(std::time::Duration::from_millis(2));
        s.open_window();
        let inside = now_us();
        s.sent(before);
        s.sent(inside);
        s.acked(0, inside, inside + 500, 3);
        s.delivered(1, inside, inside + 1500);
        s.delivered(1, before, inside + 1500);
        s.close_window();
        assert!(!s.window_settled(), "3 deliveries expected, 1 seen");
        let w = s.take_window();
        assert_eq!((w.sent, w.acked, w.expected, w.delivered), (1, 1, 3, 1));
        let lat = Latency::of(&w.latency);
        assert_eq!(lat.count, 1);
        assert!((lat.p50 - 1.5).abs() < 0.01);
        assert!(!s.in_window(now_us()), "window closed after take");
    }

    /// Each tenth of a second of the window keeps the worst latency of the
    /// messages sent in it, and a window's slots start empty.
    #[test]
    fn the_worst_latency_by_tenth_of_a_second_of_sending() {
        let s = Stats::new();
        let start = s.open_window();
        s.delivered(0, start + 10, start + 2_010);
        s.delivered(1, start + 20, start + 9_020);
        s.delivered(0, start + 250_000, start + 251_000);
        s.end_us.store(start + 300_000, Ordering::SeqCst);
        assert_eq!(s.take_window().worst_by_tenth, vec![9_000, 0, 1_000]);
        // The next window's slots start empty.
        let start = s.open_window();
        s.delivered(0, start + 5, start + 505);
        s.end_us.store(start + 100_000, Ordering::SeqCst);
        assert_eq!(s.take_window().worst_by_tenth, vec![500]);
    }
}
