//! The budget scenarios of DESIGN.md, each against a freshly started release daemon.

mod churn;
mod containers;
mod fan_out;
mod fleet;
mod hostile;
mod idle;
mod mdns;
mod node;
mod shutdown;
mod sink;
mod slow;
mod subscribed;
mod veth;
mod week;

use std::future::Future;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// Topic the fan-out uses: the daemon's `test/flood`, on because the bench sets its variable.
use edgemon::topics::FLOOD;
use smol::Task;

use crate::client::{Client, source_ip, within};
use crate::daemon::{Proc, Stats};
use crate::procfs::{self, CpuMark};
use crate::report::{Budget, Gate, Report};
use crate::{Args, raise_nofile, write_outputs};

use churn::churn;
use containers::containers;
use fan_out::fan_out;
use fleet::fleet;
use hostile::hostile_neighbour;
use idle::idle_and_dashboard;
use mdns::mdns;
use node::node_ws;
use shutdown::shutdown;
use slow::slow_consumers;
use subscribed::subscribed;
use veth::veth;
use week::{disk_writes, week};

const MIB: f64 = 1024.0;
// DESIGN.md's budgets ("Budgets"), each written here once.
/// Idle RSS with empty history.
const IDLE_RSS_MIB: f64 = 4.0;
/// Idle RSS with a full week of history.
const WEEK_RSS_MIB: f64 = 6.0;
/// The stripped binary.
const BINARY_MIB: f64 = 2.5;
/// RSS per WebSocket connection at 2,000, idle or subscribed to `system` with a full history.
const KIB_PER_CONN: f64 = 8.0;
/// One 1 KiB frame fanned out: (subscribers, p99 delivery in ms, daemon CPU in % of a core).
const FAN_OUT: [(usize, f64, f64); 2] = [(1_000, 10.0, 1.0), (2_000, 25.0, 2.5)];
/// p99 delivery to the readers beside stalled subscribers (the 2,000 fan-out's budget).
const P99_MS: f64 = FAN_OUT[1].1;
/// Daemon CPU with nobody connected.
const IDLE_CPU_PCT: f64 = 0.1;
/// Daemon CPU with one dashboard open.
const DASHBOARD_CPU_PCT: f64 = 0.5;
/// Daemon CPU with 10 running containers watched.
const CONTAINERS_CPU_PCT: f64 = 1.0;
/// Daemon CPU while its fleet of 50 peers is watched.
const FLEET_CPU_PCT: f64 = 0.5;
/// Daemon RSS while its fleet of 50 peers is watched, over the unwatched daemon's.
const FLEET_RSS_MIB: f64 = 1.0;
/// RSS after 10,000 connect/disconnect cycles, over the post-warm-up baseline.
const CHURN_RSS_MIB: f64 = 2.0;
/// The benchmark's own bound for the slow-consumer scenario: stalled subscribers share frames
/// (reference-counted) and hold at most one partly written frame each, so RSS must stay within
/// this of where it started while 100 sockets are stuck.
const SLOW_RSS_MIB: f64 = 2.0;

/// Sizes of one run.
struct Plan {
    smoke: bool,
    window: Duration,
    fanout_window: Duration,
    conns: usize,
    churn: usize,
    slow_stalled: usize,
    slow_readers: usize,
    slow_window: Duration,
    stretch: usize,
    /// Scenarios asked for with `--only` (empty: all).
    only: Vec<String>,
}

impl Plan {
    fn new(args: &Args) -> Plan {
        let secs = Duration::from_secs;
        let mut plan = if args.smoke {
            Plan {
                smoke: true,
                window: secs(args.window.unwrap_or(3)),
                fanout_window: secs(3),
                conns: 300,
                churn: 600,
                slow_stalled: 20,
                slow_readers: 5,
                slow_window: secs(5),
                stretch: 0,
                only: args.only.clone(),
            }
        } else {
            Plan {
                smoke: false,
                window: secs(args.window.unwrap_or(60)),
                fanout_window: Duration::from_secs(30),
                conns: 2_000,
                churn: 10_000,
                slow_stalled: 100,
                slow_readers: 10,
                slow_window: Duration::from_secs(20),
                stretch: 10_000,
                only: args.only.clone(),
            }
        };
        plan.conns = args.connections.unwrap_or(plan.conns).max(4);
        plan.stretch = args.stretch.unwrap_or(plan.stretch);
        plan
    }

