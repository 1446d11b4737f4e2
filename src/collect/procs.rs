//! Top processes by CPU: a scanner that keeps sysinfo's process table between scans (CPU % needs
//! two readings). It does blocking /proc reads, so it only ever runs on a blocking thread.

use serde::Serialize;
use sysinfo::{ProcessRefreshKind, ProcessesToUpdate, System, UpdateKind, Users};

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
}

/// Keeps the process table between scans.
pub struct Scanner {
    /// Processes as of the last scan.
    sys: System,
    /// uid to name.
    users: Users,
}

impl Scanner {
    /// A scanner with a first reading taken (CPU % is meaningful from the next scan on).
    pub fn new() -> Option<Scanner> {
        let mut s = Scanner {
            sys: System::new().ok()?,
            users: Users::new_with_refreshed_list()
                .or_else(|_| Users::new())
                .ok()?,
        };
        s.refresh();
        Some(s)
    }

    fn refresh(&mut self) {
        self.sys.refresh_processes_specifics(
            ProcessesToUpdate::All,
            true,
            ProcessRefreshKind::nothing()
                .with_cpu()
                .with_memory()
                .with_cmd(UpdateKind::OnlyIfNotSet)
                .with_user(UpdateKind::OnlyIfNotSet),
        );
    }

    /// Rescans and returns the `top` processes by CPU, then by memory.
    pub fn scan(&mut self, top: usize) -> Vec<Proc> {
        self.refresh();
        let mut procs: Vec<&sysinfo::Process> = self
            .sys
            .processes()
            .values()
            // Threads are not processes for this list.
            .filter(|p| p.thread_kind().is_none())
            .collect();
        procs.sort_by(|a, b| {
            b.cpu_usage()
                .total_cmp(&a.cpu_usage())
                .then(b.memory().cmp(&a.memory()))
        });
        procs.truncate(top);
        let unknown_user = procs.iter().any(|p| {
            p.user_id()
                .is_some_and(|u| self.users.get_user_by_id(u).is_none())
        });
        if unknown_user {
            // A user added since the hub started: re-read the user list once.
            self.users.refresh();
        }
        procs
            .into_iter()
            .map(|p| Proc {
                pid: p.pid().as_u32(),
                name: p.name().to_string_lossy().into_owned(),
                cmd: truncate(&join_cmd(p.cmd())),
                user: p
                    .user_id()
                    .map(|u| {
                        self.users
                            .get_user_by_id(u)
                            .map(|x| x.name().to_string())
                            .unwrap_or_else(|| u.to_string())
                    })
                    .unwrap_or_default(),
                cpu: super::round1(p.cpu_usage()),
                rss: p.memory(),
                state: p.status().to_string(),
            })
            .collect()
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
            .iter()
            .find(|p| p.pid == std::process::id())
            .expect("this test process is listed");
        assert!(me.rss > 0);
        assert!(!me.user.is_empty());
        assert!(s.scan(3).len() <= 3);
    }
}
