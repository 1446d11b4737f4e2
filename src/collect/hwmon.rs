//! hwmon devices (`/sys/class/hwmon/hwmon*`): which exist and what they offer, listed at most
//! once a minute (a fan driver that loads late shows up within that), and the fans
//! (`fan*_input`, RPM) and temperatures (`temp*_input`, m°C) read from that list each time
//! details are sampled.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

/// How long a listing of the hwmon devices is trusted.
const RESCAN_EVERY: Duration = Duration::from_secs(60);

/// Devices and fans kept at most (a server board lists dozens of headers, most unused).
const MAX: usize = 16;

/// One fan.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Fan {
    /// `fanN_label` where the driver gives one, else the device name (`pwmfan`), with `/fanN`
    /// for a device's second fan and on.
    pub label: String,
    /// Revolutions per minute (0: stopped, as a Pi 5's fan is when cool).
    pub rpm: u64,
}

/// One hwmon device.
#[derive(Clone, Debug, PartialEq)]
pub struct Device {
    /// Its `name` file (`rpi_volt`, `pwmfan`, `cpu_thermal`).
    pub name: String,
    /// Its directory.
    pub dir: PathBuf,
    /// The fan inputs it has: (file name, label).
    fans: Vec<(String, String)>,
    /// The temperature inputs it has: (input file, label, critical file if any).
    temps: Vec<(String, String, Option<String>)>,
}

/// The hwmon devices under a sysfs root.
#[derive(Debug)]
pub struct Hwmon {
    sys_root: PathBuf,
    devices: Vec<Device>,
    scanned: Option<Instant>,
}

impl Hwmon {
    /// Devices under `sys_root` (normally `/sys`); listed on first use.
    pub fn new(sys_root: PathBuf) -> Hwmon {
        Hwmon {
            sys_root,
            devices: Vec::new(),
            scanned: None,
        }
    }

    /// The devices, listed again if the listing is older than a minute.
    pub fn devices(&mut self, now: Instant) -> &[Device] {
        if self
            .scanned
            .is_none_or(|t| now.saturating_duration_since(t) >= RESCAN_EVERY)
        {
            self.devices = scan(&self.sys_root);
            self.scanned = Some(now);
        }
        &self.devices
    }

    /// The device named `name`, if there is one.
    pub fn find(&mut self, now: Instant, name: &str) -> Option<&Device> {
        self.devices(now).iter().find(|d| d.name == name)
    }

    /// Every fan's speed now; a fan whose input cannot be read (a driver gone) is left out.
    pub fn fans(&mut self, now: Instant) -> Vec<Fan> {
        let mut v = Vec::new();
        for d in self.devices(now) {
            for (file, label) in &d.fans {
                if let Some(rpm) = read_u64(&d.dir.join(file)) {
                    v.push(Fan {
                        label: label.clone(),
                        rpm,
                    });
                }
            }
        }
        v
    }

    /// Every temperature now: (label, °C, critical °C). The label is the device's name and
    /// the input's `tempN_label` (`coretemp Package id 0`), as `sensors` shows them; a
    /// reading that fails (EIO from a sensor that went away) is left out.
    pub fn temps(&mut self, now: Instant) -> Vec<(String, f32, Option<f32>)> {
        let milli = |p: &Path| -> Option<f32> {
            let v: i64 = std::fs::read_to_string(p).ok()?.trim().parse().ok()?;
            Some(v as f32 / 1000.0)
        };
        let mut v = Vec::new();
        for d in self.devices(now) {
            for (input, label, crit) in &d.temps {
                if let Some(c) = milli(&d.dir.join(input)) {
                    let crit = crit.as_ref().and_then(|f| milli(&d.dir.join(f)));
                    v.push((label.clone(), c, crit));
                }
            }
        }
        v
    }
}

/// A sysfs number (one line).
pub fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The numbers N of a device's `{kind}N_input` files, sorted, at most `MAX`.
fn inputs(dir: &Path, kind: &str) -> Vec<u32> {
    let mut n: Vec<u32> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let f = e.file_name();
            f.to_str()?
                .strip_prefix(kind)?
                .strip_suffix("_input")?
                .parse()
                .ok()
        })
        .collect();
    n.sort_unstable();
    n.truncate(MAX);
    n
}

/// A label file's text, if it has any.
fn label(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .map(|l| l.trim().to_string())
        .ok()
        .filter(|l| !l.is_empty())
}

