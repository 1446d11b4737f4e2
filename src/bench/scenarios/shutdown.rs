//! The `shutdown` line after each daemon: SIGTERM must end it with exit status 0 within
//! DESIGN.md's 5 s shutdown contract.

use std::io;
use std::time::Duration;

use crate::daemon::Proc;
use crate::report::{Gate, Report};

/// SIGTERM: the daemon must exit 0 within the contract's 5 s.
pub(super) fn shutdown(r: &mut Report, d: Proc) -> io::Result<()> {
    let complaints = d.complaints();
    for c in complaints.iter().take(5) {
        eprintln!("  daemon said: {c}");
    }
    let tag = d.name.clone();
    let status = d.stop(Duration::from_secs(6));
    r.must_be_zero(
        "shutdown",
        &format!("{tag} daemon: exit status after SIGTERM"),
        status.and_then(|s| s.code()).map_or(137.0, f64::from),
        Gate::Always,
        "137: killed after 6 s",
    );
    Ok(())
}
