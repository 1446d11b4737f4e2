//! The `containers` topic and container log topics, against a real engine: Debian's `podman`
//! (4.3) serving the Docker-compatible API with `podman system service`, containers run with
//! `runc` (`crun` refuses this machine's hybrid cgroups) from an image imported from Debian's
//! `busybox-static`, with `--network none` (no bridge or firewall rules on the host). Each
//! test gets an engine of its own: storage, socket and containers in a temp directory.
//!
//! Where no engine can run (not root, no podman) the engine tests say SKIPPED and pass, except
//! under `CI=true`, where they fail. The tests without an engine (no socket, a socket that
//! answers garbage or nothing) run everywhere.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use edgemon::LogAccess;
use serde_json::Value;

#[path = "../src/bench/podman.rs"]
mod podman;
use podman::{IMAGE, Podman};

/// A podman engine of this test's own, or `None` (SKIPPED) where none can run; under
/// `CI=true` that fails the test instead.
fn engine(tag: &str) -> Option<Podman> {
    match Podman::start(tag) {
        Ok(p) => Some(p),
        Err(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("no container engine can run here under CI=true: {why}")
        }
        Err(why) => {
            eprintln!(
                "SKIPPED: no container engine can run here: {why} (bash tests/all.sh as root \
                 installs podman, runc and busybox-static)"
            );
            None
        }
    }
}

fn daemon_for(socket: &Path, logs: LogAccess) -> edgemon::ServerHandle {
    start(edgemon::Config {
        docker_socket: Some(socket.to_path_buf()),
        container_logs: logs,
        ..config()
    })
}

/// The next `data` frame of `topic` for which `pred` holds.
async fn data_where(ws: &mut Ws, topic: &str, pred: impl Fn(&Value) -> bool) -> Value {
    loop {
        let v = next_json(ws).await;
        if v["type"] == "data" && v["topic"] == topic && pred(&v["data"]) {
            return v["data"].clone();
        }
    }
}

fn container<'a>(data: &'a Value, name: &str) -> Option<&'a Value> {
    data["containers"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == name)
}

