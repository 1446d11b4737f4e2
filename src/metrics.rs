//! `GET /metrics`: Prometheus text exposition of the host (from the cached sample) and of the
//! daemon's own counters. Built on request from cached figures; nothing is measured here.

use std::fmt::Write as _;

use crate::app::App;
use crate::collect::disk::Disk;
use crate::collect::{SystemData, unique};

/// Exposition text for a scrape: host gauges from `data` (none before the first sample), then
/// the daemon's own counters.
pub fn render(app: &App, data: Option<&SystemData>) -> String {
    let mut m = Metrics::default();
    if let Some(d) = data {
        host(&mut m, d);
    }
    daemon(&mut m, app);
    alerts(&mut m, app);
    m.out
}

/// `edgemon_alert_firing`: 1 for each firing alert instance, 0 for one that is not (pending or
/// ok); a rule on a metric this host cannot read has no sample. `target` is the sensor or mount,
/// empty for a host-wide metric.
fn alerts(m: &mut Metrics, app: &App) {
    m.by_label(
        (
            "edgemon_notifications_total",
            "counter",
            "Alert notifications by result: sent, retried (an attempt failed), failed (gave up), suppressed (over 10 a minute), dropped (queue full).",
        ),
        "result",
        app.notify_counters.list().map(|(r, n)| (r, n as f64)),
    );
    let instances = app.sampler.alerts_firing();
    if instances.is_empty() {
        return;
    }
    m.family(
        "edgemon_alert_firing",
        "gauge",
        "1 while the alert fires on the target, else 0 (the rules: /api/alerts).",
    );
    for (name, severity, target, firing) in instances {
        m.sample(
            "edgemon_alert_firing",
            &[
                ("alert", &name),
                ("severity", severity),
                ("target", &target),
            ],
            f64::from(u8::from(firing)),
        );
    }
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

    /// A family whose samples differ in one label, `key`.
    fn by_label<L: AsRef<str>>(
        &mut self,
        (name, kind, help): (&str, &str, &str),
        key: &str,
        samples: impl IntoIterator<Item = (L, f64)>,
    ) {
        self.family(name, kind, help);
        for (label, value) in samples {
            self.sample(name, &[(key, label.as_ref())], value);
        }
    }
}

/// Label values escape backslash, double quote and newline.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Integers without a fraction; a value an `f32` holds exactly (the sampler's readings are
/// `f32`) as the shortest decimal that gives that `f32` back, so `0.071` and not the widening's
/// `0.07099999904632569`; anything else as Rust prints an `f64` (also the shortest round trip).
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else if f64::from(v as f32) == v {
        format!("{}", v as f32)
    } else {
        format!("{v}")
    }
}

