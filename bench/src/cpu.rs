//! CPU time over a measured window, from /proc: the server's (every process
//! given with `--pid`, whole process: utime + stime of all its threads) and
//! the harness's own. Read at the start and at the end of the window only,
//! so connecting, setting up and warming up are not in it.
//!
//! The server's CPU per delivery is a figure the harness cannot distort: it
//! does not depend on how fast the harness reads or whether a step kept up,
//! only on what the server spent for the deliveries it made. The harness's
//! own CPU says whether the window measured the server at all: a harness
//! near the limit of its cores delays sends and reads, and the window is
//! marked `harness_bound`.

use std::time::Instant;

use crate::sys;

/// CPU counters at one instant.
#[derive(Debug, Clone)]
pub struct Mark {
    at: Instant,
    server: Vec<Option<sys::CpuTimes>>,
    harness: Option<f64>,
    delivered: u64,
}

impl Mark {
    /// Reads the CPU time of `pids` and of this process now; `delivered`
    /// is the harness's running count of deliveries received.
    pub fn now(pids: &[u32], delivered: u64) -> Mark {
        Mark {
            at: Instant::now(),
            server: pids.iter().map(|&p| sys::cpu_times(p)).collect(),
            harness: sys::own_cpu_seconds(),
            delivered,
        }
    }
}

/// What was spent between two [`Mark`]s.
#[derive(Debug, Clone, Default)]
pub struct CpuWindow {
    /// Seconds between the marks.
    pub secs: f64,
    /// Server CPU seconds, all processes together; `None` without `--pid`
    /// or when one of them could not be read at either end.
    pub server_cpu_s: Option<f64>,
    /// Server CPU seconds of each process, in `--pid` order.
    pub server_cpu_s_by_pid: Vec<f64>,
    /// The part of `server_cpu_s` spent in the kernel.
    pub server_kernel_s: Option<f64>,
    /// The harness's CPU seconds.
    pub harness_cpu_s: Option<f64>,
    /// Deliveries the harness received between the marks.
    pub deliveries: u64,
}

impl CpuWindow {
    /// The use between `a` and a later `b`.
    pub fn between(a: &Mark, b: &Mark) -> CpuWindow {
        let by_pid: Option<Vec<sys::CpuTimes>> = a
            .server
            .iter()
            .zip(&b.server)
            .map(|(x, y)| {
                let (x, y) = (x.as_ref()?, y.as_ref()?);
                Some(sys::CpuTimes {
                    total: (y.total - x.total).max(0.0),
                    kernel: (y.kernel - x.kernel).max(0.0),
                })
            })
            .collect();
        let by_pid = by_pid.filter(|v| !v.is_empty());
        CpuWindow {
            secs: b.at.duration_since(a.at).as_secs_f64(),
            server_cpu_s: by_pid.as_ref().map(|v| v.iter().map(|t| t.total).sum()),
            server_kernel_s: by_pid.as_ref().map(|v| v.iter().map(|t| t.kernel).sum()),
            server_cpu_s_by_pid: by_pid.unwrap_or_default().iter().map(|t| t.total).collect(),
            harness_cpu_s: a.harness.zip(b.harness).map(|(x, y)| (y - x).max(0.0)),
            deliveries: b.delivered.saturating_sub(a.delivered),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_of_this_process() {
        let me = std::process::id();
        let a = Mark::now(&[me], 10);
        let t0 = Instant::now();
        let mut x = 1u64;
        while t0.elapsed().as_millis() < 60 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        assert_ne!(x, 0);
        let b = Mark::now(&[me], 30);
        let w = CpuWindow::between(&a, &b);
        assert_eq!(w.deliveries, 20);
        assert!(w.secs >= 0.06);
        assert!(w.harness_cpu_s.unwrap() > 0.0);
        assert_eq!(w.server_cpu_s_by_pid.len(), 1);
        assert!(w.server_cpu_s.unwrap() > 0.0);
        let none = CpuWindow::between(&Mark::now(&[], 0), &Mark::now(&[], 0));
        assert!(none.server_cpu_s.is_none());
        let gone = CpuWindow::between(&Mark::now(&[u32::MAX], 0), &Mark::now(&[u32::MAX], 0));
        assert!(gone.server_cpu_s.is_none());
    }
}
