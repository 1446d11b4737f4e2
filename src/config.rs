//! Command line: raw flags (argh) validated into one `Config` the rest of the daemon reads.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::auth::Secret;
use std::time::Duration;

use argh::FromArgs;

/// edgemon: watch this host live from any browser on the LAN.
#[derive(FromArgs, Debug)]
pub struct Flags {
    /// address to serve HTTP and WebSocket on (default 0.0.0.0:9753)
    #[argh(option, default = "String::from(\"0.0.0.0:9753\")")]
    pub listen: String,
    /// total WebSocket connections; beyond it the upgrade gets 503 (default 256)
    #[argh(option, default = "String::from(\"256\")")]
    pub max_connections: String,
    /// websocket connections per client IP address; beyond it the upgrade gets 429 (default 5)
    #[argh(option, default = "String::from(\"5\")")]
    pub max_per_ip: String,
    /// server ping period (default 30s)
    #[argh(option, default = "String::from(\"30s\")")]
    pub ping_interval: String,
    /// close a connection that has not answered a ping within this (default 10s)
    #[argh(option, default = "String::from(\"10s\")")]
    pub pong_timeout: String,
    /// close a connection with no subscription and no client frame for this long (default 300s)
    #[argh(option, default = "String::from(\"300s\")")]
    pub idle_timeout: String,
    /// drop a connection whose socket write blocks longer than this (default 10s)
    #[argh(option, default = "String::from(\"10s\")")]
    pub write_timeout: String,
    /// frames queued per subscriber before the oldest is dropped (default 64)
    #[argh(option, default = "String::from(\"64\")")]
    pub send_queue: String,
    /// how long an empty hub waits before stopping its producer (default 5s)
    #[argh(option, default = "String::from(\"5s\")")]
    pub hub_linger: String,
    /// one-second system samples sent to a new subscriber, at most 1h (default 300s)
    #[argh(option, default = "String::from(\"300s\")")]
    pub history: String,
    /// days of 5-minute history kept in RAM, 0 to 31 (default 7)
    #[argh(option, default = "String::from(\"7\")")]
    pub history_days: String,
    /// also keep the history snapshot in this directory on disk (off by default)
    #[argh(option)]
    pub state_dir: Option<String>,
    /// how often the snapshot in --state-dir is written, besides at stop (default 6h)
    #[argh(option, default = "String::from(\"6h\")")]
    pub state_interval: String,
    /// expose a log file as topic logs/NAME, as NAME=PATH (repeatable)
    #[argh(option)]
    pub log: Vec<String>,
    /// expose a systemd unit's journal as topic logs/NAME, as NAME=UNIT (repeatable)
    #[argh(option)]
    pub journal: Vec<String>,
    /// require the token in this file on every route but /healthz
    #[argh(option)]
    pub token_file: Option<String>,
    /// extra browser origins allowed to open WebSockets (repeatable)
    #[argh(option)]
    pub allow_origin: Vec<String>,
    /// a further name this daemon answers to besides IP addresses, localhost and this host's
    /// name (a DNS name or reverse proxy's; repeatable)
    #[argh(option)]
    pub allow_host: Vec<String>,
    /// also report the interfaces matching this glob (* and ?), even virtual ones like lo or
    /// veth* (repeatable)
    #[argh(option)]
    pub net_include: Vec<String>,
    /// do not report the interfaces matching this glob, besides the virtual ones (repeatable)
    #[argh(option)]
    pub net_exclude: Vec<String>,
    /// an alert rule, NAME: METRIC OP VALUE [for DUR] [info|warning|critical]; one with the
    /// name of a default replaces it (repeatable; see the README's Alerts)
    #[argh(option)]
    pub alert: Vec<String>,
    /// drop the default alert rules (under-voltage, throttled, hot, disk full, memory low,
    /// failed units)
    #[argh(switch)]
    pub no_default_alerts: bool,
    /// where alerts are sent: http(s)://HOST/PATH (JSON POST), ntfy+http(s)://HOST/TOPIC, or
    /// file:/PATH of such URLs, one a line, not world-readable (repeatable)
    #[argh(option)]
    pub notify: Vec<String>,
    /// threads running the daemon's tasks, see the README's Performance (default 1)
    #[argh(option, default = "String::from(\"1\")")]
    pub threads: String,
    /// a systemd unit whose state, restarts and since-time the services topic shows, besides
    /// every failed unit (repeatable, at most 32)
    #[argh(option)]
    pub unit: Vec<String>,
    /// the container engine's API socket, e.g. /var/run/docker.sock or
    /// /run/podman/podman.sock; containers are off without it (root-equivalent access: see the
    /// README's Containers)
    #[argh(option)]
    pub docker_socket: Option<String>,
    /// containers whose logs become topics logs/container/NAME, as NAME,NAME or all (at most
    /// 32; default none, since logs can hold secrets)
    #[argh(option)]
    pub container_logs: Option<String>,
    /// another board shown in the fleet view, as HOST:PORT (repeatable, at most 63); boards
    /// sharing --token-file send it to each other
    #[argh(option)]
    pub peer: Vec<String>,
    /// do not announce this board by mDNS (_edgemon._tcp), nor look for other boards while the
    /// fleet view is open; without it, a board listening on a LAN address announces itself
    #[argh(switch)]
    pub no_mdns: bool,
    /// error, warn, info, debug or trace (default info)
    #[argh(option, default = "String::from(\"info\")")]
    pub log_level: String,
    /// print the version and exit
    #[argh(switch)]
    pub version: bool,
}

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Cap on WebSocket connections in total.
    pub max_connections: usize,
    /// Cap on WebSocket connections from one IP address.
    pub max_per_ip: usize,
    /// Server ping period.
    pub ping_interval: Duration,
    /// How long a ping may stay unanswered.
    pub pong_timeout: Duration,
    /// How long a connection may sit with no subscription and no client frame.
    pub idle_timeout: Duration,
    /// How long one socket write may block.
    pub write_timeout: Duration,
    /// Frames queued per subscriber before the oldest is dropped.
    pub send_queue: usize,
    /// How long an empty hub lingers before its producer stops.
    pub hub_linger: Duration,
    /// How many 1 s samples a new `system` subscriber receives (and the 1 s tier keeps, at
    /// least 10 min).
    pub history: Duration,
    /// Days the 5 min tier keeps.
    pub history_days: u32,
    /// Where the runtime snapshot lives (tmpfs; set by the binary from `$RUNTIME_DIRECTORY` or
    /// `/run/edgemon`, never a disk path); `None`: none is kept.
    pub runtime_dir: Option<PathBuf>,
    /// `--state-dir`: a snapshot on disk too.
    pub state_dir: Option<PathBuf>,
    /// `--state-interval`.
    pub state_interval: Duration,
    /// Log files exposed as `logs/NAME`.
    pub logs: Vec<(String, PathBuf)>,
    /// Journal units exposed as `logs/NAME`.
    pub journals: Vec<(String, String)>,
    /// The access token, if one is required (read from `--token-file` at start).
    pub token: Option<Secret>,
    /// Extra browser origins allowed to open WebSockets.
    pub allow_origins: Vec<String>,
    /// Further names the Host check admits (lowercase).
    pub allow_hosts: Vec<String>,
    /// `--net-include` globs: interfaces reported even if virtual or excluded.
    pub net_include: Vec<String>,
    /// `--net-exclude` globs: interfaces not reported, besides the virtual ones.
    pub net_exclude: Vec<String>,
    /// The alert rules in force (the defaults, replaced or dropped, and `--alert`).
    pub alerts: Vec<crate::alerts::Rule>,
    /// How long a condition must be false before its alert resolves, at least. Not a flag: tests
    /// shorten it.
    pub alert_min_resolve: Duration,
    /// Where alert notifications go (`--notify`; its Debug shows only scheme and host).
    pub notify: Vec<crate::deliver::Target>,
    /// `--unit` names for the `services` topic.
    pub units: Vec<String>,
    /// `--docker-socket`: the container engine's socket; `None`, containers are off.
    pub docker_socket: Option<PathBuf>,
    /// `--container-logs`: which containers' logs are topics.
    pub container_logs: crate::containers::LogAccess,
    /// `--peer` boards, as configured (HOST:PORT).
    pub peers: Vec<String>,
    /// mDNS announcing and browsing (off with `--no-mdns`; never on a loopback listen address).
    pub mdns: bool,
    /// Log verbosity.
    pub log_level: log::LevelFilter,
    /// Threads running the executor (`--threads`).
    pub threads: usize,
    /// How long a client may take to send a complete request head (slowloris guard). Not a flag.
    pub head_timeout: Duration,
    /// How long a keep-alive HTTP connection lives however busy it is. Not a flag.
    pub keepalive_life: Duration,
    /// Where sysfs is mounted; tests point it at fixture trees. Not a flag.
    pub sys_root: PathBuf,
    /// Read journals from this directory (`journalctl -D`) instead of the system journal; tests
    /// use journal files they wrote. Not a flag.
    pub journal_dir: Option<PathBuf>,
    /// The `test/flood` topic: a frame of about `.1` bytes every `.0`, stamped with its send time
    /// in microseconds. Tests set it; the binary sets it only from `EDGEMON_BENCH_FLOOD` (see
    /// [`bench_flood`]), which the benchmark uses. Not a flag.
    #[doc(hidden)]
    pub flood: Option<(Duration, usize)>,
    /// Test-only: the `panic` command. Never set by the binary.
    #[doc(hidden)]
    pub test_hooks: bool,
}

