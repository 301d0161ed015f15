//! What the harness reads from Linux's /proc: a server's resident memory and
//! this process's open-file limit.

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
}
