//! Discovery on the LAN by mDNS and DNS-SD (RFC 6762, RFC 6763), IPv4: the daemon announces
//! `_edgemon._tcp` on the interfaces it listens on and answers queries for it, always (unless
//! `--no-mdns`, or when it listens on loopback only); while the fleet is watched, a [`Browse`]
//! asks for the other boards and hands on what they answer. One UDP socket on port 5353,
//! shared with any other responder on the host (`SO_REUSEADDR`, `SO_REUSEPORT`), read by one
//! task; what arrives is untrusted input (see `wire`).
//!
//! Written here rather than taken from the `mdns-sd` crate: that crate (with `mio`, `flume`,
//! `if-addrs` and a thread of its own) added 334 KB to a binary with a 2.5 MiB budget; what
//! edgemon needs, announcing one service and browsing for one type, is this module.

pub mod wire;

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_channel::{Receiver, Sender};
use smol::Async;
use smol::future::FutureExt;

use crate::lock::lock;
use wire::{Builder, Data, TYPE_A, TYPE_ANY, TYPE_PTR, TYPE_SRV, TYPE_TXT, same};

/// The mDNS group and port.
pub const GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 251);
/// The mDNS port.
pub const PORT: u16 = 5353;
/// The service type edgemon announces.
pub const SERVICE: [&str; 3] = ["_edgemon", "_tcp", "local"];
/// DNS-SD's list of service types (RFC 6763 section 9).
const SERVICES: [&str; 4] = ["_services", "_dns-sd", "_udp", "local"];
/// TTL of the host's address and service location (RFC 6762 section 10: two minutes)...
const TTL_HOST: u32 = 120;
/// ... and of the rest (75 minutes).
const TTL_OTHER: u32 = 4500;
/// How often interfaces are listed again (an address from DHCP after the daemon started).
const RESCAN: Duration = Duration::from_secs(30);
/// An interface's records are multicast at most once a second (RFC 6762 section 6).
const ANSWER_GAP: Duration = Duration::from_secs(1);
/// Largest datagram read; longer ones are truncated and then fail to parse.
const MAX_PACKET: usize = 9000;
/// Datagrams handled per wake-up before the task yields.
const BURST: usize = 32;
/// What a browser may hold unread; more is dropped and counted.
const BROWSE_QUEUE: usize = 256;
/// A browse asks at once, then after 1, 2, 4 ... seconds, then every minute.
const QUERY_MAX: Duration = Duration::from_secs(60);

/// An IPv4 address of an interface that is up and can multicast (not loopback).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Iface {
    pub addr: Ipv4Addr,
    pub mask: Ipv4Addr,
}

impl Iface {
    /// Whether `ip` is on this interface's subnet.
    fn holds(&self, ip: Ipv4Addr) -> bool {
        let m = u32::from(self.mask);
        u32::from(self.addr) & m == u32::from(ip) & m
    }
}

/// The IPv4 interfaces that are up, can multicast and are not loopback.
#[allow(unsafe_code)]
pub fn interfaces() -> io::Result<Vec<Iface>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs either fills `head` with a list it allocated (freed below, once) or
    // fails and leaves it null.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut p = head;
    while !p.is_null() {
        // SAFETY: `p` is a node of the list getifaddrs returned, which lives until freeifaddrs.
        let ifa = unsafe { &*p };
        p = ifa.ifa_next;
        let flags = ifa.ifa_flags as libc::c_int;
        let wanted = flags & libc::IFF_UP != 0
            && flags & libc::IFF_MULTICAST != 0
            && flags & libc::IFF_LOOPBACK == 0;
        if !wanted || ifa.ifa_addr.is_null() || ifa.ifa_netmask.is_null() {
            continue;
        }
        // SAFETY: ifa_addr points to a sockaddr, whose family field says what it really is.
        let family = unsafe { (*ifa.ifa_addr).sa_family };
        if libc::c_int::from(family) != libc::AF_INET {
            continue;
        }
        // SAFETY: an AF_INET address is a sockaddr_in, and so is its netmask; read unaligned
        // because the list gives no alignment promise beyond sockaddr's.
        let (addr, mask) = unsafe {
            (
                std::ptr::read_unaligned(ifa.ifa_addr as *const libc::sockaddr_in),
                std::ptr::read_unaligned(ifa.ifa_netmask as *const libc::sockaddr_in),
            )
        };
        out.push(Iface {
            addr: Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr)),
            mask: Ipv4Addr::from(u32::from_be(mask.sin_addr.s_addr)),
        });
    }
    // SAFETY: `head` came from getifaddrs and is freed once; no node is used after this.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// A board another host announced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// Its address and port, from its service location and address records.
    pub address: SocketAddrV4,
    /// Its instance name (at most 63 bytes).
    pub name: String,
    /// Its TXT record says it needs a token.
    pub token: bool,
}

