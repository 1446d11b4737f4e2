//! The `services` topic and the `units_failed` alert metric, against a fake `systemctl` on
//! `PATH` (tests/fixtures/fake-systemctl) and, where systemd runs, the real one.
//!
//! The fake's answers were recorded from a real systemd 252 (tests/fixtures/systemd-252,
//! SOURCES.md says how): `list-units --output=json` prints an array of objects keyed by the
//! lowercased column names (unit, load, active, sub, description), and `show -p …` prints
//! `Key=value` lines with a blank line between units. The package under a real systemd, through
//! the unit's sandbox, is tests/packaging.sh's.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use serde_json::Value;

/// The recordings the fake answers with.
const RECORDED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/systemd-252");

/// A directory the fake answers from, and `PATH` with the fake first.
struct FakeSystemd {
    dir: PathBuf,
    path: String,
}

impl FakeSystemd {
    fn new(tag: &str, up: bool) -> FakeSystemd {
        let dir =
            std::env::temp_dir().join(format!("edgemon-systemd-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["failed.json", "show.txt"] {
            std::fs::copy(format!("{RECORDED}/{f}"), dir.join(f)).unwrap();
        }
        let count = std::fs::read_to_string(format!("{RECORDED}/count.txt")).unwrap();
        let count = count.trim().strip_prefix("NFailedUnits=").unwrap();
        std::fs::write(dir.join("count"), count).unwrap();
        if !up {
            std::fs::copy(format!("{RECORDED}/down.txt"), dir.join("down")).unwrap();
        }
        let fake = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/fake-systemctl");
        let path = format!("{fake}:{}", std::env::var("PATH").unwrap_or_default());
        FakeSystemd { dir, path }
    }

    fn env(&self) -> [(&str, &str); 2] {
        [
            ("PATH", self.path.as_str()),
            ("FAKE_SYSTEMD_DIR", self.dir.to_str().unwrap()),
        ]
    }

    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("calls"))
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }
}

