//! Top processes by CPU, and the top writers to disk: a scanner that keeps sysinfo's process
//! table between scans (CPU % and write rates need two readings). It does blocking /proc reads,
//! so it only ever runs on a blocking thread.
//!
//! Bytes written come from `/proc/PID/io`, which the kernel shows only to a reader allowed to
//! ptrace the process: root (`CAP_SYS_PTRACE`) sees every process; any other user, the packaged
//! unit's `DynamicUser` among them, only its own. An unreadable figure is `null`, not 0.

use serde::Serialize;
use sysinfo::{ProcessRefreshKind, ProcessesToUpdate, System, UpdateKind};

/// Longest command line sent, in bytes; longer ones end with `…`.
pub const MAX_CMD: usize = 256;

/// One process.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Proc {
    /// Process id.
    pub pid: u32,
    /// Executable name.
    pub name: String,
    /// Command line, truncated to `MAX_CMD` bytes.
    pub cmd: String,
    /// Owner's user name (or uid when the name is unknown).
    pub user: String,
    /// CPU use since the previous scan, in percent of one core.
    pub cpu: f32,
    /// Resident memory in bytes.
    pub rss: u64,
    /// State (`Run`, `Sleep`, `Zombie`, ...).
    pub state: String,
    /// Bytes it caused to be written to block devices since it started; `null` if unreadable.
    pub written: Option<u64>,
    /// Bytes written per second since the previous scan; `null` if unreadable or new.
    pub write_per_s: Option<u64>,
}

/// What a scan found.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Top {
    /// The top processes by CPU, then memory.
    pub processes: Vec<Proc>,
    /// The top processes by bytes written per second since the previous scan (only those that
    /// wrote), whatever their CPU: "which process is writing to my SD card?".
    pub writers: Vec<Proc>,
    /// Whose write bytes can be read: `all` (root) or `own` (this user's processes only).
    pub io_readable: &'static str,
}

/// Writers listed at most.
pub const TOP_WRITERS: usize = 5;

/// Whose `/proc/PID/io` this process may read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoAccess {
    /// Every process's (`CAP_SYS_PTRACE` in the effective set).
    All,
    /// Only processes of this effective uid.
    Own(u32),
}

impl IoAccess {
    /// From `/proc/self/status`: `CapEff` bit 19 (`CAP_SYS_PTRACE`), else the effective uid.
    pub fn of_status(status: &str) -> IoAccess {
        let field = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .map(str::trim)
        };
        let cap = field("CapEff:")
            .and_then(|c| u64::from_str_radix(c, 16).ok())
            .unwrap_or(0);
        if cap & (1 << 19) != 0 {
            return IoAccess::All;
        }
        let euid = field("Uid:")
            .and_then(|u| u.split_whitespace().nth(1))
            .and_then(|u| u.parse().ok())
            .unwrap_or(u32::MAX);
        IoAccess::Own(euid)
    }

    fn reads(self, uid: Option<u32>) -> bool {
        match self {
            IoAccess::All => true,
            IoAccess::Own(me) => uid == Some(me),
        }
    }
}

/// The user database edgemon reads names from (a `DynamicUser` is not in it: its uid shows).
const PASSWD: &str = "/etc/passwd";

/// `(uid, name)` of every user in a passwd file; none if it cannot be read.
fn passwd(path: &str) -> Vec<(u32, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let uid = f.nth(1)?.parse().ok()?;
            (!name.is_empty()).then(|| (uid, name.to_string()))
        })
        .collect()
}

/// Keeps the process table between scans.
pub struct Scanner {
    /// Processes as of the last scan.
    sys: System,
    /// uid to name, from `/etc/passwd`.
    users: Vec<(u32, String)>,
    /// Whose write bytes are readable.
    io: IoAccess,
    /// When the previous scan was.
    scanned: std::time::Instant,
    /// Whether a scan before the last one exists (write rates need two).
    primed: bool,
}

impl Scanner {
    /// A scanner with a first reading taken (CPU % is meaningful from the next scan on).
    pub fn new() -> Option<Scanner> {
        let mut s = Scanner {
            sys: System::new().ok()?,
            users: passwd(PASSWD),
            io: IoAccess::of_status(
                &std::fs::read_to_string("/proc/self/status").unwrap_or_default(),
            ),
            scanned: std::time::Instant::now(),
            primed: false,
        };
        s.refresh();
        Some(s)
    }

    fn refresh(&mut self) {
        self.sys.refresh_processes_specifics(
            ProcessesToUpdate::All,
            true,
            // Not the threads: sysinfo lists every /proc/PID/task and reads each thread's
            // files as well, which was most of a scan's cost (the list leaves threads out).
            ProcessRefreshKind::nothing()
                .without_tasks()
                .with_cpu()
                .with_memory()
                .with_cmd(UpdateKind::OnlyIfNotSet)
                .with_user(UpdateKind::OnlyIfNotSet)
                .with_disk_usage(),
        );
    }