/// What the socket saw, for `/api/stats`.
#[derive(Default)]
pub struct Counters {
    /// Announcements and answers sent.
    pub sent: AtomicU64,
    /// Datagrams that were not a DNS message, or broke its rules.
    pub malformed: AtomicU64,
    /// Boards found but not taken: a browser's queue was full, or the fleet had its 64 boards.
    pub ignored: AtomicU64,
    /// Sends that failed.
    pub send_errors: AtomicU64,
}

/// One interface as the responder follows it.
struct Joined {
    iface: Iface,
    /// Announcements still to send, and when the next is due.
    announce: (u8, Instant),
    /// When its records were last multicast.
    last_sent: Option<Instant>,
}

/// The responder and browser of one daemon.
pub struct Mdns {
    socket: Async<UdpSocket>,
    /// The port the daemon's HTTP server listens on.
    port: u16,
    /// The address it listens on: unspecified for every interface.
    listen: Ipv4Addr,
    hostname: String,
    /// Whether the daemon needs a token (said in the TXT record).
    token: bool,
    /// The interfaces followed, for the responder and for browse queries.
    joined: Mutex<Vec<Joined>>,
    /// Explicit list of browsers: each gets what is found until its [`Browse`] is dropped.
    browsers: Mutex<Vec<(u64, Sender<Found>)>>,
    next_browser: AtomicU64,
    pub counters: Counters,
}

/// Whether the daemon announces at all on `listen`: an IPv4 address that is not loopback
/// (unspecified: every interface). IPv6 listen addresses are not announced (this is IPv4 mDNS).
pub fn announces_on(listen: SocketAddr) -> Option<SocketAddrV4> {
    match listen {
        SocketAddr::V4(v4) if !v4.ip().is_loopback() => Some(v4),
        _ => None,
    }
}

/// The shared port-5353 socket: reusable by other responders, multicast TTL 255 (RFC 6762
/// section 11), loopback on (two daemons on one host see each other).
fn bind() -> io::Result<UdpSocket> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType, ipproto, sockopt};
    let fd = rustix::net::socket_with(
        AddressFamily::INET,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        Some(ipproto::UDP),
    )?;
    sockopt::set_socket_reuseaddr(&fd, true)?;
    sockopt::set_socket_reuseport(&fd, true)?;
    rustix::net::bind(&fd, &SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, PORT))?;
    sockopt::set_ip_multicast_ttl(&fd, 255)?;
    sockopt::set_ip_multicast_loop(&fd, true)?;
    Ok(UdpSocket::from(fd))
}

impl Mdns {
    /// The responder for a daemon listening on `listen` (an address [`announces_on`] accepts).
    pub fn new(listen: SocketAddrV4, hostname: &str, token: bool) -> io::Result<Mdns> {
        let socket = Async::new(bind()?)?;
        let hostname: String = hostname
            .trim()
            .chars()
            .filter(|c| !c.is_control())
            .collect();
        Ok(Mdns {
            socket,
            port: listen.port(),
            listen: *listen.ip(),
            hostname: if hostname.is_empty() {
                "edgemon".into()
            } else {
                hostname
            },
            token,
            joined: Mutex::new(Vec::new()),
            browsers: Mutex::new(Vec::new()),
            next_browser: AtomicU64::new(0),
            counters: Counters::default(),
        })
    }

