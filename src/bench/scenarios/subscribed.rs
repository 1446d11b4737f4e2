//! The `subscribed` line: RSS per connection subscribed to `system`, each having received the
//! history the daemon keeps (in the full run a full 300 s: this daemon starts before every other
//! scenario and is measured after them), at the fan-out size; checks DESIGN.md's per-connection
//! budget (`KIB_PER_CONN`). A dashboard is such a connection, so this is the figure that matters.

use std::io;
use std::time::{Duration, Instant};

use crate::client::{Client, within};
use crate::daemon::Proc;
use crate::procfs;
use crate::report::{Budget, Gate, Report};

use super::{KIB_PER_CONN, Plan, close_all, open, rss_once_counted};

/// `plan.conns` connections subscribed to `system`, in two steps, the marginal RSS between them.
pub(super) async fn subscribed(
    r: &mut Report,
    plan: &Plan,
    d: &Proc,
    started: Instant,
) -> io::Result<()> {
    let n = plan.conns;
    let history_s = started.elapsed().as_secs().min(300);
    let pid = d.pid();
    let quarter = n / 4;
    let mut clients = Vec::with_capacity(n);
    let mut rss_at_quarter = 0;
    for (first, count) in [(0, quarter), (quarter, n - quarter)] {
        let (opened, errors) = open(d, first, count, None).await;
        if let Some(e) = errors.first() {
            return Err(io::Error::other(format!(
                "subscribed: {} of {count} connections failed, first: {e}",
                errors.len()
            )));
        }
        let mut readers = Vec::with_capacity(count);
        for mut c in opened {
            c.subscribe("system").await?;
            readers.push(smol::spawn(history_then_live(c)));
        }
        for t in readers {
            clients.push(within(Duration::from_secs(30), "history and a live frame", t).await?);
        }
        let rss = rss_once_counted(d, clients.len()).await?;
        if first == 0 {
            rss_at_quarter = rss;
        }
    }
    let per = (procfs::rss_kib(pid) as f64 - rss_at_quarter as f64) / (n - quarter) as f64;
    r.check(
        "subscribed",
        &format!("RSS per connection subscribed to system, with {history_s} s of history, at {n}"),
        per,
        "KiB",
        Budget::AtMost(KIB_PER_CONN),
        Gate::Full,
        &format!("marginal, {quarter} to {n}; history frames received by each"),
    );
    close_all(clients).await;
    Ok(())
}

/// Reads a new `system` subscriber's frames until the first live one: its history is in.
async fn history_then_live(mut c: Client) -> io::Result<Client> {
    loop {
        let f = c.next().await?;
        if f.opcode == 0x1 && f.payload.starts_with(br#"{"type":"data""#) {
            return Ok(c);
        }
        if f.opcode == 0x8 {
            return Err(io::Error::other("closed before its first live frame"));
        }
    }
}
