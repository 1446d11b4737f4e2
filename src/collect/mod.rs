//! Data collection: one file per source, plain structs out, no I/O in the structs themselves.
//!
//! `Collector` is owned by the sampler thread. CPU, memory, load and uptime are read every tick;
//! temperatures, Pi health, network, disks and CPU frequency ("details") every second while
//! someone is watching and every 10 s otherwise (for the history), since they cost more.

pub mod counters;
pub mod cpustat;
pub mod disk;
pub mod diskio;
pub mod hwmon;
pub mod net;
pub mod own;
pub mod pi;
pub mod procs;
pub mod tail;
pub mod thermal;

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use sysinfo::{CpuRefreshKind, MemoryRefreshKind, RefreshKind, System};

/// The `data` of a `system` frame.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SystemData {
    /// CPU usage (and frequency, with details).
    pub cpu: Cpu,
    /// Load averages (`null` where the host does not expose them).
    pub load: Option<Load>,
    /// RAM in bytes.
    pub memory: Memory,
    /// Swap in bytes.
    pub swap: Swap,
    /// Seconds since boot (`null` if unreadable).
    pub uptime: Option<u64>,
    /// Every temperature sensor; `[]` with no sensors, `null` when details were not sampled.
    pub temperatures: Option<Vec<thermal::Temperature>>,
    /// Raspberry Pi health; `null` on other hosts (and when details were not sampled).
    pub pi: Option<pi::PiHealth>,
    /// Network interfaces; `null` when details were not sampled.
    pub network: Option<Vec<net::Interface>>,
    /// Mounted real filesystems; `null` when details were not sampled.
    pub disks: Option<Vec<disk::Disk>>,
    /// I/O per whole block device; `null` when details were not sampled.
    pub disk_io: Option<Vec<diskio::DiskIo>>,
    /// Fans (hwmon `fan*_input`); `[]` without any, `null` when details were not sampled.
    pub fans: Option<Vec<hwmon::Fan>>,
}

impl SystemData {
    /// Whether the details (temperatures, Pi health, network, disks) were sampled.
    pub fn has_details(&self) -> bool {
        self.temperatures.is_some()
    }
}

/// CPU usage in percent.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Cpu {
    /// All cores together, 0-100.
    pub total: f32,
    /// Each core, 0-100.
    pub cores: Vec<f32>,
    /// Each core's current frequency in MHz, where the kernel exposes it (with details).
    pub freq_mhz: Option<Vec<u64>>,
    /// Where all cores' time went since the previous sample (`/proc/stat`); `null` in the first
    /// sample and where the file cannot be read.
    pub breakdown: Option<cpustat::Breakdown>,
}

/// Load averages.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Load {
    /// Over one minute.
    pub one: f64,
    /// Over five minutes.
    pub five: f64,
    /// Over fifteen minutes.
    pub fifteen: f64,
}

/// RAM in bytes.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Memory {
    /// Installed.
    pub total: u64,
    /// In use (total minus available).
    pub used: u64,
    /// Available to new programs without swapping.
    pub available: u64,
}

/// Swap in bytes.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Swap {
    /// Configured.
    pub total: u64,
    /// In use.
    pub used: u64,
}

/// What the host is; read once at start.
#[derive(Clone, Debug, Serialize)]
pub struct Host {
    /// Host name.
    pub hostname: String,
    /// OS name and version (`Debian GNU/Linux 12 (bookworm)`).
    pub os: String,
    /// Kernel version.
    pub kernel: String,
    /// CPU architecture (`aarch64`, `x86_64`).
    pub arch: String,
    /// CPU model (`Cortex-A72`, ...).
    pub cpu_model: String,
    /// Logical CPUs.
    pub cpu_count: usize,
}

/// Which details a sample reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Details {
    /// CPU, memory, load and uptime only.
    None,
    /// What the history keeps: temperatures, Pi health, network, disks.
    ForHistory,
    /// Everything, frequencies included (someone is watching).
    All,
}

