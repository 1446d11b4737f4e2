//! The `edgemon` binary: flags, logging, signals; everything else is in the library.

use std::process::ExitCode;

use std::sync::Arc;

use edgemon::config::{BENCH_FLOOD_ENV, bench_flood};
use edgemon::notify::{Notifier, watchdog_interval};
use edgemon::{Config, Flags, Server};
use smol::future::FutureExt;
use smol::stream::StreamExt;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let argv: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    let flags = match <Flags as argh::FromArgs>::from_args(&["edgemon"], &argv) {
        Ok(f) => f,
        Err(early) if early.status.is_ok() => {
            // --help
            print!("{}", early.output);
            return ExitCode::SUCCESS;
        }
        Err(early) => {
            eprintln!(
                "edgemon: {}\nRun 'edgemon --help' for the flags.",
                early.output.trim()
            );
            return ExitCode::from(2);
        }
    };
    let mut config = match Config::from_flags(&flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("edgemon: {e}");
            return ExitCode::from(2);
        }
    };
    // The benchmark's synthetic topic; never on unless the environment asks for it.
    if let Ok(v) = std::env::var(BENCH_FLOOD_ENV) {
        match bench_flood(&v) {
            Ok(f) => config.flood = Some(f),
            Err(e) => {
                eprintln!("edgemon: {BENCH_FLOOD_ENV}: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let logger = simple_logger::SimpleLogger::new()
        .with_level(config.log_level)
        // Library chatter stays out of the daemon's log unless something is wrong.
        .with_module_level("tungstenite", log::LevelFilter::Warn)
        .with_module_level("async_tungstenite", log::LevelFilter::Warn)
        .with_module_level("async_io", log::LevelFilter::Warn)
        .with_module_level("polling", log::LevelFilter::Warn);
    if let Err(e) = logger.init() {
        eprintln!("edgemon: cannot start logging: {e}");
        return ExitCode::FAILURE;
    }
    let listen = config.listen;
    let flood = config.flood;
    let server = match Server::bind(config) {
        Ok(s) => s,
        Err(e) => {
            log::error!("cannot listen on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let signals =
        match async_signal::Signals::new([async_signal::Signal::Term, async_signal::Signal::Int]) {
            Ok(s) => s,
            Err(e) => {
                log::error!("cannot install signal handlers: {e}");
                return ExitCode::FAILURE;
            }
        };
    if let Some((period, bytes)) = flood {
        log::warn!(
            "benchmark topic test/flood is on: {bytes} bytes every {period:?} ({BENCH_FLOOD_ENV})"
        );
    }
    match server.local_addr() {
        Ok(addr) => log::info!(
            "edgemon {} listening on http://{addr}",
            env!("CARGO_PKG_VERSION")
        ),
        Err(e) => log::warn!("listening, but the address is unknown: {e}"),
    }
    // Under systemd (Type=notify): ready now that we listen; watchdog pings from the executor.
    let notifier = Notifier::from_env().map(Arc::new);
    if let Some(n) = &notifier {
        n.send("READY=1\nSTATUS=serving");
    }
    let watchdog = {
        let notifier = notifier.clone();
        async move {
            match (notifier, watchdog_interval()) {
                (Some(n), Some(every)) => {
                    let mut ticks = smol::Timer::interval(every);
                    while ticks.next().await.is_some() {
                        n.send("WATCHDOG=1");
                    }
                }
                _ => std::future::pending().await,
            }
        }
    };
    server.run(async move {
        let mut signals = signals;
        let signal = async {
            if let Some(Ok(sig)) = signals.next().await {
                log::info!("received {sig:?}");
            }
        };
        // The watchdog never ends; the signal does, and stops the server.
        signal.or(watchdog).await;
        if let Some(n) = &notifier {
            n.send("STOPPING=1");
        }
    });
    log::info!("stopped");
    ExitCode::SUCCESS
}
