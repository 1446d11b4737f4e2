//! A board's compact state (the `summary` topic, a few hundred bytes a second), built from this
//! board's sample, and read back from a peer's frames, where it is untrusted input: every field
//! is checked, strings are capped, and anything else is refused.

use serde::{Deserialize, Serialize};

use crate::collect::SystemData;

/// Longest name (a host name is at most 64; some are odd).
const MAX_NAME: usize = 64;
/// Longest mount point kept.
const MAX_MOUNT: usize = 128;

/// The Pi flags a summary carries: what is happening now.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pi {
    /// Under-voltage now.
    pub under_voltage: Option<bool>,
    /// Throttled now.
    pub throttled: Option<bool>,
}

/// The fullest disk.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Disk {
    /// Its mount point.
    pub mount: String,
    /// Percent used.
    pub used_pct: f32,
}

/// Alerts firing now.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Alerts {
    /// How many instances fire.
    pub firing: u32,
    /// The worst severity among them (`critical`, `warning`, `info`).
    pub worst: Option<String>,
}

/// A board's compact state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Summary {
    /// Host name.
    pub name: String,
    /// edgemon's version there.
    pub version: String,
    /// Seconds since boot.
    pub uptime: Option<u64>,
    /// CPU, % of all cores.
    pub cpu: f32,
    /// Memory in use, %.
    pub memory_pct: f32,
    /// The hottest sensor, °C.
    pub temp_max: Option<f32>,
    /// Raspberry Pi flags, on a Pi.
    pub pi: Option<Pi>,
    /// The fullest disk.
    pub disk: Option<Disk>,
    /// Alerts firing.
    pub alerts: Alerts,
}

fn pct(part: u64, whole: u64) -> f32 {
    if whole == 0 {
        0.0
    } else {
        crate::collect::round1((part as f64 * 100.0 / whole as f64) as f32)
    }
}

/// This board's summary: its host name, a sample, and its firing alerts' severities.
pub fn build(name: &str, d: &SystemData, firing: &[&'static str]) -> Summary {
    let worst = ["critical", "warning", "info"]
        .into_iter()
        .find(|s| firing.contains(s))
        .map(String::from);
    let disk = d.disks.as_ref().and_then(|disks| {
        disks
            .iter()
            .filter(|k| k.total > 0)
            .map(|k| (pct(k.total - k.available.min(k.total), k.total), k))
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(used_pct, k)| Disk {
                mount: k.mount.clone(),
                used_pct,
            })
    });
    Summary {
        name: name.to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        uptime: d.uptime,
        cpu: d.cpu.total,
        memory_pct: pct(d.memory.used, d.memory.total),
        temp_max: d
            .temperatures
            .as_ref()
            .and_then(|t| t.iter().map(|t| t.celsius).max_by(|a, b| a.total_cmp(b))),
        pi: d.pi.as_ref().map(|p| Pi {
            under_voltage: p.under_voltage.now,
            throttled: p.throttled.now,
        }),
        disk,
        alerts: Alerts {
            firing: firing.len() as u32,
            worst,
        },
    }
}

/// A peer's summary, checked: `Err` says what is wrong with it.
pub fn validate(data: &serde_json::Value) -> Result<Summary, String> {
    let s: Summary = Summary::deserialize(data).map_err(|e| format!("not a summary: {e}"))?;
    let finite = |v: f32, max: f32| v.is_finite() && (0.0..=max).contains(&v);
    if s.name.is_empty() || s.name.len() > MAX_NAME || s.name.chars().any(char::is_control) {
        return Err("a summary's name must be 1-64 printable characters".into());
    }
    if s.version.len() > 32 || s.version.chars().any(char::is_control) {
        return Err("a summary's version is not a version".into());
    }
    if !finite(s.cpu, 100.0) || !finite(s.memory_pct, 100.0) {
        return Err("a summary's cpu and memory_pct are percentages".into());
    }
    if s.temp_max
        .is_some_and(|t| !t.is_finite() || !(-100.0..=300.0).contains(&t))
    {
        return Err("a summary's temp_max is out of range".into());
    }
    if let Some(d) = &s.disk
        && (d.mount.len() > MAX_MOUNT || !finite(d.used_pct, 100.0))
    {
        return Err("a summary's disk is out of range".into());
    }
    if s.alerts.firing > 10_000
        || s.alerts
            .worst
            .as_deref()
            .is_some_and(|w| !["critical", "warning", "info"].contains(&w))
    {
        return Err("a summary's alerts are out of range".into());
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> serde_json::Value {
        serde_json::json!({"name":"pi4","version":"0.1.0","uptime":100,"cpu":12.5,"memory_pct":40.0,
            "temp_max":51.2,"pi":{"under_voltage":false,"throttled":null},
            "disk":{"mount":"/","used_pct":73.0},"alerts":{"firing":1,"worst":"warning"}})
    }

    #[test]
    fn a_peers_summary_is_checked_field_by_field() {
        let s = validate(&good()).unwrap();
        assert_eq!((s.name.as_str(), s.alerts.firing), ("pi4", 1));
        // What it serializes to reads back the same.
        assert_eq!(validate(&serde_json::to_value(&s).unwrap()).unwrap(), s);
        for (field, bad) in [
            ("name", serde_json::json!("")),
            ("name", serde_json::json!("x".repeat(65))),
            ("name", serde_json::json!("a\u{1b}[2J")),
            ("cpu", serde_json::json!(-1)),
            ("cpu", serde_json::json!(1e9)),
            ("memory_pct", serde_json::json!("40")),
            ("temp_max", serde_json::json!(5000)),
            ("alerts", serde_json::json!({"firing":1,"worst":"doom"})),
            ("extra", serde_json::json!(1)),
        ] {
            let mut v = good();
            v[field] = bad;
            assert!(validate(&v).is_err(), "{field}: {v}");
        }
        assert!(validate(&serde_json::json!([1, 2])).is_err());
    }
}
