//! Network interfaces: bytes per second in and out (from counter deltas between samples) and totals.

use std::collections::HashMap;
use std::time::Instant;

use serde::Serialize;

/// One interface.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Interface {
    /// Interface name (`eth0`, `wlan0`).
    pub name: String,
    /// Bytes received per second since the previous sample; `null` on the first sample.
    pub rx_per_s: Option<u64>,
    /// Bytes sent per second since the previous sample; `null` on the first sample.
    pub tx_per_s: Option<u64>,
    /// Bytes received since boot.
    pub rx_total: u64,
    /// Bytes sent since boot.
    pub tx_total: u64,
}

/// Interfaces that are not the host's own links (loopback, containers, bridges, tunnels): not
/// reported unless `--net-include` names them, so that a Docker host's every `veth*` does not
/// crowd out its Ethernet and Wi-Fi.
pub const VIRTUAL: [&str; 12] = [
    "lo", "ifb*", "veth*", "docker*", "br-*", "virbr*", "cni*", "podman*", "flannel*", "cali*",
    "vxlan*", "dummy*",
];

/// Which interfaces a sample reports (and so `/api/system`, the history and `/metrics`): all but
/// `VIRTUAL` and the `--net-exclude` globs, except those a `--net-include` glob names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    include: Vec<String>,
    exclude: Vec<String>,
}

impl Filter {
    /// A filter with these `--net-include` and `--net-exclude` globs.
    pub fn new(include: Vec<String>, exclude: Vec<String>) -> Filter {
        Filter { include, exclude }
    }

    /// Whether interface `name` is reported.
    pub fn keeps(&self, name: &str) -> bool {
        let named = |globs: &[String]| globs.iter().any(|g| glob(g, name));
        named(&self.include) || !(VIRTUAL.iter().any(|g| glob(g, name)) || named(&self.exclude))
    }
}