    /// Whether the scenario runs (`--only`).
    fn runs(&self, scenario: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == scenario)
    }
}

/// The scenario names `--only` takes.
pub const SCENARIOS: [&str; 12] = [
    "idle",
    "containers",
    "fleet",
    "mdns",
    "connections",
    "veth",
    "node",
    "churn",
    "slow",
    "hostile",
    "subscribed",
    "stretch",
];

/// Runs every scenario; `Ok(passed)`.
pub fn run(args: &Args, daemon: &Path) -> io::Result<bool> {
    let mut plan = Plan::new(args);
    // The bench and the daemon each hold one descriptor per connection, each under its own limit
    // (the daemon inherits the raised one).
    let nofile = raise_nofile(plan.stretch.max(plan.conns) as u64 + 1_000) as usize;
    if nofile < plan.stretch + 500 && plan.stretch > 0 {
        plan.stretch = nofile.saturating_sub(500);
        eprintln!(
            "open-file limit {nofile}: the stretch runs at {}",
            plan.stretch
        );
    }
    let mut r = Report::new(plan.smoke);
    eprintln!(
        "edgemon-bench ({} mode) on {}\n  daemon {} {}",
        if plan.smoke { "smoke" } else { "full" },
        procfs::machine(),
        daemon.display(),
        args.daemon_flag.join(" ")
    );
    let size = std::fs::metadata(daemon)?.len();
    r.check(
        "footprint",
        "binary size",
        size as f64 / MIB / MIB,
        "MiB",
        Budget::AtMost(BINARY_MIB),
        Gate::Full,
        "stripped release build",
    );

    let max = (plan.conns.max(plan.stretch) + 200).to_string();
    let extra = &args.daemon_flag;
    // mDNS off: the veth lines' daemon listens on a LAN address (the `mdns` lines turn it on).
    let mut flags = vec![
        "--max-connections".to_string(),
        max,
        "--no-mdns".to_string(),
    ];
    flags.extend(extra.iter().cloned());
    smol::block_on(async {
        // Started first and measured last, so it has kept a full history by then.
        let history = if plan.runs("subscribed") {
            Some((
                Proc::edgemon(daemon, None, &flags, "history")?,
                Instant::now(),
            ))
        } else {
            None
        };
        if ["idle", "connections", "churn"]
            .iter()
            .any(|s| plan.runs(s))
        {
            let d = Proc::edgemon(daemon, Some("1s,1024"), &flags, "main")?;
            let main_started = Instant::now();
            if plan.runs("idle") {
                idle_and_dashboard(&mut r, &plan, &d).await?;
                week(&mut r, daemon, &flags).await?;
            }
            warm_up(&d).await?;
            if plan.runs("connections") {
                // The contract's size first, its figures comparable with earlier runs; then
                // half of it, once the first round's memory is back with the OS.
                fan_out(&mut r, &plan, &d, "connections", plan.conns, Gate::Full).await?;
                settle(&d).await?;
                fan_out(&mut r, &plan, &d, "connections", plan.conns / 2, Gate::Full).await?;
            }
            if plan.runs("churn") {
                let baseline = settle(&d).await?;
                churn(&mut r, &plan, &d, baseline).await?;
            }
            disk_writes(&mut r, &d, main_started);
            shutdown(&mut r, d)?;
        }

        if plan.runs("containers") {
            containers(&mut r, &plan, daemon, &flags).await?;
        }
        if plan.runs("fleet") {
            fleet(&mut r, &plan, daemon, extra).await?;
        }
        if plan.runs("mdns") {
            mdns(&mut r, &plan, daemon, extra).await?;
        }

        if plan.runs("veth") {
            let per_ip = (plan.conns + 200).to_string();
            veth(&mut r, &plan, "veth", Gate::Full, |net, listen| {
                let mut cmd = net.prefix();
                cmd.arg(daemon)
                    .args(["--listen", listen])
                    // Every client comes from the one address outside.
                    .args(["--max-per-ip", &per_ip])
                    .args(&flags);
                cmd
            })
            .await?;
        }
        if plan.runs("node") {
            node_ws(&mut r, &plan, &args.node_ws).await?;
        }

        if plan.runs("slow") {
            let mut slow_flags = flags.clone();
            if plan.smoke {
                // The default 10 s write timeout is longer than a smoke window.
                slow_flags.extend(["--write-timeout".to_string(), "2s".to_string()]);
            }
            let d = Proc::edgemon(daemon, Some("10ms,1024"), &slow_flags, "slow")?;
            slow_consumers(&mut r, &plan, &d).await?;
            shutdown(&mut r, d)?;
        }

        if plan.runs("hostile") {
            let d = Proc::edgemon(daemon, None, extra, "hostile")?;
            hostile_neighbour(&mut r, &plan, &d).await?;
            shutdown(&mut r, d)?;
        }

        if let Some((history, history_started)) = history {
            subscribed(&mut r, &plan, &history, history_started).await?;
            shutdown(&mut r, history)?;
        }

        if plan.stretch > 0 && plan.runs("stretch") {
            let d = Proc::edgemon(daemon, Some("1s,1024"), &flags, "stretch")?;
            let before = warm_up(&d).await?;
            fan_out(&mut r, &plan, &d, "stretch", plan.stretch, Gate::Never).await?;
            let after = settle(&d).await?;
            rss_growth(
                &mut r,
                ("stretch", "RSS after all closed, over baseline"),
                &before,
                &after,
                Gate::Never,
            );
            shutdown(&mut r, d)?;
        }
        Ok::<(), io::Error>(())
    })?;

    let table = r.table();
    println!("{table}");
    let legend = "PASS/FAIL gate the exit status; pass*/FAIL* are printed only (stretch lines, \
                  and speed/footprint budgets in smoke mode); '-' has no budget.";
    println!("{legend}");
    let context = serde_json::json!({
        "machine": procfs::machine(),
        "daemon": daemon.display().to_string(),
        "daemon_flags": extra,
        "binary_bytes": size,
        "window_seconds": plan.window.as_secs(),
        "connections": plan.conns,
        "churn_cycles": plan.churn,
        "stretch_connections": plan.stretch,
    });
    write_outputs(args, &r.json(context), &format!("{table}\n{legend}\n"))?;
    let passed = r.passed();
    println!(
        "{}",
        if passed {
            "ALL BUDGETS PASS"
        } else {
            "BUDGET FAILED"
        }
    );
    Ok(passed)
}

