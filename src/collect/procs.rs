//! Top processes by CPU, and the top writers to disk: a scanner that keeps what it read of each
//! process between scans (CPU % and write rates need two readings). Per process and scan it reads
//! `/proc/PID/stat` and, where readable, `/proc/PID/io`; the owner once (`status`) and the
//! command line until it has one (`cmdline`). sysinfo read `status`, `stat`, `statm` and `io`
//! every scan and, unless told not to, every thread's files too: about four times the system
//! calls. It does blocking /proc reads, so it only ever runs on a blocking thread.
//!
//! Bytes written come from `/proc/PID/io`, which the kernel shows only to a reader allowed to
//! ptrace the process: root (`CAP_SYS_PTRACE`) sees every process; any other user, the packaged
//! unit's `DynamicUser` among them, only its own. An unreadable figure is `null`, not 0.

use std::collections::HashMap;
use std::time::Instant;

use serde::Serialize;

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
    /// State (`Runnable`, `Sleeping`, `Idle`, `Zombie`, ...: `state_name`).
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

/// A process as the previous scan saw it.
struct Seen {
    /// `starttime` (clock ticks after boot): a pid reused by another process has another.
    start: u64,
    /// User and system CPU time, clock ticks.
    ticks: u64,
    /// `write_bytes` from `/proc/PID/io`, where readable.
    written: Option<u64>,
    /// Real uid (`status`), read once.
    uid: Option<u32>,
    /// The command line, read until it is not empty (a zombie, or a process that has just
    /// forked, has none yet).
    cmd: String,
}

/// What `/proc/PID/stat` says (proc(5); the name is in parentheses and may hold anything).
#[derive(Debug, PartialEq)]
struct Stat {
    name: String,
    state: u8,
    kernel_thread: bool,
    ticks: u64,
    start: u64,
    rss_pages: u64,
}

/// `PF_KTHREAD` in `stat`'s flags: a kernel thread, not a process for this list.
const PF_KTHREAD: u64 = 0x0020_0000;

fn parse_stat(text: &str) -> Option<Stat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let name = text.get(open + 1..close)?.to_string();
    // Field n of proc(5), counted from 1, is rest[n - 3]: the state is field 3.
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    let num = |n: usize| rest.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    Some(Stat {
        name,
        state: *rest.first()?.as_bytes().first()?,
        kernel_thread: num(9)? & PF_KTHREAD != 0,
        ticks: num(14)?.saturating_add(num(15)?),
        start: num(22)?,
        rss_pages: num(24)?,
    })
}

/// The state's name, as sysinfo (and so the page and older clients) gave it.
fn state_name(state: u8) -> &'static str {
    match state {
        b'R' => "Runnable",
        b'S' => "Sleeping",
        b'I' => "Idle",
        b'D' => "UninterruptibleDiskSleep",
        b'Z' => "Zombie",
        b'T' => "Stopped",
        b't' => "Tracing",
        b'X' | b'x' => "Dead",
        b'K' => "Wakekill",
        b'W' => "Waking",
        b'P' => "Parked",
        _ => "Unknown",
    }
}

/// The real uid from a `status` file.
fn status_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|u| u.split_whitespace().next())
        .and_then(|u| u.parse().ok())
}