/// The sampler thread's measuring state.
pub struct Collector {
    /// CPU and memory.
    sys: System,
    /// Counter deltas for network rates.
    rates: net::Rates,
    /// Counter deltas for disk I/O rates.
    disk_rates: diskio::Rates,
    /// The hwmon devices (temperatures, fans, the Pi's under-voltage alarm).
    hwmon: hwmon::Hwmon,
    /// The firmware mailbox (`/dev/vcio`); none for a fixture sysfs tree.
    mailbox: Option<Box<dyn pi::Mailbox>>,
    /// The Pi source last used (logged when it changes).
    pi_source: Option<&'static str>,
    /// Which interfaces are reported.
    net_filter: net::Filter,
    /// The previous `/proc/stat` reading, for the CPU breakdown.
    cpustat: cpustat::Meter,
    /// Where sysfs is (a fixture tree in tests).
    sys_root: PathBuf,
}

impl Collector {
    /// A collector reading sysfs under `sys_root` (normally `/sys`), reporting the interfaces
    /// `net_filter` keeps.
    pub fn new(sys_root: PathBuf, net_filter: net::Filter) -> std::io::Result<Collector> {
        let sys = System::new_with_specifics(
            RefreshKind::nothing()
                .with_cpu(CpuRefreshKind::nothing().with_usage())
                .with_memory(MemoryRefreshKind::everything()),
        )
        .map_err(|e| std::io::Error::other(format!("cannot read host figures: {e}")))?;
        Ok(Collector {
            sys,
            rates: net::Rates::default(),
            disk_rates: diskio::Rates::default(),
            hwmon: hwmon::Hwmon::new(sys_root.clone()),
            // A fixture tree (tests) is a board without the device.
            mailbox: (sys_root == Path::new("/sys"))
                .then(|| Box::new(pi::Vcio::new("/dev/vcio")) as Box<dyn pi::Mailbox>),
            pi_source: None,
            net_filter,
            cpustat: cpustat::Meter::default(),
            sys_root,
        })
    }

    /// What the host is.
    pub fn host(&mut self) -> Host {
        self.sys.refresh_cpu_list(CpuRefreshKind::nothing());
        let text = |r: Result<String, sysinfo::Error>| r.unwrap_or_else(|_| "unknown".into());
        Host {
            hostname: text(System::host_name()),
            os: text(System::long_os_version()),
            kernel: text(System::kernel_version()),
            arch: System::cpu_arch(),
            cpu_model: cpu_model(&self.sys),
            cpu_count: self.sys.cpus().len(),
        }
    }

    /// Measures the host; `details` adds temperatures, Pi health, network, disks and
    /// frequencies (`Details::ForHistory`: all but the frequencies, which the history does not
    /// keep and which cost a read of /proc/cpuinfo).
    pub fn sample(&mut self, details: Details) -> SystemData {
        self.sys.refresh_cpu_usage();
        self.sys.refresh_memory();
        let load = System::load_average().ok();
        let total = self.sys.total_memory();
        let available = self.sys.available_memory();
        let mut data = SystemData {
            cpu: Cpu {
                total: round1(self.sys.global_cpu_usage()),
                cores: self.sys.cpus().iter().map(|c| round1(c.usage())).collect(),
                freq_mhz: None,
                breakdown: self.cpustat.read(cpustat::PROC_STAT),
            },
            load: load.map(|l| Load {
                one: l.one,
                five: l.five,
                fifteen: l.fifteen,
            }),
            memory: Memory {
                total,
                used: total.saturating_sub(available),
                available,
            },
            swap: Swap {
                total: self.sys.total_swap(),
                used: self.sys.used_swap(),
            },
            uptime: System::uptime().ok(),
            temperatures: None,
            pi: None,
            network: None,
            disks: None,
            disk_io: None,
            fans: None,
        };
        match details {
            Details::None => {}
            Details::ForHistory => self.add_details(&mut data, false),
            Details::All => self.add_details(&mut data, true),
        }
        data
    }

