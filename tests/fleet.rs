//! The fleet: boards on loopback addresses (127.0.0.x, one port for all, as boards on a LAN
//! share theirs) following each other with `--peer`, seen through the `fleet` topic; a peer
//! that stops answering, one that breaks the rules, and one that needs a token.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// A port free on every 127.0.0.x address used here (bound once on one, then released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.2:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn board(ip: &str, port: u16, peers: &[String], extra: &[&str]) -> Daemon {
    let listen = format!("{ip}:{port}");
    let mut args: Vec<&str> = FAST.to_vec();
    for p in peers {
        args.extend(["--peer", p.as_str()]);
    }
    args.extend_from_slice(extra);
    Daemon::start_on(&listen, &args)
}

async fn fleet_where(ws: &mut Ws, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    loop {
        let v = next_json(ws).await;
        if v["type"] == "data" && v["topic"] == "fleet" {
            let boards = v["data"].as_array().unwrap().clone();
            if pred(&boards) {
                return boards;
            }
        }
    }
}

fn state_of<'a>(boards: &'a [Value], address: &str) -> &'a str {
    boards
        .iter()
        .find(|b| b["address"] == address)
        .and_then(|b| b["state"].as_str())
        .unwrap_or("absent")
}

#[test]
fn four_boards_see_each_other_and_one_that_stops_answering_goes_offline() {
    let port = free_port();
    let ips = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"];
    let addrs: Vec<String> = ips.iter().map(|ip| format!("{ip}:{port}")).collect();
    let mut boards: Vec<Daemon> = ips
        .iter()
        .enumerate()
        .map(|(i, ip)| {
            let peers: Vec<String> = addrs
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, a)| a.clone())
                .collect();
            board(ip, port, &peers, &[])
        })
        .collect();
    let watcher: SocketAddr = addrs[0].parse().unwrap();
    within(90, async {
        let mut ws = ws(watcher, "/ws").await;
        send(&mut ws, r#"{"op":"subscribe","topic":"fleet"}"#).await;
        let all = fleet_where(&mut ws, |b| {
            b.len() == 4 && b.iter().all(|b| b["state"] == "online")
        })
        .await;
        assert_eq!(all[0]["self"], true);
        assert_eq!(all[0]["address"], addrs[0]);
        for (b, a) in all.iter().zip(&addrs) {
            assert_eq!(&b["address"], a);
            let s = &b["summary"];
            assert!(s["name"].is_string() && s["cpu"].is_number(), "{b}");
            assert!(s["memory_pct"].as_f64().unwrap() > 0.0, "{b}");
            assert!(b["last_seen"].is_u64(), "{b}");
        }
        assert!(all[1..].iter().all(|b| b["self"] == false));

        // One stops answering (stopped, its sockets open): offline within ping + pong.
        boards[3].signal("STOP");
        let stopped = Instant::now();
        let b = fleet_where(&mut ws, |b| state_of(b, &addrs[3]) == "offline").await;
        let took = stopped.elapsed();
        assert!(
            took <= Duration::from_millis(2000 + 1500),
            "offline after {took:?} (ping 1 s + pong 1 s, plus a publish)"
        );
        let gone = b.iter().find(|b| b["address"] == addrs[3]).unwrap();
        assert!(gone["reason"].as_str().unwrap().contains("pong"), "{gone}");
        assert!(
            gone["summary"].is_object() && gone["last_seen"].is_u64(),
            "last seen kept: {gone}"
        );
        assert!(b.iter().filter(|b| b["state"] == "online").count() == 3);
        // Back: online again (reconnects back off to at most 10 s).
        boards[3].signal("CONT");
        fleet_where(&mut ws, |b| state_of(b, &addrs[3]) == "online").await;
        // One that ends: offline, the others stay.
        boards[2].signal("TERM");
        let b = fleet_where(&mut ws, |b| state_of(b, &addrs[2]) == "offline").await;
        assert_eq!(state_of(&b, &addrs[1]), "online");
        assert_eq!(state_of(&b, &addrs[3]), "online");
    });
    for mut d in boards.drain(..) {
        d.signal("TERM");
        let _ = d.wait_exit(Duration::from_secs(6));
    }
}

/// A fake board on `ip:port`: answers every upgrade, then plays `script` on the socket; counts
/// the connections it got.
fn fake_board(
    ip: &str,
    port: u16,
    script: fn(&mut std::net::TcpStream),
) -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
    let listener = TcpListener::bind((ip, port)).unwrap();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = count.clone();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { return };
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
                    if s.read(&mut b).unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(b[0]);
                }
                let head = String::from_utf8_lossy(&head);
                let key = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
                    .unwrap_or("")
                    .trim()
                    .to_string();
                let accept =
                    async_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
                let _ = write!(
                    s,
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
                );
                script(&mut s);
                // Then hold the socket until the daemon lets go.
                let mut sink = [0u8; 1024];
                while s.read(&mut sink).unwrap_or(0) > 0 {}
            });
        }
    });
    count
}

