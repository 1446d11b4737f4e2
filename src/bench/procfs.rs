//! Figures of a process (or a process and its descendants) from `/proc`.

use std::collections::HashMap;
use std::fs;
use std::time::Instant;

/// Resident memory of one process in KiB (`VmRSS`), 0 if it is gone.
pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// Proportional set size in KiB (`smaps_rollup`), 0 if unreadable.
pub fn pss_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|s| field_kib(&s, "Pss:"))
        .unwrap_or(0)
}

/// Bytes the process caused to be written to a block device (`/proc/PID/io` `write_bytes`;
/// a tmpfs write is not one), 0 if unreadable.
pub fn disk_write_bytes(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("write_bytes:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Open file descriptors.
pub fn fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn status_kib(pid: u32, key: &str) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| field_kib(&s, key))
        .unwrap_or(0)
}

fn field_kib(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// `(ppid, utime + stime + cutime + cstime)` in clock ticks from `/proc/PID/stat`.
fn stat(pid: u32) -> Option<(u32, u64)> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses; fields resume after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): ppid is field 4, utime..cstime are fields 14..17.
    let ppid = f.get(1)?.parse().ok()?;
    let ticks = f
        .get(11..15)?
        .iter()
        .filter_map(|v| v.parse::<u64>().ok())
        .sum();
    Some((ppid, ticks))
}

/// `pid` and every live descendant.
pub fn tree(pid: u32) -> Vec<u32> {
    let mut parent: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for e in dir.flatten() {
            if let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok())
                && let Some((pp, _)) = stat(p)
            {
                parent.entry(pp).or_default().push(p);
            }
        }
    }
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        if let Some(kids) = parent.get(&out[i]) {
            out.extend(kids);
        }
        i += 1;
    }
    out
}

/// RSS summed over the process tree, KiB.
pub fn tree_rss_kib(pid: u32) -> u64 {
    tree(pid).into_iter().map(rss_kib).sum()
}

/// CPU time of a process tree, sampled at a moment; two samples give a CPU %.
#[derive(Clone, Copy)]
pub struct CpuMark {
    ticks: u64,
    at: Instant,
}

impl CpuMark {
    /// CPU ticks of `pid`'s tree now. A child that exits moves its ticks into its parent's
    /// cutime/cstime, so the sum stays continuous.
    pub fn now(pid: u32) -> CpuMark {
        let ticks = tree(pid).into_iter().filter_map(stat).map(|(_, t)| t).sum();
        CpuMark {
            ticks,
            at: Instant::now(),
        }
    }

    /// Percent of one core used between `self` and `later`.
    pub fn percent_until(&self, later: &CpuMark) -> f64 {
        let secs = later.at.duration_since(self.at).as_secs_f64();
        if secs <= 0.0 {
            return 0.0;
        }
        let used = later.ticks.saturating_sub(self.ticks) as f64 / clock_ticks() as f64;
        100.0 * used / secs
    }
}

/// `sysconf(_SC_CLK_TCK)`: 100 on every Linux port that matters.
fn clock_ticks() -> u64 {
    100
}

/// One-line description of this machine for the report.
pub fn machine() -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name") || l.starts_with("Model"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mem_gib = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| field_kib(&s, "MemTotal:"))
        .map(|k| k as f64 / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cores} × {cpu}, {mem_gib:.0} GiB, Linux {}, {}",
        kernel.trim(),
        std::env::consts::ARCH
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_of_this_process_are_plausible() {
        let me = std::process::id();
        assert!(rss_kib(me) > 100);
        assert!(fds(me) >= 3);
        assert!(tree(me).contains(&me));
        assert_eq!(
            stat(me).map(|s| s.0),
            Some(std::os::unix::process::parent_id())
        );
        assert!(tree(std::os::unix::process::parent_id()).contains(&me));
        assert_eq!(rss_kib(u32::MAX), 0);
        assert_eq!(stat(u32::MAX), None);
    }
}
