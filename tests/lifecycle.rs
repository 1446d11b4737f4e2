//! Connection and hub lifecycle against an in-process daemon, over real sockets on 127.0.0.1.

mod common;

use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::Message;
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use common::*;

use serde_json::Value;
use smol::net::TcpStream;
use smol::stream::StreamExt;

const WAIT: Duration = Duration::from_secs(10);

fn active(n: u64) -> impl Fn(&Value) -> bool {
    move |s| s["active_connections"] == n
}

fn no_hubs(s: &Value) -> bool {
    s["hubs"].as_array().unwrap().is_empty() && s["producers"] == 0
}

#[test]
fn normal_disconnect_returns_counter_to_zero() {
    let srv = start(config());
    within(10, async {
        let mut ws = ws(srv.addr, "/ws/system").await;
        assert_eq!(next_json(&mut ws).await["type"], "subscribed");
        assert!(srv.wait_until(WAIT, active(1)));
        ws.close(None).await.unwrap();
        // The server answers the close handshake, then the stream ends.
        while let Some(Ok(_)) = ws.next().await {}
    });
    assert!(srv.wait_until(WAIT, active(0)), "{}", srv.app.stats());
    assert_eq!(srv.app.stats()["connections_total"], 1);
}

#[test]
fn abrupt_reset_returns_counter_to_zero() {
    let srv = start(config());
    within(10, async {
        let std = std::net::TcpStream::connect(srv.addr).unwrap();
        // Linger 0: closing sends RST, no FIN and no Close frame.
        socket2::SockRef::from(&std)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        let tcp = TcpStream::try_from(std).unwrap();
        let mut ws = ws_over(tcp, srv.addr, "/ws/system").await.unwrap();
        assert_eq!(next_json(&mut ws).await["type"], "subscribed");
        assert!(srv.wait_until(WAIT, active(1)));
        drop(ws);
    });
    assert!(srv.wait_until(WAIT, active(0)), "{}", srv.app.stats());
}

#[test]
fn silent_client_is_dropped_after_ping_and_pong_timeout() {
    let mut c = config();
    c.ping_interval = Duration::from_millis(300);
    c.pong_timeout = Duration::from_millis(300);
    let srv = start(c);
    let t0 = Instant::now();
    // Complete the handshake, then never read: no pong ever goes back.
    let silent = within(10, ws(srv.addr, "/ws"));
    assert!(srv.wait_until(WAIT, active(1)));
    assert!(
        srv.wait_until(WAIT, active(0)),
        "silent client still counted"
    );
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(600),
        "dropped before ping+pong timeout: {took:?}"
    );
    drop(silent);
}

#[test]
fn idle_connection_without_subscription_is_closed_with_1008() {
    let mut c = config();
    c.idle_timeout = Duration::from_millis(300);
    let srv = start(c);
    within(10, async {
        let mut ws = ws(srv.addr, "/ws").await;
        let f = close_frame(&mut ws).await.expect("a close frame");
        assert_eq!(f.code, CloseCode::Policy);
    });
    assert!(srv.wait_until(WAIT, active(0)));
}

#[test]
fn per_ip_limit_refuses_the_sixth_with_429_and_frees_a_slot_on_close() {
    let mut c = config();
    c.max_per_ip = 5;
    let srv = start(c);
    within(20, async {
        let mut open = Vec::new();
        for _ in 0..5 {
            open.push(ws(srv.addr, "/ws").await);
        }
        let resp = refused(srv.addr, "/ws").await;
        assert_eq!(resp.status(), 429);
        assert!(
            resp.headers().get("retry-after").is_some(),
            "no Retry-After"
        );
        let body: Value = serde_json::from_slice(resp.body().as_deref().unwrap()).unwrap();
        assert!(
            body["error"].as_str().unwrap().contains("limit 5"),
            "{body}"
        );
        let s = srv.app.stats();
        assert_eq!(s["rejected_total"], 1);
        assert_eq!(s["active_connections"], 5);

        let mut first = open.remove(0);
        first.close(None).await.unwrap();
        while let Some(Ok(_)) = first.next().await {}
        assert!(srv.wait_until(WAIT, active(4)));
        open.push(ws(srv.addr, "/ws").await);
        assert!(srv.wait_until(WAIT, active(5)));
    });
}