/// A server text frame (unmasked).
fn text_frame(payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x81];
    match payload.len() {
        n if n < 126 => f.push(n as u8),
        n if n < 65536 => {
            f.push(126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(payload);
    f
}

const SUMMARY: &str = r#"{"type":"data","topic":"summary","seq":1,"ts":1,"data":{"name":"fake","version":"0.1.0","uptime":1,"cpu":1.0,"memory_pct":1.0,"temp_max":null,"pi":null,"disk":null,"alerts":{"firing":0,"worst":null}}}"#;

#[test]
fn peers_that_break_the_rules_are_broken_and_one_without_our_token_is_locked() {
    let port = free_port();
    // Oversized: a frame header announcing 1 MiB.
    fake_board("127.0.0.6", port, |s| {
        let mut f = vec![0x81, 127];
        f.extend_from_slice(&(1u64 << 20).to_be_bytes());
        let _ = s.write_all(&f);
        let _ = s.write_all(&vec![b'x'; 64 * 1024]);
    });
    // Malformed: text that is not JSON.
    let malformed = fake_board("127.0.0.7", port, |s| {
        let _ = s.write_all(&text_frame(b"{not json"));
    });
    // Endless: valid summaries as fast as the socket takes them.
    fake_board("127.0.0.8", port, |s| {
        let f = text_frame(SUMMARY.as_bytes());
        for _ in 0..100_000 {
            if s.write_all(&f).is_err() {
                return;
            }
        }
    });
    // Needs a token we do not have.
    let token = std::env::temp_dir().join(format!("edgemon-fleet-token-{}", std::process::id()));
    std::fs::write(&token, "fleet-token-0123456789abcdef").unwrap();
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let locked = board(
        "127.0.0.3",
        port,
        &[],
        &["--token-file", token.to_str().unwrap()],
    );
    let good = board("127.0.0.4", port, &[], &[]);
    let peers: Vec<String> = [
        "127.0.0.6",
        "127.0.0.7",
        "127.0.0.8",
        "127.0.0.3",
        "127.0.0.4",
    ]
    .iter()
    .map(|ip| format!("{ip}:{port}"))
    .collect();
    let mut watcher = board("127.0.0.2", port, &peers, &[]);
    within(60, async {
        let mut ws = ws(watcher.addr, "/ws").await;
        send(&mut ws, r#"{"op":"subscribe","topic":"fleet"}"#).await;
        send(&mut ws, r#"{"op":"subscribe","topic":"system"}"#).await;
        let b = fleet_where(&mut ws, |b| {
            b.len() == 6
                && ["6", "7", "8"]
                    .iter()
                    .all(|n| state_of(b, &format!("127.0.0.{n}:{port}")) == "broken")
                && state_of(b, &format!("127.0.0.3:{port}")) == "locked"
                && state_of(b, &format!("127.0.0.4:{port}")) == "online"
        })
        .await;
        let reason = |n: &str| {
            b.iter()
                .find(|x| x["address"] == format!("127.0.0.{n}:{port}"))
                .unwrap()["reason"]
                .as_str()
                .unwrap()
                .to_string()
        };
        assert!(reason("6").contains("over 16384 bytes"), "{}", reason("6"));
        assert!(reason("7").contains("not JSON"), "{}", reason("7"));
        assert!(reason("8").contains("frames a second"), "{}", reason("8"));
        assert!(reason("3").contains("needs a token"), "{}", reason("3"));
        // The watcher kept serving meanwhile.
        let v = next_of_type(&mut ws, "data").await;
        assert!(v["topic"] == "system" || v["topic"] == "fleet");
    });
    // A broken peer is left alone for a while, not called in a loop.
    let connects = malformed.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(connects, 1, "{connects} connections to a broken peer");
    watcher.signal("TERM");
    let _ = watcher.wait_exit(Duration::from_secs(6));
    for mut d in [locked, good] {
        d.signal("TERM");
        let _ = d.wait_exit(Duration::from_secs(6));
    }
    let _ = std::fs::remove_file(&token);
}

#[test]
fn boards_sharing_a_token_see_each_other() {
    let port = free_port();
    let token = std::env::temp_dir().join(format!("edgemon-fleet-shared-{}", std::process::id()));
    std::fs::write(&token, "shared-token-0123456789abcdef").unwrap();
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let t = token.to_str().unwrap();
    let peer = board("127.0.0.3", port, &[], &["--token-file", t]);
    let mut watcher = board(
        "127.0.0.2",
        port,
        &[format!("127.0.0.3:{port}")],
        &["--token-file", t],
    );
    within(30, async {
        let tcp = smol::net::TcpStream::connect(watcher.addr).await.unwrap();
        let req = async_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
            format!("ws://{}/ws", watcher.addr),
        )
        .unwrap();
        let mut req = req;
        req.headers_mut().insert(
            "Authorization",
            "Bearer shared-token-0123456789abcdef".parse().unwrap(),
        );
        let (mut ws, _) = async_tungstenite::client_async(req, tcp).await.unwrap();
        send(&mut ws, r#"{"op":"subscribe","topic":"fleet"}"#).await;
        fleet_where(&mut ws, |b| {
            state_of(b, &format!("127.0.0.3:{port}")) == "online"
        })
        .await;
    });
    // The token is never in the log.
    stop_and_check_log(&mut watcher, "shared-token-0123456789abcdef");
    let mut peer = peer;
    peer.signal("TERM");
    let _ = peer.wait_exit(Duration::from_secs(6));
    let _ = std::fs::remove_file(&token);
}
