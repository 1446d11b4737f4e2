//! `--peers`: edgemon beside Netdata and Glances, each on loopback, measured by the same code:
//! RSS summed over the process tree, CPU % of one core over a window, idle and with one client
//! polling the live API once a second. Medians over `--passes`.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::client::{Client, source_ip};
use crate::daemon::{Proc, get};
use crate::procfs::{self, CpuMark};
use crate::report::{Report, num, quantile};
use crate::{Args, write_outputs};

/// How long a freshly started peer gets before it counts as idle (Netdata starts its plugins).
const SETTLE: Duration = Duration::from_secs(20);

/// One program under comparison.
struct Target {
    name: &'static str,
    /// `None`: edgemon itself.
    cmd: Option<Vec<String>>,
    addr: SocketAddr,
    probe: &'static str,
    /// What a client polls once a second: the peer's live API.
    poll: &'static str,
}

/// One pass's figures.
#[derive(Clone, Copy, Default)]
struct Figures {
    idle_rss: f64,
    idle_cpu: f64,
    polled_cpu: f64,
    polled_rss: f64,
    /// edgemon only: one WebSocket dashboard client on `system`.
    ws_cpu: Option<f64>,
    ws_rss: Option<f64>,
    poll_failures: usize,
}

pub fn run(args: &Args, daemon: &Path) -> io::Result<bool> {
    let window = Duration::from_secs(args.window.unwrap_or(60));
    let mut targets = vec![Target {
        name: "edgemon",
        cmd: None,
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        probe: "/healthz",
        poll: "/api/system",
    }];
    let s = |v: &str| v.to_string();
    if args.netdata.is_file() {
        targets.push(Target {
            name: "netdata",
            cmd: Some(vec![
                args.netdata.display().to_string(),
                s("-D"),
                s("-i"),
                s("127.0.0.1"),
                s("-p"),
                s("19999"),
            ]),
            addr: SocketAddr::from(([127, 0, 0, 1], 19999)),
            probe: "/api/v1/info",
            poll: "/api/v1/allmetrics?format=json",
        });
    } else {
        eprintln!("netdata: {} not found, skipped", args.netdata.display());
    }
    if args.glances.is_file() {
        targets.push(Target {
            name: "glances",
            cmd: Some(vec![
                args.glances.display().to_string(),
                s("-w"),
                s("--disable-autodiscover"),
                s("-B"),
                s("127.0.0.1"),
                s("-p"),
                s("61208"),
            ]),
            addr: SocketAddr::from(([127, 0, 0, 1], 61208)),
            probe: "/api/4/status",
            poll: "/api/4/all",
        });
    } else {
        eprintln!("glances: {} not found, skipped", args.glances.display());
    }
    eprintln!(
        "peers on {}: settle {} s, windows of {} s, {} pass(es)",
        procfs::machine(),
        SETTLE.as_secs(),
        window.as_secs(),
        args.passes
    );

    let mut rows: Vec<(&str, Figures)> = Vec::new();
    for t in &targets {
        let mut passes = Vec::new();
        for pass in 1..=args.passes {
            eprintln!("{} pass {pass}/{}", t.name, args.passes);
            passes.push(smol::block_on(measure(t, daemon, window))?);
        }
        rows.push((t.name, median(&passes)));
    }

    let mut r = Report::new(false);
    let w = window.as_secs();
    for (name, f) in &rows {
        r.info(name, "idle RSS (process tree)", f.idle_rss, "MiB", "");
        r.info(name, &format!("idle CPU, {w} s"), f.idle_cpu, "% core", "");
        r.info(
            name,
            &format!("CPU, one client polling 1/s, {w} s"),
            f.polled_cpu,
            "% core",
            "",
        );
        r.info(name, "RSS then", f.polled_rss, "MiB", "");
        if let (Some(c), Some(m)) = (f.ws_cpu, f.ws_rss) {
            r.info(
                name,
                &format!("CPU, one WebSocket client on system, {w} s"),
                c,
                "% core",
                "",
            );
            r.info(name, "RSS then", m, "MiB", "");
        }
        if f.poll_failures > 0 {
            r.info(name, "failed polls", f.poll_failures as f64, "", "");
        }
    }
    let mut table = String::from(
        "| program | idle RSS | idle CPU | CPU, one client polling 1/s | RSS then |\n|---|---|---|---|---|\n",
    );
    for (name, f) in &rows {
        table.push_str(&format!(
            "| {name} | {} MiB | {} % | {} % | {} MiB |\n",
            num(f.idle_rss),
            num(f.idle_cpu),
            num(f.polled_cpu),
            num(f.polled_rss)
        ));
    }
    if let Some((_, e)) = rows.iter().find(|(n, _)| *n == "edgemon") {
        if let (Some(c), Some(m)) = (e.ws_cpu, e.ws_rss) {
            table.push_str(&format!(
                "| edgemon, one WebSocket client on `system` instead | | | {} % | {} MiB |\n",
                num(c),
                num(m)
            ));
        }
        table.push_str("\n| peer ÷ edgemon | idle RSS | idle CPU | CPU polled | RSS polled |\n|---|---|---|---|---|\n");
        for (name, f) in rows.iter().filter(|(n, _)| *n != "edgemon") {
            table.push_str(&format!(
                "| {name} | {} | {} | {} | {} |\n",
                ratio(f.idle_rss, e.idle_rss),
                ratio(f.idle_cpu, e.idle_cpu),
                ratio(f.polled_cpu, e.polled_cpu),
                ratio(f.polled_rss, e.polled_rss)
            ));
        }
    }
    println!("{table}");
    let context = serde_json::json!({
        "machine": procfs::machine(),
        "window_seconds": w,
        "settle_seconds": SETTLE.as_secs(),
        "passes": args.passes,
        "polled": targets.iter().map(|t| (t.name, t.poll)).collect::<std::collections::BTreeMap<_, _>>(),
    });
    write_outputs(args, &r.json(context), &table)?;
    Ok(true)
}

