//! Network interfaces: bytes, errors and drops per second (from counter deltas between samples),
//! totals, and the Wi-Fi link where there is one.

use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use super::counters::{Deltas, tenths, whole};

/// One interface.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Interface {
    /// Interface name (`eth0`, `wlan0`).
    pub name: String,
    /// Bytes received per second since the previous sample; `null` on the first sample.
    pub rx_per_s: Option<u64>,
    /// Bytes sent per second since the previous sample; `null` on the first sample.
    pub tx_per_s: Option<u64>,
    /// Receive and transmit errors per second since the previous sample; `null` on the first.
    pub errors_per_s: Option<f32>,
    /// Packets dropped (in and out) per second since the previous sample; `null` on the first.
    pub drops_per_s: Option<f32>,
    /// Link quality and signal of a wireless interface; `null` for a wired one.
    pub wifi: Option<Wifi>,
    /// Bytes received since boot.
    pub rx_total: u64,
    /// Bytes sent since boot.
    pub tx_total: u64,
    /// Errors since boot.
    pub errors_total: u64,
    /// Drops since boot.
    pub drops_total: u64,
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
    /// rx bytes, tx bytes, errors, drops at the previous reading.
    prev: Deltas<4>,
}

impl Rates {
    /// Computes rates for `totals` read at `now`; `wifi` gives an interface's signal, if any.
    pub fn update(
        &mut self,
        now: Instant,
        totals: Vec<Counters>,
        wifi: &[(String, Wifi)],
    ) -> Vec<Interface> {
        let readings: Vec<(String, [u64; 4])> = totals
            .iter()
            .map(|c| (c.name.clone(), [c.rx, c.tx, c.errors, c.drops]))
            .collect();
        let rates = self.prev.update(now, &readings);
        totals
            .into_iter()
            .zip(rates)
            .map(|(c, r)| Interface {
                wifi: wifi.iter().find(|(n, _)| *n == c.name).map(|(_, w)| *w),
                rx_per_s: whole(r[0]),
                tx_per_s: whole(r[1]),
                errors_per_s: tenths(r[2]),
                drops_per_s: tenths(r[3]),
                rx_total: c.rx,
                tx_total: c.tx,
                errors_total: c.errors,
                drops_total: c.drops,
                name: c.name,
            })
            .collect()
    }
}

/// Where the kernel lists every interface's counters, one line each.
pub const PROC_NET_DEV: &str = "/proc/net/dev";
/// Where the kernel lists each wireless interface's link quality and signal.
pub const PROC_NET_WIRELESS: &str = "/proc/net/wireless";

/// One interface's counters since boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counters {
    /// Interface name.
    pub name: String,
    /// Bytes received.
    pub rx: u64,
    /// Bytes sent.
    pub tx: u64,
    /// Receive and transmit errors.
    pub errors: u64,
    /// Packets dropped, received or sent.
    pub drops: u64,
}

/// Each interface's counters from `path` (`/proc/net/dev`), sorted by name; empty if unreadable.
pub fn read_totals(path: &Path) -> Vec<Counters> {
    std::fs::read_to_string(path)
        .map(|t| parse_totals(&t))
        .unwrap_or_default()
}

/// `/proc/net/dev`'s text: after two header lines, `NAME: rx_bytes rx_packets rx_errs rx_drop
/// … (8 receive fields) tx_bytes tx_packets tx_errs tx_drop …`. Malformed lines are skipped.
pub fn parse_totals(text: &str) -> Vec<Counters> {
    let mut v: Vec<_> = text
        .lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let f: Vec<u64> = rest
                .split_whitespace()
                .map(|x| x.parse().ok())
                .collect::<Option<_>>()?;
            if f.len() < 12 {
                return None;
            }
            Some(Counters {
                name: name.trim().to_string(),
                rx: f[0],
                tx: f[8],
                errors: f[2] + f[10],
                drops: f[3] + f[11],
            })
        })
        .collect();
    v.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    v
}

/// A wireless link as `/proc/net/wireless` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Wifi {
    /// Link quality in %: the link value over `LINK_MAX`, or the value itself from a driver
    /// that counts to 100.
    pub quality: u8,
    /// Received signal level in dBm; `null` from a driver that reports a relative level.
    pub signal_dbm: Option<i16>,
}

