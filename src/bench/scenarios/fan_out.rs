//! The fan-out (`connections`, and `stretch` at the stretch size): RSS per idle WebSocket, then
//! a 1 KiB frame a second to every subscriber; checks DESIGN.md's per-connection budget
//! (`KIB_PER_CONN`) and its fan-out budgets (`FAN_OUT`: p99 latency and CPU at 1,000 and 2,000
//! subscribers; other sizes are printed), and that every frame arrives.

use std::io;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use edgemon::topics::FLOOD;

use crate::daemon::Proc;
use crate::procfs;
use crate::report::{Budget, Gate, Report, quantile};

use super::sink::{Sink, spawn_readers, stop_readers};
use super::{FAN_OUT, KIB_PER_CONN, MIB, Plan, close_all, cpu_over, open, rss_once_counted};

/// `n` idle connections (RSS per connection), then all of them subscribed to the flood topic
/// (delivery latency, CPU), then all closed.
pub(super) async fn fan_out(
    r: &mut Report,
    plan: &Plan,
    d: &Proc,
    scenario: &str,
    n: usize,
    gate: Gate,
) -> io::Result<()> {
    let pid = d.pid();
    // The marginal cost, from a quarter of the connections to all of them: the first ones reuse
    // memory the allocator kept from earlier scenarios and would make the figure look smaller.
    let quarter = n / 4;
    let mut clients = Vec::with_capacity(n);
    let mut rss_at_quarter = 0;
    for (first, count) in [(0, quarter), (quarter, n - quarter)] {
        let (mut opened, errors) = open(d, first, count, None).await;
        if let Some(e) = errors.first() {
            return Err(io::Error::other(format!(
                "{scenario}: {} of {count} connections failed, first: {e}",
                errors.len()
            )));
        }
        clients.append(&mut opened);
        let rss = rss_once_counted(d, clients.len()).await?;
        if first == 0 {
            rss_at_quarter = rss;
        }
    }
    let per = (procfs::rss_kib(pid) as f64 - rss_at_quarter as f64) / (n - quarter) as f64;
    r.check(
        scenario,
        &format!("RSS per idle WebSocket at {n}"),
        per,
        "KiB",
        Budget::AtMost(KIB_PER_CONN),
        gate,
        &format!("marginal, {quarter} to {n}"),
    );

    let mut subscribed = Vec::with_capacity(n);
    for mut c in clients {
        c.subscribe(FLOOD).await?;
        subscribed.push(c);
    }
    let sink = Sink::new();
    let (stop_tx, stop) = async_channel::bounded::<()>(1);
    let readers = spawn_readers(subscribed, &sink, &stop);
    // Steady state: every subscriber has had a frame.
    let deadline = Instant::now() + Duration::from_secs(15);
    while sink.frames.load(Ordering::Relaxed) < n as u64 && Instant::now() < deadline {
        smol::Timer::after(Duration::from_millis(100)).await;
    }
    sink.open_window(plan.fanout_window);
    let cpu = cpu_over(pid, plan.fanout_window).await;
    // Frames sent at the end of the window are still on their way.
    smol::Timer::after(Duration::from_millis(500)).await;
    let rss = procfs::rss_kib(pid);
    let clients = stop_readers(readers, stop_tx).await;
    let lost = sink.lost.load(Ordering::Relaxed);
    let w = sink.take(n);
    let (kernel, user, frames) = (&w.kernel_ms, &w.user_ms, w.frames);
    let what = format!("1 KiB frame/s to {n} subscribers");
    // The contract's budgets at its sizes; other sizes (smoke, stretch) are held to the nearest
    // size above, or the largest.
    let (_, p99_ms, cpu_pct) = FAN_OUT
        .iter()
        .copied()
        .find(|(at, _, _)| n <= *at)
        .unwrap_or(FAN_OUT[FAN_OUT.len() - 1]);
    r.info(
        scenario,
        &format!("{what}: p50"),
        quantile(kernel, 0.5),
        "ms",
        "",
    );
    r.check(
        scenario,
        &format!("{what}: p99"),
        quantile(kernel, 0.99),
        "ms",
        Budget::AtMost(p99_ms),
        gate,
        "daemon stamp to kernel arrival",
    );
    r.info(
        scenario,
        &format!("{what}: max"),
        quantile(kernel, 1.0),
        "ms",
        "",
    );
    r.info(
        scenario,
        &format!("{what}: p99 in the bench's user space"),
        quantile(user, 0.99),
        "ms",
        "includes this tool's own scheduling",
    );
    r.check(
        scenario,
        &format!("CPU during fan-out to {n}"),
        cpu,
        "% core",
        Budget::AtMost(cpu_pct),
        gate,
        "",
    );
    r.info(
        scenario,
        &format!("RSS with {n} subscribed"),
        rss as f64 / MIB,
        "MiB",
        "",
    );
    // Correctness lines gate, except at the stretch size, where nothing does.
    let correctness = if gate == Gate::Never {
        gate
    } else {
        Gate::Always
    };
    r.check(
        scenario,
        &format!("frames delivered of {frames} × {n}"),
        w.delivered_pct,
        "%",
        Budget::AtLeast(100.0),
        correctness,
        "",
    );
    r.must_be_zero(
        scenario,
        "subscribers cut off",
        lost as f64,
        correctness,
        "",
    );
    close_all(clients).await;
    Ok(())
}
