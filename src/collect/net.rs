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
