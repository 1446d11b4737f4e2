//! Disk I/O (`disk_io`): bytes and operations per second and bytes written since boot, per
//! whole block device, from one read of `/proc/diskstats`. An SD card exposes no wear counters,
//! so the write volume is the only wear signal a Pi has.

use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use super::counters::{Deltas, whole};

/// Where the kernel lists every block device's counters.
pub const PROC_DISKSTATS: &str = "/proc/diskstats";

/// Devices reported at most (the history keeps 16 of each kind).
pub const MAX_DEVICES: usize = 16;

/// `/proc/diskstats` counts sectors of 512 bytes whatever the device's own sector size.
const SECTOR: u64 = 512;

/// Devices that are not storage that wears or that repeat another device's I/O: loop files,
/// RAM disks, compressed swap in RAM, floppies and optical drives, device-mapper and software
/// RAID (their I/O is counted again on the disks below them).
const SKIPPED: [&str; 7] = ["loop", "ram", "zram", "fd", "sr", "dm-", "md"];

/// One device's I/O.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DiskIo {
    /// Kernel name (`mmcblk0`, `sda`, `nvme0n1`).
    pub device: String,
    /// Bytes read per second since the previous sample; `null` on the first.
    pub read_per_s: Option<u64>,
    /// Bytes written per second since the previous sample; `null` on the first.
    pub write_per_s: Option<u64>,
    /// Reads completed per second; `null` on the first sample.
    pub reads_per_s: Option<u64>,
    /// Writes completed per second; `null` on the first sample.
    pub writes_per_s: Option<u64>,
    /// Bytes written since boot.
    pub written_total: u64,
    /// Bytes read since boot.
    pub read_total: u64,
}

/// One device's counters since boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counters {
    /// Kernel name.
    pub device: String,
    /// Reads completed.
    pub reads: u64,
    /// Bytes read.
    pub read_bytes: u64,
    /// Writes completed.
    pub writes: u64,
    /// Bytes written.
    pub written_bytes: u64,
}

/// `/proc/diskstats`'s text: `major minor name reads merged sectors_read ms writes merged
/// sectors_written …` (14 fields before Linux 4.18, 18 or 20 after). Whole devices only: a name
/// that another listed name starts, followed by digits (`sda1`, `mmcblk0p2`, `nvme0n1p1`), is a
/// partition, whose I/O its disk already counts. Malformed lines are skipped.
pub fn parse(text: &str) -> Vec<Counters> {
    let all: Vec<Counters> = text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 14 {
                return None;
            }
            let n = |i: usize| f[i].parse::<u64>().ok();
            Some(Counters {
                device: f[2].to_string(),
                reads: n(3)?,
                read_bytes: n(5)?.saturating_mul(SECTOR),
                writes: n(7)?,
                written_bytes: n(9)?.saturating_mul(SECTOR),
            })
        })
        .collect();
    let is_partition = |name: &str| {
        all.iter().any(|d| {
            name.strip_prefix(d.device.as_str()).is_some_and(|rest| {
                let digits = rest.strip_prefix('p').unwrap_or(rest);
                !rest.is_empty() && !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
            })
        })
    };
    let mut v: Vec<Counters> = all
        .iter()
        .filter(|d| !SKIPPED.iter().any(|p| d.device.starts_with(p)))
        .filter(|d| !is_partition(&d.device))
        .cloned()
        .collect();
    v.sort_unstable_by(|a, b| a.device.cmp(&b.device));
    v.truncate(MAX_DEVICES);
    v
}

/// Each whole device's counters from `path`; empty if unreadable.
pub fn read(path: &Path) -> Vec<Counters> {
    std::fs::read_to_string(path)
        .map(|t| parse(&t))
        .unwrap_or_default()
}

/// Turns the counters into rates; remembers the previous reading.
#[derive(Debug, Default)]
pub struct Rates {
    prev: Deltas<4>,
}

