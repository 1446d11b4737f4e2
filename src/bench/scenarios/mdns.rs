//! The `mdns` lines: the daemon announcing itself by mDNS, which needs a LAN address, so it runs
//! inside the benchmark's network namespace (`netns`, as root; skipped and said so otherwise),
//! listening on every address there: its CPU with nobody connected (`IDLE_CPU_PCT`, as the
//! loopback idle line), and that a query from the other end of the veth pair is answered.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::daemon::{Proc, get};
use crate::netns::Veth;
use crate::report::{Budget, Gate, Report};

use super::{IDLE_CPU_PCT, Plan, cpu_over, shutdown};

/// mDNS records the daemon has sent (announcements and answers), from its stats.
async fn sent(d: &Proc) -> io::Result<u64> {
    let (status, body) = get(d.addr, "/api/websocket/stats").await?;
    if status != 200 {
        return Err(io::Error::other(format!("stats answered {status}")));
    }
    let v: serde_json::Value = serde_json::from_slice(&body).map_err(io::Error::other)?;
    v["mdns"]["sent"]
        .as_u64()
        .ok_or_else(|| io::Error::other(format!("no mDNS in the stats: {}", v["mdns"])))
}

/// One `_edgemon._tcp` PTR question, multicast from `from` (outside the namespace).
fn ask(from: Ipv4Addr) -> io::Result<()> {
    // Header: id 0, a query, one question; then the name, type PTR (12), class IN.
    let mut q = vec![0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in ["_edgemon", "_tcp", "local"] {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 12, 0, 1]);
    let s = UdpSocket::bind(SocketAddrV4::new(from, 0))?;
    rustix::net::sockopt::set_ip_multicast_if(&s, &from)?;
    s.send_to(&q, SocketAddrV4::new(Ipv4Addr::new(224, 0, 0, 251), 5353))?;
    Ok(())
}

pub(super) async fn mdns(
    r: &mut Report,
    plan: &Plan,
    daemon: &Path,
    extra: &[String],
) -> io::Result<()> {
    if let Some(why) = Veth::unavailable() {
        eprintln!("  mdns: skipped ({why})");
        return Ok(());
    }
    let net = Veth::create()?;
    let mut cmd = net.prefix();
    cmd.arg(daemon).args(["--listen", "0.0.0.0:0"]).args(extra);
    let mut d = Proc::listening(cmd, None, "mdns")?;
    // It listens on every address in there; the benchmark reaches it at the inside one.
    d.addr = SocketAddr::new(net.inside.into(), d.addr.port());
    d.client_source = Some(net.outside);
    // Past its two announcements (a second apart) and first samples.
    smol::Timer::after(Duration::from_secs(3)).await;
    let secs = plan.window.as_secs();
    let cpu = cpu_over(d.pid(), plan.window).await;
    r.check(
        "mdns",
        &format!("CPU, announcing by mDNS, nobody connected, {secs} s"),
        cpu,
        "% core",
        Budget::AtMost(IDLE_CPU_PCT),
        Gate::Full,
        "",
    );
    let before = sent(&d).await?;
    ask(net.outside)?;
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut after = sent(&d).await?;
    while after == before && Instant::now() < deadline {
        smol::Timer::after(Duration::from_millis(100)).await;
        after = sent(&d).await?;
    }
    r.check(
        "mdns",
        "answers to one query from the LAN side, within 5 s",
        (after - before) as f64,
        "",
        Budget::AtLeast(1.0),
        Gate::Always,
        "",
    );
    shutdown(r, d)?;
    drop(net);
    Ok(())
}