    /// Fills in the costlier parts (also on demand, into a sample taken without them).
    pub fn add_details(&mut self, data: &mut SystemData, freq: bool) {
        if freq {
            self.sys.refresh_cpu_frequency();
            let freq: Vec<u64> = self.sys.cpus().iter().map(|c| c.frequency()).collect();
            data.cpu.freq_mhz = freq.iter().any(|f| *f > 0).then_some(freq);
        }

        let now = Instant::now();
        let mut temps = thermal::hwmon(self.hwmon.temps(now));
        temps.extend(thermal::thermal_zones(&self.sys_root));
        data.temperatures = Some(temps);

        let rpi_volt = self.hwmon.find(now, "rpi_volt").map(|d| d.dir.clone());
        data.pi = self.read_pi(rpi_volt.as_deref());

        // One read of /proc/net/dev (sysinfo reads nine sysfs files per interface), and of
        // /proc/net/wireless where there is Wi-Fi.
        let mut totals = net::read_totals(Path::new(net::PROC_NET_DEV));
        totals.retain(|c| self.net_filter.keeps(&c.name));
        let wifi = net::read_wireless(Path::new(net::PROC_NET_WIRELESS));
        data.network = Some(self.rates.update(now, totals, &wifi));

        let io = diskio::read(Path::new(diskio::PROC_DISKSTATS));
        data.disk_io = Some(self.disk_rates.update(now, io));
        data.fans = Some(self.hwmon.fans(now));

        data.disks = Some(disk::list(Path::new(disk::PROC_MOUNTS)));
    }
}

impl Collector {
    /// Pi health from the best source; says in the log which one, when it changes.
    fn read_pi(&mut self, rpi_volt: Option<&Path>) -> Option<pi::PiHealth> {
        let mut why_not_mailbox = None;
        let mut mailbox = self.mailbox.as_deref_mut().map(|m| Probe {
            inner: m,
            error: &mut why_not_mailbox,
        });
        let h = pi::read(
            &self.sys_root,
            rpi_volt,
            mailbox.as_mut().map(|p| p as &mut dyn pi::Mailbox),
        );
        let source = h.as_ref().map(|h| h.source);
        if let Some(source) = source
            && self.pi_source != Some(source)
        {
            match (source, &why_not_mailbox) {
                ("mailbox", _) => {
                    log::info!("pi: throttle flags from the firmware mailbox (/dev/vcio)")
                }
                (s, Some(why)) => log::info!(
                    "pi: throttle flags from {s} ({}); the mailbox is not usable: {why}",
                    if s == "hwmon" {
                        "under-voltage only"
                    } else {
                        "deprecated node"
                    }
                ),
                (s, None) => log::info!("pi: throttle flags from {s}"),
            }
            self.pi_source = Some(source);
        }
        h
    }
}

/// A mailbox that remembers why it failed (for the log line naming the source).
struct Probe<'a> {
    inner: &'a mut dyn pi::Mailbox,
    error: &'a mut Option<String>,
}

impl pi::Mailbox for Probe<'_> {
    fn get_throttled(&mut self) -> Result<u32, String> {
        let r = self.inner.get_throttled();
        if let Err(e) = &r {
            *self.error = Some(e.clone());
        }
        r
    }
}

// sysinfo's constructors are fallible; with nothing readable we carry on with empty lists.