    /// The interfaces announced on now.
    pub fn interfaces(&self) -> Vec<Iface> {
        lock(&self.joined).iter().map(|j| j.iface).collect()
    }

    /// The instance label for `addr` (unique on the LAN: it holds the address and port).
    fn instance(&self, addr: Ipv4Addr) -> String {
        let mut s = format!("{} at {addr}:{}", self.hostname, self.port);
        if s.len() > wire::MAX_LABEL {
            let keep = wire::MAX_LABEL - format!(" at {addr}:{}", self.port).len();
            let cut = crate::collect::floor_char_boundary(&self.hostname, keep);
            s = format!("{} at {addr}:{}", &self.hostname[..cut], self.port);
        }
        s
    }

    /// The host label whose address record names `addr` (its own name, not the host's:
    /// the host's name belongs to its own responder).
    fn host(addr: Ipv4Addr) -> String {
        let o = addr.octets();
        format!("edgemon-{}-{}-{}-{}", o[0], o[1], o[2], o[3])
    }

    /// Every record for one interface address, with `ttl_scale` 0 for a goodbye.
    fn records(&self, addr: Ipv4Addr, goodbye: bool) -> Vec<u8> {
        let instance = self.instance(addr);
        let host = Mdns::host(addr);
        let inst: [&str; 4] = [&instance, SERVICE[0], SERVICE[1], SERVICE[2]];
        let host: [&str; 2] = [&host, "local"];
        let version = concat!("version=", env!("CARGO_PKG_VERSION"));
        let token = if self.token { "token=yes" } else { "token=no" };
        let ttl = |t: u32| if goodbye { 0 } else { t };
        let mut b = Builder::new(true);
        b.ptr(&SERVICE, &inst, ttl(TTL_OTHER));
        b.ptr(&SERVICES, &SERVICE, ttl(TTL_OTHER));
        b.srv(&inst, self.port, &host, ttl(TTL_HOST));
        b.txt(&inst, &[version, token], ttl(TTL_OTHER));
        b.a(&host, addr, ttl(TTL_HOST));
        b.finish()
    }

    /// Multicasts `packet` out of the interface with address `via`; a failure is counted (a
    /// lost datagram is what mDNS expects now and then).
    fn send(&self, via: Ipv4Addr, packet: &[u8]) -> bool {
        let fd = self.socket.get_ref();
        // The interface and the send go together: other threads send on this socket too.
        let _one = lock(&self.joined);
        let sent = rustix::net::sockopt::set_ip_multicast_if(fd, &via)
            .map_err(io::Error::from)
            .and_then(|()| fd.send_to(packet, SocketAddrV4::new(GROUP, PORT)));
        match sent {
            Ok(_) => true,
            Err(e) => {
                if self.counters.send_errors.fetch_add(1, Ordering::Relaxed) == 0 {
                    log::warn!("mdns: cannot send on {via}: {e}");
                }
                false
            }
        }
    }

    /// Lists the interfaces again: joins the group on new ones (each is announced twice, a
    /// second apart: RFC 6762 section 8.3), forgets the ones that went away.
    fn rescan(&self, now: Instant) {
        let found = match interfaces() {
            Ok(f) => f,
            Err(e) => {
                log::warn!("mdns: cannot list the interfaces: {e}");
                return;
            }
        };
        let wanted: Vec<Iface> = found
            .into_iter()
            .filter(|i| self.listen.is_unspecified() || i.addr == self.listen)
            .collect();
        let mut joined = lock(&self.joined);
        joined.retain(|j| wanted.contains(&j.iface));
        for iface in wanted {
            if joined.iter().any(|j| j.iface == iface) {
                continue;
            }
            let fd = self.socket.get_ref();
            match rustix::net::sockopt::set_ip_add_membership(fd, &GROUP, &iface.addr) {
                Ok(()) | Err(rustix::io::Errno::ADDRINUSE) => {}
                Err(e) => {
                    log::warn!("mdns: cannot join the group on {}: {e}", iface.addr);
                    continue;
                }
            }
            log::info!("mdns: announcing on {}", iface.addr);
            joined.push(Joined {
                iface,
                announce: (2, now),
                last_sent: None,
            });
        }
    }

