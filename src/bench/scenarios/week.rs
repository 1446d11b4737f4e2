//! The history lines: a daemon restored from a full week of history (DESIGN.md's 6 MiB budget
//! for idle RSS with a week), its snapshot, and what a daemon writes to disk (nothing, without
//! `--state-dir`).

use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::daemon::Proc;
use crate::procfs;
use crate::report::{Budget, Gate, Report};

use super::{MIB, WEEK_RSS_MIB, shutdown::shutdown};

/// Starts a daemon whose runtime directory holds a full week of a 4-core Pi's history, and
/// measures it idle; then its snapshot after SIGTERM.
pub(super) async fn week(r: &mut Report, daemon: &Path, flags: &[String]) -> io::Result<()> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")?
        .trim()
        .to_string();
    let now = edgemon::protocol::unix_ms();
    let d = Proc::edgemon_with(daemon, None, flags, "week", |dir| {
        std::fs::write(
            dir.join("history.snap"),
            edgemon::synthetic_week(&host, now),
        )
    })?;
    let log = std::fs::read_to_string(&d.log).unwrap_or_default();
    let restored = log.contains("history: restored");
    r.must_be_zero(
        "history",
        "week snapshot not restored (1: refused, see the log)",
        f64::from(u8::from(!restored)),
        Gate::Always,
        "",
    );
    // The sampler's first readings and the allocator settle, as for the idle lines.
    smol::Timer::after(Duration::from_secs(3)).await;
    let pid = d.pid();
    let series = edgemon::budget_host_series().len();
    r.check(
        "history",
        &format!("RSS with a full week of history ({series} series, restored)"),
        procfs::rss_kib(pid) as f64 / MIB,
        "MiB",
        Budget::AtMost(WEEK_RSS_MIB),
        Gate::Full,
        "",
    );
    r.info(
        "history",
        "PSS with a full week of history",
        procfs::pss_kib(pid) as f64 / MIB,
        "MiB",
        "",
    );
    let mut d = d;
    // Kept past the daemon (whose drop would remove it) to see what it wrote at stop.
    let runtime = d.runtime.take();
    shutdown(r, d)?;
    if let Some(dir) = runtime {
        let size = std::fs::metadata(dir.join("history.snap")).map_or(0, |m| m.len());
        let _ = std::fs::remove_dir_all(&dir);
        r.info(
            "history",
            "snapshot written at stop (tmpfs)",
            size as f64 / MIB / MIB,
            "MiB",
            "RAM in /run, counted against the unit's MemoryMax",
        );
    }
    Ok(())
}

/// The daemon's block-device writes over its life so far, per hour: 0 without `--state-dir`
/// (the snapshot goes to a tmpfs).
pub(super) fn disk_writes(r: &mut Report, d: &Proc, started: Instant) {
    let bytes = procfs::disk_write_bytes(d.pid());
    let hours = started.elapsed().as_secs_f64() / 3600.0;
    let minutes = (hours * 60.0).round();
    r.must_be_zero(
        "history",
        &format!("disk writes per hour ({minutes} min of the main daemon, /proc/PID/io)"),
        bytes as f64 / hours.max(1e-9),
        Gate::Always,
        "bytes; write_bytes, tmpfs excluded",
    );
}