async fn subscribe(ws: &mut Ws, topic: &str) {
    send(ws, &format!(r#"{{"op":"subscribe","topic":"{topic}"}}"#)).await;
}

#[test]
fn containers_are_listed_with_their_figures_and_follow_stop_and_start() {
    let Some(p) = engine("list") else {
        return;
    };
    // A busy one (its CPU shows) and a quiet one that exits on its own.
    p.run("busy", false, "while true; do i=$((i+1)); done");
    p.run("quiet", false, "sleep 3600");
    let srv = daemon_for(&p.socket, LogAccess::Named(vec!["busy".into()]));
    within(90, async {
        let mut ws = ws(srv.addr, "/ws").await;
        subscribe(&mut ws, "containers").await;
        // A rate needs two readings: wait for the one with CPU figures.
        let d = data_where(&mut ws, "containers", |d| {
            container(d, "busy").is_some_and(|c| c["cpu"].is_number())
        })
        .await;
        assert_eq!(d["available"], true);
        assert_eq!(d["total"], 2);
        let busy = container(&d, "busy").unwrap();
        assert_eq!(busy["state"], "running");
        assert_eq!(busy["image"], IMAGE);
        assert_eq!(busy["id"].as_str().unwrap().len(), 12);
        assert!(
            busy["cpu"].as_f64().unwrap() > 20.0,
            "a spinning shell: {busy}"
        );
        assert!(busy["memory"]["used"].as_u64().unwrap() > 0, "{busy}");
        assert!(busy["memory"]["limit"].as_u64().unwrap() > 0, "{busy}");
        assert!(busy["pids"].as_u64().unwrap() >= 1, "{busy}");
        assert!(
            busy["uptime_s"].is_u64() && busy["started"].is_u64(),
            "{busy}"
        );
        assert_eq!(busy["restarts"], 0);
        assert_eq!(busy["health"], Value::Null);
        assert!(
            busy["net"].is_object() && busy["block"].is_object(),
            "{busy}"
        );
        assert_eq!(busy["logs"], "logs/container/busy");
        let quiet = container(&d, "quiet").unwrap();
        assert_eq!(
            quiet["logs"],
            Value::Null,
            "not allowed by --container-logs"
        );
        // The list is ordered running first, then by name.
        let names: Vec<&str> = d["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["busy", "quiet"]);

        p.must(&["stop", "-t", "0", "quiet"]);
        let d = data_where(&mut ws, "containers", |d| {
            container(d, "quiet").is_some_and(|c| c["state"] == "exited")
        })
        .await;
        let quiet = container(&d, "quiet").unwrap();
        assert_eq!(
            quiet["cpu"],
            Value::Null,
            "no figures for a stopped container"
        );
        assert_eq!(quiet["uptime_s"], Value::Null);
        assert_eq!(
            d["containers"][1]["name"], "quiet",
            "stopped ones after running ones"
        );
        p.must(&["start", "quiet"]);
        data_where(&mut ws, "containers", |d| {
            container(d, "quiet").is_some_and(|c| c["state"] == "running" && c["uptime_s"].is_u64())
        })
        .await;
        // A removed container leaves the list.
        p.must(&["rm", "-f", "-t", "0", "quiet"]);
        data_where(&mut ws, "containers", |d| {
            d["total"] == 1 && container(d, "quiet").is_none()
        })
        .await;
    });
    srv.shutdown();
}

/// Lines of log frames (history items or data) in arrival order, with their `pos`.
fn lines_of(v: &Value) -> Vec<(String, String)> {
    let items: Vec<&Value> = match v["type"].as_str() {
        Some("history") => v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| &i["data"])
            .collect(),
        Some("data") => vec![&v["data"]],
        _ => vec![],
    };
    items
        .into_iter()
        .map(|d| {
            (
                d["line"].as_str().unwrap().to_string(),
                d["pos"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// Reads log frames of `topic` until a line satisfies `until`; every line seen, and any
/// `missed` or error frames.
async fn read_log_until(
    ws: &mut Ws,
    topic: &str,
    until: impl Fn(&str) -> bool,
) -> (Vec<(String, String)>, Vec<Value>) {
    let (mut lines, mut notices) = (Vec::new(), Vec::new());
    loop {
        let v = next_json(ws).await;
        if v["topic"] != topic {
            continue;
        }
        if matches!(v["type"].as_str(), Some("missed" | "error")) {
            notices.push(v.clone());
            continue;
        }
        let got = lines_of(&v);
        let done = got.iter().any(|(l, _)| until(l));
        lines.extend(got);
        if done {
            return (lines, notices);
        }
    }
}

fn numbered(lines: &[(String, String)]) -> Vec<u64> {
    lines
        .iter()
        .filter_map(|(l, _)| l.strip_prefix("line ")?.parse().ok())
        .collect()
}

#[test]
fn a_container_log_is_followed_across_a_restart_and_resumes_exactly() {
    let Some(p) = engine("logs") else {
        return;
    };
    // Numbered lines that go on from where they were after a restart (the count is kept in a
    // file inside the container), several per second: Podman stamps lines to the second.
    p.run(
        "app",
        false,
        "i=$(cat /n 2>/dev/null || echo 0); while true; do echo line $i; i=$((i+1)); echo $i > /n; \
         [ $((i % 10)) = 0 ] && echo oops $i >&2; sleep 0.1; done",
    );
    let srv = daemon_for(&p.socket, LogAccess::Named(vec!["app".into()]));
    let topic = "logs/container/app";
    within(120, async {
        assert!(topic_listed(srv.addr, topic));
        let mut ws = ws(srv.addr, "/ws").await;
        subscribe(&mut ws, topic).await;
        assert_eq!(next_json(&mut ws).await["type"], "subscribed");
        let (first, notices) = read_log_until(&mut ws, topic, |l| l == "line 30").await;
        assert!(notices.is_empty(), "{notices:?}");
        let n = numbered(&first);
        assert!(
            n.windows(2).all(|w| w[1] == w[0] + 1),
            "in order, none twice or missing: {n:?}"
        );
        assert!(
            first.iter().any(|(l, _)| l.starts_with("oops ")),
            "stderr is in the log too"
        );
        assert!(
            first
                .iter()
                .all(|(l, p)| !l.contains('\r') && p.starts_with("c1:"))
        );

        // Stopped: subscribers are told; started again: the lines go on, none twice.
        p.must(&["stop", "-t", "0", "app"]);
        let stopped = loop {
            let v = next_json(&mut ws).await;
            if v["type"] == "error" && v["topic"] == topic {
                break v;
            }
        };
        assert!(
            stopped["error"].as_str().unwrap().contains("not running"),
            "{stopped}"
        );
        p.must(&["start", "app"]);
        let (after, _) = read_log_until(&mut ws, topic, |l| {
            l.strip_prefix("line ")
                .and_then(|n| n.parse::<u64>().ok())
                .is_some_and(|n| n >= 60)
        })
        .await;
        let mut all = numbered(&first);
        all.extend(numbered(&after));
        let mut dedup = all.clone();
        dedup.dedup();
        assert_eq!(all, dedup, "no line twice across the restart");
        assert!(
            all.windows(2).all(|w| w[1] > w[0]),
            "in order across the restart: {all:?}"
        );

        // A client that goes away and comes back after the hub is gone resumes right after
        // its last line: from the engine (since), none missing, none twice.
        let last_pos = after.last().unwrap().1.clone();
        let last_n = *numbered(&after).last().unwrap();
        drop(ws);
        // The hub lingers 200 ms; wait for it to go (its producer stops).
        while srv.app.registry.get(topic).is_some() {
            smol::Timer::after(Duration::from_millis(50)).await;
        }
        let mut ws2 = common::ws(srv.addr, "/ws").await;
        let cmd = serde_json::json!({"op": "subscribe", "topic": topic, "after": last_pos});
        send(&mut ws2, &cmd.to_string()).await;
        let target = last_n + 15;
        let (resumed, notices) = read_log_until(&mut ws2, topic, |l| {
            l.strip_prefix("line ")
                .and_then(|n| n.parse::<u64>().ok())
                .is_some_and(|n| n >= target)
        })
        .await;
        assert!(
            notices.iter().all(|n| n["type"] != "missed"),
            "a resume the engine can serve misses nothing: {notices:?}"
        );
        let n = numbered(&resumed);
        assert_eq!(n[0], last_n + 1, "right after the last line seen: {n:?}");
        assert!(n.windows(2).all(|w| w[1] == w[0] + 1), "{n:?}");

        // Another container under the name: the old position cannot be resumed.
        drop(ws2);
        p.must(&["rm", "-f", "-t", "0", "app"]);
        p.run("app", false, "echo fresh; sleep 3600");
        while srv.app.registry.get(topic).is_some() {
            smol::Timer::after(Duration::from_millis(50)).await;
        }
        let mut ws3 = common::ws(srv.addr, "/ws").await;
        let cmd = serde_json::json!({"op": "subscribe", "topic": topic, "after": last_pos});
        send(&mut ws3, &cmd.to_string()).await;
        let missed = next_of_type(&mut ws3, "missed").await;
        assert_eq!(missed["reason"], "not_resumable", "{missed}");
        let (fresh, _) = read_log_until(&mut ws3, topic, |l| l == "fresh").await;
        assert!(
            fresh.iter().all(|(l, _)| !l.starts_with("line ")),
            "{fresh:?}"
        );
    });
    srv.shutdown();
}

#[test]
fn a_tty_containers_log_is_raw_text_and_read_as_lines() {
    let Some(p) = engine("tty") else {
        return;
    };
    p.run(
        "term",
        true,
        "i=0; while true; do echo tty $i; i=$((i+1)); sleep 0.2; done",
    );
    let srv = daemon_for(&p.socket, LogAccess::All);
    let topic = "logs/container/term";
    within(60, async {
        let mut ws = ws(srv.addr, "/ws").await;
        // With `all`, a container's log topic is listed once the containers are known.
        subscribe(&mut ws, "containers").await;
        let d = data_where(&mut ws, "containers", |d| container(d, "term").is_some()).await;
        assert_eq!(container(&d, "term").unwrap()["logs"], topic);
        assert!(topic_listed(srv.addr, topic));
        subscribe(&mut ws, topic).await;
        let (lines, notices) = read_log_until(&mut ws, topic, |l| l == "tty 8").await;
        assert!(notices.is_empty(), "{notices:?}");
        for (l, _) in &lines {
            assert!(
                l.starts_with("tty "),
                "no framing bytes, stamp or CR: {l:?}"
            );
        }
        // A name that is no container: an error frame, not a stall.
        subscribe(&mut ws, "logs/container/nobody").await;
        let e = loop {
            let v = next_json(&mut ws).await;
            if v["type"] == "error" && v["topic"] == "logs/container/nobody" {
                break v;
            }
        };
        assert!(
            e["error"]
                .as_str()
                .unwrap()
                .contains("no container named nobody"),
            "{e}"
        );
    });
    srv.shutdown();
}

#[test]
fn an_engine_that_goes_away_is_reported_and_found_again() {
    let Some(mut p) = engine("away") else {
        return;
    };
    p.run("web", false, "while true; do echo up; sleep 0.5; done");
    let srv = daemon_for(&p.socket, LogAccess::Named(vec!["web".into()]));
    within(90, async {
        let mut ws = ws(srv.addr, "/ws").await;
        subscribe(&mut ws, "containers").await;
        subscribe(&mut ws, "system").await;
        subscribe(&mut ws, "logs/container/web").await;
        data_where(&mut ws, "containers", |d| container(d, "web").is_some()).await;
        p.stop_service();
        let d = data_where(&mut ws, "containers", |d| d["available"] == false).await;
        let reason = d["reason"].as_str().unwrap();
        assert!(
            reason.contains("cannot connect") && reason.contains("api.sock"),
            "{reason}"
        );
        // The log topic says so too, and the system topic goes on meanwhile.
        let (mut log_error, mut samples) = (false, 0);
        while !(log_error && samples >= 2) {
            let v = next_json(&mut ws).await;
            if v["type"] == "error" && v["topic"] == "logs/container/web" {
                assert!(
                    v["error"].as_str().unwrap().contains("cannot connect"),
                    "{v}"
                );
                log_error = true;
            }
            if v["type"] == "data" && v["topic"] == "system" {
                samples += 1;
            }
        }
        p.start_service();
        data_where(&mut ws, "containers", |d| {
            d["available"] == true && container(d, "web").is_some()
        })
        .await;
        let (lines, _) = read_log_until(&mut ws, "logs/container/web", |l| l == "up").await;
        assert!(!lines.is_empty());
    });
    srv.shutdown();
}

#[test]
fn without_a_socket_containers_are_off_with_a_reason() {
    let srv = start(config());
    within(20, async {
        assert!(topic_listed(srv.addr, "containers"));
        let mut ws = ws(srv.addr, "/ws").await;
        subscribe(&mut ws, "containers").await;
        let d = data_where(&mut ws, "containers", |_| true).await;
        assert_eq!(d["available"], false);
        assert!(
            d["reason"].as_str().unwrap().contains("--docker-socket"),
            "{d}"
        );
        // Container log topics do not exist without --container-logs.
        subscribe(&mut ws, "logs/container/web").await;
        let e = next_of_type(&mut ws, "error").await;
        assert_eq!(e["topic"], "logs/container/web", "{e}");
    });
    srv.shutdown();
}

/// An "engine" that answers every connection with `answer` after `delay` (or never).
fn fake_engine(tag: &str, answer: &'static [u8], delay: Option<Duration>) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("edgemon-fake-engine-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("api.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                match delay {
                    Some(d) => std::thread::sleep(d),
                    None => std::thread::sleep(Duration::from_secs(3600)),
                }
                let _ = s.write_all(answer);
            });
        }
    });
    path
}

#[test]
fn an_engine_answering_garbage_or_nothing_is_an_error_and_stalls_nothing() {
    let garbage = fake_engine(
        "garbage",
        b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n[1,}",
        Some(Duration::ZERO),
    );
    let silent = fake_engine("silent", b"", None);
    for (socket, expect) in [(garbage, "makes no sense"), (silent, "did not answer")] {
        let srv = daemon_for(&socket, LogAccess::Off);
        within(30, async {
            let mut ws = ws(srv.addr, "/ws").await;
            subscribe(&mut ws, "containers").await;
            subscribe(&mut ws, "system").await;
            let mut samples = 0;
            loop {
                let v = next_json(&mut ws).await;
                if v["type"] == "data" && v["topic"] == "system" {
                    samples += 1;
                }
                if v["type"] == "data" && v["topic"] == "containers" {
                    assert_eq!(v["data"]["available"], false);
                    let reason = v["data"]["reason"].as_str().unwrap();
                    assert!(reason.contains(expect), "{reason}");
                    if expect == "did not answer" {
                        assert!(
                            samples >= 2,
                            "system samples flowed while the engine was asked"
                        );
                    }
                    break;
                }
            }
        });
        srv.shutdown();
    }
}

#[test]
fn a_resume_from_the_first_backlog_line_is_exact_when_a_second_holds_many_lines() {
    let Some(p) = engine("burst") else {
        return;
    };
    // 150 lines at once: Podman stamps them all with one second, so the last 100 start in the
    // middle of it; their positions must count from the second's first line, as a resume does.
    // Then, once the test says so, 150 more a second later, so the first ones leave the ring.
    p.run(
        "burst",
        false,
        "i=0; while [ $i -lt 150 ]; do echo line $i; i=$((i+1)); done; \
         while [ ! -f /go ]; do sleep 0.1; done; sleep 1.1; \
         while [ $i -lt 300 ]; do echo line $i; i=$((i+1)); done; sleep 3600",
    );
    let srv = daemon_for(&p.socket, LogAccess::Named(vec!["burst".into()]));
    let topic = "logs/container/burst";
    within(60, async {
        // The engine has all 150 before the daemon reads the backlog.
        while !p.must(&["logs", "burst"]).contains("line 149") {
            smol::Timer::after(Duration::from_millis(100)).await;
        }
        let mut ws = ws(srv.addr, "/ws").await;
        subscribe(&mut ws, topic).await;
        let (backlog, _) = read_log_until(&mut ws, topic, |l| l == "line 149").await;
        assert_eq!(numbered(&backlog), (50..150).collect::<Vec<_>>());
        let first_pos = backlog[0].1.clone();
        drop(ws);
        while srv.app.registry.get(topic).is_some() {
            smol::Timer::after(Duration::from_millis(50)).await;
        }
        p.must(&["exec", "burst", "/bin/busybox", "touch", "/go"]);
        while !p.must(&["logs", "burst"]).contains("line 299") {
            smol::Timer::after(Duration::from_millis(100)).await;
        }
        // A new hub's ring holds lines 200-299: the engine is asked again, from that second.
        let mut ws = common::ws(srv.addr, "/ws").await;
        let cmd = serde_json::json!({"op": "subscribe", "topic": topic, "after": first_pos});
        send(&mut ws, &cmd.to_string()).await;
        let (resumed, notices) = read_log_until(&mut ws, topic, |l| l == "line 299").await;
        assert!(notices.is_empty(), "{notices:?}");
        assert_eq!(numbered(&resumed), (51..300).collect::<Vec<_>>());
    });
    srv.shutdown();
}
