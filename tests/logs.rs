//! Log topics (`--log NAME=PATH`) end to end: backfill, follow, rotation, truncation, a missing file,
//! missed-line markers, and names that must never become paths.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use edgemon::Config;
use serde_json::Value;

/// A temporary directory removed on drop.
struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
fn temp(name: &str) -> TempDir {
    let d = std::env::temp_dir().join(format!("edgemon-logs-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    TempDir(d)
}

fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

fn with_log(name: &str, path: &Path) -> Config {
    Config {
        logs: vec![(name.to_string(), path.to_path_buf())],
        ..config()
    }
}

/// Lines of every history frame until one that is the last (shorter than a full frame is not
/// knowable), so: read history frames until the next frame is not history.
async fn history_lines(ws: &mut Ws) -> (Vec<String>, Value) {
    let mut lines = Vec::new();
    loop {
        let v = next_json(ws).await;
        if v["type"] != "history" {
            return (lines, v);
        }
        for item in v["data"].as_array().unwrap() {
            lines.push(item["data"]["line"].as_str().unwrap().to_string());
        }
    }
}

/// The next `data` frame's line.
async fn next_line(ws: &mut Ws) -> String {
    let v = next_of_type(ws, "data").await;
    v["data"]["line"].as_str().unwrap().to_string()
}

#[test]
fn a_new_subscriber_gets_the_last_100_lines_then_every_new_line() {
    let d = temp("basic");
    let p = d.0.join("app.log");
    append(
        &p,
        &(1..=150).map(|i| format!("line {i}\n")).collect::<String>(),
    );
    let srv = start(with_log("app", &p));
    let topics = get(srv.addr, "/api/topics").json();
    assert!(
        topics["topics"]
            .as_array()
            .unwrap()
            .contains(&"logs/app".into())
    );
    within(20, async {
        let mut ws = ws(srv.addr, "/ws/logs/app").await;
        assert_eq!(next_json(&mut ws).await["type"], "subscribed");
        let v = next_json(&mut ws).await;
        assert_eq!(v["type"], "history");
        assert_eq!(v["topic"], "logs/app");
        let mut lines: Vec<String> = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["data"]["line"].as_str().unwrap().to_string())
            .collect();
        // 100 lines may span more than one (8 KiB) history frame.
        while lines.len() < 100 {
            let v = next_json(&mut ws).await;
            assert_eq!(v["type"], "history");
            for i in v["data"].as_array().unwrap() {
                lines.push(i["data"]["line"].as_str().unwrap().to_string());
            }
        }
        assert_eq!(lines.len(), 100);
        assert_eq!(lines[0], "line 51");
        assert_eq!(lines[99], "line 150");

        append(&p, "fresh line\n");
        let v = next_of_type(&mut ws, "data").await;
        assert_eq!(v["data"]["line"], "fresh line");
        assert_eq!(v["seq"], 101);
    });
}

#[test]
fn rotation_and_truncation_are_followed() {
    let d = temp("rotate");
    let p = d.0.join("syslog");
    append(&p, "before\n");
    let srv = start(with_log("sys", &p));
    within(20, async {
        let mut ws = ws(srv.addr, "/ws/logs/sys").await;
        assert_eq!(next_json(&mut ws).await["type"], "subscribed");
        let (hist, _) = {
            let v = next_json(&mut ws).await;
            (v, ())
        };
        assert_eq!(hist["data"][0]["data"]["line"], "before");

        // logrotate's default: rename, then the writer re-creates the file.
        std::fs::rename(&p, d.0.join("syslog.1")).unwrap();
        append(&p, "after rotation\n");
        assert_eq!(next_line(&mut ws).await, "after rotation");

        // copytruncate: the same file emptied in place.
        std::fs::File::create(&p).unwrap();
        append(&p, "after truncation\n");
        assert_eq!(next_line(&mut ws).await, "after truncation");
    });
}

#[test]
fn a_missing_file_is_reported_and_followed_once_it_appears() {
    let d = temp("missing");
    let p = d.0.join("later.log");
    let srv = start(with_log("later", &p));
    within(20, async {
        let mut ws = ws(srv.addr, "/ws/logs/later").await;
        assert_eq!(next_json(&mut ws).await["type"], "subscribed");
        let (lines, err) = history_lines(&mut ws).await;
        assert!(lines.is_empty());
        assert_eq!(err["type"], "error");
        assert_eq!(err["topic"], "logs/later");
        assert!(
            err["error"].as_str().unwrap().contains("later.log"),
            "{err}"
        );
        append(&p, "it exists now\n");
        assert_eq!(next_line(&mut ws).await, "it exists now");
    });
}

#[test]
fn a_subscriber_that_falls_behind_gets_a_missed_lines_marker() {
    let d = temp("missed");
    let p = d.0.join("burst.log");
    append(&p, "");
    let mut c = with_log("burst", &p);
    c.send_queue = 4;
    let srv = start(c);
    within(20, async {
        // A reader with a tiny receive window that reads nothing during the burst: the hub writes
        // while the socket takes it, then the queue of 4 overflows.
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        sock.connect(&srv.addr.into()).unwrap();
        let std: std::net::TcpStream = sock.into();
        let tcp = smol::net::TcpStream::try_from(std).unwrap();
        let mut ws = ws_over(tcp, srv.addr, "/ws/logs/burst").await.unwrap();
        assert_eq!(next_json(&mut ws).await["type"], "subscribed");
        assert_eq!(next_json(&mut ws).await["type"], "history");
        // 200 lines of 1 KiB in one poll (more than the socket's buffers): all published at once.
        let pad = "p".repeat(1024);
        append(
            &p,
            &(1..=200)
                .map(|i| format!("b{i} {pad}\n"))
                .collect::<String>(),
        );
        // No event says "frames were dropped": look, briefly, until the queue has overflowed.
        let hub = srv.app.registry.get("logs/burst").unwrap();
        while hub.dropped() == 0 {
            smol::Timer::after(Duration::from_millis(20)).await;
        }
        let (mut got, mut missed) = (0u64, 0u64);
        let mut last_seq = 0;
        while got + missed < 200 {
            let v = next_json(&mut ws).await;
            match v["type"].as_str().unwrap() {
                "missed" => {
                    assert_eq!(v["topic"], "logs/burst");
                    missed += v["lines"].as_u64().unwrap();
                }
                "data" => {
                    got += 1;
                    let seq = v["seq"].as_u64().unwrap();
                    assert!(seq > last_seq);
                    last_seq = seq;
                }
                other => panic!("unexpected {other}: {v}"),
            }
        }
        assert_eq!(
            got + missed,
            200,
            "every line is either delivered or counted as missed"
        );
        assert!(missed > 0, "a queue of 4 cannot hold a burst of 200");
        assert_eq!(last_seq, 200, "the newest line is always delivered");
    });
}

#[test]
fn log_names_never_become_paths() {
    let d = temp("names");
    let p = d.0.join("app.log");
    append(&p, "x\n");
    let srv = start(with_log("app", &p));
    for path in [
        "/ws/logs/../../etc/shadow",
        "/ws/logs/%2e%2e%2fetc%2fshadow",
        "/ws/logs/app/../app",
        "/ws/logs/",
        "/ws/logs/APP",
    ] {
        let resp = within(10, refused(srv.addr, path));
        assert_eq!(resp.status(), 404, "{path}");
    }
    within(10, async {
        let mut ws = ws(srv.addr, "/ws").await;
        send(&mut ws, r#"{"op":"subscribe","topic":"logs/../app.log"}"#).await;
        let e = next_json(&mut ws).await;
        assert_eq!(e["error"], "unknown topic");
    });
}

#[test]
fn the_file_is_open_only_while_someone_subscribes() {
    let d = temp("fd");
    let p = d.0.join("watched.log");
    append(&p, "x\n");
    let srv = start(with_log("w", &p));
    let open = || {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| std::fs::read_link(e.path()).is_ok_and(|t| t == p))
            .count()
    };
    assert_eq!(open(), 0);
    within(20, async {
        let mut ws = ws(srv.addr, "/ws/logs/w").await;
        next_json(&mut ws).await;
        next_json(&mut ws).await;
        assert_eq!(open(), 1, "the followed file is open while subscribed");
        ws.close(None).await.unwrap();
    });
    assert!(srv.wait_until(
        Duration::from_secs(10),
        |s| s["hubs"].as_array().unwrap().is_empty() && s["producers"] == 0
    ));
    assert_eq!(open(), 0, "the file stays open after the hub is gone");
}

#[test]
fn a_connection_holds_at_most_32_subscriptions() {
    let d = temp("many");
    let p = d.0.join("x.log");
    append(&p, "x\n");
    let srv = start(Config {
        logs: (0..40).map(|i| (format!("l{i}"), p.clone())).collect(),
        ..config()
    });
    within(30, async {
        let mut ws = ws(srv.addr, "/ws").await;
        for i in 0..32 {
            send(
                &mut ws,
                &format!(r#"{{"op":"subscribe","topic":"logs/l{i}"}}"#),
            )
            .await;
            assert_eq!(
                next_of_type(&mut ws, "subscribed").await["topic"],
                format!("logs/l{i}")
            );
        }
        send(&mut ws, r#"{"op":"subscribe","topic":"logs/l32"}"#).await;
        let e = next_of_type(&mut ws, "error").await;
        assert!(
            e["error"]
                .as_str()
                .unwrap()
                .contains("too many subscriptions"),
            "{e}"
        );
        // Still open: dropping one makes room.
        send(&mut ws, r#"{"op":"unsubscribe","topic":"logs/l0"}"#).await;
        next_of_type(&mut ws, "unsubscribed").await;
        send(&mut ws, r#"{"op":"subscribe","topic":"logs/l32"}"#).await;
        assert_eq!(
            next_of_type(&mut ws, "subscribed").await["topic"],
            "logs/l32"
        );
    });
}

#[test]
fn a_fifo_at_a_log_path_is_refused_at_once_and_holds_no_thread() {
    let d = temp("fifo");
    let p = d.0.join("pipe.log");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&p)
            .status()
            .unwrap()
            .success()
    );
    let mut c = with_log("pipe", &p);
    c.hub_linger = Duration::ZERO;
    let srv = start(c);
    within(30, async {
        // Every subscribe starts the hub anew; each open must come back at once (a blocking open
        // of a FIFO with no writer never returns, and held a pool thread per hub start).
        for _ in 0..20 {
            let mut ws = ws(srv.addr, "/ws/logs/pipe").await;
            assert_eq!(next_json(&mut ws).await["type"], "subscribed");
            let (lines, err) = history_lines(&mut ws).await;
            assert!(lines.is_empty());
            assert_eq!(err["type"], "error", "{err}");
            let text = err["error"].as_str().unwrap();
            assert!(text.contains("not a regular file (a FIFO)"), "{text}");
            drop(ws);
            assert!(srv.wait_until(Duration::from_secs(10), |s| s["producers"] == 0));
        }
    });
    assert_eq!(get(srv.addr, "/healthz").status, 200);
}

#[test]
fn a_log_path_swapped_for_a_symlink_is_not_followed() {
    let d = temp("swap");
    let p = d.0.join("app.log");
    let secret = d.0.join("secret");
    std::fs::write(&secret, "root:SECRET-HASH:19000:0:99999:7:::\n").unwrap();
    append(&p, "before the swap\n");
    let srv = start(with_log("app", &p));
    within(30, async {
        let mut ws = ws(srv.addr, "/ws/logs/app").await;
        assert_eq!(next_json(&mut ws).await["type"], "subscribed");
        let hist = next_json(&mut ws).await;
        assert_eq!(hist["data"][0]["data"]["line"], "before the swap", "{hist}");
        // Replace the log by a symlink to the secret (rename is atomic), then grow the secret.
        let link = d.0.join("link.tmp");
        std::os::unix::fs::symlink(&secret, &link).unwrap();
        std::fs::rename(&link, &p).unwrap();
        append(&secret, "more secret\n");
        let err = next_of_type(&mut ws, "error").await;
        let text = err["error"].as_str().unwrap();
        assert!(text.contains("restart edgemon to follow it"), "{text}");
        // Nothing of the secret ever arrives; a real file in its place is followed again.
        std::fs::remove_file(&p).unwrap();
        append(&p, "a real file again\n");
        let line = next_line(&mut ws).await;
        assert_eq!(line, "a real file again");
    });
    let body = get(srv.addr, "/healthz").body;
    assert_eq!(body, "ok\n");
}

#[test]
fn a_configured_path_through_a_symlink_keeps_working() {
    let d = temp("through");
    let real = d.0.join("real.log");
    let link = d.0.join("configured.log");
    append(&real, "first\n");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let srv = start(with_log("app", &link));
    within(20, async {
        let mut ws = ws(srv.addr, "/ws/logs/app").await;
        assert_eq!(next_json(&mut ws).await["type"], "subscribed");
        let hist = next_json(&mut ws).await;
        assert_eq!(hist["data"][0]["data"]["line"], "first", "{hist}");
        append(&real, "second\n");
        assert_eq!(next_line(&mut ws).await, "second");
    });
}

#[test]
fn a_50_mb_line_is_cut_skipped_with_a_marker_and_the_next_line_arrives_promptly() {
    let d = temp("burst");
    let p = d.0.join("app.log");
    append(&p, "before\n");
    let srv = start(with_log("app", &p));
    within(20, async {
        let mut ws = ws(srv.addr, "/ws/logs/app").await;
        assert_eq!(next_json(&mut ws).await["type"], "subscribed");
        let h = next_json(&mut ws).await;
        assert_eq!(
            (&h["type"], &h["data"][0]["data"]["line"]),
            (&"history".into(), &"before".into())
        );
        // 50 MB in one line, then a line to look for: at one read a poll it would come 50 s
        // later; the tail skips ahead instead (this `within` allows 20 s for all of it).
        let mut f = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        let chunk = vec![b'x'; 1024 * 1024];
        for _ in 0..50 {
            f.write_all(&chunk).unwrap();
        }
        f.write_all(b"\nafter the burst\n").unwrap();
        // The line in progress, cut like any over-long line.
        let cut = next_line(&mut ws).await;
        assert!(cut.starts_with(&"x".repeat(8 * 1024)), "{}", &cut[..40]);
        assert!(
            cut.ends_with("more bytes cut]"),
            "{}",
            &cut[cut.len() - 40..]
        );
        // Then the skip, with how many lines unknown, then the line after the burst.
        let m = next_of_type(&mut ws, "missed").await;
        assert_eq!(m["topic"], "logs/app");
        assert_eq!(m["reason"], "too_far");
        assert!(m["lines"].is_null(), "{m}");
        assert_eq!(next_line(&mut ws).await, "after the burst");
    });
}

/// Subscribes `ws` (on `/ws`) to `topic`, resuming after `after` when given; returns the lines
/// (with their `pos`) and notices (`missed` reasons, errors) up to the first live frame or the
/// `marker` line appended by the caller's `then`.
async fn resume_on(ws: &mut Ws, topic: &str, after: Option<&str>) {
    let mut cmd = serde_json::json!({"op": "subscribe", "topic": topic});
    if let Some(a) = after {
        cmd["after"] = a.into();
    }
    send(ws, &cmd.to_string()).await;
    assert_eq!(next_json(ws).await["type"], "subscribed");
}

/// Frames until the line `until` arrives: each line as `line`, a `missed` frame as
/// `missed:REASON`, with the `pos` of every line.
async fn lines_until(ws: &mut Ws, until: &str) -> (Vec<String>, Vec<String>) {
    let (mut out, mut pos) = (Vec::new(), Vec::new());
    loop {
        let v = next_json(ws).await;
        let mut items = Vec::new();
        match v["type"].as_str().unwrap() {
            "history" => items.extend(
                v["data"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| i["data"].clone()),
            ),
            "data" => items.push(v["data"].clone()),
            "missed" => out.push(format!("missed:{}", v["reason"].as_str().unwrap_or("-"))),
            other => panic!("unexpected {other}: {v}"),
        }
        for d in items {
            let line = d["line"].as_str().unwrap().to_string();
            pos.push(d["pos"].as_str().expect("every line has a pos").to_string());
            let done = line == until;
            out.push(line);
            if done {
                return (out, pos);
            }
        }
    }
}

fn numbered(from: u32, to: u32) -> Vec<String> {
    (from..=to).map(|i| format!("line {i}")).collect()
}

#[test]
fn a_subscriber_resumes_right_after_its_last_line_from_the_ring_the_file_or_a_new_daemon() {
    let d = temp("resume");
    let p = d.0.join("app.log");
    let write = |from: u32, to: u32| {
        append(
            &p,
            &numbered(from, to)
                .iter()
                .map(|l| format!("{l}\n"))
                .collect::<String>(),
        )
    };
    write(1, 150);
    let srv = start(with_log("app", &p));
    let hub_gone = |srv: &edgemon::ServerHandle| {
        assert!(srv.wait_until(Duration::from_secs(10), |s| {
            s["hubs"]
                .as_array()
                .unwrap()
                .iter()
                .all(|h| h["topic"] != "logs/app")
        }));
    };
    let pos120 = within(20, async {
        let mut ws = ws(srv.addr, "/ws").await;
        resume_on(&mut ws, "logs/app", None).await;
        let (lines, pos) = lines_until(&mut ws, "line 150").await;
        assert_eq!(lines, numbered(51, 150));
        // From the ring: the hub still runs (this socket holds it).
        let mut again = common::ws(srv.addr, "/ws").await;
        resume_on(&mut again, "logs/app", Some(&pos[69])).await;
        write(151, 151);
        assert_eq!(
            lines_until(&mut again, "line 151").await.0,
            numbered(121, 151)
        );
        pos[69].clone()
    });
    // The hub is gone (linger over); 150 more lines arrive meanwhile. The new hub's ring holds
    // the last 100 (201..300): 121..200 are read from the file again.
    hub_gone(&srv);
    write(152, 300);
    let pos300 = within(20, async {
        let mut ws = ws(srv.addr, "/ws").await;
        resume_on(&mut ws, "logs/app", Some(&pos120)).await;
        write(301, 301);
        let (lines, pos) = lines_until(&mut ws, "line 301").await;
        assert_eq!(lines, numbered(121, 301), "every line once, in order");
        pos[pos.len() - 2].clone()
    });
    drop(srv);
    // Another daemon (a restart): a position of the old one still resumes exactly.
    let srv = start(with_log("app", &p));
    within(20, async {
        let mut ws = ws(srv.addr, "/ws").await;
        resume_on(&mut ws, "logs/app", Some(&pos300)).await;
        write(302, 302);
        assert_eq!(lines_until(&mut ws, "line 302").await.0, numbered(301, 302));
    });
    hub_gone(&srv);
    // Truncated and written again: one `missed` with its reason, then the backlog.
    std::fs::write(&p, "fresh 1\nfresh 2\n").unwrap();
    within(20, async {
        let mut ws = ws(srv.addr, "/ws").await;
        resume_on(&mut ws, "logs/app", Some(&pos300)).await;
        let (lines, _) = lines_until(&mut ws, "fresh 2").await;
        assert_eq!(lines, ["missed:truncated", "fresh 1", "fresh 2"]);
    });
    hub_gone(&srv);
    // Rotated: the line is in another file now.
    let (_, pos_fresh) = within(20, async {
        let mut ws = ws(srv.addr, "/ws").await;
        resume_on(&mut ws, "logs/app", None).await;
        lines_until(&mut ws, "fresh 2").await
    });
    hub_gone(&srv);
    std::fs::rename(&p, d.0.join("app.log.1")).unwrap();
    append(&p, "rotated 1\n");
    within(20, async {
        let mut ws = ws(srv.addr, "/ws").await;
        resume_on(&mut ws, "logs/app", Some(&pos_fresh[0])).await;
        let (lines, _) = lines_until(&mut ws, "rotated 1").await;
        assert_eq!(lines, ["missed:rotated", "rotated 1"]);
    });
}

#[test]
fn a_resume_reads_at_most_2000_lines_then_says_too_far() {
    let d = temp("toofar");
    let p = d.0.join("big.log");
    append(&p, "start\n");
    let srv = start(with_log("big", &p));
    let pos = within(20, async {
        let mut ws = ws(srv.addr, "/ws").await;
        resume_on(&mut ws, "logs/big", None).await;
        lines_until(&mut ws, "start").await.1.remove(0)
    });
    assert!(srv.wait_until(Duration::from_secs(10), |s| {
        s["hubs"].as_array().unwrap().is_empty()
    }));
    append(
        &p,
        &(1..=3000).map(|i| format!("n{i}\n")).collect::<String>(),
    );
    within(20, async {
        let mut ws = ws(srv.addr, "/ws").await;
        resume_on(&mut ws, "logs/big", Some(&pos)).await;
        let (lines, _) = lines_until(&mut ws, "n3000").await;
        let expect: Vec<String> = (1..=2000)
            .map(|i| format!("n{i}"))
            .chain(["missed:too_far".to_string()])
            .chain((2901..=3000).map(|i| format!("n{i}")))
            .collect();
        assert_eq!(lines, expect);
    });
}

#[test]
fn a_bad_after_is_refused_with_a_reason_and_the_connection_serves_on() {
    let d = temp("badpos");
    let p = d.0.join("a.log");
    append(&p, "a\n");
    let srv = start(with_log("a", &p));
    within(20, async {
        let mut ws = ws(srv.addr, "/ws").await;
        for (after, why) in [
            ("x".repeat(300), "longer than 256 bytes"),
            ("f1:1:2:3".to_string(), "6 hex fields"),
            ("f1:1:2:+3:4:1:0".to_string(), "6 hex fields"),
            ("f1:1:2:9:4:1:0".to_string(), "not a position"),
            ("j1:s=1 --output=cat".to_string(), "journal cursor"),
            ("z9:whatever".to_string(), "unknown kind"),
        ] {
            let cmd = serde_json::json!({"op": "subscribe", "topic": "logs/a", "after": after});
            send(&mut ws, &cmd.to_string()).await;
            let v = next_json(&mut ws).await;
            assert_eq!(v["type"], "error", "{v}");
            let e = v["error"].as_str().unwrap();
            assert!(e.starts_with("invalid after: ") && e.contains(why), "{e}");
        }
        send(
            &mut ws,
            r#"{"op":"subscribe","topic":"system","after":"j1:s=1"}"#,
        )
        .await;
        assert!(
            next_json(&mut ws).await["error"]
                .as_str()
                .unwrap()
                .contains("log topics")
        );
        // Still serving: a plain subscribe works.
        resume_on(&mut ws, "logs/a", None).await;
        assert_eq!(lines_until(&mut ws, "a").await.0, ["a"]);
    });
}
