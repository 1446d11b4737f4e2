//! Admission: the global and per-IP WebSocket counters, and the slot guard that gives a place back.
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
}

/// The counters behind admission and `/api/websocket/stats`.
pub struct Limits {
    /// `--max-connections`.
    pub max_total: usize,
    /// `--max-per-ip`.
    pub max_per_ip: usize,
    /// Open WebSocket connections; lock-free to read for stats and logs.
    active: AtomicUsize,
    /// Open connections per client IP; an entry disappears with its last connection so the map
    /// cannot grow with the number of distinct clients ever seen.
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// Connections accepted since start.
    total: AtomicU64,
    /// Upgrades refused for the per-IP limit since start.
    rejected_per_ip: AtomicU64,
    /// Upgrades refused for the global limit since start.
    rejected_total: AtomicU64,
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
            active: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
            total: AtomicU64::new(0),
            rejected_per_ip: AtomicU64::new(0),
            rejected_total: AtomicU64::new(0),
            on_change,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<IpAddr, usize>> {
        lock(&self.per_ip)
    }

    /// Takes a place for a connection from `peer`, or says which limit refuses it.
    pub fn try_acquire(self: &Arc<Self>, peer: SocketAddr) -> Result<ConnSlot, Rejection> {
        // An IPv4 client reaching a dual-stack socket shows up as ::ffff:a.b.c.d; count it as a.b.c.d.
        let ip = peer.ip().to_canonical();
        {
            // Both checks and both increments under one lock, so concurrent upgrades cannot overshoot.
            let mut per_ip = self.lock();
            let n = per_ip.get(&ip).copied().unwrap_or(0);
            if self.active.load(Ordering::SeqCst) >= self.max_total {
                self.rejected_total.fetch_add(1, Ordering::Relaxed);
                return Err(Rejection::Total);
            }
            if n >= self.max_per_ip {
                self.rejected_per_ip.fetch_add(1, Ordering::Relaxed);
                return Err(Rejection::PerIp);
            }
            per_ip.insert(ip, n + 1);
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
        self.lock().get(&ip.to_canonical()).copied().unwrap_or(0)
    }

    /// Open connections per IP, sorted by IP.
    pub fn per_ip(&self) -> Vec<(IpAddr, usize)> {
        let mut v: Vec<_> = self.lock().iter().map(|(ip, n)| (*ip, *n)).collect();
        v.sort();
        v
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
            let mut per_ip = self.limits.lock();
            match per_ip.get_mut(&ip) {
                Some(n) if *n > 1 => *n -= 1,
                _ => {
                    per_ip.remove(&ip);
                }
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
}