impl Rates {
    /// The I/O of `counters` read at `now`.
    pub fn update(&mut self, now: Instant, counters: Vec<Counters>) -> Vec<DiskIo> {
        let readings: Vec<(String, [u64; 4])> = counters
            .iter()
            .map(|c| {
                let k = [c.read_bytes, c.written_bytes, c.reads, c.writes];
                (c.device.clone(), k)
            })
            .collect();
        let rates = self.prev.update(now, &readings);
        counters
            .into_iter()
            .zip(rates)
            .map(|(c, r)| DiskIo {
                read_per_s: whole(r[0]),
                write_per_s: whole(r[1]),
                reads_per_s: whole(r[2]),
                writes_per_s: whole(r[3]),
                written_total: c.written_bytes,
                read_total: c.read_bytes,
                device: c.device,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// This development VM's `/proc/diskstats` (Debian 12, Linux 6.18, virtio disk), read on
    /// 2026-12-03, with one partition line added to show it being left out.
    const VM: &str = "   7       0 loop0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0
 254       0 vda 4498 2592 698426 1569 656 3801 272736 652 0 776 2392 2983 69 37592 169 25 1
 254       1 vda1 4400 2592 690000 1500 650 3801 272000 650 0 770 2300 2983 69 37592 169 0 0
 253       0 zram0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0
";

    #[test]
    fn whole_devices_are_kept_and_partitions_loops_and_ram_skipped() {
        let v = parse(VM);
        assert_eq!(
            v,
            [Counters {
                device: "vda".into(),
                reads: 4498,
                read_bytes: 698426 * 512,
                writes: 656,
                written_bytes: 272736 * 512,
            }]
        );
        // Pre-4.18 kernels print 14 fields; shorter or non-numeric lines are skipped.
        let old = "8 0 sda 1 0 8 0 2 0 16 0 0 0 0\n8 0 sdb 1 2\n8 0 sdc x 0 8 0 2 0 16 0 0 0 0\n";
        let v = parse(old);
        assert_eq!(v.len(), 1);
        assert_eq!((v[0].read_bytes, v[0].written_bytes), (4096, 8192));
        assert!(!read(Path::new(PROC_DISKSTATS)).is_empty());
        assert!(read(Path::new("/nonexistent/diskstats")).is_empty());
    }

    #[test]
    fn an_sd_card_board_with_usb_disks_is_read() {
        // tests/fixtures/boards/SOURCES.md: an SD card and three USB disks, 11 fields a line
        // (a kernel before 4.18), from hd-idle's test data.
        let text = include_str!("../../tests/fixtures/boards/hd-idle-mmcblk-usb-diskstats");
        let v = parse(text);
        let names: Vec<&str> = v.iter().map(|c| c.device.as_str()).collect();
        assert_eq!(names, ["mmcblk0", "sda", "sdb", "sdc"]);
        assert_eq!(v[0].writes, 1544414);
        assert_eq!(v[0].written_bytes, 48441345 * 512);
        assert_eq!(v[0].read_bytes, 6878634 * 512);

        // node_exporter's composite fixture: 14, 18 and 20 fields, LVM over sda, a floppy.
        let text = include_str!("../../tests/fixtures/boards/node-exporter-diskstats");
        let names: Vec<String> = parse(text).into_iter().map(|c| c.device).collect();
        assert_eq!(names, ["mmcblk0", "nvme0n1", "sda", "sdb", "sdc", "vda"]);
    }

    #[test]
    fn names_are_partitions_only_under_a_listed_disk() {
        let text = "179 0 mmcblk0 1 0 2 0 3 0 4 0 0 0 0\n179 1 mmcblk0p1 1 0 2 0 3 0 4 0 0 0 0\n\
                    259 0 nvme0n1 1 0 2 0 3 0 4 0 0 0 0\n259 1 nvme0n1p1 1 0 2 0 3 0 4 0 0 0 0\n\
                    8 0 sda 1 0 2 0 3 0 4 0 0 0 0\n8 1 sda1 1 0 2 0 3 0 4 0 0 0 0\n\
                    8 16 sdb1 1 0 2 0 3 0 4 0 0 0 0\n";
        let names: Vec<String> = parse(text).into_iter().map(|c| c.device).collect();
        // `sdb1` stays: its disk is not listed, so nothing else counts its I/O.
        assert_eq!(names, ["mmcblk0", "nvme0n1", "sda", "sdb1"]);
    }

    #[test]
    fn rates_are_per_second_and_totals_are_bytes() {
        let mut r = Rates::default();
        let t0 = Instant::now();
        let c = |sectors_written: u64, writes| Counters {
            device: "mmcblk0".into(),
            reads: 0,
            read_bytes: 0,
            writes,
            written_bytes: sectors_written * 512,
        };
        let first = r.update(t0, vec![c(100, 1)]);
        assert_eq!(first[0].write_per_s, None);
        assert_eq!(first[0].written_total, 51200);
        let next = r.update(t0 + Duration::from_secs(2), vec![c(300, 5)]);
        assert_eq!(next[0].write_per_s, Some(51200));
        assert_eq!(next[0].writes_per_s, Some(2));
        assert_eq!(next[0].read_per_s, Some(0));
    }
}
