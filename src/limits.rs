//! Admission: the global, per-IP and per-/64 WebSocket counters, the slot guard that gives a place
//! back, and the counts of clients refused or slowed by a limit (`edgemon_clients_refused_total`).
//!
//! A `ConnSlot` is taken before a connection task is spawned and moved into it; its `Drop` gives the
//! place back whatever way the task ends (close, error, timeout, panic, cancellation), and logs the
//! close with its reason and the remaining count.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::lock::lock;

/// Why an upgrade was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// This IP already holds `--max-per-ip` connections (HTTP 429).
    PerIp,
    /// The daemon already holds `--max-connections` connections (HTTP 503).
    Total,
    /// This IPv6 address's /64 already holds its share, half of `--max-connections` (HTTP 429).
    Prefix,
}

/// A client refused or slowed by one of the limits of DESIGN.md's "Limits": the `reason` label of
/// `edgemon_clients_refused_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// A WebSocket closed (1008) after its message bucket stayed empty.
    WsRate,
    /// An HTTP connection held back because its request bucket was empty.
    HttpRate,
    /// A plain-HTTP connection refused (503) at a connection cap with no idle one to close.
    HttpCap,
    /// A request for a name that is not this daemon's (DNS rebinding), 403.
    Host,
    /// A WebSocket refused because its /64 holds its share (429).
    Prefix,
}

impl Refused {
    /// Every reason, in the order `/metrics` lists them.
    pub const ALL: [Refused; 5] = [
        Refused::WsRate,
        Refused::HttpRate,
        Refused::HttpCap,
        Refused::Host,
        Refused::Prefix,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Refused::WsRate => "ws_rate",
            Refused::HttpRate => "http_rate",
            Refused::HttpCap => "http_cap",
            Refused::Host => "host",
            Refused::Prefix => "prefix",
        }
    }
}

/// The /64 network of an IPv6 address (IPv4, also as `::ffff:a.b.c.d`, has none): what one host
/// with many addresses (privacy extensions, a script) shares.
pub fn prefix64(ip: IpAddr) -> Option<u64> {
    match ip.to_canonical() {
        IpAddr::V6(v6) => Some((u128::from(v6) >> 64) as u64),
        IpAddr::V4(_) => None,
    }
}

/// `2001:db8:1:2::/64` for a /64 from [`prefix64`].
pub fn prefix64_text(prefix: u64) -> String {
    format!("{}/64", std::net::Ipv6Addr::from(u128::from(prefix) << 64))
}

/// Open connections by address and by /64; entries disappear with their last connection so the
/// maps cannot grow with the number of distinct clients ever seen.
#[derive(Default)]
struct Counts {
    per_ip: HashMap<IpAddr, usize>,
    per_prefix: HashMap<u64, usize>,
}

/// The counters behind admission and `/api/websocket/stats`.
pub struct Limits {
    /// `--max-connections`.
    pub max_total: usize,
    /// `--max-per-ip`.
    pub max_per_ip: usize,
    /// What all addresses of one IPv6 /64 may hold together: half of `--max-connections`, so a
    /// single host cannot take every slot by using many addresses.
    pub max_per_prefix: usize,
    /// Open WebSocket connections; lock-free to read for stats and logs.
    active: AtomicUsize,
    /// Open connections per client IP and per /64.
    counts: Mutex<Counts>,
    /// Connections accepted since start.
    total: AtomicU64,
    /// Upgrades refused for the per-IP limit since start.
    rejected_per_ip: AtomicU64,
    /// Upgrades refused for the global limit since start.
    rejected_total: AtomicU64,
    /// Clients refused or slowed, by [`Refused`] reason (in `Refused::ALL` order).
    refused: [AtomicU64; 5],
    /// Called after every change of the open-connection count (stats watchers, tests).
    on_change: Box<dyn Fn() + Send + Sync>,
}