/// Daemon CPU % over `window`.
async fn cpu_over(pid: u32, window: Duration) -> f64 {
    let a = CpuMark::now(pid);
    smol::Timer::after(window).await;
    a.percent_until(&CpuMark::now(pid))
}

/// Where a daemon stands between scenarios.
#[derive(Clone, Copy)]
struct Mark {
    rss_kib: u64,
    fds: usize,
    stats: Stats,
}

/// The leak line: how far RSS grew from `before` to `after`, against `CHURN_RSS_MIB`.
fn rss_growth(
    r: &mut Report,
    (scenario, figure): (&str, &str),
    before: &Mark,
    after: &Mark,
    gate: Gate,
) {
    r.check(
        scenario,
        figure,
        (after.rss_kib as f64 - before.rss_kib as f64) / MIB,
        "MiB",
        Budget::AtMost(CHURN_RSS_MIB),
        gate,
        "",
    );
}

/// 200 connections subscribed and closed (half abruptly), so first-use allocations are done;
/// returns the settled figures: the baseline later figures are held to.
async fn warm_up(d: &Proc) -> io::Result<Mark> {
    let (clients, errors) = open(d, 900_000, 200, None).await;
    if let Some(e) = errors.first() {
        return Err(io::Error::other(format!("warm-up: {e}")));
    }
    let mut subscribed = Vec::new();
    for mut c in clients {
        c.subscribe(FLOOD).await?;
        subscribed.push(c);
    }
    close_all(subscribed).await;
    settle(d).await
}

/// The daemon's RSS once it counts `want` open connections and a second has passed (the
/// allocations of their first frames are done): one step of a marginal-cost measurement.
async fn rss_once_counted(d: &Proc, want: usize) -> io::Result<u64> {
    let want = want as u64;
    wait_stats(d, "all connections counted", Duration::from_secs(20), |s| {
        s.active == want
    })
    .await?;
    smol::Timer::after(Duration::from_secs(1)).await;
    Ok(procfs::rss_kib(d.pid()))
}

