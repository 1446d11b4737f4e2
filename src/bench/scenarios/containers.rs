//! The `containers` line: the daemon's CPU with 10 running containers watched (one client on
//! the `containers` topic, which reads the engine every 2 s), against `CONTAINERS_CPU_PCT`. The
//! engine is a podman of the benchmark's own (`podman`); without one (not root, no podman) the
//! line is skipped and says why.

use std::io;
use std::time::Duration;

use crate::client::{Client, source_ip};
use crate::daemon::Proc;
use crate::podman::Podman;
use crate::report::{Budget, Gate, Report};

use super::{CONTAINERS_CPU_PCT, Plan, cpu_over, shutdown};

/// Containers running while the daemon is measured.
const RUNNING: usize = 10;

pub(super) async fn containers(
    r: &mut Report,
    plan: &Plan,
    daemon: &std::path::Path,
    flags: &[String],
) -> io::Result<()> {
    let engine = match Podman::start("bench") {
        Ok(p) => p,
        Err(why) => {
            eprintln!("  containers: skipped ({why})");
            return Ok(());
        }
    };
    for i in 0..RUNNING {
        // Each one logs a line a second and keeps a little CPU busy, like a small service.
        engine.run(
            &format!("svc{i}"),
            false,
            "while true; do echo tick; sleep 1; done",
        );
    }
    let mut args = flags.to_vec();
    args.extend([
        "--docker-socket".to_string(),
        engine.socket.display().to_string(),
    ]);
    let d = Proc::edgemon(daemon, None, &args, "containers")?;
    let mut c = Client::connect(source_ip(0), d.addr, "/ws", None).await?;
    c.subscribe("containers").await?;
    let reader = smol::spawn(async move {
        let mut frames = 0usize;
        while let Ok(f) = c.next().await {
            if f.opcode == 0x8 {
                break;
            }
            if f.payload.starts_with(br#"{"type":"data""#) {
                frames += 1;
            }
        }
        frames
    });
    // The first readings (every container's details) are not the steady state.
    smol::Timer::after(Duration::from_secs(5)).await;
    let secs = plan.window.as_secs();
    let cpu = cpu_over(d.pid(), plan.window).await;
    r.check(
        "containers",
        &format!("CPU, one client on containers, {RUNNING} running, {secs} s"),
        cpu,
        "% core",
        Budget::AtMost(CONTAINERS_CPU_PCT),
        Gate::Full,
        "podman 4.3 engine",
    );
    shutdown(r, d)?;
    let frames = reader.await;
    r.check(
        "containers",
        &format!("containers frames received in {} s", secs + 5),
        frames as f64,
        "",
        Budget::AtLeast((secs / 2).saturating_sub(1) as f64),
        Gate::Always,
        "one reading every 2 s",
    );
    drop(engine);
    Ok(())
}