#[test]
fn over_max_connections_gets_503() {
    let mut c = config();
    c.max_connections = 2;
    let srv = start(c);
    within(10, async {
        let _a = ws(srv.addr, "/ws").await;
        let _b = ws(srv.addr, "/ws").await;
        let resp = refused(srv.addr, "/ws").await;
        assert_eq!(resp.status(), 503);
    });
}

#[test]
fn last_subscriber_leaving_stops_producer_and_removes_hub_then_new_one_recreates() {
    let srv = start(config());
    let hub_subs = |n: u64| {
        move |s: &Value| {
            s["hubs"]
                .as_array()
                .unwrap()
                .iter()
                .any(|h| h["topic"] == "system" && h["subscribers"] == n)
                && s["producers"] == 1
        }
    };
    within(20, async {
        let mut a = ws(srv.addr, "/ws/system").await;
        let mut b = ws(srv.addr, "/ws").await;
        send(&mut b, r#"{"op":"subscribe","topic":"system"}"#).await;
        assert_eq!(next_json(&mut b).await["type"], "subscribed");
        assert!(srv.wait_until(WAIT, hub_subs(2)), "{}", srv.app.stats());
        assert!(srv.app.sampler.has_listener());

        send(&mut b, r#"{"op":"unsubscribe","topic":"system"}"#).await;
        assert_eq!(
            next_of_type(&mut b, "unsubscribed").await["topic"],
            "system"
        );
        assert!(srv.wait_until(WAIT, hub_subs(1)));

        a.close(None).await.unwrap();
        while let Some(Ok(_)) = a.next().await {}
        assert!(srv.wait_until(WAIT, no_hubs), "{}", srv.app.stats());
        assert!(!srv.app.sampler.has_listener(), "producer still listening");

        // A new subscriber brings the hub back, with history and live data.
        send(&mut b, r#"{"op":"subscribe","topic":"system"}"#).await;
        assert_eq!(next_of_type(&mut b, "subscribed").await["topic"], "system");
        assert!(srv.wait_until(WAIT, hub_subs(1)));
        assert_eq!(next_of_type(&mut b, "data").await["topic"], "system");
    });
}

#[test]
fn system_subscriber_gets_history_then_consecutive_data() {
    let srv = start(config());
    within(20, async {
        let mut ws = ws(srv.addr, "/ws/system").await;
        assert_eq!(next_json(&mut ws).await["type"], "subscribed");
        let h = next_json(&mut ws).await;
        assert_eq!(h["type"], "history");
        let last_hist = h["data"]
            .as_array()
            .unwrap()
            .last()
            .map_or(0, |i| i["seq"].as_u64().unwrap());
        let d1 = next_of_type(&mut ws, "data").await;
        let d2 = next_of_type(&mut ws, "data").await;
        let s1 = d1["seq"].as_u64().unwrap();
        assert!(s1 > last_hist, "live data repeats history");
        assert_eq!(d2["seq"].as_u64().unwrap(), s1 + 1);
        assert!(d1["ts"].as_u64().unwrap() > 1_600_000_000_000);
        for p in [
            "/cpu/total",
            "/cpu/cores",
            "/memory/total",
            "/swap/used",
            "/load",
        ] {
            assert!(d1["data"].pointer(p).is_some(), "no {p} in {d1}");
        }
    });
}

#[test]
fn bad_commands_get_error_frames_and_the_connection_stays_open() {
    let srv = start(config());
    within(20, async {
        let mut ws = ws(srv.addr, "/ws").await;
        send(&mut ws, "this is not json").await;
        let e = next_json(&mut ws).await;
        assert_eq!(e["type"], "error");
        assert!(e["error"].as_str().unwrap().contains("invalid JSON"), "{e}");

        send(&mut ws, r#"{"op":"dance","topic":"system"}"#).await;
        let e = next_json(&mut ws).await;
        assert_eq!(e["type"], "error");
        assert!(e["error"].as_str().unwrap().contains("unknown op"), "{e}");

        for topic in ["nope", "logs/../../etc/shadow", "logs%2F..%2Fpasswd"] {
            send(
                &mut ws,
                &format!(r#"{{"op":"subscribe","topic":"{topic}"}}"#),
            )
            .await;
            let e = next_json(&mut ws).await;
            assert_eq!(e["type"], "error");
            assert_eq!(e["error"], "unknown topic");
            assert_eq!(e["topic"], topic);
        }

        ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
        assert_eq!(next_json(&mut ws).await["type"], "error");

        // Still open and working.
        send(&mut ws, r#"{"op":"subscribe","topic":"system"}"#).await;
        assert_eq!(next_json(&mut ws).await["type"], "subscribed");
        assert_eq!(next_of_type(&mut ws, "data").await["topic"], "system");
    });
    assert!(
        srv.app.registry.get("nope").is_none(),
        "unknown topics create no hub"
    );
}

#[test]
fn unknown_topic_in_the_path_is_404_before_upgrade() {
    let srv = start(config());
    within(10, async {
        let resp = refused(srv.addr, "/ws/nope").await;
        assert_eq!(resp.status(), 404);
    });
    assert_eq!(srv.app.stats()["active_connections"], 0);
}

#[test]
fn client_message_over_4_kib_closes_with_1009() {
    let srv = start(config());
    within(10, async {
        let mut ws = ws(srv.addr, "/ws").await;
        send(&mut ws, &"x".repeat(5000)).await;
        let f = close_frame(&mut ws).await.expect("close frame");
        assert_eq!(f.code, CloseCode::Size);
    });
    assert!(srv.wait_until(WAIT, active(0)));
}

#[test]
fn a_hundred_invalid_commands_in_a_row_close_with_1008() {
    let srv = start(config());
    within(20, async {
        let mut ws = ws(srv.addr, "/ws").await;
        for _ in 0..100 {
            send(&mut ws, "{").await;
        }
        let f = close_frame(&mut ws).await.expect("close frame");
        assert_eq!(f.code, CloseCode::Policy);
    });
}

#[test]
fn invalid_commands_count_in_a_window_harmless_ones_in_between_reset_nothing() {
    let srv = start(config());
    within(20, async {
        let mut ws = ws(srv.addr, "/ws").await;
        // 99 invalid commands, then a harmless one, then more: the hundredth invalid one closes.
        for i in 0..100 {
            send(&mut ws, "{").await;
            if i == 98 {
                send(&mut ws, r#"{"op":"unsubscribe","topic":"system"}"#).await;
            }
        }
        let f = close_frame(&mut ws).await.expect("close frame");
        assert_eq!(f.code, CloseCode::Policy);
        assert_eq!(f.reason.as_str(), "too many invalid commands");
    });
}

#[test]
fn injected_panic_closes_only_that_connection_and_counters_stay_right() {
    let mut c = config();
    c.test_hooks = true;
    c.flood = Some((Duration::from_secs(1), 10));
    let srv = start(c);
    within(20, async {
        let mut good = ws(srv.addr, "/ws/system").await;
        let mut bad = ws(srv.addr, "/ws").await;
        assert!(srv.wait_until(WAIT, active(2)));
        send(&mut bad, r#"{"op":"panic"}"#).await;
        let f = close_frame(&mut bad).await.expect("close frame");
        assert_eq!(f.code, CloseCode::Error);
        assert!(srv.wait_until(WAIT, active(1)), "{}", srv.app.stats());
        // The other connection keeps receiving, and new ones are served.
        assert_eq!(next_of_type(&mut good, "data").await["topic"], "system");
        let _again = ws(srv.addr, "/ws").await;
        assert!(srv.wait_until(WAIT, active(2)));
    });
    assert_eq!(get(srv.addr, "/healthz").status, 200);
}

#[test]
fn slow_subscriber_neither_delays_a_fast_one_nor_grows_without_bound() {
    let mut c = config();
    c.send_queue = 16;
    c.write_timeout = Duration::from_secs(3);
    c.flood = Some((Duration::from_millis(5), 1000));
    let srv = start(c);
    within(40, async {
        // A reader that never reads, with a tiny receive window so its socket fills fast.
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        sock.connect(&srv.addr.into()).unwrap();
        let std: std::net::TcpStream = sock.into();
        let slow = ws_over(
            TcpStream::try_from(std).unwrap(),
            srv.addr,
            "/ws/test/flood",
        )
        .await
        .unwrap();

        let mut fast = ws(srv.addr, "/ws/test/flood").await;
        assert_eq!(next_json(&mut fast).await["type"], "subscribed");
        let mut worst = Duration::ZERO;
        let mut frames = 0u32;
        let mut slow_gone_at = None;
        let t0 = Instant::now();
        // Read for as long as the slow one lives, then a little more.
        while slow_gone_at.is_none_or(|at: Instant| at.elapsed() < Duration::from_millis(500)) {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "slow subscriber never dropped"
            );
            let v = next_of_type(&mut fast, "data").await;
            let ts = v["ts"].as_u64().unwrap();
            let now = edgemon::protocol::unix_ms();
            worst = worst.max(Duration::from_millis(now.saturating_sub(ts)));
            frames += 1;
            if slow_gone_at.is_none() && srv.app.limits.active() == 1 {
                slow_gone_at = Some(Instant::now());
            }
        }
        // A hub that waited on the slow socket would stall the fast one for the write timeout.
        assert!(
            worst < Duration::from_secs(2),
            "fast subscriber delayed by {worst:?}"
        );
        assert!(frames > 100, "fast subscriber got only {frames} frames");
        let hub = srv.app.registry.get("test/flood").unwrap();
        assert!(hub.dropped() > 0, "the slow queue never overflowed");
        drop(slow);
    });
}

#[test]
fn stats_are_exact() {
    let srv = start(config());
    within(20, async {
        let _a = ws(srv.addr, "/ws/system").await;
        let _b = ws(srv.addr, "/ws/system").await;
        assert!(srv.wait_until(WAIT, active(2)));
        let s = stats(srv.addr);
        assert_eq!(s["status"], "healthy");
        assert_eq!(s["active_connections"], 2);
        assert_eq!(s["max_connections"], 256);
        assert_eq!(s["max_per_ip"], 5);
        assert_eq!(s["connections_total"], 2);
        assert_eq!(s["rejected_total"], 0);
        let hubs = s["hubs"].as_array().unwrap();
        assert_eq!(hubs.len(), 1);
        assert_eq!(hubs[0]["topic"], "system");
        assert_eq!(hubs[0]["subscribers"], 2);
        assert!(hubs[0]["dropped_frames"].is_u64());
    });
}

#[test]
fn system_details_are_sampled_only_while_someone_watches() {
    // `lo` is on every host, hidden unless included.
    let mut c = config();
    c.net_include = vec!["lo".into()];
    let srv = start(c);
    // Nobody subscribed and nobody asked: details every 10th sample (the first one included), for
    // the history, and none in the samples between.
    first_quiet_sample(&srv);
    within(20, async {
        // No event says "a second sample exists": look, briefly.
        while srv.app.sampler.history().len() < 2 {
            smol::Timer::after(Duration::from_millis(50)).await;
        }
    });
    let ring = srv.app.sampler.history();
    let data = |i: usize| serde_json::from_str::<serde_json::Value>(&ring[i].data).unwrap();
    assert_eq!((ring[0].seq, ring[1].seq), (1, 2));
    assert!(data(0)["network"].is_array() && data(0)["temperatures"].is_array());
    for detail in ["network", "disks", "temperatures"] {
        assert!(
            data(1)[detail].is_null(),
            "{detail} in the second quiet sample"
        );
    }
    within(20, async {
        // A subscriber turns them on from the next tick.
        let mut ws = ws(srv.addr, "/ws/system").await;
        let hist = next_of_type(&mut ws, "history").await;
        assert!(hist["host"]["cpu_count"].as_u64().unwrap() > 0, "{hist}");
        let mut detailed = None;
        for _ in 0..3 {
            let d = next_of_type(&mut ws, "data").await;
            if d["data"]["network"].is_array() {
                detailed = Some(d);
                break;
            }
        }
        let d = detailed.expect("no detailed frame within 3 ticks");
        assert!(d["data"]["disks"].is_array() && d["data"]["temperatures"].is_array());
        assert!(
            d["data"]["network"]
                .as_array()
                .unwrap()
                .iter()
                .any(|i| i["name"] == "lo")
        );
    });
}

#[test]
fn a_tab_that_only_answers_pings_is_still_closed_when_idle() {
    let mut c = config();
    c.ping_interval = Duration::from_millis(100);
    c.idle_timeout = Duration::from_millis(600);
    let srv = start(c);
    within(10, async {
        // Reading answers every ping (as a browser does), but never subscribes or sends anything.
        let mut ws = ws(srv.addr, "/ws").await;
        let f = close_frame(&mut ws).await.expect("close frame");
        assert_eq!(f.code, CloseCode::Policy);
        assert_eq!(f.reason.as_str(), "idle");
    });
}

#[test]
fn browser_origins_other_than_the_daemon_get_403() {
    let srv = start(config());
    let upgrade = |origin: &str| {
        let req = format!(
            "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{origin}\r\n",
            srv.addr
        );
        let mut s = std::net::TcpStream::connect(srv.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        std::io::Write::write_all(&mut s, req.as_bytes()).unwrap();
        let mut buf = [0u8; 1024];
        let n = std::io::Read::read(&mut s, &mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let evil = upgrade("Origin: http://evil.example\r\n");
    assert!(evil.starts_with("HTTP/1.1 403"), "{evil}");
    assert!(evil.contains("origin not allowed"), "{evil}");
    let own = upgrade(&format!("Origin: http://{}\r\n", srv.addr));
    assert!(own.starts_with("HTTP/1.1 101"), "{own}");
    let script = upgrade("");
    assert!(script.starts_with("HTTP/1.1 101"), "{script}");
    assert_eq!(
        srv.app.stats()["rejected_total"],
        0,
        "403s are not admission rejections"
    );
}

#[test]
fn processes_topic_lists_top_processes_and_scanning_stops_with_the_hub() {
    let srv = start(config());
    let scans = || srv.app.topics.scans();
    within(30, async {
        let mut ws = ws(srv.addr, "/ws/processes").await;
        assert_eq!(next_json(&mut ws).await["type"], "subscribed");
        let d = next_of_type(&mut ws, "data").await;
        assert_eq!(d["topic"], "processes");
        let procs = d["data"]["processes"].as_array().unwrap();
        assert!(!procs.is_empty() && procs.len() <= 15, "{d}");
        assert!(d["data"]["writers"].as_array().unwrap().len() <= 5, "{d}");
        let readable = d["data"]["io_readable"].as_str().unwrap();
        assert!(readable == "all" || readable == "own", "{d}");
        for p in procs {
            for f in ["pid", "name", "cmd", "user", "cpu", "rss", "state"] {
                assert!(!p[f].is_null(), "{f} missing in {p}");
            }
        }
        let cpus: Vec<f64> = procs.iter().map(|p| p["cpu"].as_f64().unwrap()).collect();
        assert!(
            cpus.windows(2).all(|w| w[0] >= w[1]),
            "not sorted by CPU: {cpus:?}"
        );
        let d2 = next_of_type(&mut ws, "data").await;
        assert_eq!(d2["seq"].as_u64().unwrap(), d["seq"].as_u64().unwrap() + 1);
        assert!(scans() >= 2);
        ws.close(None).await.unwrap();
        while let Some(Ok(_)) = ws.next().await {}
    });
    assert!(srv.wait_until(WAIT, no_hubs), "{}", srv.app.stats());
    let after = scans();
    // Absence can only be shown by waiting: more than a scan period passes with no scan.
    std::thread::sleep(edgemon::topics::PROCESSES_PERIOD + Duration::from_millis(500));
    assert_eq!(scans(), after, "the process table is still being scanned");
}

#[test]
fn server_topic_reports_the_daemon_itself() {
    let srv = start(config());
    within(20, async {
        let mut first = ws(srv.addr, "/ws/server").await;
        assert_eq!(next_json(&mut first).await["type"], "subscribed");
        let d = next_of_type(&mut first, "data").await;
        let v = &d["data"];
        assert_eq!(v["active_connections"], 1, "{d}");
        assert_eq!(v["per_ip"][0]["ip"], "127.0.0.1");
        assert!(
            v["hubs"]
                .as_array()
                .unwrap()
                .iter()
                .any(|h| h["topic"] == "server")
        );
        for f in ["rss", "cpu", "uptime", "frames_sent", "connections_total"] {
            assert!(v[f].is_number(), "{f} missing in {d}");
        }
        // A second subscriber arriving between frames gets the latest one at once.
        let mut late = ws(srv.addr, "/ws/server").await;
        assert_eq!(next_json(&mut late).await["type"], "subscribed");
        assert_eq!(next_json(&mut late).await["topic"], "server");
    });
}

#[test]
fn the_history_op_sends_its_range_in_parts_once_per_ten_seconds() {
    let srv = start(config());
    first_quiet_sample(&srv);
    within(20, async {
        let mut ws = ws(srv.addr, "/ws").await;
        send(
            &mut ws,
            r#"{"op":"history","topic":"system","range":"10m"}"#,
        )
        .await;
        let first = next_of_type(&mut ws, "history").await;
        assert_eq!(first["topic"], "system");
        assert_eq!(first["range"], "10m");
        assert_eq!(first["step_ms"], 1000);
        assert_eq!(first["part"], 1);
        let parts = first["parts"].as_u64().unwrap();
        let ts = first["ts"].as_array().unwrap().len();
        assert!(ts > 0);
        let mut series = first["series"].as_object().unwrap().clone();
        for k in 2..=parts {
            let v = next_of_type(&mut ws, "history").await;
            assert_eq!(v["part"], k);
            series.extend(v["series"].as_object().unwrap().clone());
        }
        let cpu = series["cpu.total"]["mean"].as_array().unwrap();
        assert_eq!(cpu.len(), ts);
        assert!(cpu.last().unwrap().is_number());
        // Again at once: refused, with a reason; a wrong range or topic too.
        for (cmd, says) in [
            (
                r#"{"op":"history","topic":"system","range":"10m"}"#,
                "less than 10 s ago",
            ),
            (
                r#"{"op":"history","topic":"system","range":"2d"}"#,
                "unknown range",
            ),
            (
                r#"{"op":"history","topic":"processes","range":"1h"}"#,
                "system topic only",
            ),
            (r#"{"op":"history","topic":"system"}"#, "missing range"),
        ] {
            send(&mut ws, cmd).await;
            let e = next_of_type(&mut ws, "error").await;
            assert!(e["error"].as_str().unwrap().contains(says), "{cmd}: {e}");
        }
        // Another range is its own allowance.
        send(&mut ws, r#"{"op":"history","topic":"system","range":"1h"}"#).await;
        let v = next_of_type(&mut ws, "history").await;
        assert_eq!(
            (v["range"].as_str(), v["step_ms"].as_u64()),
            (Some("1h"), Some(10_000))
        );
    });
}