/// `peer / edgemon` as `N×`; `-` when edgemon's figure is zero (nothing to divide by).
fn ratio(peer: f64, edgemon: f64) -> String {
    if edgemon > 0.0 {
        format!("{}×", num(peer / edgemon))
    } else {
        "- (edgemon 0)".into()
    }
}

/// The median of each figure across passes.
fn median(passes: &[Figures]) -> Figures {
    let med = |f: &dyn Fn(&Figures) -> f64| {
        let mut v: Vec<f64> = passes.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        quantile(&v, 0.5)
    };
    let opt = |f: &dyn Fn(&Figures) -> Option<f64>| {
        let mut v: Vec<f64> = passes.iter().filter_map(f).collect();
        v.sort_by(f64::total_cmp);
        (!v.is_empty()).then(|| quantile(&v, 0.5))
    };
    Figures {
        idle_rss: med(&|f| f.idle_rss),
        idle_cpu: med(&|f| f.idle_cpu),
        polled_cpu: med(&|f| f.polled_cpu),
        polled_rss: med(&|f| f.polled_rss),
        ws_cpu: opt(&|f| f.ws_cpu),
        ws_rss: opt(&|f| f.ws_rss),
        poll_failures: passes.iter().map(|f| f.poll_failures).sum(),
    }
}

/// One pass: start, settle, idle window, polled window (and for edgemon a WebSocket window), stop.
async fn measure(t: &Target, daemon: &Path, window: Duration) -> io::Result<Figures> {
    let p = match &t.cmd {
        None => Proc::edgemon(daemon, None, &[], "peers")?,
        Some(cmd) => Proc::peer(t.name, cmd, t.addr, t.probe)?,
    };
    let pid = p.pid();
    let mib = |k: u64| k as f64 / 1024.0;
    smol::Timer::after(SETTLE).await;
    let mut f = Figures {
        idle_rss: mib(procfs::tree_rss_kib(pid)),
        ..Figures::default()
    };
    let a = CpuMark::now(pid);
    smol::Timer::after(window).await;
    f.idle_cpu = a.percent_until(&CpuMark::now(pid));

    let failures = Arc::new(AtomicUsize::new(0));
    let poller = {
        let (addr, path, failures) = (p.addr, t.poll, failures.clone());
        smol::spawn(async move {
            let mut tick = smol::Timer::interval(Duration::from_secs(1));
            loop {
                match get(addr, path).await {
                    Ok((200, body)) if !body.is_empty() => {}
                    _ => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                smol::stream::StreamExt::next(&mut tick).await;
            }
        })
    };
    let a = CpuMark::now(pid);
    smol::Timer::after(window).await;
    f.polled_cpu = a.percent_until(&CpuMark::now(pid));
    f.polled_rss = mib(procfs::tree_rss_kib(pid));
    poller.cancel().await;
    f.poll_failures = failures.load(Ordering::Relaxed);

    if t.cmd.is_none() {
        let mut c = Client::connect(source_ip(0), p.addr, "/ws", None).await?;
        c.subscribe("system").await?;
        let reader = smol::spawn(async move {
            while let Ok(fr) = c.next().await {
                if fr.opcode == 0x8 {
                    break;
                }
            }
        });
        smol::Timer::after(Duration::from_secs(2)).await;
        let a = CpuMark::now(pid);
        smol::Timer::after(window).await;
        f.ws_cpu = Some(a.percent_until(&CpuMark::now(pid)));
        f.ws_rss = Some(mib(procfs::tree_rss_kib(pid)));
        reader.cancel().await;
    }
    if p.stop(Duration::from_secs(20)).is_none() {
        eprintln!("{}: did not stop within 20 s of SIGTERM; killed", t.name);
    }
    Ok(f)
}
