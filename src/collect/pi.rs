//! Raspberry Pi health: the firmware's throttle bitmask and the under-voltage alarm, read from sysfs.
//!
//! `get_throttled` holds a bitmask: bits 0-3 say what is happening now, bits 16-19 what has happened
//! since boot (under-voltage, ARM frequency capped, throttled, soft temperature limit). The
//! `rpi_volt` hwmon device raises `in0_lcrit_alarm` on under-voltage. Hosts without either are not
//! Pis: the reading is `None` (`null` in JSON).

use std::path::Path;

use serde::Serialize;

/// Where the firmware exposes the bitmask, under the sysfs root.
const THROTTLED: &str = "devices/platform/soc/soc:firmware/get_throttled";

/// One condition: now and since boot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Flag {
    /// Happening now.
    pub now: bool,
    /// Happened at least once since boot.
    pub since_boot: bool,
}

/// The decoded health of a Pi.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PiHealth {
    /// Supply voltage below 4.63 V.
    pub under_voltage: Flag,
    /// ARM frequency capped.
    pub freq_capped: Flag,
    /// Throttled.
    pub throttled: Flag,
    /// Soft temperature limit active.
    pub soft_temp_limit: Flag,
    /// The hwmon under-voltage alarm, where the `rpi_volt` device exists.
    pub under_voltage_alarm: Option<bool>,
    /// The raw bitmask as the firmware printed it (e.g. `0x50005`), if read.
    pub throttled_raw: Option<String>,
}

/// Decodes the firmware bitmask.
pub fn decode(mask: u32) -> PiHealth {
    let flag = |bit: u32| Flag {
        now: mask & (1 << bit) != 0,
        since_boot: mask & (1 << (bit + 16)) != 0,
    };
    PiHealth {
        under_voltage: flag(0),
        freq_capped: flag(1),
        throttled: flag(2),
        soft_temp_limit: flag(3),
        under_voltage_alarm: None,
        throttled_raw: Some(format!("{mask:#x}")),
    }
}

/// Parses `0x50005` or `50005` (hex, as the firmware writes it).
pub fn parse_mask(text: &str) -> Option<u32> {
    let t = text.trim();
    let hex = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    u32::from_str_radix(hex, 16).ok()
}

/// Reads Pi health under `sys_root` (normally `/sys`), with `rpi_volt` the directory of the
/// hwmon device of that name if there is one; `None` when this is not a Pi.
pub fn read(sys_root: &Path, rpi_volt: Option<&Path>) -> Option<PiHealth> {
    let mask = std::fs::read_to_string(sys_root.join(THROTTLED))
        .ok()
        .and_then(|t| parse_mask(&t));
    let alarm = rpi_volt.and_then(under_voltage_alarm);
    match (mask, alarm) {
        (None, None) => None,
        (mask, alarm) => {
            let mut h = mask.map(decode).unwrap_or_default();
            h.under_voltage_alarm = alarm;
            Some(h)
        }
    }
}

/// `in0_lcrit_alarm` of the `rpi_volt` hwmon device in `dir`.
fn under_voltage_alarm(dir: &Path) -> Option<bool> {
    let v = std::fs::read_to_string(dir.join("in0_lcrit_alarm")).ok()?;
    Some(v.trim() == "1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn known_bit_patterns_decode() {
        let healthy = decode(0);
        assert_eq!(healthy.under_voltage, Flag::default());
        assert_eq!(healthy.throttled, Flag::default());

        // The classic weak-power-supply reading: under-voltage and throttled, now and since boot.
        let h = decode(0x50005);
        assert_eq!(
            h.under_voltage,
            Flag {
                now: true,
                since_boot: true
            }
        );
        assert_eq!(
            h.throttled,
            Flag {
                now: true,
                since_boot: true
            }
        );
        assert_eq!(h.freq_capped, Flag::default());
        assert_eq!(h.soft_temp_limit, Flag::default());

        // Happened earlier, fine now.
        let h = decode(0x50000);
        assert_eq!(
            h.under_voltage,
            Flag {
                now: false,
                since_boot: true
            }
        );
        assert_eq!(
            h.throttled,
            Flag {
                now: false,
                since_boot: true
            }
        );

        // Hot board: frequency capped and soft limit now and before.
        let h = decode(0xa000a);
        assert_eq!(
            h.freq_capped,
            Flag {
                now: true,
                since_boot: true
            }
        );
        assert_eq!(
            h.soft_temp_limit,
            Flag {
                now: true,
                since_boot: true
            }
        );
        assert_eq!(h.under_voltage, Flag::default());

        let all = decode(0xf000f);
        for f in [
            all.under_voltage,
            all.freq_capped,
            all.throttled,
            all.soft_temp_limit,
        ] {
            assert_eq!(
                f,
                Flag {
                    now: true,
                    since_boot: true
                }
            );
        }
        assert_eq!(decode(0x50005).throttled_raw.as_deref(), Some("0x50005"));
    }

    #[test]
    fn masks_parse_with_or_without_prefix() {
        assert_eq!(parse_mask("0x50005\n"), Some(0x50005));
        assert_eq!(parse_mask("50005"), Some(0x50005));
        assert_eq!(parse_mask("0x0"), Some(0));
        assert_eq!(parse_mask("throttled=0x0"), None);
        assert_eq!(parse_mask(""), None);
    }

    fn fixture(name: &str) -> std::path::PathBuf {
        let root = std::env::temp_dir().join(format!("edgemon-pi-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap();
        root
    }

    #[test]
    fn a_host_without_the_files_is_not_a_pi() {
        let root = fixture("none");
        assert_eq!(read(&root, None), None);
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_pi_fixture_tree_is_read() {
        let root = fixture("pi");
        let fw = root.join("devices/platform/soc/soc:firmware");
        fs::create_dir_all(&fw).unwrap();
        fs::write(fw.join("get_throttled"), "50005\n").unwrap();
        let other = root.join("class/hwmon/hwmon0");
        fs::create_dir_all(&other).unwrap();
        fs::write(other.join("name"), "cpu_thermal\n").unwrap();
        let volt = root.join("class/hwmon/hwmon1");
        fs::create_dir_all(&volt).unwrap();
        fs::write(volt.join("name"), "rpi_volt\n").unwrap();
        fs::write(volt.join("in0_lcrit_alarm"), "1\n").unwrap();
        let h = read(&root, Some(&volt)).expect("a Pi");
        assert!(h.under_voltage.now && h.throttled.since_boot);
        assert_eq!(h.under_voltage_alarm, Some(true));

        // Only the alarm (older firmware without get_throttled): still a Pi.
        fs::remove_file(fw.join("get_throttled")).unwrap();
        fs::write(volt.join("in0_lcrit_alarm"), "0\n").unwrap();
        let h = read(&root, Some(&volt)).expect("a Pi");
        assert_eq!(h.under_voltage_alarm, Some(false));
        assert_eq!(h.throttled_raw, None);
        fs::remove_dir_all(root).unwrap();
    }
}
