//! The daemon's own footprint: resident memory and CPU use, from `/proc/self`.

use std::time::Instant;

use serde::Serialize;

/// The daemon's own figures.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Own {
    /// Resident memory in bytes.
    pub rss: u64,
    /// CPU use since the previous reading, in percent of one core.
    pub cpu: f32,
    /// Bytes the daemon caused to be written to block devices since it started
    /// (`/proc/self/io` `write_bytes`; tmpfs is not a block device): 0 without `--state-dir`.
    pub written_bytes: u64,
}

/// Clock ticks per second of `/proc/*/stat` times. USER_HZ is 100 on every Linux architecture's
/// userspace ABI (the kernel converts), so no sysconf call is needed.
pub(super) const TICKS_PER_SEC: f64 = 100.0;

/// Turns CPU tick counters into a percentage between readings.
#[derive(Debug, Default)]
pub struct OwnMeter {
    /// The previous reading: when, and user+system ticks.
    prev: Option<(Instant, u64)>,
    /// Bytes written as last read from `/proc/self/io`, and how many readings ago.
    written: (u64, u32),
}

/// `/proc/self/io` is read every this many readings (a counter that stays 0 needs no 1 s view).
const IO_EVERY: u32 = 10;

impl OwnMeter {
    /// Reads `/proc/self`; `None` where it is unreadable.
    pub fn read(&mut self) -> Option<Own> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let rss = parse_rss_kib(&status)? * 1024;
        let ticks = parse_cpu_ticks(&stat)?;
        let now = Instant::now();
        let cpu = match self.prev.replace((now, ticks)) {
            Some((at, before)) => {
                let secs = now.saturating_duration_since(at).as_secs_f64();
                if secs > 0.0 {
                    (ticks.saturating_sub(before) as f64 / TICKS_PER_SEC / secs * 100.0) as f32
                } else {
                    0.0
                }
            }
            None => 0.0,
        };
        if self.written.1 % IO_EVERY == 0 {
            let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
            self.written.0 = parse_write_bytes(&io).unwrap_or(self.written.0);
        }
        self.written.1 = self.written.1.wrapping_add(1);
        Some(Own {
            rss,
            cpu: super::round1(cpu),
            written_bytes: self.written.0,
        })
    }
}

/// `VmRSS:` of `/proc/PID/status`, in KiB.
pub fn parse_rss_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// `write_bytes:` of `/proc/PID/io`.
pub fn parse_write_bytes(io: &str) -> Option<u64> {
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
}

/// utime + stime (fields 14 and 15) of `/proc/PID/stat`. The command name (field 2) may contain
/// spaces and parentheses, so fields are counted after its closing parenthesis.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_whitespace().skip(11);
    let utime: u64 = f.next()?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_formats_parse() {
        assert_eq!(
            parse_rss_kib("Name:\tx\nVmRSS:\t    2528 kB\nRssAnon: 280 kB\n"),
            Some(2528)
        );
        assert_eq!(parse_rss_kib("Name: x\n"), None);
        let stat = "1234 (edge mon) (x)) S 1 1234 1234 0 -1 4194560 100 0 0 0 57 13 0 0 20 0 3 0 1";
        assert_eq!(parse_cpu_ticks(stat), Some(70));
        assert_eq!(parse_cpu_ticks("garbage"), None);
        // The layout of /proc/self/io on this VM (`cat`, 2026-12-03), write_bytes made non-zero.
        let io = "rchar: 6976\nwchar: 0\nsyscr: 10\nsyscw: 0\nread_bytes: 0\nwrite_bytes: 4096\ncancelled_write_bytes: 0\n";
        assert_eq!(parse_write_bytes(io), Some(4096));
        assert_eq!(parse_write_bytes("rchar: 1\n"), None);
    }

    #[test]
    fn own_figures_are_read() {
        let mut m = OwnMeter::default();
        let a = m.read().unwrap();
        assert!(a.rss > 0);
        assert!(m.read().is_some());
    }
}
