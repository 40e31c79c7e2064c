//! CPU time and peak memory of this process and of a child, for the
//! benchmarks' per-saga figures: what a saga costs the worker itself,
//! apart from the provider it calls. Read from Linux's `/proc`; elsewhere
//! the figures are zero.

use std::time::Duration;

/// What a process has used so far.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// User and system CPU time, all threads.
    pub cpu: Duration,
    /// The most resident memory it has held at once, in bytes.
    pub peak_rss_bytes: u64,
}

/// `/proc` counts CPU time in USER_HZ ticks, which Linux fixes at 100 per
/// second for every architecture it reports them on.
const TICKS_PER_SEC: u64 = 100;

/// This process's [`Usage`].
pub fn own() -> Usage {
    let peak_rss_bytes = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
            let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kb * 1024)
        })
        .unwrap_or(0);
    Usage {
        cpu: cpu_at("/proc/self/stat").unwrap_or_default(),
        peak_rss_bytes,
    }
}

/// The CPU time process `pid` has used; `None` where there is no `/proc`
/// or the process is gone.
pub fn cpu_of(pid: u32) -> Option<Duration> {
    cpu_at(&format!("/proc/{pid}/stat"))
}

fn cpu_at(path: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name is in parentheses and may hold spaces: count
    // fields after its closing one (utime and stime are fields 14, 15).
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 1000 / TICKS_PER_SEC))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_usage_grows_with_work_and_another_process_is_measured() {
        let before = own();
        let mut x = 0u64;
        let began = std::time::Instant::now();
        while began.elapsed() < Duration::from_millis(100) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let after = own();
        assert!(after.cpu > before.cpu, "{before:?} -> {after:?}");
        assert!(after.peak_rss_bytes > 1024 * 1024, "{after:?}");
        let me = cpu_of(std::process::id()).expect("/proc/PID/stat");
        assert!(me >= Duration::from_millis(50), "{me:?}");
        assert_eq!(cpu_of(u32::MAX), None);
    }
}