/// Host gauges from one sample.
fn host(m: &mut Metrics, d: &SystemData) {
    let per_core = |v: &[f32]| -> Vec<(String, f64)> {
        v.iter()
            .enumerate()
            .map(|(i, x)| (i.to_string(), f64::from(*x / 100.0)))
            .collect()
    };
    let mut cpu = vec![("total".to_string(), f64::from(d.cpu.total / 100.0))];
    cpu.extend(per_core(&d.cpu.cores));
    let usage = (
        "edgemon_cpu_usage_ratio",
        "gauge",
        "CPU busy time over the last second, 0-1.",
    );
    m.by_label(usage, "cpu", cpu);
    if let Some(b) = &d.cpu.breakdown {
        let family = (
            "edgemon_cpu_mode_ratio",
            "gauge",
            "Share of all cores' time over the last second by mode, 0-1 (idle is the rest).",
        );
        let modes = [
            ("user", b.user),
            ("system", b.system),
            ("iowait", b.iowait),
            ("irq", b.irq),
            ("softirq", b.softirq),
            ("steal", b.steal),
        ];
        m.by_label(
            family,
            "mode",
            modes.map(|(k, v)| (k, f64::from(v / 100.0))),
        );
    }
    if let Some(freq) = &d.cpu.freq_mhz {
        let family = (
            "edgemon_cpu_frequency_hertz",
            "gauge",
            "Current CPU core frequency.",
        );
        m.by_label(
            family,
            "cpu",
            freq.iter()
                .enumerate()
                .map(|(i, f)| (i.to_string(), *f as f64 * 1e6)),
        );
    }
    if let Some(l) = &d.load {
        let family = ("edgemon_load_average", "gauge", "System load average.");
        m.by_label(
            family,
            "period",
            [("1m", l.one), ("5m", l.five), ("15m", l.fifteen)],
        );
    }
    let memory = &d.memory;
    m.by_label(
        ("edgemon_memory_bytes", "gauge", "RAM by state."),
        "state",
        [
            ("total", memory.total),
            ("used", memory.used),
            ("available", memory.available),
        ]
        .map(|(k, v)| (k, v as f64)),
    );
    m.by_label(
        ("edgemon_swap_bytes", "gauge", "Swap by state."),
        "state",
        [("total", d.swap.total as f64), ("used", d.swap.used as f64)],
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
        let labels = unique(temps.iter().map(|t| t.label.as_str()));
        m.by_label(
            (
                "edgemon_temperature_celsius",
                "gauge",
                "Temperature sensor reading.",
            ),
            "sensor",
            labels
                .iter()
                .zip(temps)
                .map(|(l, t)| (l, f64::from(t.celsius))),
        );
    }
    if let Some(pi) = &d.pi {
        let name = "edgemon_pi_throttle";
        m.family(
            name,
            "gauge",
            "Raspberry Pi firmware throttle flags (1 = set), now and since boot.",
        );
        for (flag, f) in [
            ("under_voltage", pi.under_voltage),
            ("freq_capped", pi.freq_capped),
            ("throttled", pi.throttled),
            ("soft_temp_limit", pi.soft_temp_limit),
        ] {
            // A flag the source cannot read has no sample.
            for (when, v) in [("now", f.now), ("since_boot", f.since_boot)] {
                if let Some(v) = v {
                    m.sample(
                        name,
                        &[("flag", flag), ("when", when), ("source", pi.source)],
                        f64::from(u8::from(v)),
                    );
                }
            }
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
        m.by_label(
            (
                "edgemon_network_receive_bytes_total",
                "counter",
                "Bytes received per interface.",
            ),
            "interface",
            nets.iter().map(|n| (&n.name, n.rx_total as f64)),
        );
        m.by_label(
            (
                "edgemon_network_transmit_bytes_total",
                "counter",
                "Bytes sent per interface.",
            ),
            "interface",
            nets.iter().map(|n| (&n.name, n.tx_total as f64)),
        );
        m.by_label(
            (
                "edgemon_network_errors_total",
                "counter",
                "Receive and transmit errors per interface.",
            ),
            "interface",
            nets.iter().map(|n| (&n.name, n.errors_total as f64)),
        );
        m.by_label(
            (
                "edgemon_network_drops_total",
                "counter",
                "Packets dropped (in and out) per interface.",
            ),
            "interface",
            nets.iter().map(|n| (&n.name, n.drops_total as f64)),
        );
        let wifi: Vec<_> = nets
            .iter()
            .filter_map(|n| n.wifi.map(|w| (&n.name, w)))
            .collect();
        if !wifi.is_empty() {
            m.by_label(
                (
                    "edgemon_wifi_signal_dbm",
                    "gauge",
                    "Wi-Fi signal level (/proc/net/wireless).",
                ),
                "interface",
                wifi.iter()
                    .filter_map(|(n, w)| Some((n, f64::from(w.signal_dbm?)))),
            );
            m.by_label(
                (
                    "edgemon_wifi_quality_ratio",
                    "gauge",
                    "Wi-Fi link quality, 1 = full.",
                ),
                "interface",
                wifi.iter().map(|(n, w)| (n, f64::from(w.quality) / 100.0)),
            );
        }
    }
    if let Some(io) = d.disk_io.as_ref().filter(|io| !io.is_empty()) {
        m.by_label(
            (
                "edgemon_disk_read_bytes_total",
                "counter",
                "Bytes read per block device since boot (/proc/diskstats).",
            ),
            "device",
            io.iter().map(|x| (&x.device, x.read_total as f64)),
        );
        m.by_label(
            (
                "edgemon_disk_written_bytes_total",
                "counter",
                "Bytes written per block device since boot: the wear an SD card takes.",
            ),
            "device",
            io.iter().map(|x| (&x.device, x.written_total as f64)),
        );
    }
    if let Some(fans) = d.fans.as_ref().filter(|f| !f.is_empty()) {
        let labels = unique(fans.iter().map(|f| f.label.as_str()));
        m.by_label(
            ("edgemon_fan_rpm", "gauge", "Fan speed (hwmon fan*_input)."),
            "fan",
            labels.iter().zip(fans).map(|(l, f)| (l, f.rpm as f64)),
        );
    }
    if let Some(disks) = &d.disks {
        for (name, help, value) in [
            (
                "edgemon_disk_size_bytes",
                "Filesystem size.",
                (|x: &Disk| x.total) as fn(&Disk) -> u64,
            ),
            (
                "edgemon_disk_available_bytes",
                "Filesystem space available to users.",
                |x: &Disk| x.available,
            ),
        ] {
            m.family(name, "gauge", help);
            for x in disks {
                m.sample(
                    name,
                    &[("mount", &x.mount), ("fstype", &x.fs)],
                    value(x) as f64,
                );
            }
        }
    }
}

/// The daemon's own counters.
fn daemon(m: &mut Metrics, app: &App) {
    m.by_label(
        (
            "edgemon_build_info",
            "gauge",
            "Always 1; the version is a label.",
        ),
        "version",
        [(env!("CARGO_PKG_VERSION"), 1.0)],
    );
    if let crate::services::Count::Failed(n) = app.sampler.units_failed() {
        m.single(
            "edgemon_units_failed",
            "gauge",
            "systemd units in the failed state (counted every 30 s; absent without systemd).",
            n as f64,
        );
    }
    let own = app.sampler.own();
    for (name, kind, help, value) in [
        (
            "edgemon_daemon_uptime_seconds",
            "gauge",
            "Time since the daemon started.",
            app.started.elapsed().as_secs_f64().floor(),
        ),
        (
            "edgemon_resident_memory_bytes",
            "gauge",
            "Resident memory of the daemon.",
            own.rss as f64,
        ),
        (
            "edgemon_written_bytes_total",
            "counter",
            "Bytes the daemon caused to be written to block devices (0 without --state-dir).",
            own.written_bytes as f64,
        ),
        (
            "edgemon_cpu_ratio",
            "gauge",
            "CPU used by the daemon over the last second, in cores.",
            f64::from(own.cpu / 100.0),
        ),
        (
            "edgemon_connections_active",
            "gauge",
            "Open WebSocket connections.",
            app.limits.active() as f64,
        ),
        (
            "edgemon_connections_total",
            "counter",
            "WebSocket connections accepted since start.",
            app.limits.connections_total() as f64,
        ),
    ] {
        m.single(name, kind, help, value);
    }
    let (per_ip, total) = app.limits.rejected();
    m.by_label(
        (
            "edgemon_connections_rejected_total",
            "counter",
            "WebSocket upgrades refused by a limit since start.",
        ),
        "reason",
        [("per_ip", per_ip as f64), ("max_connections", total as f64)],
    );
    m.by_label(
        (
            "edgemon_clients_refused_total",
            "counter",
            "Clients refused or slowed by a limit since start (see the README's Security section).",
        ),
        "reason",
        app.limits
            .refused()
            .into_iter()
            .map(|(why, n)| (why.label(), n as f64)),
    );
    let hubs = app.registry.stats();
    m.single(
        "edgemon_hubs",
        "gauge",
        "Live hubs (topics with subscribers or lingering).",
        hubs.len() as f64,
    );
    m.by_label(
        (
            "edgemon_subscribers",
            "gauge",
            "Subscribers per live topic.",
        ),
        "topic",
        hubs.iter().map(|h| (&h.topic, h.subscribers as f64)),
    );
    let counters = app.registry.topic_counters();
    m.by_label(
        (
            "edgemon_frames_sent_total",
            "counter",
            "Frames written to clients, per topic.",
        ),
        "topic",
        counters.iter().map(|(t, sent, _)| (t, *sent as f64)),
    );
    m.by_label(
        (
            "edgemon_frames_dropped_total",
            "counter",
            "Frames dropped from full subscriber queues, per topic.",
        ),
        "topic",
        counters.iter().map(|(t, _, dropped)| (t, *dropped as f64)),
    );
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
        // A reading of 7.1 % as the sampler holds it: f32, divided as f32, then widened.
        assert_eq!(number(f64::from(7.1f32 / 100.0)), "0.071");
        assert_eq!(number(f64::from(48.3f32)), "48.3");
        assert_eq!(number(0.1), "0.1");
        assert_eq!(number(1.0 / 3.0), "0.3333333333333333");
        assert_eq!(number(1e20), "100000000000000000000");
    }

    #[test]
    fn repeated_label_values_become_unique() {
        let v = unique(["acpitz", "cpu", "acpitz", "acpitz"].into_iter());
        assert_eq!(v, ["acpitz", "cpu", "acpitz#2", "acpitz#3"]);
    }
}
