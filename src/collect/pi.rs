//! Raspberry Pi health: under-voltage, frequency capping, throttling and the soft temperature
//! limit, now and since boot, from the best source the board offers (`pi.source`):
//!
//! 1. `mailbox`: the firmware property `GET_THROTTLED` (tag `0x00030046`) through `/dev/vcio`.
//!    Every flag. Needs the device and the `video` group (the packaged unit keeps it off; the
//!    README's drop-in turns it on).
//! 2. `hwmon`: the `raspberrypi-hwmon` driver's `rpi_volt` device, `in0_lcrit_alarm`: under-voltage
//!    now, nothing else (the other flags are `null`).
//! 3. `sysfs`: the firmware driver's `get_throttled` node, every flag, only when neither of the
//!    above exists: the kernel marks it deprecated and logs a warning with a backtrace on its
//!    first read each boot (raspberrypi/linux #2706).
//!
//! A host with none of them is not a Pi: the reading is `None` (`null` in JSON).

use std::path::Path;

use serde::Serialize;

/// Where the firmware driver exposes the bitmask, under the sysfs root.
const THROTTLED: &str = "devices/platform/soc/soc:firmware/get_throttled";

/// One condition: now and since boot; `null` where the source cannot tell.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Flag {
    /// Happening now.
    pub now: Option<bool>,
    /// Happened at least once since boot.
    pub since_boot: Option<bool>,
}

/// The decoded health of a Pi.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PiHealth {
    /// Where the flags came from: `mailbox`, `hwmon` or `sysfs`.
    pub source: &'static str,
    /// Supply voltage below 4.63 V.
    pub under_voltage: Flag,
    /// ARM frequency capped.
    pub freq_capped: Flag,
    /// Throttled.
    pub throttled: Flag,
    /// Soft temperature limit active.
    pub soft_temp_limit: Flag,
    /// The hwmon under-voltage alarm, where the `rpi_volt` device exists (whatever the source).
    pub under_voltage_alarm: Option<bool>,
    /// The raw bitmask (e.g. `0x50005`), from the mailbox or sysfs.
    pub throttled_raw: Option<String>,
}

