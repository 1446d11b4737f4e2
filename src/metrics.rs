//! `GET /metrics`: Prometheus text exposition of the host (from the cached sample) and of the
//! daemon's own counters. Built on request from cached figures; nothing is measured here.

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::server::App;

/// Exposition text for a scrape.
pub fn render(app: &App) -> String {
    let mut m = Metrics::default();
    host(&mut m, app);
    daemon(&mut m, app);
    m.out
}

/// Writes metric families: each family's HELP and TYPE once, then its samples.
#[derive(Default)]
struct Metrics {
    /// The text so far.
    out: String,
}

impl Metrics {
    /// Starts a family.
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    /// One sample with `labels` (name, value) pairs.
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", number(value));
    }

    /// A family with a single unlabelled sample.
    fn single(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }
}

/// Label values escape backslash, double quote and newline.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Integers without a fraction; everything finite as Rust prints it.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Makes repeated label values unique (`acpitz`, `acpitz#2`): duplicate series are invalid.
fn unique<'a>(names: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    names
        .map(|n| {
            let k = seen.entry(n).or_default();
            *k += 1;
            if *k == 1 {
                n.to_string()
            } else {
                format!("{n}#{k}")
            }
        })
        .collect()
}

/// Host gauges from the newest sample.
fn host(m: &mut Metrics, app: &App) {
    app.sampler.want_details();
    let Some(d) = app.sampler.latest_data() else {
        return;
    };
    m.family(
        "edgemon_cpu_usage_ratio",
        "gauge",
        "CPU busy time over the last second, 0-1.",
    );
    m.sample(
        "edgemon_cpu_usage_ratio",
        &[("cpu", "total")],
        f64::from(d.cpu.total) / 100.0,
    );
    for (i, c) in d.cpu.cores.iter().enumerate() {
        m.sample(
            "edgemon_cpu_usage_ratio",
            &[("cpu", &i.to_string())],
            f64::from(*c) / 100.0,
        );
    }
    if let Some(freq) = &d.cpu.freq_mhz {
        m.family(
            "edgemon_cpu_frequency_hertz",
            "gauge",
            "Current CPU core frequency.",
        );
        for (i, f) in freq.iter().enumerate() {
            m.sample(
                "edgemon_cpu_frequency_hertz",
                &[("cpu", &i.to_string())],
                *f as f64 * 1e6,
            );
        }
    }
    if let Some(l) = &d.load {
        m.family("edgemon_load_average", "gauge", "System load average.");
        m.sample("edgemon_load_average", &[("period", "1m")], l.one);
        m.sample("edgemon_load_average", &[("period", "5m")], l.five);
        m.sample("edgemon_load_average", &[("period", "15m")], l.fifteen);
    }
    m.family("edgemon_memory_bytes", "gauge", "RAM by state.");
    m.sample(
        "edgemon_memory_bytes",
        &[("state", "total")],
        d.memory.total as f64,
    );
    m.sample(
        "edgemon_memory_bytes",
        &[("state", "used")],
        d.memory.used as f64,
    );
    m.sample(
        "edgemon_memory_bytes",
        &[("state", "available")],
        d.memory.available as f64,
    );
    m.family("edgemon_swap_bytes", "gauge", "Swap by state.");
    m.sample(
        "edgemon_swap_bytes",
        &[("state", "total")],
        d.swap.total as f64,
    );
    m.sample(
        "edgemon_swap_bytes",
        &[("state", "used")],
        d.swap.used as f64,
    );
    if let Some(up) = d.uptime {
        m.single(
            "edgemon_host_uptime_seconds",
            "gauge",
            "Time since the host booted.",
            up as f64,
        );
    }
    if let Some(temps) = d.temperatures.as_ref().filter(|t| !t.is_empty()) {
        m.family(
            "edgemon_temperature_celsius",
            "gauge",
            "Temperature sensor reading.",
        );
        let labels = unique(temps.iter().map(|t| t.label.as_str()));
        for (t, label) in temps.iter().zip(&labels) {
            m.sample(
                "edgemon_temperature_celsius",
                &[("sensor", label)],
                f64::from(t.celsius),
            );
        }
    }
    if let Some(pi) = &d.pi {
        m.family(
            "edgemon_pi_throttle",
            "gauge",
            "Raspberry Pi firmware throttle flags (1 = set), now and since boot.",
        );
        for (flag, f) in [
            ("under_voltage", pi.under_voltage),
            ("freq_capped", pi.freq_capped),
            ("throttled", pi.throttled),
            ("soft_temp_limit", pi.soft_temp_limit),
        ] {
            m.sample(
                "edgemon_pi_throttle",
                &[("flag", flag), ("when", "now")],
                f64::from(u8::from(f.now)),
            );
            m.sample(
                "edgemon_pi_throttle",
                &[("flag", flag), ("when", "since_boot")],
                f64::from(u8::from(f.since_boot)),
            );
        }
        if let Some(alarm) = pi.under_voltage_alarm {
            m.single(
                "edgemon_pi_under_voltage_alarm",
                "gauge",
                "Raspberry Pi hwmon under-voltage alarm (1 = raised).",
                f64::from(u8::from(alarm)),
            );
        }
    }
    if let Some(nets) = &d.network {
        m.family(
            "edgemon_network_receive_bytes_total",
            "counter",
            "Bytes received per interface.",
        );
        for n in nets {
            m.sample(
                "edgemon_network_receive_bytes_total",
                &[("interface", &n.name)],
                n.rx_total as f64,
            );
        }
        m.family(
            "edgemon_network_transmit_bytes_total",
            "counter",
            "Bytes sent per interface.",
        );
        for n in nets {
            m.sample(
                "edgemon_network_transmit_bytes_total",
                &[("interface", &n.name)],
                n.tx_total as f64,
            );
        }
    }
    if let Some(disks) = &d.disks {
        m.family("edgemon_disk_size_bytes", "gauge", "Filesystem size.");
        for x in disks {
            m.sample(
                "edgemon_disk_size_bytes",
                &[("mount", &x.mount), ("fstype", &x.fs)],
                x.total as f64,
            );
        }
        m.family(
            "edgemon_disk_available_bytes",
            "gauge",
            "Filesystem space available to users.",
        );
        for x in disks {
            m.sample(
                "edgemon_disk_available_bytes",
                &[("mount", &x.mount), ("fstype", &x.fs)],
                x.available as f64,
            );
        }
    }
}

