//! The `edgemon` binary: flags, logging, signals; everything else is in the library.
//!
//! `main` calls [`run`] and is the one place that prints an error and picks the exit status:
//! 0 after a clean stop (or `--help`), 2 for a bad flag or environment value, 1 when the daemon
//! cannot start.

use async_signal::Signal;
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use edgemon::config::{BENCH_FLOOD_ENV, bench_flood};
use edgemon::notify::{Notifier, watchdog_interval};
use edgemon::topics::FLOOD;
use edgemon::{Config, Flags, Server};
use smol::future::FutureExt;
use smol::stream::StreamExt;

/// Why the binary stops before serving, and so its exit status.
enum Exit {
    /// `--help`: the text goes to stdout, status 0.
    Help(String),
    /// A bad flag or environment value: status 2.
    Usage(String),
    /// Logging could not start: status 1, said on stderr.
    NoLog(String),
    /// The daemon could not start (listen, signals): status 1, in the log.
    Failed(String),
}

fn main() -> ExitCode {
    // Written with errors ignored: a closed stdout or stderr must not turn the status into 101.
    let say = |mut to: Box<dyn Write>, text: &str| {
        let _ = to.write_all(text.as_bytes());
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(Exit::Help(text)) => {
            say(Box::new(std::io::stdout()), &text);
            ExitCode::SUCCESS
        }
        Err(Exit::Usage(msg)) => {
            say(Box::new(std::io::stderr()), &format!("edgemon: {msg}\n"));
            ExitCode::from(2)
        }
        Err(Exit::NoLog(msg)) => {
            say(Box::new(std::io::stderr()), &format!("edgemon: {msg}\n"));
            ExitCode::FAILURE
        }
        Err(Exit::Failed(msg)) => {
            log::error!("{msg}");
            ExitCode::FAILURE
        }
    }
}

/// Parses the flags, starts logging, binds, and serves until SIGTERM or SIGINT.
fn run() -> Result<(), Exit> {
    let mut config = config()?;
    edgemon::logging::init(config.log_level)
        .map_err(|e| Exit::NoLog(format!("cannot start logging: {e}")))?;
    // The history is kept across restarts in RAM-backed /run only; never on a disk by default.
    config.runtime_dir = edgemon::runtime_dir();
    match &config.runtime_dir {
        Some(d) => log::info!("history kept across restarts in {}", d.display()),
        None => log::info!(
            "no runtime directory ($RUNTIME_DIRECTORY, or a writable /run/edgemon): history starts empty at every start"
        ),
    }
    let listen = config.listen;
    let flood = config.flood;
    let server = Server::bind(config)
        .map_err(|e| Exit::Failed(format!("cannot listen on {listen}: {e}")))?;
    let signals = async_signal::Signals::new([Signal::Term, Signal::Int, Signal::Hup])
        .map_err(|e| Exit::Failed(format!("cannot install signal handlers: {e}")))?;
    if let Some((period, bytes)) = flood {
        log::warn!(
            "benchmark topic {FLOOD} is on: {bytes} bytes every {period:?} ({BENCH_FLOOD_ENV})"
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
            while let Some(sig) = signals.next().await {
                match sig {
                    // A closed terminal or a process manager's "reload": there is nothing to
                    // reload (flags are read once), and stopping would drop every client.
                    Ok(Signal::Hup) => log::info!(
                        "received SIGHUP: nothing to reload, still serving (SIGTERM stops)"
                    ),
                    Ok(sig) => {
                        log::info!("received {sig:?}");
                        return;
                    }
                    Err(e) => {
                        log::error!("signal handling failed: {e}; stopping");
                        return;
                    }
                }
            }
        };
        // The watchdog never ends; the signal does, and stops the server.
        signal.or(watchdog).await;
        if let Some(n) = &notifier {
            n.send("STOPPING=1");
        }
    });
    log::info!("stopped");
    Ok(())
}

/// The validated configuration from the command line and the benchmark's environment variable.
fn config() -> Result<Config, Exit> {
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let argv: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    let flags = <Flags as argh::FromArgs>::from_args(&["edgemon"], &argv).map_err(|early| {
        if early.status.is_ok() {
            Exit::Help(early.output)
        } else {
            Exit::Usage(format!(
                "{}\nRun 'edgemon --help' for the flags.",
                early.output.trim()
            ))
        }
    })?;
    if flags.version {
        return Err(Exit::Help(format!(
            "edgemon {}\n",
            env!("CARGO_PKG_VERSION")
        )));
    }
    let mut config = Config::from_flags(&flags).map_err(|e| Exit::Usage(e.to_string()))?;
    // The benchmark's synthetic topic; never on unless the environment asks for it.
    if let Ok(v) = std::env::var(BENCH_FLOOD_ENV) {
        config.flood =
            Some(bench_flood(&v).map_err(|e| Exit::Usage(format!("{BENCH_FLOOD_ENV}: {e}")))?);
    }
    Ok(config)
}