/// The environment variable that turns on the `test/flood` topic for the benchmark.
pub const BENCH_FLOOD_ENV: &str = "EDGEMON_BENCH_FLOOD";

/// Parses `PERIOD,BYTES` (e.g. `1s,1024`) from [`BENCH_FLOOD_ENV`].
pub fn bench_flood(value: &str) -> Result<(Duration, usize), String> {
    let (period, bytes) = value
        .split_once(',')
        .ok_or_else(|| format!("'{value}' is not PERIOD,BYTES (e.g. 1s,1024)"))?;
    let period = parse_duration(period.trim())?;
    if period < Duration::from_millis(1) {
        return Err("the period must be at least 1ms".into());
    }
    let bytes = bytes
        .trim()
        .parse::<usize>()
        .ok()
        .filter(|b| (1..=1_000_000).contains(b))
        .ok_or_else(|| {
            format!(
                "'{}' is not a frame size from 1 to 1000000 bytes",
                bytes.trim()
            )
        })?;
    Ok((period, bytes))
}

impl Default for Config {
    /// What an empty command line gives: the defaults are written once, in the flag parser.
    fn default() -> Self {
        let flags = Flags::from_args(&["edgemon"], &[]).expect("no flag is required");
        Config::from_flags(&flags).expect("the defaults are valid")
    }
}

