//! The `churn` lines: connect/subscribe/disconnect cycles, half abrupt; checks DESIGN.md's
//! churn budget (`CHURN_RSS_MIB`: RSS back within 2 MiB) and that descriptors, connections and
//! hubs come back.

use std::io;
use std::time::{Duration, Instant};

use edgemon::topics::FLOOD;

use crate::client::{Client, source_ip, within};
use crate::daemon::Proc;
use crate::report::{Gate, Report};

use super::{MIB, Mark, Plan, parallel, rss_growth, settle};

/// Connect/subscribe/disconnect cycles, half of them abrupt; every figure must come back.
pub(super) async fn churn(r: &mut Report, plan: &Plan, d: &Proc, baseline: Mark) -> io::Result<()> {
    let n = plan.churn;
    let addr = d.addr;
    let started = Instant::now();
    let outcomes = parallel(n, 50, move |i| async move {
        let cycle = async {
            let mut c = Client::connect(source_ip((1_000_000 + i) / 4), addr, "/ws", None).await?;
            c.subscribe(if i % 4 < 2 { "system" } else { FLOOD })
                .await?;
            // The subscription is acknowledged before anything else arrives.
            let f = c.next().await?;
            let ack = br#""type":"subscribed""#;
            if !f.payload.windows(ack.len()).any(|w| w == ack) {
                return Err(io::Error::other(format!(
                    "expected subscribed, got {}",
                    String::from_utf8_lossy(&f.payload[..f.payload.len().min(80)])
                )));
            }
            if i % 2 == 0 {
                c.close(Duration::from_secs(2)).await;
            } else {
                c.reset();
            }
            Ok::<(), io::Error>(())
        };
        within(Duration::from_secs(10), "cycle", cycle)
            .await
            .err()
            .map(|e| e.to_string())
    })
    .await;
    let took = started.elapsed().as_secs_f64();
    let errors: Vec<String> = outcomes.into_iter().flatten().collect();
    if let Some(e) = errors.first() {
        eprintln!("  churn: {} cycles failed, first: {e}", errors.len());
    }
    let after = settle(d).await?;
    let s = "churn";
    let cycles = format!("{n} cycles");
    r.info(
        s,
        &format!("{cycles}: wall time"),
        took,
        "s",
        "50 at a time",
    );
    r.must_be_zero(
        s,
        &format!("{cycles}: failed"),
        errors.len() as f64,
        Gate::Always,
        "",
    );
    r.info(
        s,
        "RSS before",
        baseline.rss_kib as f64 / MIB,
        "MiB",
        "after warm-up and fan-out",
    );
    r.info(s, "RSS after", after.rss_kib as f64 / MIB, "MiB", "");
    rss_growth(
        r,
        (s, "RSS after − before"),
        &baseline,
        &after,
        Gate::Always,
    );
    r.must_be_zero(
        s,
        &format!("open fds after − before ({})", baseline.fds),
        after.fds as f64 - baseline.fds as f64,
        Gate::Always,
        "",
    );
    r.must_be_zero(
        s,
        "active connections after",
        after.stats.active as f64,
        Gate::Always,
        "",
    );
    r.must_be_zero(
        s,
        "hubs after their linger",
        after.stats.hubs as f64,
        Gate::Always,
        "",
    );
    Ok(())
}