    /// Rescans: the `top` processes by CPU, then by memory, and the top writers.
    pub fn scan(&mut self, top: usize) -> Top {
        let before = std::mem::replace(&mut self.scanned, std::time::Instant::now());
        let secs = self.scanned.duration_since(before).as_secs_f64();
        self.refresh();
        let rates = std::mem::replace(&mut self.primed, true) && secs > 0.0;
        let mut procs: Vec<&sysinfo::Process> = self
            .sys
            .processes()
            .values()
            // Threads are not processes for this list.
            .filter(|p| p.thread_kind().is_none())
            .collect();
        procs.sort_unstable_by(|a, b| {
            b.cpu_usage()
                .total_cmp(&a.cpu_usage())
                .then(b.memory().cmp(&a.memory()))
        });
        let uid = |p: &sysinfo::Process| p.user_id().map(|u| **u);
        let mut writers: Vec<&sysinfo::Process> = procs
            .iter()
            .copied()
            .filter(|p| self.io.reads(uid(p)) && p.disk_usage().written_bytes > 0)
            .collect();
        writers.sort_unstable_by_key(|p| std::cmp::Reverse(p.disk_usage().written_bytes));
        writers.truncate(TOP_WRITERS);
        procs.truncate(top);
        let known = |users: &[(u32, String)], u: u32| users.iter().any(|(id, _)| *id == u);
        let unknown_user = procs
            .iter()
            .chain(&writers)
            .any(|p| uid(p).is_some_and(|u| !known(&self.users, u)));
        if unknown_user {
            // A user added since the hub started: re-read the user list once.
            self.users = passwd(PASSWD);
        }
        let entry = |p: &sysinfo::Process| {
            let readable = self.io.reads(uid(p));
            let io = p.disk_usage();
            Proc {
                pid: p.pid().as_u32(),
                name: p.name().to_string_lossy().into_owned(),
                cmd: truncate(&join_cmd(p.cmd())),
                user: uid(p)
                    .map(|u| {
                        self.users
                            .iter()
                            .find(|(id, _)| *id == u)
                            .map_or_else(|| u.to_string(), |(_, name)| name.clone())
                    })
                    .unwrap_or_default(),
                cpu: super::round1(p.cpu_usage()),
                rss: p.memory(),
                state: p.status().to_string(),
                written: readable.then_some(io.total_written_bytes),
                write_per_s: (readable && rates)
                    .then(|| (io.written_bytes as f64 / secs).round() as u64),
            }
        };
        Top {
            processes: procs.into_iter().map(entry).collect(),
            writers: if rates {
                writers.into_iter().map(entry).collect()
            } else {
                Vec::new()
            },
            io_readable: match self.io {
                IoAccess::All => "all",
                IoAccess::Own(_) => "own",
            },
        }
    }
}

fn join_cmd(parts: &[std::ffi::OsString]) -> String {
    parts
        .iter()
        .map(|p| p.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Cuts `s` to at most `MAX_CMD` bytes on a character boundary, marking the cut.
pub fn truncate(s: &str) -> String {
    if s.len() <= MAX_CMD {
        return s.to_string();
    }
    let end = super::floor_char_boundary(s, MAX_CMD - '…'.len_utf8());
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    #[test]
    fn users_come_from_a_passwd_file() {
        let f = std::env::temp_dir().join(format!("edgemon-passwd-{}", std::process::id()));
        std::fs::write(
            &f,
            "root:x:0:0:root:/root:/bin/bash\npi:x:1000:1000::/home/pi:/bin/sh\n\nbad line\n",
        )
        .unwrap();
        assert_eq!(
            passwd(f.to_str().unwrap()),
            [(0, "root".to_string()), (1000, "pi".to_string())]
        );
        assert!(passwd("/nonexistent/passwd").is_empty());
        let _ = std::fs::remove_file(&f);
    }

    use super::*;

    #[test]
    fn long_command_lines_are_cut_on_a_char_boundary() {
        assert_eq!(truncate("ls -l"), "ls -l");
        let long = "é".repeat(300);
        let t = truncate(&long);
        assert!(t.len() <= MAX_CMD && t.ends_with('…'), "{}", t.len());
    }

    #[test]
    fn scan_lists_this_process() {
        let mut s = Scanner::new().unwrap();
        let all = s.scan(usize::MAX);
        let me = all
            .processes
            .iter()
            .find(|p| p.pid == std::process::id())
            .expect("this test process is listed");
        assert!(me.rss > 0);
        assert!(!me.user.is_empty());
        assert!(me.written.is_some(), "a process can read its own io");
        assert!(s.scan(3).processes.len() <= 3);
    }

    #[test]
    fn a_process_writing_to_disk_is_a_top_writer() {
        // 4 MiB written with fsync to a file next to the build (a disk, unlike /tmp on some
        // hosts): write_bytes counts what reaches the block layer.
        let mut s = Scanner::new().unwrap();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("writer-test-{}", std::process::id()));
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "dd if=/dev/zero of={} bs=1M count=4 conv=fsync 2>/dev/null; exec sleep 5",
                path.display()
            ))
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let found = loop {
            let top = s.scan(5);
            if let Some(w) = top
                .writers
                .iter()
                .find(|w| w.name == "dd" || w.pid == child.id())
            {
                break Some(w.clone());
            }
            if std::time::Instant::now() > deadline {
                break None;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        };
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_file(&path);
        let w = found.expect("dd among the writers");
        assert!(w.written.unwrap() >= 1 << 20, "{w:?}");
        assert!(w.write_per_s.unwrap() > 0, "{w:?}");
    }

    #[test]
    fn io_access_follows_ptrace_capability_then_uid() {
        let root = "Name:\tx\nUid:\t0\t0\t0\t0\nCapEff:\t000001ffffffffff\n";
        assert_eq!(IoAccess::of_status(root), IoAccess::All);
        // A DynamicUser unit: an unprivileged uid, no capabilities.
        let unit = "Uid:\t61234\t61234\t61234\t61234\nCapEff:\t0000000000000000\n";
        assert_eq!(IoAccess::of_status(unit), IoAccess::Own(61234));
        assert!(IoAccess::Own(61234).reads(Some(61234)));
        assert!(!IoAccess::Own(61234).reads(Some(0)) && !IoAccess::Own(1).reads(None));
    }
}