/// A flag with a value it cannot take.
#[derive(Debug, PartialEq, Eq)]
pub struct FlagError {
    /// The flag, as typed on the command line (`--max-per-ip`).
    pub flag: &'static str,
    /// What is wrong and what would be accepted.
    pub message: String,
}

impl fmt::Display for FlagError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid value for {}: {}", self.flag, self.message)
    }
}

impl std::error::Error for FlagError {}

fn bad(flag: &'static str, message: impl Into<String>) -> FlagError {
    FlagError {
        flag,
        message: message.into(),
    }
}

impl Config {
    /// Validates raw flags; the error names the flag and what it accepts.
    pub fn from_flags(f: &Flags) -> Result<Config, FlagError> {
        let listen = f.listen.parse::<SocketAddr>().map_err(|_| {
            bad(
                "--listen",
                format!(
                    "'{}' is not IP:PORT (e.g. 0.0.0.0:9753 or [::]:9753)",
                    f.listen
                ),
            )
        })?;
        let max_connections = count("--max-connections", &f.max_connections, 1, 1_000_000)?;
        let max_per_ip = count("--max-per-ip", &f.max_per_ip, 1, 1_000_000)?;
        let send_queue = count("--send-queue", &f.send_queue, 1, 65_536)?;
        let threads = count("--threads", &f.threads, 1, 64)?;
        let ping_interval = positive("--ping-interval", &f.ping_interval)?;
        let pong_timeout = positive("--pong-timeout", &f.pong_timeout)?;
        let idle_timeout = positive("--idle-timeout", &f.idle_timeout)?;
        let write_timeout = positive("--write-timeout", &f.write_timeout)?;
        let hub_linger = parse_duration(&f.hub_linger).map_err(|m| bad("--hub-linger", m))?;
        let history = parse_duration(&f.history).map_err(|m| bad("--history", m))?;
        if history > Duration::from_secs(3600) {
            return Err(bad(
                "--history",
                "at most 1h of 1 s samples (longer ranges come from /api/history)",
            ));
        }
        let history_days = count("--history-days", &f.history_days, 0, 31)? as u32;
        let state_interval = positive("--state-interval", &f.state_interval)?;
        if state_interval < Duration::from_secs(60) {
            return Err(bad(
                "--state-interval",
                "at least 1m (each write wears the disk)",
            ));
        }
        let state_dir = match f.state_dir.as_deref() {
            None => None,
            Some(d) if std::path::Path::new(d).is_dir() => Some(PathBuf::from(d)),
            Some(d) => return Err(bad("--state-dir", format!("'{d}' is not a directory"))),
        };
        let logs = f
            .log
            .iter()
            .map(|s| name_value("--log", s))
            .map(|r| r.map(|(n, v)| (n, PathBuf::from(v))))
            .collect::<Result<Vec<_>, _>>()?;
        let journals = f
            .journal
            .iter()
            .map(|s| name_value("--journal", s))
            .collect::<Result<Vec<_>, _>>()?;
        let mut names: Vec<&str> = logs.iter().map(|(n, _)| n.as_str()).collect();
        names.extend(journals.iter().map(|(n, _)| n.as_str()));
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(bad(
                "--log",
                format!(
                    "log name '{}' is given twice (--log and --journal share names)",
                    w[0]
                ),
            ));
        }
        let log_level = match f.log_level.to_ascii_lowercase().as_str() {
            "error" => log::LevelFilter::Error,
            "warn" => log::LevelFilter::Warn,
            "info" => log::LevelFilter::Info,
            "debug" => log::LevelFilter::Debug,
            "trace" => log::LevelFilter::Trace,
            other => {
                return Err(bad(
                    "--log-level",
                    format!("'{other}' is not one of error, warn, info, debug, trace"),
                ));
            }
        };
        for o in &f.allow_origin {
            if !(o.starts_with("http://") || o.starts_with("https://")) || o.ends_with('/') {
                return Err(bad(
                    "--allow-origin",
                    format!("'{o}' is not an origin like http://host:port (no trailing slash)"),
                ));
            }
        }
        let allow_hosts = f
            .allow_host
            .iter()
            .map(|h| host_name("--allow-host", h))
            .collect::<Result<Vec<_>, _>>()?;
        let globs = |flag: &'static str, list: &[String]| {
            list.iter()
                .map(|g| interface_glob(flag, g))
                .collect::<Result<Vec<_>, _>>()
        };
        let net_include = globs("--net-include", &f.net_include)?;
        let net_exclude = globs("--net-exclude", &f.net_exclude)?;
        if f.unit.len() > crate::services::MAX_UNITS {
            return Err(bad(
                "--unit",
                format!("at most {} units", crate::services::MAX_UNITS),
            ));
        }
        if let Some(u) = f.unit.iter().find(|u| !crate::services::valid_unit(u)) {
            return Err(bad(
                "--unit",
                format!(
                    "'{u}' is not a unit name (A-Z a-z 0-9 : _ . @ \\ -, not starting with '-')"
                ),
            ));
        }
        let docker_socket = match f.docker_socket.as_deref() {
            None => None,
            Some(p) if p.trim().is_empty() => {
                return Err(bad("--docker-socket", "give the socket's path"));
            }
            Some(p) => Some(PathBuf::from(p)),
        };
        let container_logs = match f.container_logs.as_deref() {
            None => crate::containers::LogAccess::Off,
            Some(_) if docker_socket.is_none() => {
                return Err(bad(
                    "--container-logs",
                    "needs --docker-socket (the engine the logs come from)",
                ));
            }
            Some(s) => {
                crate::containers::LogAccess::parse(s).map_err(|m| bad("--container-logs", m))?
            }
        };
        if f.peer.len() >= crate::fleet::MAX_BOARDS {
            return Err(bad(
                "--peer",
                format!("at most {} peers", crate::fleet::MAX_BOARDS - 1),
            ));
        }
        let mut peers = Vec::new();
        for p in &f.peer {
            let p = peer_address(p).map_err(|m| bad("--peer", m))?;
            if peers.contains(&p) {
                return Err(bad("--peer", format!("'{p}' is given twice")));
            }
            peers.push(p);
        }
        let alerts = crate::alerts::rule_set(&f.alert, !f.no_default_alerts)
            .map_err(|(rule, why)| bad("--alert", format!("'{rule}': {why}")))?;
        Ok(Config {
            listen,
            max_connections,
            max_per_ip,
            ping_interval,
            pong_timeout,
            idle_timeout,
            write_timeout,
            send_queue,
            hub_linger,
            history,
            history_days,
            runtime_dir: None,
            state_dir,
            state_interval,
            logs,
            journals,
            token: match &f.token_file {
                Some(p) => {
                    Some(Secret::from_file(Path::new(p)).map_err(|m| bad("--token-file", m))?)
                }
                None => None,
            },
            allow_origins: f.allow_origin.clone(),
            allow_hosts,
            net_include,
            net_exclude,
            alerts,
            alert_min_resolve: crate::alerts::MIN_RESOLVE,
            notify: crate::deliver::targets(&f.notify).map_err(|m| bad("--notify", m))?,
            units: f.unit.clone(),
            docker_socket,
            container_logs,
            peers,
            mdns: !f.no_mdns,
            log_level,
            threads,
            head_timeout: Duration::from_secs(10),
            keepalive_life: crate::http_slots::KEEPALIVE_LIFE,
            sys_root: PathBuf::from("/sys"),
            journal_dir: None,
            flood: None,
            test_hooks: false,
        })
    }
}

