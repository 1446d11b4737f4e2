//! A board's compact state (the `summary` topic, a few hundred bytes a second), built from this
//! board's sample, and read back from a peer's frames, where it is untrusted input: every field
//! is checked, strings are capped, and anything else is refused.

use serde::Serialize;
use serde_json::Value;

use crate::collect::SystemData;

/// Longest name (a host name is at most 64; some are odd).
const MAX_NAME: usize = 64;
/// Longest mount point kept.
const MAX_MOUNT: usize = 128;

/// The Pi flags a summary carries: what is happening now.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Pi {
    /// Under-voltage now.
    pub under_voltage: Option<bool>,
    /// Throttled now.
    pub throttled: Option<bool>,
}

/// The fullest disk.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Disk {
    /// Its mount point.
    pub mount: String,
    /// Percent used.
    pub used_pct: f32,
}

/// Alerts firing now.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Alerts {
    /// How many instances fire.
    pub firing: u32,
    /// The worst severity among them (`critical`, `warning`, `info`).
    pub worst: Option<String>,
}

/// A board's compact state.
#[derive(Clone, Debug, PartialEq, Serialize)]
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

/// A peer's summary, checked field by field (read by hand from the JSON value: no derive code
/// for the binary's budget): `Err` says what is wrong with it.
pub fn validate(data: &Value) -> Result<Summary, String> {
    const FIELDS: [&str; 9] = [
        "name",
        "version",
        "uptime",
        "cpu",
        "memory_pct",
        "temp_max",
        "pi",
        "disk",
        "alerts",
    ];
    let why = |what: &str| format!("a summary's {what} is missing or out of range");
    let bad = |what: &str| Err(why(what));
    let obj = data.as_object().ok_or("a summary is an object")?;
    if let Some(k) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(format!(
            "a summary has no field '{}'",
            k.chars().take(32).collect::<String>()
        ));
    }
    let text = |v: &Value, max: usize| {
        v.as_str()
            .filter(|s| s.len() <= max && !s.chars().any(char::is_control))
            .map(String::from)
    };
    let pct = |v: &Value| {
        v.as_f64()
            .filter(|p| (0.0..=100.0).contains(p))
            .map(|p| p as f32)
    };
    // `null` or absent is None; anything else must be valid.
    fn opt<T>(v: &Value, f: impl Fn(&Value) -> Option<T>) -> Result<Option<T>, ()> {
        if v.is_null() {
            Ok(None)
        } else {
            f(v).map(Some).ok_or(())
        }
    }
    let flag = |v: &Value| opt(v, Value::as_bool);
    let Some(name) = text(&data["name"], MAX_NAME).filter(|n| !n.is_empty()) else {
        return bad("name");
    };
    let Some(version) = text(&data["version"], 32) else {
        return bad("version");
    };
    let (Some(cpu), Some(memory_pct)) = (pct(&data["cpu"]), pct(&data["memory_pct"])) else {
        return bad("cpu or memory_pct");
    };
    let uptime = opt(&data["uptime"], Value::as_u64).map_err(|_| why("uptime"))?;
    let temp_max = opt(&data["temp_max"], |v| {
        v.as_f64()
            .filter(|t| (-100.0..=300.0).contains(t))
            .map(|t| t as f32)
    })
    .map_err(|_| why("temp_max"))?;
    let pi = opt(&data["pi"], |p| {
        Some(Pi {
            under_voltage: flag(&p["under_voltage"]).ok()?,
            throttled: flag(&p["throttled"]).ok()?,
        })
    })
    .map_err(|_| why("pi"))?;
    let disk = opt(&data["disk"], |d| {
        Some(Disk {
            mount: text(&d["mount"], MAX_MOUNT)?,
            used_pct: pct(&d["used_pct"])?,
        })
    })
    .map_err(|_| why("disk"))?;
    let a = &data["alerts"];
    let worst = opt(&a["worst"], |w| {
        w.as_str()
            .filter(|w| ["critical", "warning", "info"].contains(w))
            .map(String::from)
    });
    let (Some(firing), Ok(worst)) = (a["firing"].as_u64().filter(|n| *n <= 10_000), worst) else {
        return bad("alerts");
    };
    Ok(Summary {
        name,
        version,
        uptime,
        cpu,
        memory_pct,
        temp_max,
        pi,
        disk,
        alerts: Alerts {
            firing: firing as u32,
            worst,
        },
    })
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