/// Decodes the firmware bitmask: bits 0-3 say what is happening now, bits 16-19 what has
/// happened since boot (under-voltage, ARM frequency capped, throttled, soft temperature limit).
pub fn decode(mask: u32) -> PiHealth {
    let flag = |bit: u32| Flag {
        now: Some(mask & (1 << bit) != 0),
        since_boot: Some(mask & (1 << (bit + 16)) != 0),
    };
    PiHealth {
        source: "",
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

/// The firmware's `GET_THROTTLED` property. A trait so that the one `ioctl` stays in `Vcio` and
/// tests can stand in for a board.
pub trait Mailbox: Send {
    /// The throttle bitmask, or why it cannot be had (no device, no permission, an error from
    /// the firmware).
    fn get_throttled(&mut self) -> Result<u32, String>;
}

/// The mailbox through `/dev/vcio` (the `vcio` driver, on every Raspberry Pi kernel).
pub struct Vcio {
    path: std::path::PathBuf,
    file: Option<std::fs::File>,
    /// The last failure to open the device and when: tried again after `REOPEN_EVERY`.
    failed: Option<(std::time::Instant, String)>,
}

/// How long a device that could not be opened is left alone (it rarely appears later).
const REOPEN_EVERY: std::time::Duration = std::time::Duration::from_secs(600);

impl Vcio {
    /// The mailbox at `path` (normally `/dev/vcio`), opened on first use.
    pub fn new(path: impl Into<std::path::PathBuf>) -> Vcio {
        Vcio {
            path: path.into(),
            file: None,
            failed: None,
        }
    }
}

impl Mailbox for Vcio {
    fn get_throttled(&mut self) -> Result<u32, String> {
        if self.file.is_none() {
            if let Some((at, why)) = &self.failed
                && at.elapsed() < REOPEN_EVERY
            {
                return Err(why.clone());
            }
            match std::fs::File::open(&self.path) {
                Ok(f) => {
                    self.file = Some(f);
                    self.failed = None;
                }
                Err(e) => {
                    let why = format!("{}: {e}", self.path.display());
                    self.failed = Some((std::time::Instant::now(), why.clone()));
                    return Err(why);
                }
            }
        }
        let file = self.file.as_ref().expect("opened above");
        let r = property_get_throttled(file);
        if r.is_err() {
            // An ioctl error may mean the device went away: open it again next time.
            self.file = None;
        }
        r
    }
}

/// Tag of the `GET_THROTTLED` property (raspberrypi firmware's mailbox property interface).
const TAG_GET_THROTTLED: u32 = 0x0003_0046;
/// The status word of a request, and of a response the firmware handled.
const REQUEST: u32 = 0;
const RESPONSE_OK: u32 = 0x8000_0000;

/// `_IOWR(100, 0, char *)`, the vcio driver's `IOCTL_MBOX_PROPERTY`: read-write, type 100,
/// number 0, and the size of a pointer (the driver reads the buffer's length from its first word).
#[cfg(target_os = "linux")]
const IOCTL_MBOX_PROPERTY: u64 =
    (3 << 30) | ((std::mem::size_of::<*mut u8>() as u64) << 16) | (100 << 8);

/// One `GET_THROTTLED` property call on an open `/dev/vcio`.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn property_get_throttled(file: &std::fs::File) -> Result<u32, String> {
    use std::os::fd::AsRawFd;
    // The property buffer: total size in bytes, request code, one tag (id, value buffer size,
    // request/response size, one u32 of value), end tag.
    let mut buf: [u32; 7] = [7 * 4, REQUEST, TAG_GET_THROTTLED, 4, 0, 0, 0];
    // SAFETY: `buf` is a live, writable array of 7 u32 that outlives the call, and its first word
    // says it is 28 bytes long: the vcio driver copies exactly that many bytes in and back out
    // (copy_from_user/copy_to_user of buf[0] bytes), so the kernel never touches memory past it.
    // The fd is open for the whole call (`file` is borrowed). There is no safe wrapper: the
    // ioctl is the driver's only interface.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), IOCTL_MBOX_PROPERTY as _, buf.as_mut_ptr()) };
    if rc < 0 {
        return Err(format!(
            "GET_THROTTLED: {}",
            std::io::Error::last_os_error()
        ));
    }
    answer(&buf)
}

#[cfg(not(target_os = "linux"))]
fn property_get_throttled(_file: &std::fs::File) -> Result<u32, String> {
    Err("the mailbox is Linux only".into())
}

/// The mask in a property buffer the firmware answered.
fn answer(buf: &[u32; 7]) -> Result<u32, String> {
    if buf[1] != RESPONSE_OK {
        return Err(format!(
            "GET_THROTTLED: the firmware answered {:#x}",
            buf[1]
        ));
    }
    // The tag's response bit (bit 31) with the length of its value.
    if buf[4] & RESPONSE_OK == 0 {
        return Err("GET_THROTTLED: the firmware did not answer the tag".into());
    }
    Ok(buf[5])
}

/// Reads Pi health: from `mailbox` if it answers, else from the `rpi_volt` hwmon device in
/// `rpi_volt` (its directory, if there is one), else from sysfs under `sys_root`; `None` when
/// this is not a Pi.
pub fn read(
    sys_root: &Path,
    rpi_volt: Option<&Path>,
    mailbox: Option<&mut dyn Mailbox>,
) -> Option<PiHealth> {
    let alarm = rpi_volt.and_then(under_voltage_alarm);
    if let Some(mask) = mailbox.and_then(|m| m.get_throttled().ok()) {
        let mut h = decode(mask);
        h.source = "mailbox";
        h.under_voltage_alarm = alarm;
        return Some(h);
    }
    if let Some(alarm) = alarm {
        return Some(PiHealth {
            source: "hwmon",
            under_voltage: Flag {
                now: Some(alarm),
                since_boot: None,
            },
            under_voltage_alarm: Some(alarm),
            ..PiHealth::default()
        });
    }
    let mask = std::fs::read_to_string(sys_root.join(THROTTLED))
        .ok()
        .and_then(|t| parse_mask(&t))?;
    let mut h = decode(mask);
    h.source = "sysfs";
    Some(h)
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
    use std::path::PathBuf;

    fn flag(now: bool, since_boot: bool) -> Flag {
        Flag {
            now: Some(now),
            since_boot: Some(since_boot),
        }
    }

    #[test]
    fn known_bit_patterns_decode() {
        let healthy = decode(0);
        assert_eq!(healthy.under_voltage, flag(false, false));
        assert_eq!(healthy.throttled, flag(false, false));

        // The classic weak-power-supply reading: under-voltage and throttled, now and since boot.
        let h = decode(0x50005);
        assert_eq!(h.under_voltage, flag(true, true));
        assert_eq!(h.throttled, flag(true, true));
        assert_eq!(h.freq_capped, flag(false, false));
        assert_eq!(h.soft_temp_limit, flag(false, false));
        assert_eq!(h.throttled_raw.as_deref(), Some("0x50005"));

        // Happened earlier, fine now.
        let h = decode(0x50000);
        assert_eq!(h.under_voltage, flag(false, true));
        assert_eq!(h.throttled, flag(false, true));

        let all = decode(0xf000f);
        for f in [
            all.under_voltage,
            all.freq_capped,
            all.throttled,
            all.soft_temp_limit,
        ] {
            assert_eq!(f, flag(true, true));
        }
    }

    /// `tests/fixtures/boards/pi-throttled`: values users read on real boards (SOURCES.md).
    fn board(file: &str) -> String {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/boards/pi-throttled")
            .join(file);
        fs::read_to_string(p).unwrap()
    }

    #[test]
    fn masks_read_on_real_boards_parse_and_decode() {
        // A Pi 3B+ whose soft temperature limit was hit earlier (80000), then is hit now (80008).
        let earlier = parse_mask(&board("rpi3bplus-sysfs-get_throttled-80000")).unwrap();
        assert_eq!(earlier, 0x80000);
        assert_eq!(decode(earlier).soft_temp_limit, flag(false, true));
        assert_eq!(decode(earlier).under_voltage, flag(false, false));
        let now = parse_mask(&board("rpi3bplus-sysfs-get_throttled-80008")).unwrap();
        assert_eq!(decode(now).soft_temp_limit, flag(true, true));
        // vcgencmd's form is not what sysfs or the mailbox give.
        assert_eq!(parse_mask(&board("vcgencmd-get_throttled-0x80000")), None);
        assert_eq!(parse_mask("0x50005\n"), Some(0x50005));
        assert_eq!(parse_mask(""), None);
    }

    /// A fixture sysfs root: `get_throttled` with `mask`, and an `rpi_volt` hwmon device with
    /// `alarm`, each if given.
    fn tree(name: &str, mask: Option<&str>, alarm: Option<&str>) -> (PathBuf, Option<PathBuf>) {
        let root = std::env::temp_dir().join(format!("edgemon-pi-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap();
        if let Some(m) = mask {
            let fw = root.join("devices/platform/soc/soc:firmware");
            fs::create_dir_all(&fw).unwrap();
            fs::write(fw.join("get_throttled"), m).unwrap();
        }
        let volt = alarm.map(|a| {
            let v = root.join("class/hwmon/hwmon1");
            fs::create_dir_all(&v).unwrap();
            fs::write(v.join("name"), "rpi_volt\n").unwrap();
            fs::write(v.join("in0_lcrit_alarm"), a).unwrap();
            v
        });
        (root, volt)
    }

    /// A board's mailbox, as the firmware would answer.
    struct FakeMailbox(Result<u32, String>, usize);

    impl Mailbox for FakeMailbox {
        fn get_throttled(&mut self) -> Result<u32, String> {
            self.1 += 1;
            self.0.clone()
        }
    }

    #[test]
    fn a_host_with_none_of_the_sources_is_not_a_pi() {
        let (root, _) = tree("none", None, None);
        assert_eq!(read(&root, None, None), None);
        let mut broken = FakeMailbox(Err("/dev/vcio: No such file or directory".into()), 0);
        assert_eq!(read(&root, None, Some(&mut broken)), None);
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn the_mailbox_gives_every_flag_and_wins_over_the_other_sources() {
        // Mailbox only (a Pi under a unit that allows /dev/vcio, on a kernel without the driver).
        let (root, _) = tree("mailbox", None, None);
        let mut mb = FakeMailbox(Ok(0x50005), 0);
        let h = read(&root, None, Some(&mut mb)).expect("a Pi");
        assert_eq!(h.source, "mailbox");
        assert_eq!(h.under_voltage, flag(true, true));
        assert_eq!(h.soft_temp_limit, flag(false, false));
        assert_eq!(h.under_voltage_alarm, None);
        fs::remove_dir_all(root).unwrap();

        // With hwmon and sysfs too: still the mailbox, and sysfs is never read.
        let (root, volt) = tree("all", Some("garbage"), Some("1\n"));
        let h = read(&root, volt.as_deref(), Some(&mut mb)).unwrap();
        assert_eq!(h.source, "mailbox");
        assert_eq!(h.under_voltage_alarm, Some(true));
        assert_eq!(h.throttled_raw.as_deref(), Some("0x50005"));
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn hwmon_only_gives_under_voltage_now_and_null_for_the_rest() {
        let (root, volt) = tree("hwmon", None, Some("1\n"));
        let mut denied = FakeMailbox(Err("/dev/vcio: Permission denied".into()), 0);
        let h = read(&root, volt.as_deref(), Some(&mut denied)).expect("a Pi");
        assert_eq!(denied.1, 1, "the mailbox was asked first");
        assert_eq!(h.source, "hwmon");
        assert_eq!(
            h.under_voltage,
            Flag {
                now: Some(true),
                since_boot: None
            }
        );
        for f in [h.freq_capped, h.throttled, h.soft_temp_limit] {
            assert_eq!(f, Flag::default(), "unreadable flags are null, never false");
        }
        let j = serde_json::to_value(&h).unwrap();
        assert!(j["throttled"]["now"].is_null() && j["under_voltage"]["since_boot"].is_null());
        assert_eq!(j["source"], "hwmon");

        // hwmon wins over the deprecated sysfs node even where both exist.
        fs::remove_dir_all(&root).unwrap();
        let (root, volt) = tree("hwmon-sysfs", Some("50005\n"), Some("0\n"));
        let h = read(&root, volt.as_deref(), None).unwrap();
        assert_eq!((h.source, h.under_voltage.now), ("hwmon", Some(false)));
        assert_eq!(h.throttled_raw, None);
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn the_sysfs_node_is_the_last_resort() {
        let (root, _) = tree("sysfs", Some("80008\n"), None);
        let h = read(&root, None, None).expect("a Pi");
        assert_eq!(h.source, "sysfs");
        assert_eq!(h.soft_temp_limit, flag(true, true));
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn firmware_answers_are_checked_and_a_missing_device_is_not_retried_at_once() {
        let ok = [
            28,
            RESPONSE_OK,
            TAG_GET_THROTTLED,
            4,
            RESPONSE_OK | 4,
            0x50005,
            0,
        ];
        assert_eq!(answer(&ok), Ok(0x50005));
        let refused = [28, 0x8000_0001, TAG_GET_THROTTLED, 4, 0, 0, 0];
        assert!(answer(&refused).unwrap_err().contains("0x80000001"));
        let untouched = [28, RESPONSE_OK, TAG_GET_THROTTLED, 4, 0, 0, 0];
        assert!(answer(&untouched).is_err());

        let mut v = Vcio::new("/nonexistent/vcio");
        let e = v.get_throttled().unwrap_err();
        assert!(e.starts_with("/nonexistent/vcio: "), "{e}");
        assert!(v.failed.is_some());
        assert_eq!(
            v.get_throttled().unwrap_err(),
            e,
            "remembered, not opened again"
        );
    }
}