/// A whole number within `min..=max`.
fn count(flag: &'static str, s: &str, min: usize, max: usize) -> Result<usize, FlagError> {
    match s.trim().parse::<usize>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(bad(
            flag,
            format!("'{s}' is not a whole number from {min} to {max}"),
        )),
    }
}

/// A duration above zero.
fn positive(flag: &'static str, s: &str) -> Result<Duration, FlagError> {
    match parse_duration(s) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err(bad(flag, "must be longer than zero")),
        Err(m) => Err(bad(flag, m)),
    }
}

/// A `--peer` address: `IP:PORT`, `[IPv6]:PORT` or `NAME:PORT`, as given (trimmed).
fn peer_address(s: &str) -> Result<String, String> {
    let s = s.trim();
    let wrong = || format!("'{s}' is not HOST:PORT (e.g. 192.168.1.21:9753 or pi2.local:9753)");
    if s.parse::<SocketAddr>().is_ok() {
        return Ok(s.to_string());
    }
    let (host, port) = s.rsplit_once(':').ok_or_else(wrong)?;
    if !port.parse::<u16>().is_ok_and(|p| p > 0) {
        return Err(wrong());
    }
    // SECURITY: a name becomes a DNS lookup only; this alphabet is a host name's.
    let name_ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        && !host.starts_with('-');
    if !name_ok {
        return Err(wrong());
    }
    Ok(s.to_string())
}

