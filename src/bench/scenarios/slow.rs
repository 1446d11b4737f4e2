//! The `slow` lines: stalled subscribers beside reading ones on a 100 frames/s topic; checks
//! DESIGN.md's p99 latency budget (`P99_MS`) for the readers and its churn budget
//! (`CHURN_RSS_MIB`) after all close, plus the bench's own peak-RSS bound (`SLOW_RSS_MIB`).

use std::io;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use edgemon::topics::FLOOD;

use crate::daemon::Proc;
use crate::procfs;
use crate::report::{Budget, Gate, Report, quantile};

use super::sink::{Sink, spawn_readers, stop_readers};
use super::{MIB, P99_MS, Plan, SLOW_RSS_MIB, close_all, open, rss_growth, settle, warm_up};

/// Subscribers that never read beside ones that do, on a 100 frames/s topic.
pub(super) async fn slow_consumers(r: &mut Report, plan: &Plan, d: &Proc) -> io::Result<()> {
    let pid = d.pid();
    let s = "slow";
    let base = warm_up(d).await?;
    // A small receive buffer fills in well under a second at 100 KiB/s.
    let (stalled, e1) = open(d, 0, plan.slow_stalled, Some(4096)).await;
    let (readers, e2) = open(d, 10_000, plan.slow_readers, None).await;
    if let Some(e) = e1.first().or(e2.first()) {
        return Err(io::Error::other(format!("slow consumers: {e}")));
    }
    let mut held = Vec::new();
    for mut c in stalled {
        c.subscribe(FLOOD).await?;
        held.push(c);
    }
    let mut subscribed = Vec::new();
    for mut c in readers {
        c.subscribe(FLOOD).await?;
        subscribed.push(c);
    }
    let sink = Sink::new();
    let (stop_tx, stop) = async_channel::bounded::<()>(1);
    let tasks = spawn_readers(subscribed, &sink, &stop);
    sink.open_window(plan.slow_window);
    let deadline = Instant::now() + plan.slow_window;
    let mut peak = 0;
    while Instant::now() < deadline {
        peak = peak.max(procfs::rss_kib(pid));
        smol::Timer::after(Duration::from_millis(100)).await;
    }
    smol::Timer::after(Duration::from_millis(200)).await;
    let stats = d.stats().await?;
    let readers_left = stop_readers(tasks, stop_tx).await;
    let lost = sink.lost.load(Ordering::Relaxed);
    let w = sink.take(plan.slow_readers);
    let (n, m) = (plan.slow_readers, plan.slow_stalled);
    let secs = plan.slow_window.as_secs();
    r.check(
        s,
        &format!("{n} readers beside {m} stalled: p99, {secs} s"),
        quantile(&w.kernel_ms, 0.99),
        "ms",
        Budget::AtMost(P99_MS),
        Gate::Full,
        "1 KiB at 100 frames/s",
    );
    r.check(
        s,
        "readers' frames delivered",
        w.delivered_pct,
        "%",
        Budget::AtLeast(100.0),
        Gate::Always,
        "",
    );
    r.must_be_zero(s, "readers cut off", lost as f64, Gate::Always, "");
    r.check(
        s,
        "peak RSS over baseline",
        (peak as f64 - base.rss_kib as f64) / MIB,
        "MiB",
        Budget::AtMost(SLOW_RSS_MIB),
        Gate::Full,
        "",
    );
    r.info(
        s,
        "stalled subscribers the daemon dropped",
        (m as u64).saturating_sub(stats.active.saturating_sub(n as u64)) as f64,
        "",
        "--write-timeout",
    );
    r.info(
        s,
        "frames dropped from full queues",
        stats.dropped_frames as f64,
        "",
        "",
    );
    let mut all = held;
    all.extend(readers_left);
    close_all(all).await;
    let after = settle(d).await?;
    rss_growth(
        r,
        (s, "RSS after all closed, over baseline"),
        &base,
        &after,
        Gate::Always,
    );
    Ok(())
}
