//! What the harness reads from Linux's /proc: a server's resident memory and
//! CPU time, this process's CPU time and its open-file limit.

use std::sync::OnceLock;

use anyhow::{Context, Result};

/// Resident set size of process `pid`, in bytes (`VmRSS` of /proc/PID/status).
pub fn rss_bytes(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading {path}: is --pid the server's process id?"))?;
    parse_status_kb(&text, "VmRSS:")
        .map(|kb| kb * 1024)
        .with_context(|| format!("no VmRSS in {path}"))
}

fn parse_status_kb(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// Resident set size of several processes together (a server made of
/// several processes), in bytes.
pub fn rss_bytes_of(pids: &[u32]) -> Result<u64> {
    pids.iter().map(|&p| rss_bytes(p)).sum()
}

/// Clock ticks per second of /proc's CPU times (`getconf CLK_TCK`; 100 on
/// every Linux the harness has met).
pub fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|t| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// CPU seconds (user + system, every thread, not its children) process
/// `pid` has used so far: `utime` + `stime` of /proc/PID/stat. `None` when
/// the process is gone.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    cpu_times(pid).map(|t| t.total)
}

/// CPU seconds a process has used so far, and the part of them in the kernel.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuTimes {
    /// User and system (`utime + stime`).
    pub total: f64,
    /// System only (`stime`): system calls, and the network stack's work
    /// that runs in the process's time (loopback delivery included).
    pub kernel: f64,
}

/// [`cpu_seconds`] with its kernel part.
pub fn cpu_times(pid: u32) -> Option<CpuTimes> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (utime, stime) = parse_stat_fields(&text)?;
    let hz = clock_ticks();
    Some(CpuTimes {
        total: (utime + stime) as f64 / hz,
        kernel: stime as f64 / hz,
    })
}

/// CPU seconds this process has used so far.
pub fn own_cpu_seconds() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/self/stat").ok()?;
    parse_stat_ticks(&text).map(|t| t as f64 / clock_ticks())
}

/// `utime + stime` (fields 14 and 15) of a /proc/PID/stat line. The command
/// name (field 2) is in parentheses and may hold spaces: fields are counted
/// after its closing parenthesis.
fn parse_stat_ticks(text: &str) -> Option<u64> {
    parse_stat_fields(text).map(|(u, s)| u + s)
}

/// `utime` and `stime` of a /proc/PID/stat line.
fn parse_stat_fields(text: &str) -> Option<(u64, u64)> {
    let rest = &text[text.rfind(')')? + 1..];
    // After the name: field 3 (state) is the first; utime is field 14.
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime, stime))
}

/// The soft limit of open files of this process, if /proc says.
pub fn open_files_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3).and_then(|v| v.parse().ok())
}

/// Fails early, with the fix, when `sockets` connections cannot fit under
/// the open-file limit: better than thousands of EMFILE errors mid-run.
pub fn check_open_files(sockets: usize) -> Result<()> {
    let Some(limit) = open_files_limit() else {
        return Ok(());
    };
    let needed = sockets as u64 + 64;
    if needed > limit {
        anyhow::bail!(
            "{sockets} connections need about {needed} open files but the limit is {limit}: \
             raise it first (`ulimit -n {}`; scripts/bench.sh does)",
            needed.next_power_of_two()
        );
    }
    Ok(())
}

/// Cores the machine has, whatever this process's CPU affinity.
pub fn machine_cores() -> usize {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|s| {
            s.trim()
                .split(',')
                .map(|r| match r.split_once('-') {
                    Some((a, b)) => Some(b.parse::<usize>().ok()? - a.parse::<usize>().ok()? + 1),
                    None => r.parse::<usize>().ok().map(|_| 1),
                })
                .sum::<Option<usize>>()
        })
        .unwrap_or_else(cores)
}

/// Cores this process may run on.
pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_rss() {
        let rss = rss_bytes(std::process::id()).unwrap();
        assert!(rss > 0);
        assert_eq!(parse_status_kb("VmRSS:\t  1234 kB\n", "VmRSS:"), Some(1234));
        assert!(open_files_limit().is_some());
    }

    #[test]
    fn reads_cpu_times() {
        let line = "1234 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 250 30 0 0 20 0 4 0";
        assert_eq!(parse_stat_ticks(line), Some(280));
        assert_eq!(parse_stat_fields(line), Some((250, 30)));
        // Burn a little CPU so that at least one tick shows.
        let mut x = 0u64;
        let t0 = std::time::Instant::now();
        while t0.elapsed() < std::time::Duration::from_millis(30) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        assert!(x != 1);
        assert!(own_cpu_seconds().unwrap() > 0.0);
        assert!(cpu_seconds(std::process::id()).unwrap() > 0.0);
        assert!(cpu_seconds(u32::MAX).is_none());
        let t = cpu_times(std::process::id()).unwrap();
        assert!(t.kernel <= t.total && t.total > 0.0);
    }
}