/// The link value most drivers report at full quality (`iwconfig` shows `Link Quality=70/70`
/// for brcmfmac, the Pi's driver, and for iwlwifi and ath9k); the maximum itself is only
/// available through the wireless ioctls, which this reader avoids. A larger value means a
/// driver that counts to 100.
pub const LINK_MAX: f32 = 70.0;

/// Each wireless interface's link from `path` (`/proc/net/wireless`); empty without Wi-Fi (the
/// file is absent when no wireless driver is loaded).
pub fn read_wireless(path: &Path) -> Vec<(String, Wifi)> {
    std::fs::read_to_string(path)
        .map(|t| parse_wireless(&t))
        .unwrap_or_default()
}

/// `/proc/net/wireless`'s text: after two header lines, `NAME: status link. level. noise. …`
/// (a `.` follows a value updated since the last read). The kernel prints a dBm level as a
/// negative number (net/wireless/wext-proc.c subtracts 256 when the driver flags dBm) and a
/// relative one as 0-255.
pub fn parse_wireless(text: &str) -> Vec<(String, Wifi)> {
    text.lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let mut f = rest.split_whitespace().skip(1);
            let mut num = || -> Option<f32> { f.next()?.trim_end_matches('.').parse().ok() };
            let link = num()?;
            let level = num()?;
            let scale = if link > LINK_MAX { 100.0 } else { LINK_MAX };
            let quality = (link / scale * 100.0).round().clamp(0.0, 100.0) as u8;
            Some((
                name.trim().to_string(),
                Wifi {
                    quality,
                    signal_dbm: (level < 0.0).then(|| level.round() as i16),
                },
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

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
  eth0: 9000 10 1 2 0 0 0 0 700 7 3 4 0 0 0 0
 wlan0: garbage
 eth0.100: 5 1 0 0 0 0 0 0 6 1 0 0 0 0 0 0
";
        let c = |name: &str, rx, tx, errors, drops| Counters {
            name: name.into(),
            rx,
            tx,
            errors,
            drops,
        };
        assert_eq!(
            parse_totals(text),
            [
                c("eth0", 9000, 700, 4, 6),
                c("eth0.100", 5, 6, 0, 0),
                c("lo", 123456, 123456, 0, 0)
            ]
        );
        assert!(!read_totals(Path::new(PROC_NET_DEV)).is_empty());
    }

    #[test]
    fn rates_and_the_wifi_link_join_each_interface() {
        let mut r = Rates::default();
        let t0 = Instant::now();
        let c = |rx, errors| Counters {
            name: "wlan0".into(),
            rx,
            tx: 0,
            errors,
            drops: 0,
        };
        let wifi = [(
            "wlan0".to_string(),
            Wifi {
                quality: 50,
                signal_dbm: Some(-60),
            },
        )];
        let first = r.update(t0, vec![c(1000, 7)], &wifi);
        assert_eq!(first[0].rx_per_s, None, "no rate without a previous sample");
        assert_eq!((first[0].rx_total, first[0].errors_total), (1000, 7));
        let second = r.update(
            t0 + std::time::Duration::from_secs(10),
            vec![c(5000, 8)],
            &[],
        );
        assert_eq!(second[0].rx_per_s, Some(400));
        assert_eq!(second[0].errors_per_s, Some(0.1));
        assert_eq!(second[0].drops_per_s, Some(0.0));
        assert_eq!(second[0].wifi, None);
        assert_eq!(first[0].wifi, Some(wifi[0].1));
    }

    #[test]
    fn wireless_links_read_quality_and_signal() {
        // Pasted by users (tests/fixtures/boards/SOURCES.md): a PC's iwlwifi-style dBm driver,
        // and a Pi under XBian whose driver counts quality to 100 and gives a relative level.
        let pc = include_str!("../../tests/fixtures/boards/wireless/netdata-x86-wlp5s0");
        let pi = include_str!("../../tests/fixtures/boards/wireless/xbian-pi-wlan0");
        let wifi = |quality, signal_dbm| Wifi {
            quality,
            signal_dbm,
        };
        assert_eq!(
            parse_wireless(pc),
            [("wlp5s0".to_string(), wifi(97, Some(-42)))]
        );
        assert_eq!(parse_wireless(pi), [("wlan0".to_string(), wifi(100, None))]);
        assert!(parse_wireless("h1\nh2\n broken: 0000 x\n").is_empty());
        assert!(read_wireless(Path::new("/nonexistent/wireless")).is_empty());
    }
}