impl Drop for FakeSystemd {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The first `services` data frame.
fn services_frame(d: &Daemon) -> Value {
    within(30, async {
        let mut ws = ws(d.addr, "/ws/services").await;
        next_of_type(&mut ws, "data").await
    })
}

/// The `failed_units` rule, from the first `alerts` frame in which it is `state` (the count is
/// taken right after start and the rules stepped every second).
fn failed_units_rule(d: &Daemon, state: &str) -> Value {
    within(20, async {
        let mut ws = ws(d.addr, "/ws/alerts").await;
        let f = alerts_frame_with(&mut ws, "failed_units", state).await;
        rule_of(&f, "failed_units").clone()
    })
}

#[test]
fn failed_and_named_units_come_from_systemctl_and_feed_the_alert_and_metrics() {
    let fake = FakeSystemd::new("up", true);
    let mut d = Daemon::start_with_env(
        &[
            "--unit",
            "systemd-journald",
            "--unit",
            "uploader.service",
            "--unit",
            "nope.service",
            // The default with its 1 m hold removed, so that it fires at once.
            "--alert",
            "failed_units: units_failed > 0 warning",
        ],
        &fake.env(),
    );
    let topics = get(d.addr, "/api/topics").json();
    assert!(
        topics["topics"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "services"),
        "services is always listed: {topics}"
    );

    let f = services_frame(&d);
    let data = &f["data"];
    assert_eq!(data["available"], true, "{f}");
    assert_eq!(data["failed_count"], 2);
    let failed: Vec<&str> = data["failed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["unit"].as_str().unwrap())
        .collect();
    assert_eq!(failed, ["backup.service", "camera.service"]);
    assert_eq!(
        data["failed"][0]["description"],
        "Nightly backup to the NAS"
    );
    let unit = |i: usize| {
        let u = &data["units"][i];
        (
            u["unit"].as_str().unwrap(),
            u["active"].as_str().unwrap(),
            u["sub"].as_str().unwrap(),
        )
    };
    assert_eq!(unit(0), ("systemd-journald.service", "active", "running"));
    assert_eq!(data["units"][0]["restarts"], 0);
    assert_eq!(data["units"][0]["since"], 1_796_592_976_000u64);
    assert_eq!(unit(1), ("uploader.service", "active", "running"));
    assert_eq!(data["units"][1]["restarts"], 4);
    assert_eq!(data["units"][1]["description"], "Sensor uploader");
    assert_eq!(data["units"][2]["load"], "not-found");
    assert!(data["units"][2]["since"].is_null());

    // The named units reach systemctl as arguments after `--`, never as options.
    let calls = fake.calls();
    assert!(
        calls.iter().any(|c| c.starts_with("show")
            && c.ends_with("-- systemd-journald uploader.service nope.service")),
        "{calls:?}"
    );
    assert!(
        calls
            .iter()
            .any(|c| c.contains("list-units --state=failed") && c.contains("--output=json")),
        "{calls:?}"
    );

    let rule = failed_units_rule(&d, "firing");
    assert_eq!(rule["value"], 2.0);
    let metrics = get(d.addr, "/metrics").body;
    assert!(metrics.contains("\nedgemon_units_failed 2\n"), "{metrics}");
    assert!(
        metrics.contains(
            "edgemon_alert_firing{alert=\"failed_units\",severity=\"warning\",target=\"\"} 1"
        ),
        "{metrics}"
    );
    stop_and_check_log(&mut d, "never-a-secret");
}

#[test]
fn without_systemd_the_topic_says_why_and_the_rule_is_unavailable() {
    let fake = FakeSystemd::new("down", false);
    let mut d = Daemon::start_with_env(&[], &fake.env());
    let f = services_frame(&d);
    assert_eq!(f["data"]["available"], false, "{f}");
    assert_eq!(
        f["data"]["reason"],
        "System has not been booted with systemd as init system (PID 1). Can't operate."
    );
    let rule = failed_units_rule(&d, "unavailable");
    assert_eq!(rule["reason"], "systemd is not running", "{rule}");
    assert!(
        !get(d.addr, "/metrics")
            .body
            .contains("edgemon_units_failed")
    );
    // Said once in the log, not every 30 s; without /run/systemd/system the 30 s count runs no
    // systemctl at all (the topic still asks it, for its own words).
    if !std::path::Path::new("/run/systemd/system").exists() {
        d.wait_line(Duration::from_secs(10), |l| {
            l.contains("services: systemd units cannot be read: systemd is not running (no /run/systemd/system)")
        });
        assert!(
            !fake.calls().iter().any(|c| c.contains("NFailedUnits")),
            "{:?}",
            fake.calls()
        );
    }
    stop_and_check_log(&mut d, "never-a-secret");

    // No systemctl at all: the same, with that reason.
    let mut d = Daemon::start_with_env(&[], &[("PATH", "/nonexistent")]);
    let f = services_frame(&d);
    assert_eq!(
        f["data"]["reason"], "cannot run systemctl: not found",
        "{f}"
    );
    failed_units_rule(&d, "unavailable");
    stop_and_check_log(&mut d, "never-a-secret");
}

#[test]
fn a_later_subscriber_gets_the_last_reading_at_once() {
    let fake = FakeSystemd::new("later", true);
    let d = Daemon::start_with_env(&[], &fake.env());
    within(30, async {
        let mut first = ws(d.addr, "/ws/services").await;
        let a = next_of_type(&mut first, "data").await;
        // While the first one keeps the hub, a second subscriber does not wait 5 s.
        let mut second = ws(d.addr, "/ws/services").await;
        let b = smol::future::or(next_of_type(&mut second, "data"), async {
            smol::Timer::after(Duration::from_secs(3)).await;
            panic!("no backfill within 3 s (the topic reads every 5 s)");
        })
        .await;
        assert_eq!(a["data"], b["data"]);
        assert!(b["seq"].as_u64() <= a["seq"].as_u64().map(|s| s + 1));
    });
}

#[test]
fn the_real_systemctl_where_systemd_runs() {
    if !std::path::Path::new("/run/systemd/system").exists() {
        // tests/packaging.sh runs the installed package under a real systemd 252 (booted with
        // systemd-nspawn), through the unit's sandbox, and checks this topic there.
        eprintln!(
            "skipped: systemd is not running on this machine (no /run/systemd/system); \
             tests/packaging.sh checks the topic under a real systemd"
        );
        return;
    }
    let d = Daemon::start(&["--unit", "systemd-journald.service"]);
    let f = services_frame(&d);
    assert_eq!(f["data"]["available"], true, "{f}");
    assert!(f["data"]["failed"].is_array());
    assert_eq!(f["data"]["units"][0]["unit"], "systemd-journald.service");
    assert_eq!(f["data"]["units"][0]["load"], "loaded");
}