/// The CPU model: the brand string, else the vendor, else "unknown".
fn cpu_model(sys: &System) -> String {
    sys.cpus()
        .first()
        .map(|c| {
            let b = c.brand().trim();
            if b.is_empty() {
                c.vendor_id().trim()
            } else {
                b
            }
            .to_string()
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// Makes repeated label values unique (`acpitz`, `acpitz#2`): duplicate series are invalid in
/// Prometheus, and alerts track each instance by it.
pub fn unique<'a>(names: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut seen: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
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

/// The largest index at most `max` that falls on a character boundary of `s`.
pub fn floor_char_boundary(s: &str, max: usize) -> usize {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    end
}

/// One decimal is all a dashboard shows, and it keeps frames short.
pub fn round1(x: f32) -> f32 {
    if x.is_finite() {
        (x * 10.0).round() / 10.0
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_sample_has_the_core_fields_and_no_details() {
        let mut c = Collector::new("/sys".into(), included_lo()).unwrap();
        let v = serde_json::to_value(c.sample(Details::None)).unwrap();
        for path in [
            "/cpu/total",
            "/cpu/cores",
            "/load/one",
            "/memory/total",
            "/memory/used",
            "/memory/available",
            "/swap/total",
            "/swap/used",
            "/uptime",
        ] {
            assert!(v.pointer(path).is_some(), "missing {path} in {v}");
        }
        for detail in ["temperatures", "network", "disks", "pi", "disk_io", "fans"] {
            assert!(v[detail].is_null(), "{detail} sampled without details");
        }
    }

    /// The default filter, with `lo` (on every host) included.
    fn included_lo() -> net::Filter {
        net::Filter::new(vec!["lo".into()], Vec::new())
    }

    #[test]
    fn a_detailed_sample_lists_sensors_interfaces_and_disks() {
        let mut c = Collector::new("/sys".into(), included_lo()).unwrap();
        let v = serde_json::to_value(c.sample(Details::All)).unwrap();
        assert!(v["temperatures"].is_array());
        let nets = v["network"].as_array().unwrap();
        assert!(nets.iter().any(|i| i["name"] == "lo"), "{v}");
        assert!(v["disks"].is_array() && v["fans"].is_array());
        assert!(v["disk_io"][0]["written_total"].is_u64(), "{v}");
        // The second detailed sample has rates.
        let v = serde_json::to_value(c.sample(Details::All)).unwrap();
        assert!(v["network"][0]["rx_per_s"].is_u64(), "{v}");
        assert!(v["network"][0]["errors_per_s"].is_f64(), "{v}");
        assert!(v["network"][0]["wifi"].is_null(), "lo has no Wi-Fi: {v}");
        assert!(v["disk_io"][0]["write_per_s"].is_u64(), "{v}");
    }

    #[test]
    fn pi_sources_of_board_trees_are_read_through_the_collector() {
        // tests/fixtures/boards/SOURCES.md. A fixture tree has no mailbox (no /dev/vcio).
        let boards = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/boards");
        let pi_of = |root: PathBuf| {
            let mut c = Collector::new(root, net::Filter::default()).unwrap();
            c.sample(Details::ForHistory).pi
        };
        // A Pi 4 with raspberrypi-hwmon and without get_throttled.
        let h = pi_of(boards.join("pi4-rpi-volt/sys")).expect("a Pi");
        assert_eq!(h.source, "hwmon");
        assert_eq!(h.under_voltage.now, Some(false));
        assert_eq!(h.throttled.now, None);
        // A PC's hwmon (nct6779): not a Pi.
        assert_eq!(pi_of(boards.join("node-exporter-hwmon-fans/sys")), None);
        // A Pi 3B+'s get_throttled (80008), nothing else: the deprecated node as last resort.
        let root = std::env::temp_dir().join(format!("edgemon-pi3-{}", std::process::id()));
        let fw = root.join("devices/platform/soc/soc:firmware");
        std::fs::create_dir_all(&fw).unwrap();
        std::fs::copy(
            boards.join("pi-throttled/rpi3bplus-sysfs-get_throttled-80008"),
            fw.join("get_throttled"),
        )
        .unwrap();
        let h = pi_of(root.clone()).expect("a Pi");
        assert_eq!((h.source, h.soft_temp_limit.now), ("sysfs", Some(true)));
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn host_is_described() {
        let mut c = Collector::new("/sys".into(), included_lo()).unwrap();
        let h = c.host();
        assert!(h.cpu_count > 0);
        assert!(!h.hostname.is_empty() && !h.arch.is_empty());
    }

    #[test]
    fn rounding_keeps_one_decimal() {
        assert_eq!(round1(12.345), 12.3);
        assert_eq!(round1(f32::NAN), 0.0);
    }
}
