//! A latency distribution that can be read as "the last few seconds": the
//! Prometheus histogram is cumulative since the start, which is what
//! Prometheus wants and not what a live console shows. Buckets are atomics,
//! four per doubling (19 % apart), from 1 µs to about 16 s; a reader keeps
//! the previous counts and takes the percentile of the difference.

use std::sync::atomic::{AtomicU64, Ordering};

/// Buckets per doubling of the latency.
const PER_OCTAVE: f64 = 4.0;
/// Bucket `i` holds latencies up to `2^((i+1)/4)` µs; the last holds the rest.
const BUCKETS: usize = 96;

/// Counts of latencies by bucket.
pub struct LatencyWindow {
    counts: Box<[AtomicU64; BUCKETS]>,
}

impl Default for LatencyWindow {
    fn default() -> Self {
        LatencyWindow {
            counts: Box::new(std::array::from_fn(|_| AtomicU64::new(0))),
        }
    }
}

/// A copy of the counts at one moment.
#[derive(Clone)]
pub struct WindowSnapshot([u64; BUCKETS]);

impl Default for WindowSnapshot {
    fn default() -> Self {
        WindowSnapshot([0; BUCKETS])
    }
}

impl LatencyWindow {
    /// Counts one latency.
    pub fn observe(&self, secs: f64) {
        let micros = (secs * 1e6).max(1.0);
        let i = ((micros.log2() * PER_OCTAVE) as usize).min(BUCKETS - 1);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
    }

    /// The counts now.
    pub fn snapshot(&self) -> WindowSnapshot {
        WindowSnapshot(std::array::from_fn(|i| {
            self.counts[i].load(Ordering::Relaxed)
        }))
    }
}

impl WindowSnapshot {
    /// The `q` quantile (0..1) in seconds of what was observed between
    /// `earlier` and this snapshot (the bucket's upper bound); `None` when
    /// nothing was.
    pub fn quantile_since(&self, earlier: &WindowSnapshot, q: f64) -> Option<f64> {
        let diff: Vec<u64> = (0..BUCKETS)
            .map(|i| self.0[i].saturating_sub(earlier.0[i]))
            .collect();
        let total: u64 = diff.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in diff.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let upper_us = 2f64.powf((i + 1) as f64 / PER_OCTAVE);
                return Some(upper_us / 1e6);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quantile_of_a_window_is_within_a_bucket_of_the_truth() {
        let w = LatencyWindow::default();
        let before = w.snapshot();
        // 990 fast sends, 10 slow ones: p99 is fast, p99.9 is slow.
        for _ in 0..990 {
            w.observe(0.001);
        }
        for _ in 0..10 {
            w.observe(0.2);
        }
        let now = w.snapshot();
        let p99 = now.quantile_since(&before, 0.99).unwrap();
        assert!((0.001..0.0012).contains(&p99), "p99 {p99}");
        let p999 = now.quantile_since(&before, 0.999).unwrap();
        assert!((0.2..0.24).contains(&p999), "p99.9 {p999}");
        // What came before the earlier snapshot does not count.
        assert_eq!(now.quantile_since(&now, 0.99), None);
        w.observe(0.05);
        let later = w.snapshot().quantile_since(&now, 0.99).unwrap();
        assert!((0.05..0.06).contains(&later), "{later}");
    }
}