/// Lists `class/hwmon/*` under `sys_root`, by directory name; empty if there is none.
fn scan(sys_root: &Path) -> Vec<Device> {
    let Ok(dir) = std::fs::read_dir(sys_root.join("class/hwmon")) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = dir.flatten().map(|e| e.path()).collect();
    dirs.sort_unstable();
    dirs.truncate(MAX);
    dirs.into_iter()
        .map(|dir| {
            // Without a `name` file (seen in a Pi 5 capture), the directory's own name.
            let name = std::fs::read_to_string(dir.join("name"))
                .map(|n| n.trim().to_string())
                .ok()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| {
                    dir.file_name()
                        .map(|f| f.to_string_lossy().into_owned())
                        .unwrap_or_default()
                });
            let fans = inputs(&dir, "fan")
                .into_iter()
                .map(|n| {
                    let label =
                        label(&dir.join(format!("fan{n}_label"))).unwrap_or_else(|| match n {
                            1 => name.clone(),
                            n => format!("{name}/fan{n}"),
                        });
                    (format!("fan{n}_input"), label)
                })
                .collect();
            let temp_inputs = inputs(&dir, "temp");
            let several = temp_inputs.len() > 1;
            let temps = temp_inputs
                .into_iter()
                .map(|n| {
                    let label = match label(&dir.join(format!("temp{n}_label"))) {
                        Some(l) => format!("{name} {l}"),
                        None if several => format!("{name} temp{n}"),
                        None => name.clone(),
                    };
                    let crit = format!("temp{n}_crit");
                    let crit = dir.join(&crit).exists().then_some(crit);
                    (format!("temp{n}_input"), label, crit)
                })
                .collect();
            Device {
                name,
                dir,
                fans,
                temps,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn tree(name: &str) -> PathBuf {
        let root =
            std::env::temp_dir().join(format!("edgemon-hwmon-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("class/hwmon")).unwrap();
        root
    }

    fn device(root: &Path, dir: &str, files: &[(&str, &str)]) {
        let d = root.join("class/hwmon").join(dir);
        fs::create_dir_all(&d).unwrap();
        for (f, v) in files {
            fs::write(d.join(f), v).unwrap();
        }
    }

    #[test]
    fn temperatures_are_read_with_device_and_input_labels() {
        let root = tree("temps");
        device(
            &root,
            "hwmon0",
            &[
                ("name", "coretemp\n"),
                ("temp1_input", "52000\n"),
                ("temp1_label", "Package id 0\n"),
                ("temp1_crit", "100000\n"),
                ("temp2_input", "49500\n"),
                ("temp3_input", "EIO\n"),
            ],
        );
        device(
            &root,
            "hwmon1",
            &[("name", "nvme\n"), ("temp1_input", "-5000\n")],
        );
        let t = Hwmon::new(root.clone()).temps(Instant::now());
        assert_eq!(
            t,
            [
                ("coretemp Package id 0".to_string(), 52.0, Some(100.0)),
                ("coretemp temp2".to_string(), 49.5, None),
                ("nvme".to_string(), -5.0, None),
            ]
        );
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn fans_are_read_with_their_labels_and_unreadable_ones_left_out() {
        let root = tree("fans");
        device(
            &root,
            "hwmon0",
            &[("name", "cpu_thermal\n"), ("temp1_input", "45000\n")],
        );
        device(
            &root,
            "hwmon1",
            &[
                ("name", "nct6775\n"),
                ("fan1_input", "1200\n"),
                ("fan2_input", "0\n"),
                ("fan2_label", "CHA_FAN\n"),
                ("fan3_input", "x\n"),
            ],
        );
        device(
            &root,
            "hwmon2",
            &[("name", "pwmfan\n"), ("fan1_input", "2983\n")],
        );
        let mut h = Hwmon::new(root.clone());
        let now = Instant::now();
        let fans = h.fans(now);
        let got: Vec<(&str, u64)> = fans.iter().map(|f| (f.label.as_str(), f.rpm)).collect();
        assert_eq!(got, [("nct6775", 1200), ("CHA_FAN", 0), ("pwmfan", 2983)]);
        assert_eq!(h.temps(now), [("cpu_thermal".to_string(), 45.0, None)]);
        assert_eq!(
            h.find(now, "cpu_thermal").map(|d| d.dir.clone()),
            Some(root.join("class/hwmon/hwmon0"))
        );

        // A device added later is seen after the next listing, not before.
        device(
            &root,
            "hwmon3",
            &[("name", "gpio_fan\n"), ("fan1_input", "5000\n")],
        );
        assert_eq!(h.fans(now).len(), 3);
        assert_eq!(h.fans(now + RESCAN_EVERY).len(), 4);
        fs::remove_dir_all(&root).unwrap();
        assert!(
            Hwmon::new(root).fans(now).is_empty(),
            "no hwmon: no fans, no error"
        );
    }
}