/// The daemon's own counters.
fn daemon(m: &mut Metrics, app: &App) {
    m.family(
        "edgemon_build_info",
        "gauge",
        "Always 1; the version is a label.",
    );
    m.sample(
        "edgemon_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1.0,
    );
    m.single(
        "edgemon_daemon_uptime_seconds",
        "gauge",
        "Time since the daemon started.",
        app.started.elapsed().as_secs_f64().floor(),
    );
    let own = app.sampler.own();
    m.single(
        "edgemon_resident_memory_bytes",
        "gauge",
        "Resident memory of the daemon.",
        own.rss as f64,
    );
    m.single(
        "edgemon_cpu_ratio",
        "gauge",
        "CPU used by the daemon over the last second, in cores.",
        f64::from(own.cpu) / 100.0,
    );
    m.single(
        "edgemon_connections_active",
        "gauge",
        "Open WebSocket connections.",
        app.limits.active() as f64,
    );
    m.single(
        "edgemon_connections_total",
        "counter",
        "WebSocket connections accepted since start.",
        app.limits.connections_total() as f64,
    );
    let (per_ip, total) = app.limits.rejected();
    m.family(
        "edgemon_connections_rejected_total",
        "counter",
        "WebSocket upgrades refused by a limit since start.",
    );
    m.sample(
        "edgemon_connections_rejected_total",
        &[("reason", "per_ip")],
        per_ip as f64,
    );
    m.sample(
        "edgemon_connections_rejected_total",
        &[("reason", "max_connections")],
        total as f64,
    );
    let hubs = app.registry.stats();
    m.single(
        "edgemon_hubs",
        "gauge",
        "Live hubs (topics with subscribers or lingering).",
        hubs.len() as f64,
    );
    m.family(
        "edgemon_subscribers",
        "gauge",
        "Subscribers per live topic.",
    );
    for h in &hubs {
        m.sample(
            "edgemon_subscribers",
            &[("topic", &h.topic)],
            h.subscribers as f64,
        );
    }
    let counters = app.registry.topic_counters();
    m.family(
        "edgemon_frames_sent_total",
        "counter",
        "Frames written to clients, per topic.",
    );
    for (topic, sent, _) in &counters {
        m.sample(
            "edgemon_frames_sent_total",
            &[("topic", topic)],
            *sent as f64,
        );
    }
    m.family(
        "edgemon_frames_dropped_total",
        "counter",
        "Frames dropped from full subscriber queues, per topic.",
    );
    for (topic, _, dropped) in &counters {
        m.sample(
            "edgemon_frames_dropped_total",
            &[("topic", topic)],
            *dropped as f64,
        );
    }
    m.single(
        "edgemon_process_scans_total",
        "counter",
        "Process-table scans (only while the processes topic has subscribers).",
        app.topics.scans() as f64,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_numbers_are_written_safely() {
        let mut m = Metrics::default();
        m.family("x", "gauge", "h");
        m.sample("x", &[("a", "q\"uo\\te\nnl")], 2.0);
        m.sample("x", &[], 0.25);
        assert_eq!(
            m.out,
            "# HELP x h\n# TYPE x gauge\nx{a=\"q\\\"uo\\\\te\\nnl\"} 2\nx 0.25\n"
        );
        assert_eq!(number(f64::NAN), "NaN");
        assert_eq!(number(1e20), "100000000000000000000");
    }

    #[test]
    fn repeated_label_values_become_unique() {
        let v = unique(["acpitz", "cpu", "acpitz", "acpitz"].into_iter());
        assert_eq!(v, ["acpitz", "cpu", "acpitz#2", "acpitz#3"]);
    }
}
