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

/// The real filesystems sysinfo saw on its last refresh, by mount point, each mounted device once.
pub fn list(disks: &sysinfo::Disks) -> Vec<Disk> {
    let mut seen = std::collections::HashSet::new();
    let mut all: Vec<&sysinfo::Disk> = disks.iter().collect();
    // Shortest mount point first, so a device mounted twice is reported at its topmost mount.
    all.sort_by_key(|d| {
        (
            d.mount_point().as_os_str().len(),
            d.mount_point().to_path_buf(),
        )
    });
    let mut v: Vec<Disk> = all
        .into_iter()
        .filter(|d| d.total_space() > 0)
        .filter_map(|d| {
            let fs = d.file_system().to_string_lossy().into_owned();
            if is_pseudo(&fs) {
                return None;
            }
            // A device bind-mounted twice (containers, snaps) is one disk: keep the first mount.
            if !seen.insert(d.name().to_os_string()) {
                return None;
            }
            Some(Disk {
                mount: d.mount_point().to_string_lossy().into_owned(),
                fs,
                total: d.total_space(),
                available: d.available_space(),
            })
        })
        .collect();
    v.sort_by(|a, b| a.mount.cmp(&b.mount));
    v
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
    fn this_host_lists_only_real_filesystems() {
        let disks = sysinfo::Disks::new_with_refreshed_list().unwrap();
        for d in list(&disks) {
            assert!(!is_pseudo(&d.fs), "{d:?}");
            assert!(d.total > 0 && d.available <= d.total, "{d:?}");
        }
    }
}