    /// Runs the responder until `shutdown` closes, then says goodbye (records with TTL 0).
    pub async fn run(self: Arc<Self>, shutdown: Receiver<()>) {
        let mut buf = vec![0u8; MAX_PACKET];
        let mut next_scan = Instant::now();
        loop {
            let now = Instant::now();
            // Every deadline is judged on every wake-up.
            if now >= next_scan {
                self.rescan(now);
                next_scan = now + RESCAN;
            }
            let mut due = next_scan;
            let announce: Vec<Ipv4Addr> = {
                let mut joined = lock(&self.joined);
                let mut out = Vec::new();
                for j in joined.iter_mut() {
                    if j.announce.0 > 0 && now >= j.announce.1 {
                        out.push(j.iface.addr);
                        j.announce = (j.announce.0 - 1, now + Duration::from_secs(1));
                        j.last_sent = Some(now);
                    }
                    if j.announce.0 > 0 {
                        due = due.min(j.announce.1);
                    }
                }
                out
            };
            for addr in announce {
                if self.send(addr, &self.records(addr, false)) {
                    self.counters.sent.fetch_add(1, Ordering::Relaxed);
                }
            }
            enum Wake {
                Packet(io::Result<(usize, SocketAddr)>),
                Timer,
                Stop,
            }
            let wake = async { Wake::Packet(self.socket.recv_from(&mut buf).await) }
                .or(async {
                    smol::Timer::at(due).await;
                    Wake::Timer
                })
                .or(async {
                    let _ = shutdown.recv().await;
                    Wake::Stop
                })
                .await;
            match wake {
                Wake::Timer => {}
                Wake::Stop => break,
                Wake::Packet(Err(e)) => {
                    log::warn!("mdns: receive failed: {e}");
                    smol::Timer::after(Duration::from_secs(1)).await;
                }
                Wake::Packet(Ok((n, from))) => {
                    self.handle(&buf[..n], from);
                    // Then whatever else is queued, up to a bound, without waiting.
                    for _ in 1..BURST {
                        match self.socket.get_ref().recv_from(&mut buf) {
                            Ok((n, from)) => self.handle(&buf[..n], from),
                            Err(_) => break,
                        }
                    }
                    smol::future::yield_now().await;
                }
            }
        }
        let addrs: Vec<Ipv4Addr> = self.interfaces().iter().map(|i| i.addr).collect();
        for addr in addrs {
            self.send(addr, &self.records(addr, true));
        }
    }

