//! The budget scenarios of DESIGN.md, each against a freshly started release daemon.

use std::collections::HashSet;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use smol::Task;

use crate::client::{Client, flood_stamp_us, now_ns, source_ip, within};
use crate::daemon::{Proc, Stats};
use crate::procfs::{self, CpuMark};
use crate::report::{Budget, Gate, Report, quantile};
use crate::{Args, raise_nofile, write_outputs};

const MIB: f64 = 1024.0;
/// DESIGN.md budgets.
const IDLE_RSS_MIB: f64 = 4.0;
const BINARY_MIB: f64 = 2.0;
const KIB_PER_CONN: f64 = 8.0;
const P99_MS: f64 = 25.0;
const CPU_PCT: f64 = 0.5;
const CHURN_RSS_MIB: f64 = 2.0;
/// The benchmark's own bound for the slow-consumer scenario: stalled subscribers share frames
/// (reference-counted) and hold at most one partly written frame each, so RSS must stay within
/// this of where it started while 100 sockets are stuck.
const SLOW_RSS_MIB: f64 = 2.0;
/// Topic the fan-out uses: the daemon's `test/flood`, on because the bench sets its variable.
const FLOOD: &str = "test/flood";

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
            }
        };
        plan.conns = args.connections.unwrap_or(plan.conns).max(4);
        plan.stretch = args.stretch.unwrap_or(plan.stretch);
        plan
    }
}

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
        "edgemon-bench ({} mode) on {}\n  daemon {}",
        if plan.smoke { "smoke" } else { "full" },
        procfs::machine(),
        daemon.display()
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
    let flags = vec!["--max-connections".to_string(), max];
    smol::block_on(async {
        let d = Proc::edgemon(daemon, Some("1s,1024"), &flags, "main")?;
        idle_and_dashboard(&mut r, &plan, &d).await?;
        warm_up(&d).await?;
        fan_out(&mut r, &plan, &d, "connections", plan.conns, Gate::Full).await?;
        let baseline = settle(&d).await?;
        churn(&mut r, &plan, &d, baseline).await?;
        shutdown(&mut r, d)?;

        let mut slow_flags = flags.clone();
        if plan.smoke {
            // The default 10 s write timeout is longer than a smoke window.
            slow_flags.extend(["--write-timeout".to_string(), "2s".to_string()]);
        }
        let d = Proc::edgemon(daemon, Some("10ms,1024"), &slow_flags, "slow")?;
        slow_consumers(&mut r, &plan, &d).await?;
        shutdown(&mut r, d)?;

        if plan.stretch > 0 {
            let d = Proc::edgemon(daemon, Some("1s,1024"), &flags, "stretch")?;
            let before = warm_up(&d).await?;
            fan_out(&mut r, &plan, &d, "stretch", plan.stretch, Gate::Stretch).await?;
            let after = settle(&d).await?;
            r.check(
                "stretch",
                "RSS after all closed, over baseline",
                (after.rss_kib as f64 - before.rss_kib as f64) / MIB,
                "MiB",
                Budget::AtMost(CHURN_RSS_MIB),
                Gate::Stretch,
                "",
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

/// Idle footprint, then CPU with nobody connected and with one dashboard-like client.
async fn idle_and_dashboard(r: &mut Report, plan: &Plan, d: &Proc) -> io::Result<()> {
    // Let the sampler take its first readings (and the allocator settle) before reading RSS.
    smol::Timer::after(Duration::from_secs(3)).await;
    let pid = d.pid();
    r.check(
        "idle",
        "RSS after start",
        procfs::rss_kib(pid) as f64 / MIB,
        "MiB",
        Budget::AtMost(IDLE_RSS_MIB),
        Gate::Full,
        "",
    );
    r.check(
        "idle",
        "PSS after start",
        procfs::pss_kib(pid) as f64 / MIB,
        "MiB",
        Budget::AtMost(IDLE_RSS_MIB),
        Gate::Full,
        "",
    );
    let secs = plan.window.as_secs();
    let cpu = cpu_over(pid, plan.window).await;
    r.check(
        "idle",
        &format!("CPU, nobody connected, {secs} s"),
        cpu,
        "% core",
        Budget::AtMost(CPU_PCT),
        Gate::Full,
        "",
    );
    for (topics, gate) in [
        (&["system"][..], true),
        (&["system", "processes", "server"][..], false),
    ] {
        let mut c = Client::connect(source_ip(0), d.addr, "/ws", None).await?;
        for t in topics {
            c.subscribe(t).await?;
        }
        let frames = Arc::new(AtomicUsize::new(0));
        let reader = {
            let frames = frames.clone();
            smol::spawn(async move {
                while let Ok(f) = c.next().await {
                    if f.opcode == 0x8 {
                        break;
                    }
                    if f.payload.starts_with(br#"{"type":"data""#) {
                        frames.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        };
        // The subscription's first seconds (history, first process scan) are not the steady state.
        smol::Timer::after(Duration::from_secs(2)).await;
        let before = frames.load(Ordering::Relaxed);
        let cpu = cpu_over(pid, plan.window).await;
        let got = frames.load(Ordering::Relaxed) - before;
        reader.cancel().await;
        let name = topics.join("+");
        if gate {
            r.check(
                "dashboard",
                &format!("CPU, one client on {name}, {secs} s"),
                cpu,
                "% core",
                Budget::AtMost(CPU_PCT),
                Gate::Full,
                "",
            );
            // One system frame a second: a window without them means the client was starved.
            r.check(
                "dashboard",
                &format!("{name} frames received in {secs} s"),
                got as f64,
                "",
                Budget::AtLeast(secs.saturating_sub(2) as f64),
                Gate::Always,
                "",
            );
        } else {
            r.info(
                "dashboard",
                &format!("CPU, one client on {name}, {secs} s"),
                cpu,
                "% core",
                "what the page subscribes to",
            );
        }
    }
    wait_stats(d, "no connections", Duration::from_secs(10), |s| {
        s.active == 0
    })
    .await?;
    Ok(())
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

/// 200 connections subscribed and closed (half abruptly), so first-use allocations are done;
/// returns the settled figures: the baseline later figures are held to.
async fn warm_up(d: &Proc) -> io::Result<Mark> {
    let (clients, errors) = open(d.addr, 900_000, 200, None).await;
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
    addr: SocketAddr,
    first: usize,
    n: usize,
    rcvbuf: Option<usize>,
) -> (Vec<Client>, Vec<String>) {
    let results = parallel(n, 32, move |i| async move {
        let connect = Client::connect(source_ip((first + i) / 4), addr, "/ws", rcvbuf);
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

/// Latency samples of flood frames sent within a window.
struct Sink {
    from_us: AtomicU64,
    until_us: AtomicU64,
    /// (kernel arrival - sent, user-space parse - sent), µs.
    samples: Mutex<Vec<(f64, f64)>>,
    /// Distinct frames (by send stamp) seen in the window.
    stamps: Mutex<HashSet<u64>>,
    /// Flood frames received at all.
    frames: AtomicU64,
    /// Readers the server closed or lost.
    lost: AtomicUsize,
}

impl Sink {
    fn new() -> Arc<Sink> {
        Arc::new(Sink {
            from_us: AtomicU64::new(u64::MAX),
            until_us: AtomicU64::new(0),
            samples: Mutex::new(Vec::new()),
            stamps: Mutex::new(HashSet::new()),
            frames: AtomicU64::new(0),
            lost: AtomicUsize::new(0),
        })
    }

    fn record(&self, sent_us: u64, kernel_ns: u64, user_ns: u64) {
        self.frames.fetch_add(1, Ordering::Relaxed);
        let from = self.from_us.load(Ordering::Relaxed);
        if sent_us < from || sent_us >= self.until_us.load(Ordering::Relaxed) {
            return;
        }
        let k = if kernel_ns > 0 {
            (kernel_ns / 1000) as f64 - sent_us as f64
        } else {
            f64::NAN
        };
        let u = (user_ns / 1000) as f64 - sent_us as f64;
        self.samples.lock().unwrap().push((k, u));
        self.stamps.lock().unwrap().insert(sent_us);
    }

    /// What the window recorded, for `readers` subscribers: sorted latencies in ms and the share
    /// of the window's frames that reached every reader.
    fn take(&self, readers: usize) -> Window {
        let samples = std::mem::take(&mut *self.samples.lock().unwrap());
        let frames = self.stamps.lock().unwrap().len();
        let sorted_ms = |v: Vec<f64>| {
            let mut v: Vec<f64> = v
                .into_iter()
                .map(|us| us / 1000.0)
                .filter(|ms| ms.is_finite())
                .collect();
            v.sort_by(f64::total_cmp);
            v
        };
        let expected = (frames * readers) as f64;
        Window {
            frames,
            delivered_pct: if expected > 0.0 {
                100.0 * samples.len() as f64 / expected
            } else {
                0.0
            },
            kernel_ms: sorted_ms(samples.iter().map(|s| s.0).collect()),
            user_ms: sorted_ms(samples.iter().map(|s| s.1).collect()),
        }
    }

    /// Opens the recording window now, for `w`.
    fn open_window(&self, w: Duration) {
        let now = now_ns() / 1000;
        self.until_us
            .store(now + w.as_micros() as u64, Ordering::Relaxed);
        self.from_us.store(now, Ordering::Relaxed);
    }
}

/// A closed recording window.
struct Window {
    /// Distinct frames sent within it.
    frames: usize,
    /// Received samples as a share of `frames × readers`.
    delivered_pct: f64,
    /// Sent stamp to kernel arrival, sorted.
    kernel_ms: Vec<f64>,
    /// Sent stamp to the bench's parse, sorted.
    user_ms: Vec<f64>,
}

/// Readers answer pings and record flood frames until `stop` closes; they hand their client back.
fn spawn_readers(
    clients: Vec<Client>,
    sink: &Arc<Sink>,
    stop: &async_channel::Receiver<()>,
) -> Vec<Task<Option<Client>>> {
    clients
        .into_iter()
        .map(|mut c| {
            let (sink, stop) = (sink.clone(), stop.clone());
            smol::spawn(async move {
                let alive = {
                    let read = async {
                        loop {
                            match c.next().await {
                                Ok(f) if f.opcode == 0x1 => {
                                    if let Some(sent) = flood_stamp_us(&f.payload) {
                                        sink.record(sent, f.kernel_ns, f.user_ns);
                                    }
                                }
                                Ok(f) if f.opcode == 0x8 => return false,
                                Ok(_) => {}
                                Err(_) => return false,
                            }
                        }
                    };
                    smol::future::or(read, async {
                        let _ = stop.recv().await;
                        true
                    })
                    .await
                };
                if alive {
                    Some(c)
                } else {
                    sink.lost.fetch_add(1, Ordering::Relaxed);
                    None
                }
            })
        })
        .collect()
}

/// Stops the readers and collects their clients.
async fn stop_readers(
    readers: Vec<Task<Option<Client>>>,
    stop: async_channel::Sender<()>,
) -> Vec<Client> {
    stop.close();
    let mut out = Vec::with_capacity(readers.len());
    for t in readers {
        if let Some(c) = t.await {
            out.push(c);
        }
    }
    out
}

/// `n` idle connections (RSS per connection), then all of them subscribed to the flood topic
/// (delivery latency, CPU), then all closed.
async fn fan_out(
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
        let (mut opened, errors) = open(d.addr, first, count, None).await;
        if let Some(e) = errors.first() {
            return Err(io::Error::other(format!(
                "{scenario}: {} of {count} connections failed, first: {e}",
                errors.len()
            )));
        }
        clients.append(&mut opened);
        let want = clients.len() as u64;
        wait_stats(d, "all connections counted", Duration::from_secs(20), |s| {
            s.active == want
        })
        .await?;
        smol::Timer::after(Duration::from_secs(1)).await;
        if first == 0 {
            rss_at_quarter = procfs::rss_kib(pid);
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
        Budget::AtMost(P99_MS),
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
    r.info(
        scenario,
        &format!("CPU during fan-out to {n}"),
        cpu,
        "% core",
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
    let correctness = if gate == Gate::Stretch {
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

/// Connect/subscribe/disconnect cycles, half of them abrupt; every figure must come back.
async fn churn(r: &mut Report, plan: &Plan, d: &Proc, baseline: Mark) -> io::Result<()> {
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
    r.check(
        s,
        "RSS after − before",
        (after.rss_kib as f64 - baseline.rss_kib as f64) / MIB,
        "MiB",
        Budget::AtMost(CHURN_RSS_MIB),
        Gate::Always,
        "",
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

/// Subscribers that never read beside ones that do, on a 100 frames/s topic.
async fn slow_consumers(r: &mut Report, plan: &Plan, d: &Proc) -> io::Result<()> {
    let pid = d.pid();
    let s = "slow";
    let base = warm_up(d).await?;
    // A small receive buffer fills in well under a second at 100 KiB/s.
    let (stalled, e1) = open(d.addr, 0, plan.slow_stalled, Some(4096)).await;
    let (readers, e2) = open(d.addr, 10_000, plan.slow_readers, None).await;
    if let Some(e) = e1.first().or(e2.first()) {
        return Err(io::Error::other(format!("slow consumers: {e}")));
    }
    let mut held = Vec::new();
    for mut c in stalled {
        c.subscribe(FLOOD).await?;
        held.push(c);
    }
    let mut subscribed = Vec::new();
    for mut c in readers {
        c.subscribe(FLOOD).await?;
        subscribed.push(c);
    }
    let sink = Sink::new();
    let (stop_tx, stop) = async_channel::bounded::<()>(1);
    let tasks = spawn_readers(subscribed, &sink, &stop);
    sink.open_window(plan.slow_window);
    let deadline = Instant::now() + plan.slow_window;
    let mut peak = 0;
    while Instant::now() < deadline {
        peak = peak.max(procfs::rss_kib(pid));
        smol::Timer::after(Duration::from_millis(100)).await;
    }
    smol::Timer::after(Duration::from_millis(200)).await;
    let stats = d.stats().await?;
    let readers_left = stop_readers(tasks, stop_tx).await;
    let lost = sink.lost.load(Ordering::Relaxed);
    let w = sink.take(plan.slow_readers);
    let (n, m) = (plan.slow_readers, plan.slow_stalled);
    let secs = plan.slow_window.as_secs();
    r.check(
        s,
        &format!("{n} readers beside {m} stalled: p99, {secs} s"),
        quantile(&w.kernel_ms, 0.99),
        "ms",
        Budget::AtMost(P99_MS),
        Gate::Full,
        "1 KiB at 100 frames/s",
    );
    r.check(
        s,
        "readers' frames delivered",
        w.delivered_pct,
        "%",
        Budget::AtLeast(100.0),
        Gate::Always,
        "",
    );
    r.must_be_zero(s, "readers cut off", lost as f64, Gate::Always, "");
    r.check(
        s,
        "peak RSS over baseline",
        (peak as f64 - base.rss_kib as f64) / MIB,
        "MiB",
        Budget::AtMost(SLOW_RSS_MIB),
        Gate::Full,
        "",
    );
    r.info(
        s,
        "stalled subscribers the daemon dropped",
        (m as u64).saturating_sub(stats.active.saturating_sub(n as u64)) as f64,
        "",
        "--write-timeout",
    );
    r.info(
        s,
        "frames dropped from full queues",
        stats.dropped_frames as f64,
        "",
        "",
    );
    let mut all = held;
    all.extend(readers_left);
    close_all(all).await;
    let after = settle(d).await?;
    r.check(
        s,
        "RSS after all closed, over baseline",
        (after.rss_kib as f64 - base.rss_kib as f64) / MIB,
        "MiB",
        Budget::AtMost(CHURN_RSS_MIB),
        Gate::Always,
        "",
    );
    Ok(())
}

/// SIGTERM: the daemon must exit 0 within the contract's 5 s.
fn shutdown(r: &mut Report, d: Proc) -> io::Result<()> {
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