/// A command line as `cmdline` holds it (arguments ended by NUL), joined with spaces.
fn cmdline(raw: &[u8]) -> String {
    raw.split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(String::from_utf8_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

/// One process of a scan.
struct Row {
    pid: u32,
    name: String,
    state: u8,
    uid: Option<u32>,
    cpu: f32,
    rss: u64,
    written: Option<u64>,
    /// Written since the previous scan.
    delta: u64,
}

/// Keeps the process table between scans.
pub struct Scanner {
    /// Processes as of the last scan, by pid.
    seen: HashMap<u32, Seen>,
    /// uid to name, from `/etc/passwd`.
    users: Vec<(u32, String)>,
    /// Whose write bytes are readable.
    io: IoAccess,
    /// When the previous scan was.
    scanned: Instant,
    /// Whether a scan before the last one exists (write rates need two).
    primed: bool,
    /// Bytes in a page (4 KiB; 16 KiB on a Pi 5's kernel).
    page: u64,
}

impl Scanner {
    /// A scanner with a first reading taken (CPU % is meaningful from the next scan on).
    pub fn new() -> Option<Scanner> {
        let mut s = Scanner {
            seen: HashMap::new(),
            users: passwd(PASSWD),
            io: IoAccess::of_status(
                &std::fs::read_to_string("/proc/self/status").unwrap_or_default(),
            ),
            scanned: Instant::now(),
            primed: false,
            page: rustix::param::page_size() as u64,
        };
        s.read_all(0.0)?;
        Some(s)
    }

    /// Reads every process; CPU % over `secs` (0: none yet). Processes that vanish between the
    /// listing and their reads are skipped; `None` if /proc cannot be listed (the table is then
    /// empty).
    fn read_all(&mut self, secs: f64) -> Option<Vec<Row>> {
        let mut rows = Vec::new();
        let mut seen = HashMap::with_capacity(self.seen.len());
        let Ok(dir) = std::fs::read_dir("/proc") else {
            self.seen = seen;
            return None;
        };
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let path = format!("/proc/{pid}");
            let Some(st) = std::fs::read_to_string(format!("{path}/stat"))
                .ok()
                .and_then(|t| parse_stat(&t))
            else {
                continue;
            };
            if st.kernel_thread {
                continue;
            }
            let mut prev = self.seen.remove(&pid).filter(|p| p.start == st.start);
            let uid = prev.as_ref().and_then(|p| p.uid).or_else(|| {
                std::fs::read_to_string(format!("{path}/status"))
                    .ok()
                    .and_then(|t| status_uid(&t))
            });
            let cmd = match prev.as_mut().map(|p| std::mem::take(&mut p.cmd)) {
                Some(known) if !known.is_empty() => known,
                _ => std::fs::read(format!("{path}/cmdline"))
                    .map(|raw| cmdline(&raw))
                    .unwrap_or_default(),
            };
            let written = self
                .io
                .reads(uid)
                .then(|| std::fs::read_to_string(format!("{path}/io")).ok())
                .flatten()
                .and_then(|t| super::own::parse_write_bytes(&t));
            let (cpu, delta) = match &prev {
                Some(p) if secs > 0.0 => (
                    (st.ticks.saturating_sub(p.ticks) as f64 / super::own::TICKS_PER_SEC / secs
                        * 100.0) as f32,
                    written
                        .zip(p.written)
                        .map_or(0, |(now, then)| now.saturating_sub(then)),
                ),
                _ => (0.0, 0),
            };
            rows.push(Row {
                pid,
                name: st.name,
                state: st.state,
                uid,
                cpu,
                rss: st.rss_pages.saturating_mul(self.page),
                written,
                delta,
            });
            seen.insert(
                pid,
                Seen {
                    start: st.start,
                    ticks: st.ticks,
                    written,
                    uid,
                    cmd,
                },
            );
        }
        self.seen = seen;
        Some(rows)
    }

    /// Rescans: the `top` processes by CPU, then by memory, and the top writers.
    pub fn scan(&mut self, top: usize) -> Top {
        let before = std::mem::replace(&mut self.scanned, Instant::now());
        let secs = self.scanned.duration_since(before).as_secs_f64();
        let mut procs = self.read_all(secs).unwrap_or_default();
        let rates = std::mem::replace(&mut self.primed, true) && secs > 0.0;
        procs.sort_unstable_by(|a, b| b.cpu.total_cmp(&a.cpu).then(b.rss.cmp(&a.rss)));
        let mut writers: Vec<&Row> = procs
            .iter()
            .filter(|p| self.io.reads(p.uid) && p.delta > 0)
            .collect();
        writers.sort_unstable_by_key(|p| std::cmp::Reverse(p.delta));
        writers.truncate(TOP_WRITERS);
        let listed = &procs[..procs.len().min(top)];
        let known = |users: &[(u32, String)], u: u32| users.iter().any(|(id, _)| *id == u);
        let unknown_user = listed
            .iter()
            .chain(writers.iter().copied())
            .any(|p| p.uid.is_some_and(|u| !known(&self.users, u)));
        if unknown_user {
            // A user added since the hub started: re-read the user list once.
            self.users = passwd(PASSWD);
        }
        let entry = |p: &Row| {
            let readable = self.io.reads(p.uid);
            Proc {
                pid: p.pid,
                name: p.name.clone(),
                cmd: truncate(self.seen.get(&p.pid).map_or("", |s| s.cmd.as_str())),
                user: p
                    .uid
                    .map(|u| {
                        self.users
                            .iter()
                            .find(|(id, _)| *id == u)
                            .map_or_else(|| u.to_string(), |(_, name)| name.clone())
                    })
                    .unwrap_or_default(),
                cpu: super::round1(p.cpu),
                rss: p.rss,
                state: state_name(p.state).to_string(),
                written: if readable { p.written } else { None },
                write_per_s: (readable && rates && p.written.is_some())
                    .then(|| (p.delta as f64 / secs).round() as u64),
            }
        };
        Top {
            processes: listed.iter().map(entry).collect(),
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
    fn stat_lines_are_read_whatever_the_name_holds() {
        // proc(5) fields; the name may hold spaces and parentheses.
        let line = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 2061 0 0 0 \
                    250 70 0 0 20 0 3 0 1234567 19000000 1500 18446744073709551615 1 1 0 0 0 0 0 \
                    0 0 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                name: "my (odd) name".into(),
                state: b'S',
                kernel_thread: false,
                ticks: 320,
                start: 1_234_567,
                rss_pages: 1500,
            })
        );
        let kthread = "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 5 0 0 20 0 1 0 11 0 0 \
                       18446744073709551615 0 0 0 0 0 0 0 2147483647 0 0 0 0 0 0 0 0 0 0";
        assert!(parse_stat(kthread).unwrap().kernel_thread);
        assert_eq!(parse_stat("12 (cut"), None);
        assert_eq!(parse_stat("12 (short) S 1 2"), None);
        assert_eq!(state_name(b'S'), "Sleeping");
        assert_eq!(state_name(b'?'), "Unknown");
    }

    #[test]
    fn status_io_and_cmdline_files_are_read() {
        assert_eq!(
            status_uid("Name:\tx\nUid:\t1000\t1000\t1000\t1000\n"),
            Some(1000)
        );
        assert_eq!(status_uid("Name:\tx\n"), None);
        assert_eq!(
            super::super::own::parse_write_bytes(
                "rchar: 1\nwrite_bytes: 4096\ncancelled_write_bytes: 0\n"
            ),
            Some(4096)
        );
        assert_eq!(cmdline(b"sleep\x005\x00"), "sleep 5");
        assert_eq!(cmdline(b""), "");
    }

    #[test]
    fn kernel_threads_are_not_listed_and_cpu_follows_a_busy_child() {
        let mut s = Scanner::new().unwrap();
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg("while :; do :; done")
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let busy = loop {
            std::thread::sleep(std::time::Duration::from_millis(300));
            let top = s.scan(usize::MAX);
            assert!(top.processes.iter().all(|p| p.name != "kthreadd"));
            if let Some(p) = top.processes.iter().find(|p| p.pid == child.id())
                && p.cpu > 20.0
            {
                break Some(p.clone());
            }
            if std::time::Instant::now() > deadline {
                break None;
            }
        };
        let _ = child.kill();
        let _ = child.wait();
        let p = busy.expect("the busy child shows CPU");
        assert_eq!(p.cmd, "sh -c while :; do :; done");
        assert!(p.cpu <= 110.0, "{p:?}");
    }

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
