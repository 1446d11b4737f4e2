//! The daemon's log: simple_logger's level filters (a level per module) and its line format
//! (`LEVEL [target] message`; journald adds the time), written by a writer that cannot take the
//! daemon down. simple_logger itself prints with `eprintln!`, which panics when stderr fails: with
//! stderr a closed pipe the first WebSocket open aborted the process (a panic in the logger, then
//! another in a `Drop` while unwinding), and with stderr on a full disk it exited 101. Here a line
//! that cannot be written is lost; the daemon goes on.

use std::io::Write;

use log::{LevelFilter, Log, Metadata, Record, SetLoggerError};
use simple_logger::SimpleLogger;

/// The logger: simple_logger decides what is logged, this writes it.
struct Logger {
    filter: SimpleLogger,
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        self.filter.enabled(metadata)
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let target = if record.target().is_empty() {
            record.module_path().unwrap_or_default()
        } else {
            record.target()
        };
        // A closed pipe (EPIPE; SIGPIPE is ignored in Rust programs) or a full disk (ENOSPC)
        // loses this line and nothing else.
        let _ = writeln!(
            std::io::stderr().lock(),
            "{:<5} [{target}] {}",
            record.level(),
            record.args()
        );
    }

    fn flush(&self) {
        // Nothing to do if stderr is gone.
        let _ = std::io::stderr().flush();
    }
}

/// Installs the logger at `level`, with library chatter kept to warnings.
pub fn init(level: LevelFilter) -> Result<(), SetLoggerError> {
    let filter = SimpleLogger::new()
        .with_level(level)
        // Library chatter stays out of the daemon's log unless something is wrong.
        .with_module_level("tungstenite", LevelFilter::Warn)
        .with_module_level("async_tungstenite", LevelFilter::Warn)
        .with_module_level("async_io", LevelFilter::Warn)
        .with_module_level("polling", LevelFilter::Warn);
    log::set_max_level(filter.max_level());
    log::set_boxed_logger(Box::new(Logger { filter }))
}