/// A DNS name (no port, no scheme): what a `Host` header may carry.
fn host_name(flag: &'static str, s: &str) -> Result<String, FlagError> {
    let name = s.trim().trim_end_matches('.');
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !ok {
        return Err(bad(
            flag,
            format!("'{s}' is not a host name like pi.example.org (no port, no scheme)"),
        ));
    }
    Ok(name.to_ascii_lowercase())
}

/// An interface-name glob: what an interface name may hold (printable, no space or `/`, at most
/// 64 bytes) plus `*` and `?`.
fn interface_glob(flag: &'static str, s: &str) -> Result<String, FlagError> {
    let ok = !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_graphic() && b != b'/');
    if !ok {
        return Err(bad(
            flag,
            format!("'{s}' is not an interface name or glob like eth0, wlan* or veth?"),
        ));
    }
    Ok(s.to_string())
}

/// `NAME=VALUE` where NAME is a safe topic suffix.
fn name_value(flag: &'static str, s: &str) -> Result<(String, String), FlagError> {
    let Some((name, value)) = s.split_once('=') else {
        return Err(bad(flag, format!("'{s}' is not NAME=VALUE")));
    };
    // SECURITY: names become URL path segments (`/ws/logs/NAME`); keep them to a plain alphabet so a
    // name can never look like a path or need escaping.
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && !name.starts_with('.');
    if !ok {
        return Err(bad(
            flag,
            format!("name '{name}' must be 1-64 of A-Z a-z 0-9 - _ . and not start with '.'"),
        ));
    }
    if value.is_empty() {
        return Err(bad(flag, format!("'{s}' has nothing after '='")));
    }
    Ok((name.to_string(), value.to_string()))
}

