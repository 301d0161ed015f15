//! The process's memory: whether transparent huge pages may back it
//! (`node.huge_pages`).
//!
//! The allocator asks the kernel for huge pages for its arenas, and a huge
//! page counts whole (2 MiB) in the resident set once any byte of it is
//! touched. A node's memory is mostly many small allocations per idle
//! connection; with huge pages its resident memory per idle connection
//! measured 5.5 to 8.8 KiB over identical runs, without them 5.4 to 6.0,
//! and CPU per delivery did not move. So they are off unless asked for.

/// Turns transparent huge pages off for this process from now on: memory
/// faulted in later gets ordinary pages, whatever the allocator advised.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub fn refuse_huge_pages() -> std::io::Result<()> {
    // SAFETY: prctl with PR_SET_THP_DISABLE takes integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Elsewhere there is nothing to turn off.
#[cfg(not(target_os = "linux"))]
pub fn refuse_huge_pages() -> std::io::Result<()> {
    Ok(())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// What the kernel says of this process (`THP_enabled` in its status).
    fn huge_pages_allowed() -> bool {
        let status = std::fs::read_to_string("/proc/self/status").expect("status");
        let line = status
            .lines()
            .find(|l| l.starts_with("THP_enabled:"))
            .expect("a kernel that reports THP_enabled");
        line.split_whitespace().nth(1) == Some("1")
    }

    #[test]
    fn the_process_is_refused_huge_pages() {
        // A test process starts with them allowed (no one turned them off):
        // the check below can only pass through the call.
        assert!(
            huge_pages_allowed(),
            "huge pages already off before the call"
        );
        refuse_huge_pages().expect("prctl");
        assert!(!huge_pages_allowed());
    }
}
