//! The CPU breakdown (`cpu.breakdown`): where the CPU time of all cores went since the previous
//! sample, from the aggregate `cpu` line of `/proc/stat` (one small file a second).

use serde::Serialize;

/// Where `/proc/stat` is.
pub const PROC_STAT: &str = "/proc/stat";

/// Shares of all CPU time since the previous reading, in % (each 0-100; with idle they add up to
/// 100). `nice` time counts as `user`, as `top` shows it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Breakdown {
    /// Programs.
    pub user: f32,
    /// The kernel on their behalf.
    pub system: f32,
    /// Idle while waiting for I/O (an SD card that cannot keep up shows here).
    pub iowait: f32,
    /// Hardware interrupts.
    pub irq: f32,
    /// Software interrupts (network traffic, mostly).
    pub softirq: f32,
    /// Taken by the hypervisor for other guests (0 on a Pi).
    pub steal: f32,
}

/// The aggregate counters, in clock ticks: user, nice, system, idle, iowait, irq, softirq,
/// steal (guest time is already inside user and nice).
pub type Ticks = [u64; 8];

/// The aggregate `cpu` line of a `/proc/stat` text; `None` if it is missing or malformed.
pub fn parse(stat: &str) -> Option<Ticks> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let mut t = [0u64; 8];
    let mut fields = line.split_whitespace().skip(1);
    for (i, slot) in t.iter_mut().enumerate() {
        // Kernels before 2.6.11 had no steal field: zero, as they had none.
        match fields.next() {
            Some(v) => *slot = v.parse().ok()?,
            None if i >= 7 => {}
            None => return None,
        }
    }
    Some(t)
}

/// The breakdown between two readings; `None` when no time passed (or the counters went back,
/// as after a CPU was taken offline).
pub fn between(before: &Ticks, now: &Ticks) -> Option<Breakdown> {
    let mut d = [0u64; 8];
    for i in 0..8 {
        d[i] = now[i].checked_sub(before[i])?;
    }
    let total: u64 = d.iter().sum();
    if total == 0 {
        return None;
    }
    let pct = |ticks: u64| (1000.0 * ticks as f64 / total as f64).round() as f32 / 10.0;
    Some(Breakdown {
        user: pct(d[0] + d[1]),
        system: pct(d[2]),
        iowait: pct(d[4]),
        irq: pct(d[5]),
        softirq: pct(d[6]),
        steal: pct(d[7]),
    })
}

/// Keeps the previous reading for the next breakdown.
#[derive(Debug, Default)]
pub struct Meter {
    last: Option<Ticks>,
}

impl Meter {
    /// Reads `/proc/stat` (or `path`); the breakdown since the previous call, `None` on the first
    /// or if the file cannot be read.
    pub fn read(&mut self, path: &str) -> Option<Breakdown> {
        let now = parse(&std::fs::read_to_string(path).ok()?)?;
        let before = self.last.replace(now)?;
        between(&before, &now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // VM_A's `cpu` line was read on the development VM (Debian 12, 2 vCPUs, Linux 6.18); VM_B
    // is VM_A with a second's worth of ticks added by hand (a busy second: 212 ticks in all).
    const VM_A: &str = "cpu  336132 1895 22644 776037 2192 0 366 540 0 0\ncpu0 168066 947 11322 388018 1096 0 183 270 0 0\nintr 1 2 3\n";
    const VM_B: &str = "cpu  336281 1895 22669 776071 2194 0 367 541 0 0\ncpu0 168140 947 11334 388035 1097 0 183 270 0 0\nintr 1 2 3\n";

    #[test]
    fn the_aggregate_line_is_read_and_shares_add_up_with_idle() {
        let a = parse(VM_A).unwrap();
        assert_eq!(a, [336132, 1895, 22644, 776037, 2192, 0, 366, 540]);
        let b = between(&a, &parse(VM_B).unwrap()).unwrap();
        // 149 user + 25 system + 34 idle + 2 iowait + 1 softirq + 1 steal = 212 ticks.
        assert_eq!(
            b,
            Breakdown {
                user: 70.3,
                system: 11.8,
                iowait: 0.9,
                irq: 0.0,
                softirq: 0.5,
                steal: 0.5
            }
        );
        let busy = b.user + b.system + b.iowait + b.irq + b.softirq + b.steal;
        assert!(
            (busy - (100.0 - 100.0 * 34.0 / 212.0)).abs() < 0.3,
            "{busy}"
        );
    }

    #[test]
    fn bad_or_backward_readings_give_nothing() {
        assert_eq!(parse("intr 1 2\n"), None);
        assert_eq!(parse("cpu  1 2 x 4 5 6 7 8\n"), None);
        assert_eq!(parse("cpu  1 2 3\n"), None);
        // An old kernel without steal: seven fields.
        assert_eq!(parse("cpu  1 2 3 4 5 6 7\n").unwrap()[7], 0);
        let a = parse(VM_A).unwrap();
        assert_eq!(between(&a, &a), None, "no time passed");
        assert_eq!(
            between(&parse(VM_B).unwrap(), &a),
            None,
            "counters went back"
        );
        let mut m = Meter::default();
        assert_eq!(m.read("/nonexistent/stat"), None);
        assert_eq!(m.read(PROC_STAT), None, "the first reading only primes");
    }
}