pub use crate::duration::parse_duration;

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(args: &[&str]) -> Result<Config, String> {
        let f = Flags::from_args(&["edgemon"], args).map_err(|e| e.output)?;
        Config::from_flags(&f).map_err(|e| e.to_string())
    }

    #[test]
    fn bench_flood_takes_period_and_size_and_names_what_is_wrong() {
        assert_eq!(bench_flood("1s,1024"), Ok((Duration::from_secs(1), 1024)));
        assert_eq!(
            bench_flood(" 10ms , 200 "),
            Ok((Duration::from_millis(10), 200))
        );
        for bad in ["1s", "0s,10", "1s,0", "1s,x", "soon,10", "1s,2000000"] {
            assert!(bench_flood(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn defaults_match_the_contract() {
        let c = flags(&[]).unwrap();
        assert_eq!(c.listen, "0.0.0.0:9753".parse().unwrap());
        assert_eq!(c.max_connections, 256);
        assert_eq!(c.max_per_ip, 5);
        assert_eq!(c.ping_interval, Duration::from_secs(30));
        assert_eq!(c.pong_timeout, Duration::from_secs(10));
        assert_eq!(c.idle_timeout, Duration::from_secs(300));
        assert_eq!(c.write_timeout, Duration::from_secs(10));
        assert_eq!(c.send_queue, 64);
        assert_eq!(c.hub_linger, Duration::from_secs(5));
        assert_eq!(c.history, Duration::from_secs(300));
        assert_eq!(c.log_level, log::LevelFilter::Info);
        assert_eq!(c.threads, 1);
    }

    #[test]
    fn every_default_in_the_help_is_the_default_that_applies() {
        let help = Flags::from_args(&["edgemon"], &["--help"])
            .unwrap_err()
            .output;
        let default = format!("{:?}", Config::default());
        // One entry per flag: argh wraps long descriptions onto indented lines.
        let mut entries: Vec<String> = Vec::new();
        for line in help.lines() {
            match entries.last_mut() {
                Some(e) if !line.trim_start().starts_with("--") && line.starts_with("   ") => {
                    e.push(' ');
                    e.push_str(line.trim());
                }
                _ => entries.push(line.trim().to_string()),
            }
        }
        let mut checked = 0;
        for entry in &entries {
            let (Some(flag), Some((_, rest))) = (
                entry
                    .split_whitespace()
                    .next()
                    .filter(|w| w.starts_with("--")),
                entry.split_once("(default "),
            ) else {
                continue;
            };
            let value = rest.trim_end_matches(')');
            let given = format!("{:?}", flags(&[flag, value]).unwrap());
            assert_eq!(given, default, "{flag}: the help says {value}");
            checked += 1;
        }
        assert!(checked >= 10, "only {checked} defaults found in:\n{help}");
    }

    #[test]
    fn durations_accept_every_documented_form() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        for bad in ["", "s", "-1s", "1.5s", "10x", "ms", "99999999999999999999"] {
            assert!(parse_duration(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn every_bad_value_names_its_flag() {
        let cases: &[(&[&str], &str)] = &[
            (&["--listen", "nowhere"], "--listen"),
            (&["--max-connections", "0"], "--max-connections"),
            (&["--max-per-ip", "x"], "--max-per-ip"),
            (&["--ping-interval", "0s"], "--ping-interval"),
            (&["--pong-timeout", "soon"], "--pong-timeout"),
            (&["--idle-timeout", "1y"], "--idle-timeout"),
            (&["--write-timeout", "-3"], "--write-timeout"),
            (&["--send-queue", "0"], "--send-queue"),
            (&["--threads", "0"], "--threads"),
            (&["--hub-linger", "abc"], "--hub-linger"),
            (&["--history", "48h"], "--history"),
            (&["--log", "syslog"], "--log"),
            (&["--log", "../x=/var/log/syslog"], "--log"),
            (&["--journal", "ssh="], "--journal"),
            (&["--log-level", "loud"], "--log-level"),
            (&["--allow-origin", "evil.com"], "--allow-origin"),
            (&["--allow-host", "pi.example:9753"], "--allow-host"),
            (&["--allow-host", "http://pi"], "--allow-host"),
            (&["--net-include", ""], "--net-include"),
            (&["--net-include", "eth 0"], "--net-include"),
            (&["--net-exclude", "../veth*"], "--net-exclude"),
            (
                &[
                    "--net-exclude",
                    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
                ],
                "--net-exclude",
            ),
        ];
        for (args, flag) in cases {
            let err = flags(args).unwrap_err();
            assert!(err.contains(flag), "{args:?} gave {err}");
        }
    }

    #[test]
    fn log_names_must_be_unique_across_log_and_journal() {
        let err = flags(&["--log", "a=/tmp/a", "--journal", "a=ssh.service"]).unwrap_err();
        assert!(err.contains("given twice"), "{err}");
    }

    #[test]
    fn zero_linger_and_zero_history_are_allowed() {
        let c = flags(&["--hub-linger", "0", "--history", "0s"]).unwrap();
        assert!(c.hub_linger.is_zero());
        assert!(c.history.is_zero());
    }
}
