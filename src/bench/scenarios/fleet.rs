//! The `fleet` lines: a daemon with 50 `--peer` boards (50 more daemons on 127.0.1.x, one port
//! for all): no peer connection while nobody watches its fleet; while one client watches it,
//! its CPU and RSS over those of an unwatched twin (the same flags and peers, started with it,
//! so the history both fill as they age and the details both sample cancel out), against
//! `FLEET_CPU_PCT` and `FLEET_RSS_MIB`; and no peer connection again once the client has gone
//! and the hub's linger is over.

use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::client::{Client, source_ip};
use crate::daemon::Proc;
use crate::procfs::{self, CpuMark};
use crate::report::{Budget, Gate, Report};

use super::{FLEET_CPU_PCT, FLEET_RSS_MIB, MIB, Plan, shutdown};

/// Peer connections the peers hold now (each peer's own count of WebSocket connections).
async fn peer_connections(peers: &[Proc]) -> io::Result<u64> {
    let mut n = 0;
    for p in peers {
        n += p.stats().await?.active;
    }
    Ok(n)
}

pub(super) async fn fleet(
    r: &mut Report,
    plan: &Plan,
    daemon: &Path,
    extra: &[String],
) -> io::Result<()> {
    let count = if plan.smoke { 5 } else { 50 };
    let port = std::net::TcpListener::bind("127.0.0.2:0")?
        .local_addr()?
        .port();
    let mut peers = Vec::with_capacity(count);
    for i in 0..count {
        let listen = format!("127.0.1.{}:{port}", i + 1);
        peers.push(Proc::edgemon_on(
            daemon,
            &listen,
            extra,
            &format!("peer{i}"),
        )?);
    }
    let mut args: Vec<String> = extra.to_vec();
    args.push("--no-mdns".to_string());
    // The hub lingers 2 s after its last subscriber: the peer connections close then.
    args.extend(["--hub-linger".to_string(), "2s".to_string()]);
    for i in 0..count {
        args.extend(["--peer".to_string(), format!("127.0.1.{}:{port}", i + 1)]);
    }
    let w = Proc::edgemon_on(daemon, &format!("127.0.0.2:{port}"), &args, "fleet")?;
    let twin = Proc::edgemon_on(daemon, &format!("127.0.0.3:{port}"), &args, "fleet-twin")?;
    smol::Timer::after(Duration::from_secs(3)).await;
    r.must_be_zero(
        "fleet",
        &format!("peer connections while nobody watches ({count} peers)"),
        peer_connections(&peers).await? as f64,
        Gate::Always,
        "",
    );
    let mut c = Client::connect(source_ip(0), w.addr, "/ws", None).await?;
    c.subscribe("fleet").await?;
    // Until every peer is online (bounded).
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut online = 0;
    while online < count && Instant::now() < deadline {
        let f = c.next().await?;
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&f.payload)
            && v["topic"] == "fleet"
            && v["type"] == "data"
        {
            online = v["data"].as_array().map_or(0, |b| {
                b.iter()
                    .filter(|b| b["state"] == "online" && b["self"] == false)
                    .count()
            });
        }
    }
    r.check(
        "fleet",
        "peers online within 30 s of watching",
        online as f64,
        "",
        Budget::AtLeast(count as f64),
        Gate::Always,
        "",
    );
    let reader = smol::spawn(async move {
        while let Ok(f) = c.next().await {
            if f.opcode == 0x8 {
                break;
            }
        }
    });
    smol::Timer::after(Duration::from_secs(5)).await;
    let secs = plan.window.as_secs();
    let (w_cpu, twin_cpu) = {
        let (a, b) = (CpuMark::now(w.pid()), CpuMark::now(twin.pid()));
        smol::Timer::after(plan.window).await;
        (
            a.percent_until(&CpuMark::now(w.pid())),
            b.percent_until(&CpuMark::now(twin.pid())),
        )
    };
    let (w_rss, twin_rss) = (procfs::rss_kib(w.pid()), procfs::rss_kib(twin.pid()));
    r.info(
        "fleet",
        &format!("CPU, {count} peers watched, {secs} s"),
        w_cpu,
        "% core",
        "",
    );
    r.check(
        "fleet",
        &format!("CPU with {count} peers watched, over the unwatched twin"),
        w_cpu - twin_cpu,
        "% core",
        Budget::AtMost(FLEET_CPU_PCT),
        Gate::Full,
        "",
    );
    r.check(
        "fleet",
        &format!("RSS with {count} peers watched, over the unwatched twin"),
        (w_rss as f64 - twin_rss as f64) / MIB,
        "MiB",
        Budget::AtMost(FLEET_RSS_MIB),
        Gate::Full,
        "",
    );
    reader.cancel().await;
    // The client is gone: after the linger the peer connections close (bounded wait).
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut left = peer_connections(&peers).await?;
    while left > 0 && Instant::now() < deadline {
        smol::Timer::after(Duration::from_millis(250)).await;
        left = peer_connections(&peers).await?;
    }
    r.must_be_zero(
        "fleet",
        "peer connections 15 s after the last watcher left",
        left as f64,
        Gate::Always,
        "",
    );
    shutdown(r, w)?;
    let _ = twin.stop(Duration::from_secs(6));
    for p in peers {
        let _ = p.stop(Duration::from_secs(6));
    }
    Ok(())
}
