//! The comparison peer: Node's `ws` (`src/bench/node-ws/flood.mjs`, which serves the same flood
//! frames and the stats the fan-out waits on), measured by the same fan-out as the daemon, on the
//! loopback and across the veth pair. Printed, never gating.

use std::io;
use std::path::Path;
use std::process::Command;

use crate::daemon::Proc;
use crate::report::{Gate, Report};

use super::veth::veth;
use super::{Plan, fan_out, settle, shutdown, warm_up};

/// Why the peer cannot run, if it cannot.
fn unavailable(dir: &Path) -> Option<String> {
    if Command::new("node").arg("--version").output().is_err() {
        return Some("needs node".into());
    }
    if !dir.join("node_modules/ws").is_dir() {
        return Some(format!("run npm ci --prefix {}", dir.display()));
    }
    None
}

/// `node flood.mjs LISTEN`, run through `runner` (the namespace's prefix) if one is given.
fn command(dir: &Path, listen: &str, runner: Option<Command>) -> Command {
    let mut c = runner.map_or_else(
        || Command::new("node"),
        |mut c| {
            c.arg("node");
            c
        },
    );
    c.arg(dir.join("flood.mjs")).arg(listen);
    c
}

/// Node's `ws` at the fan-out sizes, on the loopback (`node-ws`) and across the veth pair
/// (`node-veth`).
pub(super) async fn node_ws(r: &mut Report, plan: &Plan, dir: &Path) -> io::Result<()> {
    if let Some(why) = unavailable(dir) {
        eprintln!("  node-ws: skipped ({why})");
        return Ok(());
    }
    let dir = std::fs::canonicalize(dir)?;
    let d = Proc::listening(command(&dir, "127.0.0.1:0", None), None, "node-ws")?;
    warm_up(&d).await?;
    fan_out(r, plan, &d, "node-ws", plan.conns, Gate::Never).await?;
    settle(&d).await?;
    fan_out(r, plan, &d, "node-ws", plan.conns / 2, Gate::Never).await?;
    shutdown(r, d)?;
    veth(r, plan, "node-veth", Gate::Never, |net, listen| {
        command(&dir, listen, Some(net.prefix()))
    })
    .await
}
