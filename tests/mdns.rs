//! Discovery by mDNS across network namespaces this test creates (as root): four namespaces,
//! three boards' and a LAN's, the boards' joined to the LAN's bridge by veth pairs
//! (10.213.0.0/24, nothing else reachable). Daemons in two of them find each other on their
//! `fleet` topic; one stopped goes offline; a daemon with a token is `locked` to the others; a
//! fake announcer of 200 boards leaves the fleet at its 64 boards with the rest counted, and
//! the watching daemon's RSS within the fleet's budget. Where it cannot run (not root, no `ip`)
//! it says SKIPPED; under `CI=true` that fails instead.

mod common;

#[path = "../src/mdns/wire.rs"]
#[allow(dead_code)]
mod wire;

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// The fleet's cap (src/fleet/mod.rs), this board included.
const MAX_BOARDS: usize = 64;
/// The fleet's RSS budget while watched, MiB (the benchmark's `FLEET_RSS_MIB`).
const FLEET_RSS_MIB: f64 = 1.0;
/// The port every daemon listens on, each in its own namespace.
const PORT: u16 = 9753;

/// The namespaces, removed (with their links) when dropped.
struct Lan {
    names: Vec<String>,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Lan {
    /// Boards' namespaces `names[1..]` at 10.213.0.1, .2, ..., on a bridge in `names[0]`.
    fn new(boards: usize) -> Result<Lan, String> {
        let pid = std::process::id();
        let mut lan = Lan { names: Vec::new() };
        let hub = format!("em-lan-{pid}");
        ip(&["netns", "add", &hub])?;
        lan.names.push(hub.clone());
        // Multicast snooping off: every port of the bridge gets the group's datagrams.
        ip(&[
            "-n",
            &hub,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ])?;
        ip(&["-n", &hub, "link", "set", "br0", "up"])?;
        for i in 1..=boards {
            let ns = format!("em-b{i}-{pid}");
            ip(&["netns", "add", &ns])?;
            lan.names.push(ns.clone());
            let port = format!("p{i}");
            ip(&[
                "-n", &hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ])?;
            ip(&["-n", &hub, "link", "set", &port, "master", "br0", "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("10.213.0.{i}/24"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(lan)
    }

    fn board(&self, i: usize) -> &str {
        &self.names[i]
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = ip(&["netns", "del", n]);
        }
    }
}

/// The LAN, or `None` (SKIPPED) where namespaces cannot be made; under `CI=true` that fails.
fn lan(boards: usize) -> Option<Lan> {
    let why = if !rustix::process::geteuid().is_root() {
        Err("not root".to_string())
    } else {
        Lan::new(boards)
    };
    match why {
        Ok(l) => Some(l),
        Err(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("the mDNS test cannot make its network namespaces under CI=true: {why}")
        }
        Err(why) => {
            eprintln!(
                "SKIPPED: the mDNS test needs network namespaces: {why} (run bash tests/all.sh \
                 as root)"
            );
            None
        }
    }
}

/// Runs `f` on a thread inside the network namespace `ns` (sockets it opens are there).
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap();
        // SAFETY: setns moves only this thread, into the namespace of a descriptor that is
        // open for the whole call.
        let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// The next `fleet` data frame whose boards satisfy `pred`.
async fn fleet_until(ws: &mut Ws, what: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        let v = next_of_type(ws, "data").await;
        if v["topic"] != "fleet" {
            continue;
        }
        let boards = v["data"].as_array().unwrap().clone();
        if pred(&boards) {
            return boards;
        }
    }
}

fn state_of_board(boards: &[Value], address: &str) -> Option<String> {
    boards
        .iter()
        .find(|b| b["address"] == address)
        .map(|b| b["state"].as_str().unwrap().to_string())
}

fn rss_kib(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// An announcement of the fake boards `from..to`, all at 10.213.0.3 on ports 20000 + n.
fn fake_boards(from: usize, to: usize) -> Vec<u8> {
    let names: Vec<String> = (from..to).map(|n| format!("fake board {n}")).collect();
    let mut b = wire::Builder::new(true);
    for (n, name) in (from..to).zip(&names) {
        let inst = [name.as_str(), "_edgemon", "_tcp", "local"];
        b.ptr(&inst[1..], &inst, 4500);
        b.srv(&inst, 20000 + n as u16, &["fake", "local"], 120);
    }
    b.a(&["fake", "local"], Ipv4Addr::new(10, 213, 0, 3), 120);
    b.finish()
}

#[test]
#[ignore = "needs root and ip (network namespaces): run bash tests/all.sh"]
fn boards_find_each_other_by_mdns_across_namespaces() {
    let Some(lan) = lan(3) else { return };
    let token = std::env::temp_dir().join(format!("edgemon-mdns-token-{}", std::process::id()));
    std::fs::write(&token, "mdns-test-token-0123456789").unwrap();
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let listen = format!("0.0.0.0:{PORT}");
    let quick = FAST;
    let a = Daemon::start_in_netns(lan.board(1), &listen, &quick);
    let mut b = Daemon::start_in_netns(lan.board(2), &listen, &quick);
    let mut with_token = quick.to_vec();
    with_token.extend(["--token-file", token.to_str().unwrap()]);
    let c = Daemon::start_in_netns(lan.board(3), &listen, &with_token);
    let (a_pid, b_pid) = (a.child.id(), b.child.id());
    let here: std::net::SocketAddr = format!("127.0.0.1:{PORT}").parse().unwrap();

    // B finds A by itself (and is found by it: announcing needs nobody watching).
    in_netns(lan.board(2), move || {
        within(40, async move {
            let mut ws = ws(here, "/ws").await;
            send(&mut ws, r#"{"op":"subscribe","topic":"fleet"}"#).await;
            let boards = fleet_until(&mut ws, "A online on B", |b| {
                state_of_board(b, "10.213.0.1:9753").as_deref() == Some("online")
            })
            .await;
            let a = boards
                .iter()
                .find(|b| b["address"] == "10.213.0.1:9753")
                .unwrap();
            assert_eq!(a["discovered"], true, "{a}");
            assert!(boards[0]["self"] == true, "this board first");
            ws.close(None).await.unwrap();
        })
    });

    let b_stopped = std::sync::Arc::new(std::sync::Mutex::new(None));
    let stop_b = b_stopped.clone();
    let ns_c = lan.board(3).to_string();
    let (before, after, boards, stats) = in_netns(lan.board(1), move || {
        within(90, async move {
            let mut ws = ws(here, "/ws").await;
            send(&mut ws, r#"{"op":"subscribe","topic":"fleet"}"#).await;
            // B online, C locked: it needs a token, and a discovered board is never sent ours.
            let boards = fleet_until(&mut ws, "B online and C locked on A", |b| {
                state_of_board(b, "10.213.0.2:9753").as_deref() == Some("online")
                    && state_of_board(b, "10.213.0.3:9753").as_deref() == Some("locked")
            })
            .await;
            assert_eq!(boards.len(), 3, "{boards:?}");
            // B stops: offline within ping + pong.
            let _ = Command::new("kill")
                .args(["-TERM", &b_pid.to_string()])
                .status();
            let t = Instant::now();
            fleet_until(&mut ws, "B offline on A", |b| {
                state_of_board(b, "10.213.0.2:9753").as_deref() == Some("offline")
            })
            .await;
            *stop_b.lock().unwrap() = Some(t.elapsed());

            // 200 fake boards announced from C's namespace, ten to a datagram.
            let before = rss_kib(a_pid);
            in_netns(&ns_c, || {
                // From port 5353, as responses come (shared with C's daemon, as a second
                // responder on a host would share it).
                use rustix::net::{AddressFamily, SocketFlags, SocketType, sockopt};
                let fd = rustix::net::socket_with(
                    AddressFamily::INET,
                    SocketType::DGRAM,
                    SocketFlags::CLOEXEC,
                    None,
                )
                .unwrap();
                sockopt::set_socket_reuseaddr(&fd, true).unwrap();
                sockopt::set_socket_reuseport(&fd, true).unwrap();
                rustix::net::bind(&fd, &SocketAddrV4::new(Ipv4Addr::new(10, 213, 0, 3), 5353))
                    .unwrap();
                let s = UdpSocket::from(fd);
                rustix::net::sockopt::set_ip_multicast_if(&s, &Ipv4Addr::new(10, 213, 0, 3))
                    .unwrap();
                for from in (0..200).step_by(10) {
                    s.send_to(
                        &fake_boards(from, from + 10),
                        SocketAddrV4::new(Ipv4Addr::new(224, 0, 0, 251), 5353),
                    )
                    .unwrap();
                }
            });
            let boards = fleet_until(&mut ws, "the fleet full", |b| b.len() == MAX_BOARDS).await;
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut stats = Value::Null;
            while Instant::now() < deadline {
                stats = common::stats(here);
                if stats["mdns"]["ignored"].as_u64().unwrap_or(0) >= 139 {
                    break;
                }
                smol::Timer::after(Duration::from_millis(100)).await;
            }
            // The fakes are followed (refused: nobody listens there); a few rounds of that.
            fleet_until(&mut ws, "a few seconds of the full fleet", |_| true).await;
            for _ in 0..3 {
                next_of_type(&mut ws, "data").await;
            }
            let after = rss_kib(a_pid);
            ws.close(None).await.unwrap();
            (before, after, boards, stats)
        })
    });
    let took = b_stopped.lock().unwrap().unwrap();
    assert!(took < Duration::from_secs(6), "B offline after {took:?}");
    assert_eq!(
        b.wait_exit(Duration::from_secs(10)).map(|s| s.code()),
        Some(Some(0))
    );

    // Self, B, C and 61 fakes; the other 139 counted as ignored, none of them listed.
    let fakes = boards
        .iter()
        .filter(|b| b["address"].as_str().unwrap().starts_with("10.213.0.3:2"))
        .count();
    assert_eq!(fakes, MAX_BOARDS - 3);
    assert_eq!(stats["mdns"]["ignored"], 200 - fakes as u64, "{stats}");
    assert_eq!(
        stats["mdns"]["interfaces"],
        serde_json::json!(["10.213.0.1"])
    );
    let grew = (after - before) / 1024.0;
    assert!(
        grew <= FLEET_RSS_MIB,
        "RSS grew {grew:.2} MiB with the fleet full (budget {FLEET_RSS_MIB} MiB)"
    );
    eprintln!("mdns: B offline after {took:?}; RSS {before} -> {after} KiB with 64 boards");
    drop((a, c));
}

#[test]
fn nothing_is_announced_on_loopback_or_with_no_mdns() {
    // mDNS on, but the daemon listens on loopback only: no responder at all.
    let srv = start(edgemon::Config {
        mdns: true,
        ..config()
    });
    assert_eq!(stats(srv.addr)["mdns"], Value::Null);
    drop(srv);
    // Every address, with --no-mdns: none either (nothing bound to port 5353 here).
    let srv = start(edgemon::Config {
        listen: "0.0.0.0:0".parse().unwrap(),
        mdns: false,
        ..config()
    });
    let port = srv.addr.port();
    assert_eq!(
        stats(format!("127.0.0.1:{port}").parse().unwrap())["mdns"],
        Value::Null
    );
}
