//! `edgemon-bench`: starts the edgemon daemon on loopback, drives it with its own WebSocket
//! clients, reads the daemon's figures from `/proc`, and checks them against the budgets of
//! DESIGN.md. Prints a table (Markdown, as the README shows it) and writes a JSON file. Exit
//! status: 0 when every gating line passes, 1 when one fails, 2 for bad flags.
//!
//! `--peers` measures edgemon and the peers a user would install instead, with the same code.

mod client;
mod daemon;
mod netns;
mod peers;
mod podman;
mod procfs;
mod report;
mod scenarios;

use std::path::PathBuf;
use std::process::ExitCode;

use argh::FromArgs;

/// Benchmark and soak of the edgemon daemon (release build), with budgets.
#[derive(FromArgs)]
struct Args {
    /// a short run (a few hundred connections, a few seconds per window) that keeps the tool from
    /// rotting; speed and footprint budgets are printed but do not gate
    #[argh(switch)]
    smoke: bool,
    /// an argument for every daemon the benchmark starts, one per use: --daemon-flag --threads
    /// --daemon-flag 2 (repeatable)
    #[argh(option)]
    daemon_flag: Vec<String>,
    /// the daemon binary (default: `edgemon` next to this program)
    #[argh(option)]
    daemon: Option<PathBuf>,
    /// where to write the JSON results (default target/edgemon-bench.json)
    #[argh(option, default = "PathBuf::from(\"target/edgemon-bench.json\")")]
    json: PathBuf,
    /// also write the Markdown table here
    #[argh(option)]
    markdown: Option<PathBuf>,
    /// measure edgemon side by side with the peers (see tests/peers.sh) instead of the budgets
    #[argh(switch)]
    peers: bool,
    /// seconds per CPU window (default 60, smoke 3)
    #[argh(option)]
    window: Option<u64>,
    /// run only this scenario (repeatable): idle (with dashboard), containers (CPU with 10
    /// containers watched; root and podman), fleet (50 peers watched), mdns (idle, announcing;
    /// root), connections (the fan-outs),
    /// veth (the fan-outs across a veth pair; root), node (Node ws on both), churn, slow,
    /// hostile, subscribed, stretch; the binary size is always measured
    #[argh(option)]
    only: Vec<String>,
    /// the Node `ws` comparison peer's directory, after `npm ci --prefix` it (default
    /// src/bench/node-ws; skipped if not installed)
    #[argh(option, default = "PathBuf::from(\"src/bench/node-ws\")")]
    node_ws: PathBuf,
    /// connections for the idle-RSS and fan-out lines (default 2000, smoke 300)
    #[argh(option)]
    connections: Option<usize>,
    /// connections for the stretch lines; 0 skips them (default 10000, none in smoke mode)
    #[argh(option)]
    stretch: Option<usize>,
    /// peers mode: passes per peer; the median is reported (default 1)
    #[argh(option, default = "1")]
    passes: usize,
    /// peers mode: the netdata binary (default /usr/sbin/netdata; skipped if missing)
    #[argh(option, default = "PathBuf::from(\"/usr/sbin/netdata\")")]
    netdata: PathBuf,
    /// peers mode: the glances binary (default /opt/edgemon-peers/bin/glances; skipped if missing)
    #[argh(option, default = "PathBuf::from(\"/opt/edgemon-peers/bin/glances\")")]
    glances: PathBuf,
}

fn main() -> ExitCode {
    let args: Args = argh::from_env();
    if args.passes == 0 || args.window == Some(0) {
        eprintln!("edgemon-bench: --passes and --window must be at least 1");
        return ExitCode::from(2);
    }
    if let Some(bad) = args
        .only
        .iter()
        .find(|s| !scenarios::SCENARIOS.contains(&s.as_str()))
    {
        eprintln!(
            "edgemon-bench: --only: unknown scenario {bad:?} (one of {})",
            scenarios::SCENARIOS.join(", ")
        );
        return ExitCode::from(2);
    }
    let daemon = match args.daemon.clone() {
        Some(d) => d,
        None => match std::env::current_exe() {
            Ok(me) => me.with_file_name("edgemon"),
            Err(e) => {
                eprintln!("edgemon-bench: cannot find myself ({e}); pass --daemon");
                return ExitCode::from(2);
            }
        },
    };
    if !daemon.is_file() {
        eprintln!(
            "edgemon-bench: --daemon: {} is not a file (build it: cargo build --release)",
            daemon.display()
        );
        return ExitCode::from(2);
    }
    let outcome = if args.peers {
        peers::run(&args, &daemon)
    } else {
        scenarios::run(&args, &daemon)
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("edgemon-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Writes the JSON and (if asked) the Markdown table, creating directories.
fn write_outputs(args: &Args, json: &serde_json::Value, table: &str) -> std::io::Result<()> {
    for (path, text) in [
        (Some(&args.json), format!("{json:#}\n")),
        (args.markdown.as_ref(), table.to_string()),
    ] {
        if let Some(p) = path {
            if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(p, text)?;
            eprintln!("wrote {}", p.display());
        }
    }
    Ok(())
}

/// Raises the open-file limit to `want` (the hard limit too, if allowed); returns what it got.
fn raise_nofile(want: u64) -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let cur = getrlimit(Resource::Nofile);
    let hard = cur.maximum.unwrap_or(u64::MAX);
    let mut lim = cur;
    if hard < want {
        lim.maximum = Some(want);
    }
    lim.current = Some(want.min(lim.maximum.unwrap_or(u64::MAX)));
    if setrlimit(Resource::Nofile, lim).is_err() {
        // Not allowed to raise the hard limit: take what it allows.
        lim.maximum = cur.maximum;
        lim.current = Some(want.min(hard));
        let _ = setrlimit(Resource::Nofile, lim);
    }
    getrlimit(Resource::Nofile).current.unwrap_or(0)
}