/// Waits for no connections, no hubs, and an RSS that has stopped moving; returns the figures.
async fn settle(d: &Proc) -> io::Result<Mark> {
    // Hubs outlive their last subscriber by --hub-linger (5 s by default).
    let stats = wait_stats(
        d,
        "no connections and no hubs",
        Duration::from_secs(20),
        |s| s.active == 0 && s.hubs == 0,
    )
    .await?;
    let pid = d.pid();
    // The daemon trims the allocator one quiet second after connections are released; wait for
    // the RSS to hold still for a second (at most 15 s).
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = procfs::rss_kib(pid);
    let mut still = 0;
    while still < 4 && Instant::now() < deadline {
        smol::Timer::after(Duration::from_millis(250)).await;
        let now = procfs::rss_kib(pid);
        still = if now == last { still + 1 } else { 0 };
        last = now;
    }
    Ok(Mark {
        rss_kib: last,
        fds: settled_fds(pid).await,
        stats,
    })
}

/// The descriptor count once it has held still (momentary descriptors, e.g. a /proc read of
/// the sampler, come and go).
async fn settled_fds(pid: u32) -> usize {
    let mut last = procfs::fds(pid);
    for _ in 0..40 {
        smol::Timer::after(Duration::from_millis(100)).await;
        let now = procfs::fds(pid);
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

/// Polls the daemon's stats until `ok` holds; fails after `limit`.
async fn wait_stats(
    d: &Proc,
    what: &str,
    limit: Duration,
    ok: impl Fn(&Stats) -> bool,
) -> io::Result<Stats> {
    let deadline = Instant::now() + limit;
    loop {
        let s = d.stats().await?;
        if ok(&s) {
            return Ok(s);
        }
        if Instant::now() > deadline {
            return Err(io::Error::other(format!(
                "waited {limit:?} for {what}; the daemon says {s:?}"
            )));
        }
        smol::Timer::after(Duration::from_millis(100)).await;
    }
}

/// Runs `f(0..n)` with at most `conc` in flight; results in index order.
async fn parallel<T, F, Fut>(n: usize, conc: usize, f: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = T> + Send + 'static,
{
    let next = Arc::new(AtomicUsize::new(0));
    let f = Arc::new(f);
    let out = Arc::new(Mutex::new(Vec::with_capacity(n)));
    let workers: Vec<Task<()>> = (0..conc.min(n).max(1))
        .map(|_| {
            let (next, f, out) = (next.clone(), f.clone(), out.clone());
            smol::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return;
                    }
                    let v = f(i).await;
                    out.lock().unwrap().push((i, v));
                }
            })
        })
        .collect();
    for w in workers {
        w.await;
    }
    let mut v = std::mem::take(&mut *out.lock().unwrap());
    v.sort_by_key(|(i, _)| *i);
    v.into_iter().map(|(_, t)| t).collect()
}

/// Opens `n` connections at `/ws` from source addresses `first..first + n` (each address
/// group of four shares an IP); connection errors are returned, not fatal.
async fn open(
    d: &Proc,
    first: usize,
    n: usize,
    rcvbuf: Option<usize>,
) -> (Vec<Client>, Vec<String>) {
    let (addr, fixed) = (d.addr, d.client_source);
    let results = parallel(n, 32, move |i| async move {
        let src = fixed.unwrap_or_else(|| source_ip((first + i) / 4));
        let connect = Client::connect(src, addr, "/ws", rcvbuf);
        within(Duration::from_secs(10), "connect", connect).await
    })
    .await;
    let mut clients = Vec::with_capacity(n);
    let mut errors = Vec::new();
    for r in results {
        match r {
            Ok(c) => clients.push(c),
            Err(e) => errors.push(e.to_string()),
        }
    }
    (clients, errors)
}

/// Closes every client: even ones with a close handshake, odd ones with a reset.
async fn close_all(clients: Vec<Client>) {
    let slots: Arc<Mutex<Vec<Option<Client>>>> =
        Arc::new(Mutex::new(clients.into_iter().map(Some).collect()));
    let n = slots.lock().unwrap().len();
    parallel(n, 64, move |i| {
        let c = slots.lock().unwrap()[i].take();
        async move {
            if let Some(c) = c {
                if i % 2 == 0 {
                    c.close(Duration::from_secs(2)).await;
                } else {
                    c.reset();
                }
            }
        }
    })
    .await;
}
