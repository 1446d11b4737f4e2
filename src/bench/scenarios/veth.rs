//! The fan-outs across a veth pair into a namespace the benchmark creates (`netns`): the server
//! inside on CPU 0, the clients outside on CPU 1, each side's kernel receive work on its own core.
//! On the loopback the daemon's `writev` also runs the clients' TCP input, so the loopback lines
//! charge the daemon with part of its clients' work; these lines do not.

use std::io;
use std::process::Command;

use crate::daemon::Proc;
use crate::netns::{CLIENT_CPU, Veth, pin_self};
use crate::report::{Gate, Report};

use super::{Plan, fan_out, settle, shutdown, warm_up};

/// Runs the 2,000 and 1,000 fan-outs against the server `start` builds inside the namespace
/// (`start` gets the namespace and the address to listen on), as `scenario`.
pub(super) async fn veth(
    r: &mut Report,
    plan: &Plan,
    scenario: &str,
    gate: Gate,
    start: impl FnOnce(&Veth, &str) -> Command,
) -> io::Result<()> {
    if let Some(why) = Veth::unavailable() {
        eprintln!("  {scenario}: skipped ({why})");
        return Ok(());
    }
    let net = Veth::create()?;
    let cmd = start(&net, &format!("{}:0", net.inside));
    let mut d = Proc::listening(cmd, Some("1s,1024"), scenario)?;
    d.client_source = Some(net.outside);
    pin_self(Some(CLIENT_CPU))?;
    let measured = async {
        warm_up(&d).await?;
        fan_out(r, plan, &d, scenario, plan.conns, gate).await?;
        settle(&d).await?;
        fan_out(r, plan, &d, scenario, plan.conns / 2, gate).await
    }
    .await;
    let unpinned = pin_self(None);
    shutdown(r, d)?;
    drop(net);
    measured.and(unpinned)
}
