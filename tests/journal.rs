//! `--journal NAME=UNIT` against real journal files written by `systemd-journal-remote`, read with
//! `journalctl -D`. Also checks the `journalctl` child exists only while the hub does and is
//! reaped (no zombie). The tests here take `ONE_AT_A_TIME`, so no other test of this process
//! spawns `journalctl` children while one counts them.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use edgemon::Config;
use serde_json::Value;

const UNIT: &str = "edgemon-test.service";

/// Held by each test of this file: they run one after the other (the child count of one would
/// see the other's `journalctl`).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    // A test that failed while holding it poisons it; the next still runs.
    let guard = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    // The test before may have ended (or failed) with a child still being killed and reaped:
    // start from none, so a count here sees only this test's children.
    eventually("no journalctl child left by the test before", || {
        journalctl_children().is_empty()
    });
    guard
}

fn journal_remote() -> Option<PathBuf> {
    [
        "/lib/systemd/systemd-journal-remote",
        "/usr/lib/systemd/systemd-journal-remote",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

/// Writes `messages` for `UNIT` as a new journal file in `dir` (as this boot, like real entries).
fn write_journal(tool: &Path, dir: &Path, file: &str, messages: &[&str]) {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap()
        .trim()
        .replace('-', "");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros();
    let mut export = String::new();
    for (i, m) in messages.iter().enumerate() {
        export.push_str(&format!(
            "__REALTIME_TIMESTAMP={}\n__MONOTONIC_TIMESTAMP={}\n_BOOT_ID={boot}\n\
             _SYSTEMD_UNIT={UNIT}\nMESSAGE={m}\n\n",
            now + i as u128,
            now + i as u128
        ));
    }
    let mut child = Command::new(tool)
        .arg("-o")
        .arg(dir.join(file))
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(export.as_bytes())
        .unwrap();
    assert!(
        child.wait().unwrap().success(),
        "systemd-journal-remote failed"
    );
}

/// This process's `journalctl` children: (pid, state).
fn journalctl_children() -> Vec<(u32, char)> {
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter_map(|stat| {
            let (pid, rest) = stat.split_once(" (")?;
            let (comm, rest) = rest.rsplit_once(") ")?;
            let mut f = rest.split_whitespace();
            let state = f.next()?.chars().next()?;
            let ppid: u32 = f.next()?.parse().ok()?;
            (ppid == me && comm == "journalctl").then(|| (pid.parse().unwrap(), state))
        })
        .collect()
}

/// Waits (bounded) until `f` holds; the child list has no change notification to wait on.
fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
#[ignore = "needs journalctl and systemd-journal-remote: run bash tests/all.sh"]
fn journal_lines_follow_and_the_child_lives_only_with_the_hub() {
    let _one = one_at_a_time();
    let (Some(tool), true) = (journal_remote(), Path::new("/usr/bin/journalctl").exists()) else {
        panic!(
            "the journal test needs journalctl (apt install systemd) and systemd-journal-remote \
             (apt install systemd-journal-remote); bash tests/all.sh installs them as root"
        );
    };
    let dir = std::env::temp_dir().join(format!("edgemon-journal-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    write_journal(
        &tool,
        &dir,
        "a.journal",
        &["boot message", "second message"],
    );

    let srv = start(Config {
        journals: vec![
            ("svc".into(), UNIT.into()),
            ("ghost".into(), "edgemon-no-such-unit.service".into()),
        ],
        journal_dir: Some(dir.clone()),
        ..config()
    });
    assert!(
        journalctl_children().is_empty(),
        "a child before anyone subscribed"
    );
    within(30, async {
        let mut ws = ws(srv.addr, "/ws/logs/svc").await;
        assert_eq!(next_json(&mut ws).await["type"], "subscribed");
        let h = next_json(&mut ws).await;
        assert_eq!(h["type"], "history", "{h}");
        let lines: Vec<&str> = h["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["data"]["line"].as_str().unwrap())
            .collect();
        assert_eq!(lines, ["boot message", "second message"]);

        eventually("one journalctl -f child", || {
            journalctl_children().len() == 1
        });
        write_journal(&tool, &dir, "b.journal", &["a new line"]);
        let v = next_of_type(&mut ws, "data").await;
        assert_eq!(v["data"]["line"], "a new line");
        assert_eq!(v["seq"], 3);
        ws.close(None).await.unwrap();

        // A unit with no entries at all (a mistyped name): subscribed, an empty history, and an
        // error frame saying so, not silence.
        let mut ghost = common::ws(srv.addr, "/ws/logs/ghost").await;
        assert_eq!(next_json(&mut ghost).await["type"], "subscribed");
        let e = next_of_type(&mut ghost, "error").await;
        assert_eq!(e["topic"], "logs/ghost");
        let text = e["error"].as_str().unwrap();
        assert!(
            text.contains("edgemon-no-such-unit.service") && text.contains("no entries"),
            "{e}"
        );
        ghost.close(None).await.unwrap();
    });
    assert!(srv.wait_until(Duration::from_secs(10), |s| s["producers"] == 0));
    // Killed with the hub and reaped: no journalctl child, running or zombie.
    eventually("the child gone", || journalctl_children().is_empty());
    drop(srv);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
#[ignore = "needs journalctl and systemd-journal-remote: run bash tests/all.sh"]
fn a_journal_resumes_after_its_cursor_through_journalctl() {
    let _one = one_at_a_time();
    let Some(tool) = journal_remote() else {
        panic!("needs systemd-journal-remote (bash tests/all.sh installs it as root)");
    };
    let dir = std::env::temp_dir().join(format!("edgemon-journal-resume-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let msgs = |from: u32, to: u32| (from..=to).map(|i| format!("m{i}")).collect::<Vec<_>>();
    let first = msgs(1, 150);
    write_journal(
        &tool,
        &dir,
        "a.journal",
        &first.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let srv = start(Config {
        journals: vec![("svc".into(), UNIT.into())],
        journal_dir: Some(dir.clone()),
        ..config()
    });
    let subscribe = |after: Option<String>| {
        let mut cmd = serde_json::json!({"op": "subscribe", "topic": "logs/svc"});
        if let Some(a) = after {
            cmd["after"] = a.into();
        }
        cmd.to_string()
    };
    // Lines (and `missed:REASON`) until `until`, with each line's pos.
    async fn until(ws: &mut Ws, until: &str) -> (Vec<String>, Vec<String>) {
        let (mut out, mut pos) = (Vec::new(), Vec::new());
        loop {
            let v = next_json(ws).await;
            let items: Vec<Value> = match v["type"].as_str().unwrap() {
                "history" => v["data"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| i["data"].clone())
                    .collect(),
                "data" => vec![v["data"].clone()],
                "missed" => {
                    out.push(format!("missed:{}", v["reason"].as_str().unwrap()));
                    continue;
                }
                _ => continue,
            };
            for d in items {
                out.push(d["line"].as_str().unwrap().to_string());
                pos.push(d["pos"].as_str().unwrap().to_string());
                if out.last().map(String::as_str) == Some(until) {
                    return (out, pos);
                }
            }
        }
    }
    let pos60 = within(30, async {
        let mut ws = ws(srv.addr, "/ws").await;
        send(&mut ws, &subscribe(None)).await;
        let (lines, pos) = until(&mut ws, "m150").await;
        assert_eq!(lines, msgs(51, 150));
        assert!(pos[9].starts_with("j1:"), "{}", pos[9]);
        pos[9].clone()
    });
    assert!(srv.wait_until(Duration::from_secs(10), |s| s["producers"] == 0));
    // 110 more entries: the new hub's ring holds m161..m260, so m61..m160 come from
    // `journalctl --after-cursor`.
    let more = msgs(151, 260);
    write_journal(
        &tool,
        &dir,
        "b.journal",
        &more.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    within(30, async {
        let mut ws = ws(srv.addr, "/ws").await;
        send(&mut ws, &subscribe(Some(pos60))).await;
        let (lines, _) = until(&mut ws, "m260").await;
        assert_eq!(lines, msgs(61, 260), "every entry once, in order");
        // A cursor of the right form that this journal cannot seek to.
        let mut other = common::ws(srv.addr, "/ws").await;
        send(
            &mut other,
            &subscribe(Some("j1:s=0;i=1;b=0;m=0;t=0;x=0".into())),
        )
        .await;
        let v = next_of_type(&mut other, "missed").await;
        assert_eq!(v["lines"], Value::Null);
        assert!(
            ["not_resumable", "unknown"].contains(&v["reason"].as_str().unwrap()),
            "{v}"
        );
        ws.close(None).await.unwrap();
        other.close(None).await.unwrap();
    });
    assert!(srv.wait_until(Duration::from_secs(10), |s| s["producers"] == 0));
    eventually("the children gone", || journalctl_children().is_empty());
    drop(srv);
    let _ = std::fs::remove_dir_all(&dir);
}
