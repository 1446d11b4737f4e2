//! Alert notifications to real HTTP receivers on 127.0.0.1: the generic JSON body and ntfy's
//! headers on firing and resolve, a restart that does not notify again, and (with the real
//! binary) a receiver that is down: retries that stop at the bound while the daemon serves on.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use common::*;
use serde_json::Value;

/// One request a receiver got.
#[derive(Debug)]
struct Got {
    path: String,
    headers: HashMap<String, String>,
    body: String,
}

/// An HTTP receiver answering 200 to every request and handing each to the test.
struct Receiver {
    addr: SocketAddr,
    got: mpsc::Receiver<Got>,
    stop: Arc<AtomicBool>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, got) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                if let Some(g) = read_request(conn) {
                    let _ = tx.send(g);
                }
            }
        });
        Receiver { addr, got, stop }
    }

    /// The next request, within `secs`.
    fn next(&self, secs: u64) -> Got {
        self.got
            .recv_timeout(Duration::from_secs(secs))
            .unwrap_or_else(|_| panic!("no notification within {secs} s"))
    }

    /// The next two requests, by path.
    fn next_two(&self, secs: u64) -> HashMap<String, Got> {
        let (a, b) = (self.next(secs), self.next(secs));
        HashMap::from([(a.path.clone(), a), (b.path.clone(), b)])
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

fn read_request(conn: TcpStream) -> Option<Got> {
    conn.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut r = BufReader::new(conn.try_clone().ok()?);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1)?.to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    let len: usize = headers.get("content-length")?.parse().ok()?;
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    let mut conn = conn;
    let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    Some(Got {
        path,
        headers,
        body: String::from_utf8(body).ok()?,
    })
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

/// A daemon on `pi`'s tree with only the under-voltage rule, notifying `targets`.
fn daemon_config(pi: &PiSysfs, targets: &[String], runtime: Option<PathBuf>) -> edgemon::Config {
    let mut c = config();
    c.sys_root = pi.0.clone();
    c.alert_min_resolve = Duration::from_secs(1);
    c.alerts = edgemon::alerts::rule_set(
        &["under_voltage: pi_under_voltage == 1 critical".into()],
        false,
    )
    .unwrap();
    c.notify = edgemon::deliver::targets(targets).unwrap();
    c.runtime_dir = runtime;
    c
}

/// A client watching `system`, so details (the Pi flags) are read every second.
fn watch(addr: SocketAddr) -> Ws {
    within(10, async {
        let mut ws = ws(addr, "/ws/system").await;
        next_of_type(&mut ws, "data").await;
        ws
    })
}

fn metric(addr: SocketAddr, line_start: &str) -> Option<String> {
    get(addr, "/metrics")
        .body
        .lines()
        .find(|l| l.starts_with(line_start))
        .map(str::to_string)
}

#[test]
fn firing_and_resolve_reach_a_json_receiver_and_ntfy_with_their_fields_and_headers() {
    let pi = PiSysfs::new("both");
    let rx = Receiver::start();
    let targets = [
        format!("http://{}/api/webhook/s3cret-id", rx.addr),
        format!("ntfy+http://{}/pi-alerts", rx.addr),
    ];
    let srv = start(daemon_config(&pi, &targets, None));
    let _ws = watch(srv.addr);
    let host = hostname();

    pi.mask("0x50005");
    let mut got = rx.next_two(20);
    let json = got
        .remove("/api/webhook/s3cret-id")
        .expect("the webhook got one");
    assert_eq!(json.headers["content-type"], "application/json");
    let v: Value = serde_json::from_str(&json.body).unwrap();
    assert_eq!(sorted_keys(&v), edgemon::deliver::JSON_FIELDS);
    assert_eq!(v["alert"], "under_voltage");
    assert_eq!(v["state"], "firing");
    assert_eq!(v["severity"], "critical");
    assert_eq!(v["host"], host.as_str());
    assert_eq!(v["target"], Value::Null);
    assert_eq!(
        (v["value"].as_f64(), v["threshold"].as_f64()),
        (Some(1.0), Some(1.0))
    );
    assert_eq!(v["op"], "==");
    assert!(v["since"].as_u64().unwrap() > 1_700_000_000_000);
    assert_eq!(
        v["url"],
        format!("http://{host}.local:{}/", srv.addr.port()).as_str(),
        "the board's page"
    );
    let ntfy = got.remove("/pi-alerts").expect("ntfy got one");
    assert_eq!(
        ntfy.headers["title"],
        format!("{host}: under_voltage firing")
    );
    assert_eq!(ntfy.headers["priority"], "5");
    assert_eq!(ntfy.headers["tags"], "rotating_light,edgemon");
    assert!(
        ntfy.body
            .starts_with("alert under_voltage (critical) firing: 1"),
        "{}",
        ntfy.body
    );

    // Cleared: one resolve each, after the hold.
    pi.mask("0x50000");
    let mut got = rx.next_two(20);
    let v: Value =
        serde_json::from_str(&got.remove("/api/webhook/s3cret-id").unwrap().body).unwrap();
    assert_eq!(
        (v["alert"].as_str(), v["state"].as_str()),
        (Some("under_voltage"), Some("resolved"))
    );
    let ntfy = got.remove("/pi-alerts").unwrap();
    assert_eq!(
        ntfy.headers["title"],
        format!("{host}: under_voltage resolved")
    );
    assert_eq!(ntfy.headers["priority"], "3");
    assert_eq!(ntfy.headers["tags"], "white_check_mark,edgemon");
    assert_eq!(
        metric(srv.addr, "edgemon_notifications_total{result=\"sent\"}").as_deref(),
        Some("edgemon_notifications_total{result=\"sent\"} 4")
    );
    assert!(rx.got.try_recv().is_err(), "no repeats");
}

#[test]
fn a_restart_does_not_notify_a_firing_alert_again_but_notifies_its_resolve() {
    let pi = PiSysfs::new("restart");
    let runtime = std::env::temp_dir().join(format!("edgemon-notify-run-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&runtime);
    std::fs::create_dir_all(&runtime).unwrap();
    let rx = Receiver::start();
    let targets = [format!("http://{}/hook", rx.addr)];
    let srv = start(daemon_config(&pi, &targets, Some(runtime.clone())));
    let ws = watch(srv.addr);
    pi.mask("0x50005");
    let v: Value = serde_json::from_str(&rx.next(20).body).unwrap();
    assert_eq!(v["state"], "firing");
    drop(ws);
    // A clean stop writes the snapshot with the firing alert in it.
    drop(srv);

    let srv = start(daemon_config(&pi, &targets, Some(runtime.clone())));
    let mut ws = watch(srv.addr);
    // Three samples with details later the rule has been judged (still on) several times.
    within(10, async {
        for _ in 0..3 {
            next_of_type(&mut ws, "data").await;
        }
    });
    let alerts = get(srv.addr, "/api/alerts").json();
    assert_eq!(alerts["alerts"][0]["state"], "firing", "{alerts}");
    assert!(
        rx.got.try_recv().is_err(),
        "the restarted daemon notified an alert it had already sent"
    );
    pi.mask("0x0");
    let v: Value = serde_json::from_str(&rx.next(20).body).unwrap();
    assert_eq!(v["state"], "resolved");
    drop(srv);
    let _ = std::fs::remove_dir_all(runtime);
}

#[test]
fn a_receiver_that_is_down_gets_bounded_retries_and_the_daemon_serves_on() {
    // A port nothing listens on: bound, then closed.
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let url = format!("http://{dead}/hook/s3cret-id");
    // `cpu >= 0` holds on any host: it fires at once.
    let mut d = Daemon::start(&[
        "--no-default-alerts",
        "--alert",
        "always: cpu >= 0 info",
        "--notify",
        &url,
    ]);
    let first = d.wait_line(Duration::from_secs(10), |l| {
        l.contains("notify http://") && l.contains("attempt 1 of 4 failed")
    });
    assert!(first.contains(&format!("notify http://{dead}:")), "{first}");
    for attempt in 2..=3 {
        d.wait_line(Duration::from_secs(10), |l| {
            l.contains(&format!("attempt {attempt} of 4 failed"))
        });
        assert_eq!(get(d.addr, "/healthz").status, 200, "serves while retrying");
    }
    d.wait_line(Duration::from_secs(15), |l| {
        l.contains("giving up after 4 attempts")
    });
    assert_eq!(
        metric(d.addr, "edgemon_notifications_total{result=\"failed\"}").as_deref(),
        Some("edgemon_notifications_total{result=\"failed\"} 1")
    );
    assert_eq!(
        metric(d.addr, "edgemon_notifications_total{result=\"retried\"}").as_deref(),
        Some("edgemon_notifications_total{result=\"retried\"} 3")
    );
    stop_and_check_log(&mut d, "s3cret");
}
