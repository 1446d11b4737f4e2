//! `/metrics` over a real socket: the families a scrape must find, and (with promtool installed)
//! the text validated by Prometheus' own `promtool check metrics`.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// Runs `promtool check metrics` on `text`: whether it passed, and what promtool said.
fn promtool(text: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "this test needs promtool (apt install prometheus; bash tests/all.sh installs it \
                 as root): {e}"
            )
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let msg =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), msg)
}

/// Two scrapes of a fresh daemon: one before the first sample (daemon counters only), and one
/// after traffic on two topics, when every host and daemon family has series.
fn early_and_busy_scrapes() -> (String, String) {
    // `lo` is on every host, hidden unless included.
    let mut c = config();
    c.net_include = vec!["lo".into()];
    let srv = start(c);
    let early = get(srv.addr, "/metrics");
    assert_eq!(early.status, 200);
    assert!(
        early
            .header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let (_a, _b) = within(20, async {
        // Traffic on two topics, so per-topic counters have series.
        let mut a = ws(srv.addr, "/ws/system").await;
        let mut b = ws(srv.addr, "/ws/processes").await;
        next_of_type(&mut a, "data").await;
        next_of_type(&mut b, "data").await;
        // The scrape above asked for details; a detailed sample follows within two ticks.
        loop {
            let d = next_of_type(&mut a, "data").await;
            if d["data"]["network"].is_array() {
                break;
            }
        }
        (a, b)
    });
    (early.body, get(srv.addr, "/metrics").body)
}

#[test]
fn metrics_have_host_and_daemon_families() {
    let (_, body) = early_and_busy_scrapes();
    for family in [
        "edgemon_cpu_usage_ratio{cpu=\"total\"}",
        "edgemon_cpu_usage_ratio{cpu=\"0\"}",
        "edgemon_memory_bytes{state=\"available\"}",
        "edgemon_swap_bytes{state=\"used\"}",
        "edgemon_load_average{period=\"1m\"}",
        "edgemon_network_receive_bytes_total{interface=\"lo\"}",
        "edgemon_network_errors_total{interface=\"lo\"}",
        "edgemon_network_drops_total{interface=\"lo\"}",
        "edgemon_disk_written_bytes_total{device=",
        "edgemon_disk_read_bytes_total{device=",
        "edgemon_written_bytes_total ",
        "edgemon_connections_active 2",
        "edgemon_connections_total 2",
        "edgemon_connections_rejected_total{reason=\"per_ip\"} 0",
        "edgemon_hubs 2",
        "edgemon_subscribers{topic=\"system\"} 1",
        "edgemon_frames_sent_total{topic=\"processes\"}",
        "edgemon_frames_dropped_total{topic=\"system\"} 0",
        "edgemon_process_scans_total",
        "edgemon_resident_memory_bytes",
        "edgemon_build_info{version=",
    ] {
        assert!(body.contains(family), "no {family} in:\n{body}");
    }
}

#[test]
#[ignore = "needs promtool (apt install prometheus): run bash tests/all.sh"]
fn metrics_are_valid_exposition_for_promtool() {
    let (early, busy) = early_and_busy_scrapes();
    for body in [early, busy] {
        let (ok, msg) = promtool(&body);
        assert!(ok, "promtool rejected:\n{msg}\n{body}");
    }
}

#[test]
fn frames_sent_counts_survive_the_hub() {
    let srv = start(config());
    within(20, async {
        let mut a = ws(srv.addr, "/ws/processes").await;
        next_of_type(&mut a, "data").await;
    });
    assert!(srv.wait_until(Duration::from_secs(10), |s| {
        s["hubs"].as_array().unwrap().is_empty()
    }));
    let body = get(srv.addr, "/metrics").body;
    let line = body
        .lines()
        .find(|l| l.starts_with("edgemon_frames_sent_total{topic=\"processes\"}"))
        .expect("counter kept after the hub went away");
    let n: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n >= 1, "{line}");
}

#[test]
fn an_occasional_reader_gets_complete_data_not_nulls() {
    // `lo` is on every host, hidden unless included.
    let mut c = config();
    c.net_include = vec!["lo".into()];
    let srv = start(c);
    // Nobody watches: the samples between the 10 s detail readings carry none (the first one
    // does, for the history): wait, briefly, for the second.
    first_quiet_sample(&srv);
    within(20, async {
        while srv.app.sampler.latest_data().unwrap().has_details() {
            smol::Timer::after(Duration::from_millis(50)).await;
        }
    });
    // The first read gets them anyway, read on demand by the sampler thread.
    let sys = get(srv.addr, "/api/system").json();
    for field in ["temperatures", "network", "disks"] {
        assert!(sys[field].is_array(), "{field} in {sys}");
    }
    assert!(
        sys["network"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["name"] == "lo"),
        "{sys}"
    );
    let body = get(srv.addr, "/metrics").body;
    assert!(
        body.contains("edgemon_network_receive_bytes_total{interface=\"lo\"}"),
        "{body}"
    );
}

/// Whether `lo` is in `/api/system`'s interfaces, `/metrics` and (once two detailed samples gave it
/// a rate) the history. The history is waited for, up to 20 s, while `/api/system` reads keep the
/// details sampled every second.
fn lo_everywhere(srv: &edgemon::ServerHandle) -> (bool, bool, bool) {
    let addr = srv.addr;
    let names = interface_names(srv);
    let metrics = get(addr, "/metrics")
        .body
        .contains("edgemon_network_receive_bytes_total{interface=\"lo\"}");
    // Some interface with a rate in the history says two detailed samples have been recorded.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let history = loop {
        let h = get(addr, "/api/history?range=10m").json();
        let series = h["series"].as_object().unwrap();
        let rated = series.keys().any(|k| k.starts_with("net."));
        if rated || names.is_empty() || std::time::Instant::now() > deadline {
            break series.contains_key("net.lo.rx_per_s");
        }
        smol::block_on(smol::Timer::after(Duration::from_millis(200)));
    };
    (names.iter().any(|n| n == "lo"), metrics, history)
}

#[test]
fn virtual_interfaces_are_hidden_everywhere_unless_included() {
    let srv = start(config());
    assert_eq!(lo_everywhere(&srv), (false, false, false), "by default");
    let mut c = config();
    c.net_include = vec!["l?".into()];
    let srv = start(c);
    assert_eq!(lo_everywhere(&srv), (true, true, true), "--net-include l?");
    // An exclude adds to the defaults; an include still wins.
    let mut c = config();
    c.net_include = vec!["lo".into()];
    c.net_exclude = vec!["*".into()];
    let srv = start(c);
    assert_eq!(interface_names(&srv), ["lo"]);
}

/// The interfaces `/api/system` reports, once the daemon has a sample.
fn interface_names(srv: &edgemon::ServerHandle) -> Vec<String> {
    first_quiet_sample(srv);
    let sys = get(srv.addr, "/api/system").json();
    sys["network"]
        .as_array()
        .unwrap_or_else(|| panic!("interfaces in a complete sample: {sys}"))
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_string())
        .collect()
}
