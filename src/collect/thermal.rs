//! Temperatures: every hwmon sensor (through sysinfo) and every `/sys/class/thermal/thermal_zone*`
//! (where boards like the Pi expose their CPU sensor). No sensors is an empty list, not an error.

use std::path::Path;

use serde::Serialize;

use super::round1;

/// One sensor reading.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Temperature {
    /// What the sensor is (`cpu-thermal`, `coretemp Package id 0`, ...).
    pub label: String,
    /// Degrees Celsius, one decimal.
    pub celsius: f32,
    /// The sensor's critical temperature, if it states one.
    pub critical: Option<f32>,
}

/// Reads the thermal zones under `sys_root` (normally `/sys`).
pub fn thermal_zones(sys_root: &Path) -> Vec<Temperature> {
    let Ok(dir) = std::fs::read_dir(sys_root.join("class/thermal")) else {
        return Vec::new();
    };
    let mut zones: Vec<_> = dir
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("thermal_zone"))
        .map(|e| e.path())
        .collect();
    zones.sort_unstable();
    zones
        .iter()
        .filter_map(|zone| {
            let milli: i64 = std::fs::read_to_string(zone.join("temp"))
                .ok()?
                .trim()
                .parse()
                .ok()?;
            let kind = std::fs::read_to_string(zone.join("type")).unwrap_or_default();
            let name = zone.file_name()?.to_string_lossy().into_owned();
            let label = match kind.trim() {
                "" => name,
                k => k.to_string(),
            };
            Some(Temperature {
                label,
                celsius: round1(milli as f32 / 1000.0),
                critical: critical_trip(zone),
            })
        })
        .collect()
}

/// The zone's `critical` trip point, in Celsius.
fn critical_trip(zone: &Path) -> Option<f32> {
    (0..16).find_map(|i| {
        let kind = std::fs::read_to_string(zone.join(format!("trip_point_{i}_type"))).ok()?;
        if kind.trim() != "critical" {
            return None;
        }
        let milli: i64 = std::fs::read_to_string(zone.join(format!("trip_point_{i}_temp")))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        Some(round1(milli as f32 / 1000.0))
    })
}

/// hwmon sensors (`Hwmon::temps`) as temperatures; implausible readings left out.
pub fn hwmon(readings: Vec<(String, f32, Option<f32>)>) -> Vec<Temperature> {
    readings
        .into_iter()
        .filter(|(_, c, _)| c.is_finite() && (-100.0..=300.0).contains(c))
        .map(|(label, c, crit)| Temperature {
            label,
            celsius: round1(c),
            critical: crit.filter(|x| x.is_finite() && *x > 0.0).map(round1),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn thermal_zones_are_read_from_a_fixture_tree() {
        let root = std::env::temp_dir().join(format!("edgemon-thermal-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let z0 = root.join("class/thermal/thermal_zone0");
        fs::create_dir_all(&z0).unwrap();
        fs::write(z0.join("type"), "cpu-thermal\n").unwrap();
        fs::write(z0.join("temp"), "48312\n").unwrap();
        fs::write(z0.join("trip_point_0_type"), "critical\n").unwrap();
        fs::write(z0.join("trip_point_0_temp"), "110000\n").unwrap();
        // A zone whose sensor cannot be read (EIO on real hardware) is skipped, not an error.
        let z1 = root.join("class/thermal/thermal_zone1");
        fs::create_dir_all(&z1).unwrap();
        fs::write(z1.join("type"), "broken\n").unwrap();
        // Not a zone.
        fs::create_dir_all(root.join("class/thermal/cooling_device0")).unwrap();

        let t = thermal_zones(&root);
        assert_eq!(
            t,
            vec![Temperature {
                label: "cpu-thermal".into(),
                celsius: 48.3,
                critical: Some(110.0),
            }]
        );
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn no_thermal_class_is_an_empty_list() {
        assert!(thermal_zones(Path::new("/nonexistent-edgemon")).is_empty());
    }
}