impl Limits {
    /// Counters for the given limits.
    pub fn new(
        max_total: usize,
        max_per_ip: usize,
        on_change: Box<dyn Fn() + Send + Sync>,
    ) -> Self {
        Limits {
            max_total,
            max_per_ip,
            max_per_prefix: (max_total / 2).max(1),
            active: AtomicUsize::new(0),
            counts: Mutex::new(Counts::default()),
            total: AtomicU64::new(0),
            rejected_per_ip: AtomicU64::new(0),
            rejected_total: AtomicU64::new(0),
            refused: Default::default(),
            on_change,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Counts> {
        lock(&self.counts)
    }

    /// Takes a place for a connection from `peer`, or says which limit refuses it.
    pub fn try_acquire(self: &Arc<Self>, peer: SocketAddr) -> Result<ConnSlot, Rejection> {
        // An IPv4 client reaching a dual-stack socket shows up as ::ffff:a.b.c.d; count it as a.b.c.d.
        let ip = peer.ip().to_canonical();
        {
            // Every check and increment under one lock, so concurrent upgrades cannot overshoot.
            let mut counts = self.lock();
            let n = counts.per_ip.get(&ip).copied().unwrap_or(0);
            if self.active.load(Ordering::SeqCst) >= self.max_total {
                self.rejected_total.fetch_add(1, Ordering::Relaxed);
                return Err(Rejection::Total);
            }
            if n >= self.max_per_ip {
                self.rejected_per_ip.fetch_add(1, Ordering::Relaxed);
                return Err(Rejection::PerIp);
            }
            let prefix = prefix64(ip);
            if let Some(p) = prefix {
                if counts.per_prefix.get(&p).copied().unwrap_or(0) >= self.max_per_prefix {
                    self.refuse(Refused::Prefix);
                    return Err(Rejection::Prefix);
                }
                *counts.per_prefix.entry(p).or_default() += 1;
            }
            counts.per_ip.insert(ip, n + 1);
            self.active.fetch_add(1, Ordering::SeqCst);
        }
        self.total.fetch_add(1, Ordering::Relaxed);
        (self.on_change)();
        Ok(ConnSlot {
            limits: self.clone(),
            peer,
            reason: "dropped".into(),
        })
    }

    /// Open WebSocket connections.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    /// Open connections from `ip`.
    pub fn per_ip_count(&self, ip: IpAddr) -> usize {
        self.lock()
            .per_ip
            .get(&ip.to_canonical())
            .copied()
            .unwrap_or(0)
    }

    /// Open connections from the /64 `prefix`.
    pub fn per_prefix_count(&self, prefix: u64) -> usize {
        self.lock().per_prefix.get(&prefix).copied().unwrap_or(0)
    }

    /// Open connections per IP, sorted by IP.
    pub fn per_ip(&self) -> Vec<(IpAddr, usize)> {
        let mut v: Vec<_> = self.lock().per_ip.iter().map(|(ip, n)| (*ip, *n)).collect();
        v.sort_unstable();
        v
    }

    /// Counts one client refused or slowed for `why`.
    pub fn refuse(&self, why: Refused) {
        let i = Refused::ALL
            .iter()
            .position(|r| *r == why)
            .expect("every reason is listed");
        self.refused[i].fetch_add(1, Ordering::Relaxed);
        (self.on_change)();
    }

    /// Clients refused or slowed since start, per reason.
    pub fn refused(&self) -> Vec<(Refused, u64)> {
        Refused::ALL
            .iter()
            .zip(&self.refused)
            .map(|(r, n)| (*r, n.load(Ordering::Relaxed)))
            .collect()
    }

    /// Connections accepted since start.
    pub fn connections_total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Upgrades refused since start, per-IP and global.
    pub fn rejected(&self) -> (u64, u64) {
        (
            self.rejected_per_ip.load(Ordering::Relaxed),
            self.rejected_total.load(Ordering::Relaxed),
        )
    }
}

/// One admitted connection's place; dropping it gives the place back and logs the close.
pub struct ConnSlot {
    /// The counters to give the place back to.
    limits: Arc<Limits>,
    /// The client, for the per-IP count and the log line.
    peer: SocketAddr,
    /// Why the connection ended, set by the task before it returns.
    reason: String,
}

impl ConnSlot {
    /// The client's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Records why the connection is ending, for the close log line.
    pub fn set_reason(&mut self, reason: impl Into<String>) {
        self.reason = reason.into();
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let ip = self.peer.ip().to_canonical();
        {
            let mut counts = self.limits.lock();
            release(&mut counts.per_ip, ip);
            if let Some(p) = prefix64(ip) {
                release(&mut counts.per_prefix, p);
            }
            self.limits.active.fetch_sub(1, Ordering::SeqCst);
        }
        crate::trim::note_release();
        let remaining = self.limits.active();
        log::info!(
            "ws close {} reason={} remaining={remaining}",
            self.peer,
            self.reason
        );
        (self.limits.on_change)();
    }
}

/// One connection fewer under `key`; the entry goes with its last one.
pub(crate) fn release<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: K) {
    match map.get_mut(&key) {
        Some(n) if *n > 1 => *n -= 1,
        _ => {
            map.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn per_ip_limit_refuses_and_a_drop_frees_the_slot() {
        let l = Arc::new(Limits::new(100, 2, Box::new(|| {})));
        let a = l.try_acquire(addr("10.0.0.1:1")).unwrap();
        let _b = l.try_acquire(addr("10.0.0.1:2")).unwrap();
        assert_eq!(
            l.try_acquire(addr("10.0.0.1:3")).err(),
            Some(Rejection::PerIp)
        );
        let _other = l.try_acquire(addr("10.0.0.2:1")).unwrap();
        drop(a);
        let _c = l.try_acquire(addr("10.0.0.1:4")).unwrap();
        assert_eq!(l.rejected(), (1, 0));
        assert_eq!(l.active(), 3);
    }

    #[test]
    fn global_limit_refuses_with_total() {
        let l = Arc::new(Limits::new(1, 5, Box::new(|| {})));
        let _a = l.try_acquire(addr("10.0.0.1:1")).unwrap();
        assert_eq!(
            l.try_acquire(addr("10.0.0.2:1")).err(),
            Some(Rejection::Total)
        );
        assert_eq!(l.rejected(), (0, 1));
    }

    #[test]
    fn mapped_ipv4_counts_as_ipv4_and_entries_are_pruned() {
        let l = Arc::new(Limits::new(10, 1, Box::new(|| {})));
        let a = l.try_acquire(addr("127.0.0.1:1")).unwrap();
        assert_eq!(
            l.try_acquire(addr("[::ffff:127.0.0.1]:2")).err(),
            Some(Rejection::PerIp)
        );
        drop(a);
        assert!(
            l.per_ip().is_empty(),
            "no entry is kept for an IP with no connection"
        );
        assert_eq!(l.active(), 0);
    }

    #[test]
    fn one_slash_64_holds_at_most_half_of_the_slots() {
        let l = Arc::new(Limits::new(8, 5, Box::new(|| {})));
        let held: Vec<_> = (1..=4)
            .map(|i| {
                l.try_acquire(addr(&format!("[2001:db8:1:2::{i}]:1")))
                    .unwrap()
            })
            .collect();
        assert_eq!(
            l.try_acquire(addr("[2001:db8:1:2::99]:1")).err(),
            Some(Rejection::Prefix),
            "a fifth address of the same /64"
        );
        let _other = l.try_acquire(addr("[2001:db8:1:3::1]:1")).unwrap();
        let _v4 = l.try_acquire(addr("10.0.0.1:1")).unwrap();
        let p = prefix64(addr("[2001:db8:1:2::1]:1").ip()).unwrap();
        assert_eq!(prefix64_text(p), "2001:db8:1:2::/64");
        assert_eq!(l.per_prefix_count(p), 4);
        drop(held);
        assert_eq!(l.per_prefix_count(p), 0);
        assert_eq!(prefix64(addr("[::ffff:10.0.0.1]:1").ip()), None);
        let refused: u64 = l.refused().iter().map(|r| r.1).sum();
        assert_eq!(refused, 1);
    }
}
