//! The `idle` and `dashboard` lines: RSS and PSS after start, then the daemon's CPU with nobody
//! connected and with one dashboard-like client; checks DESIGN.md's idle-RSS budget
//! (`IDLE_RSS_MIB`) and CPU budgets (`IDLE_CPU_PCT`, `DASHBOARD_CPU_PCT`).

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::client::{Client, source_ip};
use crate::daemon::Proc;
use crate::procfs;
use crate::report::{Budget, Gate, Report};

use super::{DASHBOARD_CPU_PCT, IDLE_CPU_PCT, IDLE_RSS_MIB, MIB, Plan, cpu_over, wait_stats};

/// Idle footprint, then CPU with nobody connected and with one dashboard-like client.
pub(super) async fn idle_and_dashboard(r: &mut Report, plan: &Plan, d: &Proc) -> io::Result<()> {
    // Let the sampler take its first readings (and the allocator settle) before reading RSS.
    smol::Timer::after(Duration::from_secs(3)).await;
    let pid = d.pid();
    for (figure, kib) in [
        ("RSS after start", procfs::rss_kib(pid)),
        ("PSS after start", procfs::pss_kib(pid)),
    ] {
        r.check(
            "idle",
            figure,
            kib as f64 / MIB,
            "MiB",
            Budget::AtMost(IDLE_RSS_MIB),
            Gate::Full,
            "",
        );
    }
    let secs = plan.window.as_secs();
    let cpu = cpu_over(pid, plan.window).await;
    r.check(
        "idle",
        &format!("CPU, nobody connected (the default alert rules on), {secs} s"),
        cpu,
        "% core",
        Budget::AtMost(IDLE_CPU_PCT),
        Gate::Full,
        "",
    );
    for (topics, gate) in [
        (&["system"][..], true),
        (&["system", "processes", "alerts", "services"][..], false),
    ] {
        let mut c = Client::connect(source_ip(0), d.addr, "/ws", None).await?;
        for t in topics {
            c.subscribe(t).await?;
        }
        let frames = Arc::new(AtomicUsize::new(0));
        let reader = {
            let frames = frames.clone();
            smol::spawn(async move {
                while let Ok(f) = c.next().await {
                    if f.opcode == 0x8 {
                        break;
                    }
                    if f.payload.starts_with(br#"{"type":"data""#) {
                        frames.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        };
        // The subscription's first seconds (history, first process scan) are not the steady state.
        smol::Timer::after(Duration::from_secs(2)).await;
        let before = frames.load(Ordering::Relaxed);
        let cpu = cpu_over(pid, plan.window).await;
        let got = frames.load(Ordering::Relaxed) - before;
        reader.cancel().await;
        let name = topics.join("+");
        if gate {
            r.check(
                "dashboard",
                &format!("CPU, one client on {name}, {secs} s"),
                cpu,
                "% core",
                Budget::AtMost(DASHBOARD_CPU_PCT),
                Gate::Full,
                "",
            );
            // One system frame a second: a window without them means the client was starved.
            r.check(
                "dashboard",
                &format!("{name} frames received in {secs} s"),
                got as f64,
                "",
                Budget::AtLeast(secs.saturating_sub(2) as f64),
                Gate::Always,
                "",
            );
        } else {
            r.info(
                "dashboard",
                &format!("CPU, one client on {name}, {secs} s"),
                cpu,
                "% core",
                "what the page subscribes to",
            );
        }
    }
    wait_stats(d, "no connections", Duration::from_secs(10), |s| {
        s.active == 0
    })
    .await?;
    Ok(())
}