/// Whether `name` matches `pattern`, where `*` stands for any run of characters (none too) and
/// `?` for one; everything else is itself. Linear: one backtrack point, the last `*`.
pub fn glob(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while j < n.len() {
        if i < p.len() && (p[i] == '?' || p[i] == n[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some((i, j));
            i += 1;
        } else if let Some((si, sj)) = star {
            // The last `*` takes one more character.
            star = Some((si, sj + 1));
            i = si + 1;
            j = sj + 1;
        } else {
            return false;
        }
    }
    p[i..].iter().all(|c| *c == '*')
}

/// Turns counter totals into rates; remembers the previous reading.
#[derive(Debug, Default)]
pub struct Rates {
    /// The previous reading.
    prev: Option<(Instant, Totals)>,
}

/// Each interface's (rx, tx) byte totals at one reading.
type Totals = HashMap<String, (u64, u64)>;

/// A gap longer than this starts over instead of averaging: readings come every second while
/// someone watches and every 10 s otherwise (for the history), so this is only a long stall.
const MAX_GAP_SECS: f64 = 15.0;

impl Rates {
    /// Computes rates for `totals` (name, rx total, tx total) read at `now`.
    pub fn update(&mut self, now: Instant, totals: Vec<(String, u64, u64)>) -> Vec<Interface> {
        let prev = self.prev.take().filter(|(at, _)| {
            let gap = now.saturating_duration_since(*at).as_secs_f64();
            gap > 0.0 && gap <= MAX_GAP_SECS
        });
        let rate = |now_total: u64, before: u64, at: Instant| {
            let secs = now.saturating_duration_since(at).as_secs_f64();
            // A counter that went backwards (interface re-created) gives no rate, not a huge one.
            now_total
                .checked_sub(before)
                .map(|d| (d as f64 / secs).round() as u64)
        };
        let out = totals
            .iter()
            .map(|(name, rx, tx)| {
                let before = prev
                    .as_ref()
                    .and_then(|(at, m)| m.get(name).map(|p| (*at, *p)));
                Interface {
                    name: name.clone(),
                    rx_per_s: before.and_then(|(at, (r, _))| rate(*rx, r, at)),
                    tx_per_s: before.and_then(|(at, (_, t))| rate(*tx, t, at)),
                    rx_total: *rx,
                    tx_total: *tx,
                }
            })
            .collect();
        self.prev = Some((
            now,
            totals.into_iter().map(|(n, r, t)| (n, (r, t))).collect(),
        ));
        out
    }
}

/// Where the kernel lists every interface's counters, one line each.
pub const PROC_NET_DEV: &str = "/proc/net/dev";

/// Each interface's (name, received bytes, sent bytes) from `path` (`/proc/net/dev`), sorted by
/// name; empty if unreadable.
pub fn read_totals(path: &std::path::Path) -> Vec<(String, u64, u64)> {
    std::fs::read_to_string(path)
        .map(|t| parse_totals(&t))
        .unwrap_or_default()
}

/// `/proc/net/dev`'s text: after two header lines, `NAME: rx_bytes rx_packets … (8 receive
/// fields) tx_bytes …`. Malformed lines are skipped.
pub fn parse_totals(text: &str) -> Vec<(String, u64, u64)> {
    let mut v: Vec<_> = text
        .lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let f: Vec<u64> = rest
                .split_whitespace()
                .map(|x| x.parse().ok())
                .collect::<Option<_>>()?;
            Some((name.trim().to_string(), *f.first()?, *f.get(8)?))
        })
        .collect();
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn globs_match_whole_names_with_star_and_question_mark() {
        for (p, n, want) in [
            ("veth*", "veth1a2b", true),
            ("veth*", "veth", true),
            ("veth*", "aveth1", false),
            ("lo", "lo", true),
            ("lo", "lo0", false),
            ("e?h0", "eth0", true),
            ("e?h0", "eh0", false),
            ("*", "", true),
            ("", "", true),
            ("", "x", false),
            ("*0", "eth0", true),
            ("*0", "eth01", false),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYc0", false),
            ("wl*", "wlan0", true),
        ] {
            assert_eq!(glob(p, n), want, "{p} ~ {n}");
        }
        // No blow-up on a hostile pattern.
        assert!(!glob(&"*a".repeat(30), &"a".repeat(29)));
    }

    #[test]
    fn virtual_interfaces_are_hidden_unless_included_and_excludes_add_to_them() {
        let default = Filter::default();
        for name in [
            "lo", "veth9f3", "docker0", "br-1a2b", "virbr0", "cni0", "podman1",
        ] {
            assert!(!default.keeps(name), "{name}");
        }
        for name in ["eth0", "wlan0", "enp3s0", "eth0.100", "bond0", "tailscale0"] {
            assert!(default.keeps(name), "{name}");
        }
        let f = Filter::new(
            vec!["lo".into(), "docker*".into()],
            vec!["tailscale*".into()],
        );
        assert!(f.keeps("lo") && f.keeps("docker0") && f.keeps("eth0"));
        assert!(!f.keeps("tailscale0") && !f.keeps("veth1"));
        // An include wins over an exclude that names the same interface.
        let f = Filter::new(vec!["wlan0".into()], vec!["wl*".into()]);
        assert!(f.keeps("wlan0") && !f.keeps("wlan1"));
    }

    #[test]
    fn proc_net_dev_is_read_by_field_and_malformed_lines_are_skipped() {
        let text = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:  123456     100    0    0    0     0          0         0   123456     100    0    0    0     0       0          0
  eth0: 9000 10 1 2 0 0 0 0 700 7 0 0 0 0 0 0
 wlan0: garbage
 eth0.100: 5 1 0 0 0 0 0 0 6 1 0 0 0 0 0 0
";
        assert_eq!(
            parse_totals(text),
            [
                ("eth0".to_string(), 9000, 700),
                ("eth0.100".to_string(), 5, 6),
                ("lo".to_string(), 123456, 123456)
            ]
        );
        assert!(!read_totals(std::path::Path::new(PROC_NET_DEV)).is_empty());
    }

    #[test]
    fn rates_come_from_deltas_over_elapsed_time() {
        let mut r = Rates::default();
        let t0 = Instant::now();
        let first = r.update(t0, vec![("eth0".into(), 1000, 500)]);
        assert_eq!(first[0].rx_per_s, None, "no rate without a previous sample");
        assert_eq!(first[0].rx_total, 1000);
        let second = r.update(
            t0 + Duration::from_secs(2),
            vec![("eth0".into(), 5000, 700)],
        );
        assert_eq!(second[0].rx_per_s, Some(2000));
        assert_eq!(second[0].tx_per_s, Some(100));
    }

    #[test]
    fn a_long_gap_or_a_reset_counter_gives_no_rate() {
        let mut r = Rates::default();
        let t0 = Instant::now();
        r.update(t0, vec![("eth0".into(), 1000, 500)]);
        let after_gap = r.update(
            t0 + Duration::from_secs(60),
            vec![("eth0".into(), 9000, 900)],
        );
        assert_eq!(after_gap[0].rx_per_s, None);
        let reset = r.update(t0 + Duration::from_secs(61), vec![("eth0".into(), 10, 10)]);
        assert_eq!(reset[0].rx_per_s, None);
        let new_iface = r.update(
            t0 + Duration::from_secs(62),
            vec![("eth0".into(), 20, 20), ("wlan0".into(), 5, 5)],
        );
        assert_eq!(new_iface[0].rx_per_s, Some(10));
        assert_eq!(new_iface[1].rx_per_s, None);
    }
}
