//! Disks: each mounted real filesystem with its size, free space and type; pseudo filesystems skipped.

use serde::Serialize;

/// One mounted filesystem.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Disk {
    /// Mount point.
    pub mount: String,
    /// Filesystem type (`ext4`, `vfat`, ...).
    pub fs: String,
    /// Size in bytes.
    pub total: u64,
    /// Bytes available to unprivileged users.
    pub available: u64,
}

/// Filesystems that hold no user data worth watching.
const PSEUDO: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devpts",
    "devtmpfs",
    "efivarfs",
    "fusectl",
    "hugetlbfs",
    "mqueue",
    "nsfs",
    "overlay",
    "proc",
    "pstore",
    "ramfs",
    "rpc_pipefs",
    "securityfs",
    "squashfs",
    "sysfs",
    "tmpfs",
    "tracefs",
    "fuse.portal",
];

/// Whether a filesystem type is a pseudo filesystem.
pub fn is_pseudo(fs: &str) -> bool {
    PSEUDO.contains(&fs)
}

/// Where the mount table is read.
pub const PROC_MOUNTS: &str = "/proc/self/mounts";

/// A mount table field: `\040` (space), `\011` (tab), `\012` (newline) and `\134` (`\`)
/// decoded, as the kernel escapes them.
fn unescape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut rest = field;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest
            .get(i + 1..i + 4)
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(b) => {
                out.push(b as char);
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The real filesystems of the mount table `text` (`/proc/self/mounts`): (device, mount point,
/// type), each device once at its topmost mount, by mount point.
pub fn parse_mounts(text: &str) -> Vec<(String, String, String)> {
    let mut all: Vec<(String, String, String)> = text
        .lines()
        .filter_map(|l| {
            let mut f = l.split(' ');
            let (dev, mount, fs) = (f.next()?, f.next()?, f.next()?);
            (!is_pseudo(fs)).then(|| (unescape(dev), unescape(mount), fs.to_string()))
        })
        .collect();
    // Shortest mount point first, so a device mounted twice (bind mounts in containers, snaps)
    // is one disk, at its topmost mount.
    all.sort_unstable_by(|a, b| (a.1.len(), &a.1).cmp(&(b.1.len(), &b.1)));
    let mut kept: Vec<(String, String, String)> = Vec::with_capacity(all.len());
    for m in all {
        if !kept.iter().any(|k| k.0 == m.0) {
            kept.push(m);
        }
    }
    kept.sort_unstable_by(|a, b| a.1.cmp(&b.1));
    kept
}

/// The real filesystems mounted now, with their size and free space (`statvfs`); one that
/// cannot be asked, or has no size, is left out.
pub fn list(mounts: &std::path::Path) -> Vec<Disk> {
    let text = std::fs::read_to_string(mounts).unwrap_or_default();
    parse_mounts(&text)
        .into_iter()
        .filter_map(|(_, mount, fs)| {
            let st = rustix::fs::statvfs(mount.as_str()).ok()?;
            let total = st.f_blocks.saturating_mul(st.f_frsize);
            (total > 0).then(|| Disk {
                mount,
                fs,
                total,
                available: st.f_bavail.saturating_mul(st.f_frsize).min(total),
            })
        })
        .take(32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudo_filesystems_are_recognised() {
        for fs in ["tmpfs", "proc", "sysfs", "overlay", "squashfs", "devtmpfs"] {
            assert!(is_pseudo(fs), "{fs}");
        }
        for fs in ["ext4", "vfat", "btrfs", "xfs", "f2fs", "nfs4"] {
            assert!(!is_pseudo(fs), "{fs}");
        }
    }

    #[test]
    fn the_mount_table_gives_each_real_device_once_at_its_top_mount() {
        let table = "sysfs /sys sysfs rw 0 0\n\
                     /dev/mmcblk0p2 / ext4 rw,noatime 0 0\n\
                     /dev/mmcblk0p1 /boot/firmware vfat rw 0 0\n\
                     tmpfs /run tmpfs rw 0 0\n\
                     /dev/mmcblk0p2 /etc/hosts ext4 rw 0 0\n\
                     /dev/sda1 /mnt/usb\\040disk exfat rw 0 0\n\
                     nas:/share /mnt/nas nfs4 rw 0 0\n";
        let got: Vec<(String, String)> = parse_mounts(table)
            .into_iter()
            .map(|(_, m, fs)| (m, fs))
            .collect();
        let want: Vec<(String, String)> = [
            ("/", "ext4"),
            ("/boot/firmware", "vfat"),
            ("/mnt/nas", "nfs4"),
            ("/mnt/usb disk", "exfat"),
        ]
        .iter()
        .map(|(m, f)| (m.to_string(), f.to_string()))
        .collect();
        assert_eq!(got, want);
        assert_eq!(unescape("a\\134b\\q"), "a\\b\\q");
    }

    #[test]
    fn this_host_lists_only_real_filesystems() {
        for d in list(std::path::Path::new(PROC_MOUNTS)) {
            assert!(!is_pseudo(&d.fs), "{d:?}");
            assert!(d.total > 0 && d.available <= d.total, "{d:?}");
        }
    }
}
