//! Plain-HTTP connections (not upgraded to WebSocket): at most `--max-per-ip` + 32 per address (an
//! IPv6 /64 counting as one) and `--max-connections` + 256 in all. At a cap the oldest idle keep-alive connection is closed to
//! make room, so a new client (even from the capped address) is served; only when none is idle is
//! the new one refused with 503. Without these caps a thousand idle keep-alive connections from
//! one address took every file descriptor and nobody else could connect.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_channel::{Receiver, Sender};

use crate::limits::{prefix64, release};
use crate::lock::lock;

/// Plain-HTTP connections one address may hold beyond `--max-per-ip`.
pub const PER_ADDRESS_EXTRA: usize = 32;
/// Plain-HTTP connections in all beyond `--max-connections`.
pub const TOTAL_EXTRA: usize = 256;
/// How long a keep-alive connection lives however busy it is (`Config::keepalive_life`).
pub const KEEPALIVE_LIFE: Duration = Duration::from_secs(600);

/// The open plain-HTTP connections.
pub struct HttpSlots {
    /// Cap per client address.
    pub per_address: usize,
    /// Cap in all.
    pub total: usize,
    /// The connections and their per-address counts, under one lock.
    table: Mutex<Table>,
    /// Connection ids, rising: a lower id is an older connection.
    next_id: AtomicU64,
    /// Called after a connection comes or goes (stats watchers, tests).
    on_change: Box<dyn Fn() + Send + Sync>,
}

#[derive(Default)]
struct Table {
    /// By id, so the first idle entry is the oldest idle connection.
    conns: BTreeMap<u64, Entry>,
    /// Open connections per address; an entry goes with its last connection.
    per_address: HashMap<IpAddr, usize>,
}

struct Entry {
    /// The client's address.
    ip: IpAddr,
    /// Waiting for the next request of a keep-alive connection: may be closed to make room.
    idle: bool,
    /// Dropping it tells the connection to close (its `HttpSlot::evicted` wakes).
    _evict: Sender<()>,
}

impl Table {
    fn remove(&mut self, id: u64) {
        if let Some(e) = self.conns.remove(&id) {
            release(&mut self.per_address, e.ip);
        }
    }
}

/// Whose connections count together under the per-address cap: an IPv4 address, or all the
/// addresses of an IPv6 /64 (one host has many, and could otherwise take the whole total).
fn client_key(ip: IpAddr) -> IpAddr {
    match prefix64(ip) {
        Some(p) => IpAddr::V6(Ipv6Addr::from(u128::from(p) << 64)),
        None => ip.to_canonical(),
    }
}

impl HttpSlots {
    /// Caps for a daemon with these WebSocket limits.
    pub fn new(
        max_per_ip: usize,
        max_connections: usize,
        on_change: Box<dyn Fn() + Send + Sync>,
    ) -> HttpSlots {
        HttpSlots {
            per_address: max_per_ip + PER_ADDRESS_EXTRA,
            total: max_connections + TOTAL_EXTRA,
            table: Mutex::new(Table::default()),
            next_id: AtomicU64::new(1),
            on_change,
        }
    }

    /// A place for a new connection from `ip`, closing the oldest idle keep-alive connection that
    /// stands in the way; `None` (answer 503) when no idle one can make room.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<HttpSlot> {
        let ip = client_key(ip);
        let mut t = lock(&self.table);
        loop {
            let address_full = t.per_address.get(&ip).copied().unwrap_or(0) >= self.per_address;
            let total_full = t.conns.len() >= self.total;
            if !address_full && !total_full {
                break;
            }
            // At the address cap only a connection of that address makes room.
            let victim = t
                .conns
                .iter()
                .find(|(_, e)| e.idle && (!address_full || e.ip == ip))
                .map(|(id, _)| *id);
            t.remove(victim?);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (evict, evicted) = async_channel::bounded(1);
        t.conns.insert(
            id,
            Entry {
                ip,
                idle: false,
                _evict: evict,
            },
        );
        *t.per_address.entry(ip).or_default() += 1;
        drop(t);
        (self.on_change)();
        Some(HttpSlot {
            slots: self.clone(),
            id,
            evicted,
        })
    }

    /// Open plain-HTTP connections.
    pub fn open(&self) -> usize {
        lock(&self.table).conns.len()
    }
}

/// One plain-HTTP connection's place; dropping it (or upgrading) gives the place back.
pub struct HttpSlot {
    /// The table to give the place back to.
    slots: Arc<HttpSlots>,
    /// This connection's entry.
    id: u64,
    /// Closed when the connection was chosen to make room.
    evicted: Receiver<()>,
}

impl HttpSlot {
    /// Marks the connection idle (waiting for its next request) or busy.
    pub fn set_idle(&self, idle: bool) {
        if let Some(e) = lock(&self.slots.table).conns.get_mut(&self.id) {
            e.idle = idle;
        }
    }

    /// Completes when the connection was closed to make room for a new one.
    pub async fn evicted(&self) {
        // Errs once the entry (and its sender) is gone; nothing is ever sent.
        let _ = self.evicted.recv().await;
    }
}

impl Drop for HttpSlot {
    fn drop(&mut self) {
        lock(&self.slots.table).remove(self.id);
        (self.slots.on_change)();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn at_the_address_cap_the_oldest_idle_connection_of_that_address_makes_room() {
        let slots = Arc::new(HttpSlots::new(1, 100, Box::new(|| {})));
        let a = ip("10.0.0.1");
        let held: Vec<_> = (0..33).map(|_| slots.admit(a).unwrap()).collect();
        assert!(slots.admit(a).is_none(), "34th, none idle: 503");
        let other = slots
            .admit(ip("10.0.0.2"))
            .expect("another address is not capped");
        other.set_idle(true);
        assert!(
            slots.admit(a).is_none(),
            "another address's idle one does not help"
        );
        held[5].set_idle(true);
        held[7].set_idle(true);
        let _new = slots.admit(a).expect("the oldest idle one made room");
        assert!(
            is_ready(held[5].evicted()),
            "the oldest idle one is told to close"
        );
        assert!(!is_ready(held[7].evicted()), "the younger idle one stays");
        assert_eq!(slots.open(), 34);
    }

    #[test]
    fn an_ipv6_slash_64_counts_as_one_address() {
        let slots = Arc::new(HttpSlots::new(1, 100, Box::new(|| {})));
        let held: Vec<_> = (1..=33)
            .map(|i| slots.admit(ip(&format!("2001:db8:1:2::{i}"))).unwrap())
            .collect();
        assert!(slots.admit(ip("2001:db8:1:2::ffff")).is_none());
        assert!(slots.admit(ip("2001:db8:1:3::1")).is_some());
        drop(held);
    }

    #[test]
    fn at_the_total_cap_any_idle_connection_makes_room() {
        let slots = Arc::new(HttpSlots::new(1, 0, Box::new(|| {})));
        let total = slots.total;
        let held: Vec<_> = (0..total)
            .map(|i| {
                slots
                    .admit(ip(&format!("10.0.{}.{}", i / 200, i % 200)))
                    .unwrap()
            })
            .collect();
        assert!(slots.admit(ip("10.9.9.9")).is_none());
        held[100].set_idle(true);
        assert!(slots.admit(ip("10.9.9.9")).is_some());
        drop(held);
        assert_eq!(slots.open(), 0, "every place is given back");
    }

    /// Whether `f` is already complete.
    fn is_ready(f: impl std::future::Future<Output = ()>) -> bool {
        smol::block_on(smol::future::poll_once(f)).is_some()
    }
}
