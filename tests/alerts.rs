//! Alerts end to end on an in-process daemon reading a fixture sysfs tree the test changes: the
//! `alerts` topic, `GET /api/alerts`, the events and `/metrics` agree on firing and resolved.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

fn firing_line(metrics: &str, alert: &str) -> Option<String> {
    metrics
        .lines()
        .find(|l| l.starts_with(&format!("edgemon_alert_firing{{alert=\"{alert}\"")))
        .map(str::to_string)
}

#[test]
fn under_voltage_fires_and_resolves_on_the_topic_the_api_the_events_and_metrics() {
    let pi = PiSysfs::new("uv");
    let mut c = config();
    c.sys_root = pi.0.clone();
    c.alert_min_resolve = Duration::from_secs(1);
    c.alerts =
        edgemon::alerts::rule_set(&["busy: cpu > 1000 for 5m info".to_string()], true).unwrap();
    let srv = start(c);
    within(40, async {
        // Subscribed to `system` too: details (the Pi flags) are read every second while watched.
        let mut ws = ws(srv.addr, "/ws").await;
        send(&mut ws, r#"{"op":"subscribe","topic":"system"}"#).await;
        send(&mut ws, r#"{"op":"subscribe","topic":"alerts"}"#).await;
        let first = alerts_frame_with(&mut ws, "under_voltage", "ok").await;
        for name in [
            "throttled",
            "hot",
            "disk_full",
            "memory_low",
            "failed_units",
            "busy",
        ] {
            state_of(&first, name);
        }
        let names: Vec<_> = first["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names[0], "under_voltage",
            "defaults first, in their order: {names:?}"
        );
        let busy = rule_of(&first, "busy");
        assert_eq!(busy["rule"], "cpu > 1000 for 5m info");
        assert_eq!(busy["severity"], "info");

        // The supply sags: under-voltage now.
        pi.mask("0x50005");
        let fired = alerts_frame_with(&mut ws, "under_voltage", "firing").await;
        let uv = fired["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == "under_voltage")
            .unwrap();
        assert_eq!(uv["severity"], "critical");
        assert_eq!(uv["value"], 1.0);
        assert!(uv["since"].as_u64().unwrap() > 0);
        assert_eq!(
            state_of(&fired, "throttled"),
            "firing",
            "0x50005 is throttled too"
        );
        let api = get(srv.addr, "/api/alerts");
        assert_eq!(api.status, 200);
        assert_eq!(state_of(&api.json(), "under_voltage"), "firing");
        let metrics = get(srv.addr, "/metrics").body;
        assert_eq!(
            firing_line(&metrics, "under_voltage").as_deref(),
            Some(
                "edgemon_alert_firing{alert=\"under_voltage\",severity=\"critical\",target=\"\"} 1"
            )
        );
        let events = get(srv.addr, "/api/events").json();
        let on: Vec<&Value> = events["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "alert" && e["state"] == "on")
            .collect();
        assert!(
            on.iter().any(|e| e["text"]
                .as_str()
                .unwrap()
                .starts_with("alert under_voltage (critical) firing")),
            "{events}"
        );

        // Cleared (the since-boot bits stay): resolved after the hold, once.
        pi.mask("0x50000");
        let resolved = alerts_frame_with(&mut ws, "under_voltage", "ok").await;
        assert!(
            resolved["resolved"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["name"] == "under_voltage"),
            "{resolved}"
        );
        let metrics = get(srv.addr, "/metrics").body;
        assert!(
            firing_line(&metrics, "under_voltage")
                .unwrap()
                .ends_with(" 0")
        );
        let events = get(srv.addr, "/api/events").json();
        let alert_events: Vec<(String, String)> = events["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| {
                e["kind"] == "alert" && e["text"].as_str().unwrap().contains("under_voltage")
            })
            .map(|e| {
                (
                    e["state"].as_str().unwrap().into(),
                    e["text"].as_str().unwrap().into(),
                )
            })
            .collect();
        assert_eq!(
            alert_events.len(),
            2,
            "one firing, one resolve: {alert_events:?}"
        );
        assert_eq!(alert_events[1].0, "off");
        assert!(alert_events[1].1.contains("resolved"), "{alert_events:?}");
    });
}

#[test]
fn a_new_subscriber_gets_the_state_at_once_and_rules_the_host_cannot_read_are_unavailable() {
    // No Pi here: an empty tree.
    let root = std::env::temp_dir().join(format!("edgemon-alerts-none-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    let mut c = config();
    c.sys_root = root.clone();
    let srv = start(c);
    within(20, async {
        let topics = get(srv.addr, "/api/topics").json();
        assert!(
            topics["topics"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t == "alerts"),
            "{topics}"
        );
        let mut ws = ws(srv.addr, "/ws/alerts").await;
        let f = loop {
            let f = next_of_type(&mut ws, "data").await;
            if f["topic"] == "alerts" && state_of(&f["data"], "under_voltage") == "unavailable" {
                break f;
            }
        };
        let uv = f["data"]["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == "under_voltage")
            .unwrap()
            .clone();
        assert_eq!(uv["reason"], "no Raspberry Pi throttle source on this host");
        let api = get(srv.addr, "/api/alerts").json();
        assert_eq!(state_of(&api, "under_voltage"), "unavailable");
        // Nothing fires on a quiet test host, so nothing is counted as firing.
        let metrics = get(srv.addr, "/metrics").body;
        assert!(
            firing_line(&metrics, "under_voltage").is_none(),
            "an unavailable rule has no series"
        );
    });
    drop(srv);
    let _ = std::fs::remove_dir_all(root);
}

#[test]
fn a_pi_with_hwmon_only_reads_under_voltage_and_leaves_the_other_flags_null() {
    let pi = PiSysfs::hwmon_only("hwmon-only", true);
    let mut c = config();
    c.sys_root = pi.0.clone();
    let srv = start(c);
    first_quiet_sample(&srv);
    let system = get(srv.addr, "/api/system").json();
    let p = &system["pi"];
    assert_eq!(p["source"], "hwmon", "{system}");
    assert_eq!(p["under_voltage"]["now"], true);
    assert!(p["under_voltage"]["since_boot"].is_null(), "{p}");
    for flag in ["throttled", "freq_capped", "soft_temp_limit"] {
        assert!(p[flag]["now"].is_null(), "{flag} is null, never false: {p}");
    }
    let metrics = get(srv.addr, "/metrics").body;
    assert!(
        metrics.contains(
            "edgemon_pi_throttle{flag=\"under_voltage\",when=\"now\",source=\"hwmon\"} 1"
        ),
        "{metrics}"
    );
    assert!(
        !metrics.contains("flag=\"throttled\""),
        "no sample for a flag the source cannot read:\n{metrics}"
    );
    within(20, async {
        let mut ws = ws(srv.addr, "/ws").await;
        send(&mut ws, r#"{"op":"subscribe","topic":"system"}"#).await;
        send(&mut ws, r#"{"op":"subscribe","topic":"alerts"}"#).await;
        let f = alerts_frame_with(&mut ws, "under_voltage", "firing").await;
        assert_eq!(state_of(&f, "throttled"), "unavailable");
        let throttled = rule_of(&f, "throttled");
        assert!(
            throttled["reason"].as_str().unwrap().contains("hwmon"),
            "{throttled}"
        );
    });
}