    /// One datagram: a query for us is answered, a response is read for boards.
    fn handle(&self, packet: &[u8], from: SocketAddr) {
        let SocketAddr::V4(from) = from else { return };
        let msg = match wire::parse(packet) {
            Ok(m) => m,
            Err(_) => {
                self.counters.malformed.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        if msg.response {
            if from.port() == PORT {
                self.found(&msg, *from.ip());
            }
        } else {
            self.answer(&msg, *from.ip());
        }
    }

    /// Answers a query that asks for our service, our instance or our host, by multicast on
    /// the interface whose subnet the asker is on (at most once a second per interface).
    fn answer(&self, msg: &wire::Message, from: Ipv4Addr) {
        let now = Instant::now();
        let addr = {
            let mut joined = lock(&self.joined);
            let Some(j) = joined.iter_mut().find(|j| j.iface.holds(from)) else {
                return;
            };
            let addr = j.iface.addr;
            let service = SERVICE.join(".");
            let services = SERVICES.join(".");
            let instance = format!("{}.{service}", self.instance(addr));
            let host = format!("{}.local", Mdns::host(addr));
            let asks = msg.questions.iter().any(|q| {
                let t = |want: u16| q.qtype == want || q.qtype == TYPE_ANY;
                (t(TYPE_PTR) && (same(&q.name, &service) || same(&q.name, &services)))
                    || ((t(TYPE_SRV) || t(TYPE_TXT)) && same(&q.name, &instance))
                    || (t(TYPE_A) && same(&q.name, &host))
            });
            if !asks || j.last_sent.is_some_and(|t| now < t + ANSWER_GAP) {
                return;
            }
            j.last_sent = Some(now);
            addr
        };
        if self.send(addr, &self.records(addr, false)) {
            self.counters.sent.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The boards a response announces, handed to every browser (none: nothing is read).
    fn found(&self, msg: &wire::Message, from: Ipv4Addr) {
        if lock(&self.browsers).is_empty() {
            return;
        }
        let service = SERVICE.join(".");
        let own: Vec<Ipv4Addr> = self.interfaces().iter().map(|i| i.addr).collect();
        for r in &msg.records {
            let (Data::Ptr(instance), true) = (&r.data, same(&r.name, &service) && r.ttl > 0)
            else {
                continue;
            };
            let Some(found) = board(msg, instance, from) else {
                self.counters.malformed.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            // Our own announcement, looped back.
            if own.contains(found.address.ip()) && found.address.port() == self.port {
                continue;
            }
            let mut browsers = lock(&self.browsers);
            for (_, tx) in browsers.iter() {
                if tx.try_send(found.clone()).is_err() {
                    self.counters.ignored.fetch_add(1, Ordering::Relaxed);
                }
            }
            browsers.retain(|(_, tx)| !tx.is_closed());
        }
    }

    /// Starts browsing: the returned [`Browse`] asks for boards and yields what is found until
    /// it is dropped.
    pub fn browse(self: &Arc<Self>) -> Browse {
        let (tx, rx) = async_channel::bounded(BROWSE_QUEUE);
        let id = self.next_browser.fetch_add(1, Ordering::Relaxed);
        lock(&self.browsers).push((id, tx));
        Browse {
            mdns: self.clone(),
            id,
            rx,
            next_query: Instant::now(),
            gap: Duration::from_secs(1),
        }
    }

    /// Asks every interface for `_edgemon._tcp` (answers arrive as responses to the socket).
    fn query(&self) {
        let mut q = Builder::new(false);
        q.question(&SERVICE, TYPE_PTR);
        let q = q.finish();
        for iface in self.interfaces() {
            self.send(iface.addr, &q);
        }
    }
}

/// The board `instance` in `msg`: its SRV record's port and target, the target's A record (or
/// the sender's address when there is none), and its TXT record. None when the records are
/// missing or say what no board says (port 0, an address that is not a host's).
fn board(msg: &wire::Message, instance: &str, from: Ipv4Addr) -> Option<Found> {
    let (port, target) = msg.records.iter().find_map(|r| match &r.data {
        Data::Srv { port, target } if same(&r.name, instance) => Some((*port, target)),
        _ => None,
    })?;
    let ip = msg
        .records
        .iter()
        .find_map(|r| match r.data {
            Data::A(ip) if same(&r.name, target) => Some(ip),
            _ => None,
        })
        .unwrap_or(from);
    let host_like = !(ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast())
        && (!ip.is_loopback() || from.is_loopback());
    if port == 0 || !host_like {
        return None;
    }
    let token = msg.records.iter().any(|r| match &r.data {
        Data::Txt(t) if same(&r.name, instance) => t.iter().any(|s| s == "token=yes"),
        _ => false,
    });
    let label = instance.split("._edgemon.").next().unwrap_or(instance);
    let cut = crate::collect::floor_char_boundary(label, wire::MAX_LABEL);
    Some(Found {
        address: SocketAddrV4::new(ip, port),
        name: label[..cut].chars().filter(|c| !c.is_control()).collect(),
        token,
    })
}

/// A browse for boards, while the fleet is watched: queries at once, after 1, 2, 4 ...
/// seconds, then every minute; dropping it takes it off the responder's list.
pub struct Browse {
    mdns: Arc<Mdns>,
    id: u64,
    rx: Receiver<Found>,
    next_query: Instant,
    gap: Duration,
}

impl Browse {
    /// The next board announced (the same board again whenever it answers).
    pub async fn next(&mut self) -> Found {
        loop {
            let now = Instant::now();
            if now >= self.next_query {
                self.mdns.query();
                self.next_query = now + self.gap;
                self.gap = (self.gap * 2).min(QUERY_MAX);
            }
            let due = self.next_query;
            let got = async { self.rx.recv().await.ok() }
                .or(async {
                    smol::Timer::at(due).await;
                    None
                })
                .await;
            if let Some(f) = got {
                return f;
            }
        }
    }

    /// Counts a board found but not taken (the fleet is full).
    pub fn ignored(&self) {
        self.mdns.counters.ignored.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for Browse {
    fn drop(&mut self) {
        lock(&self.mdns.browsers).retain(|(id, _)| *id != self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn announcement(instance: &str, port: u16, a: Option<Ipv4Addr>, txt: &[&str]) -> Vec<u8> {
        let inst = [instance, "_edgemon", "_tcp", "local"];
        let host = ["h", "local"];
        let mut b = Builder::new(true);
        b.ptr(&SERVICE, &inst, 4500);
        b.srv(&inst, port, &host, 120);
        b.txt(&inst, txt, 120);
        if let Some(a) = a {
            b.a(&host, a, 120);
        }
        b.finish()
    }

    const FROM: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 9);

    fn board_in(packet: &[u8]) -> Option<Found> {
        let m = wire::parse(packet).unwrap();
        let Data::Ptr(instance) = &m.records[0].data else {
            panic!()
        };
        board(&m, instance, FROM)
    }

    #[test]
    fn an_announcement_gives_its_board() {
        let p = announcement(
            "pi4 at 10.0.0.5:9753",
            9753,
            Some(Ipv4Addr::new(10, 0, 0, 5)),
            &["version=0.1.0", "token=yes"],
        );
        assert_eq!(
            board_in(&p),
            Some(Found {
                address: "10.0.0.5:9753".parse().unwrap(),
                name: "pi4 at 10.0.0.5:9753".into(),
                token: true,
            })
        );
        // Without an address record: the sender's address.
        let p = announcement("x", 80, None, &["token=no"]);
        let f = board_in(&p).unwrap();
        assert_eq!(f.address, SocketAddrV4::new(FROM, 80));
        assert!(!f.token);
    }

    #[test]
    fn announcements_no_board_makes_are_dropped() {
        for (port, a) in [
            (0, Ipv4Addr::new(10, 0, 0, 5)),
            (80, Ipv4Addr::UNSPECIFIED),
            (80, Ipv4Addr::BROADCAST),
            (80, Ipv4Addr::new(224, 0, 0, 251)),
            // Loopback from a sender on the LAN.
            (80, Ipv4Addr::LOCALHOST),
        ] {
            assert_eq!(board_in(&announcement("x", port, Some(a), &[])), None);
        }
    }

    #[test]
    fn instance_labels_fit_a_label_and_keep_the_address() {
        let m = Mdns {
            socket: Async::new(UdpSocket::bind("127.0.0.1:0").unwrap()).unwrap(),
            port: 9753,
            listen: Ipv4Addr::UNSPECIFIED,
            hostname: "é".repeat(40),
            token: false,
            joined: Mutex::new(Vec::new()),
            browsers: Mutex::new(Vec::new()),
            next_browser: AtomicU64::new(0),
            counters: Counters::default(),
        };
        let addr = Ipv4Addr::new(192, 168, 100, 200);
        let label = m.instance(addr);
        assert!(label.len() <= wire::MAX_LABEL, "{label}");
        assert!(label.ends_with(" at 192.168.100.200:9753"), "{label}");
        // What it announces reads back as its own board.
        let msg = wire::parse(&m.records(addr, false)).unwrap();
        let instance = format!("{label}._edgemon._tcp.local");
        let f = board(&msg, &instance, addr).unwrap();
        assert_eq!(f.address, SocketAddrV4::new(addr, 9753));
        assert_eq!(f.name, label);
        // A goodbye has every TTL at 0.
        let bye = wire::parse(&m.records(addr, true)).unwrap();
        assert!(bye.records.iter().all(|r| r.ttl == 0));
    }
}
