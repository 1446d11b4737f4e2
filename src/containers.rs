//! The `containers` topic's data: every container the engine lists (at most `MAX_LISTED`), with
//! state, health, uptime and restarts from its details, and CPU, memory, network and block I/O
//! for the running ones (at most `MAX_STATS`) from one-shot stats. Rates come from the previous
//! reading of the same container, so the engine never waits for a second sample.
//!
//! Which containers' logs may be followed (`--container-logs`) is decided here too: the topics
//! list them, and the page links a container to its log topic.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use crate::engine::{Engine, Error, number, text};

/// How often the topic reads the engine while someone watches.
pub const PERIOD: Duration = Duration::from_secs(2);
/// Containers listed at most (running ones first).
pub const MAX_LISTED: usize = 100;
/// Running containers whose figures are read at most.
pub const MAX_STATS: usize = 50;
/// Container log topics at most.
pub const MAX_LOG_TOPICS: usize = 32;
/// A container's details are read again after this long even when its state did not change
/// (health and restarts move without one).
const DETAILS_AGAIN: Duration = Duration::from_secs(10);
/// Calls to the engine in flight at once.
const AT_ONCE: usize = 8;
/// Log topics of containers are `logs/container/NAME`.
pub const LOG_PREFIX: &str = "logs/container/";

/// Which containers' logs are topics (`--container-logs`): none by default, since logs can hold
/// secrets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum LogAccess {
    /// No container's.
    #[default]
    Off,
    /// These names' (at most `MAX_LOG_TOPICS`).
    Named(Vec<String>),
    /// Every container's, at most `MAX_LOG_TOPICS` of them at a time.
    All,
}

impl LogAccess {
    /// Parses `--container-logs NAME,...|all`.
    pub fn parse(s: &str) -> Result<LogAccess, String> {
        let s = s.trim();
        if s == "all" {
            return Ok(LogAccess::All);
        }
        let names: Vec<String> = s
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(String::from)
            .collect();
        if names.is_empty() {
            return Err("give container names separated by commas, or all".into());
        }
        if let Some(bad) = names.iter().find(|n| !crate::engine::valid_name(n)) {
            return Err(format!(
                "'{bad}' is not a container name (A-Z a-z 0-9 _ . -, starting with a letter or digit)"
            ));
        }
        if names.len() > MAX_LOG_TOPICS {
            return Err(format!("at most {MAX_LOG_TOPICS} containers"));
        }
        let mut names = names;
        names.sort_unstable();
        names.dedup();
        Ok(LogAccess::Named(names))
    }

    /// Whether container `name`'s log may be a topic, given the names listed last (`known`,
    /// sorted): a named one, or with `all` one of the first `MAX_LOG_TOPICS` names.
    pub fn allows(&self, name: &str, known: &[String]) -> bool {
        match self {
            LogAccess::Off => false,
            LogAccess::Named(names) => names.iter().any(|n| n == name),
            LogAccess::All => {
                crate::engine::valid_name(name)
                    && known.iter().take(MAX_LOG_TOPICS).any(|n| n == name)
            }
        }
    }
}

/// Memory of a container, bytes.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Memory {
    /// In use, without the page cache the kernel can drop (as `docker stats` counts it).
    pub used: u64,
    /// Its limit (the host's memory when it has none).
    pub limit: u64,
}

/// Traffic of a container, bytes.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Io {
    /// Per second since the previous reading (`null` on the first one or after a restart).
    pub in_per_s: Option<u64>,
    /// Per second since the previous reading.
    pub out_per_s: Option<u64>,
    /// In since the container started.
    pub in_total: u64,
    /// Out since the container started.
    pub out_total: u64,
}

/// One container as the topic shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Container {
    /// The first 12 hex digits of its ID.
    pub id: String,
    /// Its name (without Docker's leading `/`).
    pub name: String,
    /// The image it runs.
    pub image: String,
    /// `running`, `exited`, `paused`, `restarting`, `created`, `dead`.
    pub state: String,
    /// The engine's words (`Up 5 minutes (healthy)`, `Exited (0) 2 hours ago`).
    pub status: String,
    /// `healthy`, `unhealthy` or `starting`; `null` without a health check.
    pub health: Option<String>,
    /// Unix ms it last started, if running.
    pub started: Option<u64>,
    /// Seconds since it started, if running.
    pub uptime_s: Option<u64>,
    /// Restarts the engine made (`RestartCount`).
    pub restarts: Option<u64>,
    /// CPU, percent of one core, since the previous reading.
    pub cpu: Option<f32>,
    /// Memory.
    pub memory: Option<Memory>,
    /// Network: `in` received, `out` sent.
    pub net: Option<Io>,
    /// Block I/O: `in` read, `out` written.
    pub block: Option<Io>,
    /// Processes in it.
    pub pids: Option<u64>,
    /// Its log topic, when `--container-logs` allows it.
    pub logs: Option<String>,
}

/// What the `containers` topic knows.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Reading {
    /// The engine answered.
    Available {
        /// Always true.
        available: bool,
        /// Containers, running first then by name, at most `MAX_LISTED`.
        containers: Vec<Container>,
        /// How many the engine has (may be more than listed).
        total: usize,
    },
    /// It could not be asked.
    Unavailable {
        /// Always false.
        available: bool,
        /// Why.
        reason: String,
    },
}

impl Reading {
    /// A reading that failed for `reason`.
    pub fn unavailable(reason: impl Into<String>) -> Reading {
        Reading::Unavailable {
            available: false,
            reason: reason.into(),
        }
    }
}

/// What `--docker-socket` is missing says.
pub const NO_SOCKET: &str = "containers are off: no --docker-socket given";

/// A container's details, read again when its state changes or after `DETAILS_AGAIN`.
struct Details {
    /// The list's state when read.
    state: String,
    at: Instant,
    started: Option<u64>,
    restarts: Option<u64>,
    health: Option<String>,
}

/// Counters of a container's previous reading.
struct Counters {
    /// Engine's time of the reading, ns (our own clock when it gives none).
    at_ns: u64,
    cpu_ns: Option<u64>,
    net: Option<(u64, u64)>,
    block: Option<(u64, u64)>,
}

/// Reads the engine for the topic, remembering what rates and details need between readings.
pub struct Watcher {
    engine: Arc<Engine>,
    logs: LogAccess,
    details: HashMap<String, Details>,
    counters: HashMap<String, Counters>,
    /// Our clock for engines that do not stamp their stats.
    epoch: Instant,
}

impl Watcher {
    /// A watcher of `engine`; `logs` says which containers get a log topic.
    pub fn new(engine: Arc<Engine>, logs: LogAccess) -> Watcher {
        Watcher {
            engine,
            logs,
            details: HashMap::new(),
            counters: HashMap::new(),
            epoch: Instant::now(),
        }
    }

    /// One reading; also returns the names listed (sorted), for the log topics.
    pub async fn read(&mut self) -> (Reading, Vec<String>) {
        let list = match self.engine.list().await {
            Ok(l) => l,
            Err(e) => return (Reading::unavailable(crate::engine::reason(&e)), Vec::new()),
        };
        let total = list.len();
        let mut listed: Vec<Container> = list.iter().map(listed).collect();
        listed.sort_unstable_by(|a, b| {
            (a.state != "running", &a.name).cmp(&(b.state != "running", &b.name))
        });
        listed.truncate(MAX_LISTED);
        let mut names: Vec<String> = listed.iter().map(|c| c.name.clone()).collect();
        names.sort_unstable();
        // Details: new containers, changed states, or read long enough ago.
        let now = Instant::now();
        let due: Vec<String> = listed
            .iter()
            .filter(|c| {
                self.details
                    .get(&c.id)
                    .is_none_or(|d| d.state != c.state || now.duration_since(d.at) >= DETAILS_AGAIN)
            })
            .map(|c| c.id.clone())
            .collect();
        let engine = &self.engine;
        let got = all(due
            .iter()
            .map(|id| Box::pin(engine.inspect(id)) as Call<'_>)
            .collect())
        .await;
        for (id, r) in due.iter().zip(got) {
            // A container gone between the list and its details shows without them.
            let Ok(v) = r else { continue };
            let state = v.get("State").unwrap_or(&Value::Null);
            let running = state.get("Running").and_then(Value::as_bool) == Some(true);
            let health = state
                .get("Health")
                .map(|h| text(h, "Status"))
                .filter(|s| !s.is_empty() && *s != "none")
                .map(String::from);
            let started = crate::engine::stream::parse_rfc3339(text(state, "StartedAt").as_bytes())
                .filter(|ns| running && *ns > 0)
                .map(|ns| ns / 1_000_000);
            let list_state = listed
                .iter()
                .find(|c| &c.id == id)
                .map(|c| c.state.clone())
                .unwrap_or_default();
            self.details.insert(
                id.clone(),
                Details {
                    state: list_state,
                    at: now,
                    started,
                    restarts: number(&v, "RestartCount"),
                    health,
                },
            );
        }
        // Figures of the running ones.
        let running: Vec<String> = listed
            .iter()
            .filter(|c| c.state == "running")
            .take(MAX_STATS)
            .map(|c| c.id.clone())
            .collect();
        let got = all(running
            .iter()
            .map(|id| Box::pin(engine.stats(id)) as Call<'_>)
            .collect())
        .await;
        let epoch = self.epoch;
        let mut fresh = HashMap::new();
        for (id, r) in running.iter().zip(got) {
            let Ok(v) = r else { continue };
            let (counters, figures) = figures(&v, self.counters.get(id), epoch);
            fresh.insert(id.clone(), counters);
            if let Some(c) = listed.iter_mut().find(|c| &c.id == id) {
                (c.cpu, c.memory, c.net, c.block, c.pids) = figures;
            }
        }
        // Only containers still listed are remembered: nothing grows with churn.
        self.counters = fresh;
        self.details
            .retain(|id, _| listed.iter().any(|c| &c.id == id));
        let unix_now = crate::protocol::unix_ms();
        for c in &mut listed {
            if let Some(d) = self.details.get(&c.id) {
                c.restarts = d.restarts;
                c.health = d.health.clone().or_else(|| c.health.take());
                if c.state == "running" {
                    c.started = d.started;
                    c.uptime_s = d.started.map(|s| unix_now.saturating_sub(s) / 1000);
                }
            }
            c.logs = self
                .logs
                .allows(&c.name, &names)
                .then(|| format!("{LOG_PREFIX}{}", c.name));
        }
        (
            Reading::Available {
                available: true,
                containers: listed,
                total,
            },
            names,
        )
    }
}

/// One call to the engine, boxed so a group of them can be polled together.
type Call<'a> = Pin<Box<dyn Future<Output = Result<Value, Error>> + Send + 'a>>;

/// Runs `calls`, `AT_ONCE` at a time; their answers in order.
async fn all(calls: Vec<Call<'_>>) -> Vec<Result<Value, Error>> {
    let mut out = Vec::with_capacity(calls.len());
    let mut calls = calls.into_iter();
    loop {
        let mut group: Vec<Call<'_>> = calls.by_ref().take(AT_ONCE).collect();
        if group.is_empty() {
            return out;
        }
        let mut done: Vec<Option<Result<Value, Error>>> = group.iter().map(|_| None).collect();
        std::future::poll_fn(|cx| {
            let mut pending = false;
            for (call, slot) in group.iter_mut().zip(done.iter_mut()) {
                if slot.is_none() {
                    match call.as_mut().poll(cx) {
                        Poll::Ready(r) => *slot = Some(r),
                        Poll::Pending => pending = true,
                    }
                }
            }
            if pending {
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await;
        out.extend(done.into_iter().map(|d| d.expect("every call is done")));
    }
}

/// A container as the list gives it (figures and details come later).
fn listed(v: &Value) -> Container {
    let id = text(v, "Id");
    let name = v
        .get("Names")
        .and_then(Value::as_array)
        .and_then(|n| n.first())
        .and_then(Value::as_str)
        .unwrap_or("");
    let status = text(v, "Status");
    // The list's status carries the health in Docker's words: "Up 2 minutes (healthy)".
    let health = ["healthy", "unhealthy", "health: starting"]
        .into_iter()
        .find(|h| status.contains(&format!("({h})")))
        .map(|h| h.trim_start_matches("health: ").to_string());
    Container {
        id: id.chars().take(12).collect(),
        name: name.trim_start_matches('/').to_string(),
        image: text(v, "Image").to_string(),
        state: text(v, "State").to_ascii_lowercase(),
        status: status.to_string(),
        health,
        started: None,
        uptime_s: None,
        restarts: None,
        cpu: None,
        memory: None,
        net: None,
        block: None,
        pids: None,
        logs: None,
    }
}

/// The figures of one stats answer, and its counters for the next reading's rates.
type Figures = (
    Option<f32>,
    Option<Memory>,
    Option<Io>,
    Option<Io>,
    Option<u64>,
);

fn figures(v: &Value, prev: Option<&Counters>, epoch: Instant) -> (Counters, Figures) {
    let at_ns = crate::engine::stream::parse_rfc3339(text(v, "read").as_bytes())
        .unwrap_or_else(|| epoch.elapsed().as_nanos() as u64);
    let cpu_ns = v
        .pointer("/cpu_stats/cpu_usage/total_usage")
        .and_then(Value::as_u64);
    let mem = v.get("memory_stats").unwrap_or(&Value::Null);
    let memory = number(mem, "usage").map(|usage| {
        // cgroup v2 calls the droppable cache inactive_file, v1 total_inactive_file.
        let stats = mem.get("stats").unwrap_or(&Value::Null);
        let cache = number(stats, "inactive_file")
            .or_else(|| number(stats, "total_inactive_file"))
            .filter(|c| *c < usage)
            .unwrap_or(0);
        Memory {
            used: usage - cache,
            limit: number(mem, "limit").unwrap_or(0),
        }
    });
    let net = v.get("networks").and_then(Value::as_object).map(|nets| {
        nets.values().fold((0u64, 0u64), |(rx, tx), n| {
            (
                rx.saturating_add(number(n, "rx_bytes").unwrap_or(0)),
                tx.saturating_add(number(n, "tx_bytes").unwrap_or(0)),
            )
        })
    });
    let block = v
        .pointer("/blkio_stats/io_service_bytes_recursive")
        .and_then(Value::as_array)
        .map(|ops| {
            ops.iter().fold((0u64, 0u64), |(r, w), o| {
                let n = number(o, "value").unwrap_or(0);
                match text(o, "op").to_ascii_lowercase().as_str() {
                    "read" => (r.saturating_add(n), w),
                    "write" => (r, w.saturating_add(n)),
                    _ => (r, w),
                }
            })
        });
    // A previous reading of the same container, earlier, with counters that did not go back.
    let dt_ns = prev
        .map(|p| at_ns.saturating_sub(p.at_ns))
        .filter(|d| *d > 0);
    let rate = |now: u64, before: Option<u64>| -> Option<u64> {
        let (dt, before) = (dt_ns?, before?);
        let d = now.checked_sub(before)?;
        Some((d as u128 * 1_000_000_000 / dt as u128) as u64)
    };
    let cpu = match (cpu_ns, prev.and_then(|p| p.cpu_ns), dt_ns) {
        (Some(now), Some(before), Some(dt)) if now >= before => Some(crate::collect::round1(
            ((now - before) as f64 * 100.0 / dt as f64) as f32,
        )),
        _ => None,
    };
    let io = |cur: Option<(u64, u64)>, before: Option<(u64, u64)>| {
        cur.map(|(i, o)| Io {
            in_per_s: rate(i, before.map(|b| b.0)),
            out_per_s: rate(o, before.map(|b| b.1)),
            in_total: i,
            out_total: o,
        })
    };
    let figures = (
        cpu,
        memory,
        io(net, prev.and_then(|p| p.net)),
        io(block, prev.and_then(|p| p.block)),
        v.pointer("/pids_stats/current").and_then(Value::as_u64),
    );
    (
        Counters {
            at_ns,
            cpu_ns,
            net,
            block,
        },
        figures,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_log_access_parses_and_decides() {
        assert_eq!(LogAccess::parse("all"), Ok(LogAccess::All));
        assert_eq!(
            LogAccess::parse("web, db,web"),
            Ok(LogAccess::Named(vec!["db".into(), "web".into()]))
        );
        assert!(LogAccess::parse("").is_err());
        assert!(LogAccess::parse("a/b").unwrap_err().contains("'a/b'"));
        assert!(LogAccess::parse("-x").is_err());
        let many = (0..33)
            .map(|i| format!("c{i}"))
            .collect::<Vec<_>>()
            .join(",");
        assert!(LogAccess::parse(&many).unwrap_err().contains("at most 32"));
        let known: Vec<String> = (0..40).map(|i| format!("c{i:02}")).collect();
        assert!(LogAccess::All.allows("c31", &known));
        assert!(!LogAccess::All.allows("c32", &known), "beyond the cap");
        assert!(!LogAccess::Off.allows("c01", &known));
        assert!(LogAccess::parse("db").unwrap().allows("db", &[]));
    }

    #[test]
    fn rates_come_from_the_previous_reading() {
        let at = |s: u64, cpu: u64, rx: u64, read: u64| {
            serde_json::json!({
                "read": format!("2026-12-03T17:32:{s:02}Z"),
                "cpu_stats": {"cpu_usage": {"total_usage": cpu}},
                "memory_stats": {"usage": 1000, "limit": 4000, "stats": {"inactive_file": 200}},
                "networks": {"eth0": {"rx_bytes": rx, "tx_bytes": 10}, "eth1": {"rx_bytes": 1, "tx_bytes": 0}},
                "blkio_stats": {"io_service_bytes_recursive": [
                    {"op": "Read", "value": read}, {"op": "Write", "value": 7}, {"op": "Total", "value": 99}]},
                "pids_stats": {"current": 3}
            })
        };
        let epoch = Instant::now();
        let (c1, f1) = figures(&at(10, 1_000_000_000, 100, 0), None, epoch);
        assert_eq!(f1.0, None, "no CPU rate from one reading");
        assert_eq!(
            f1.1,
            Some(Memory {
                used: 800,
                limit: 4000
            })
        );
        assert_eq!(f1.2.as_ref().unwrap().in_total, 101);
        assert_eq!(f1.2.as_ref().unwrap().in_per_s, None);
        assert_eq!(f1.4, Some(3));
        // Two seconds later: half a core, 1000 B/s received, 512 B/s read.
        let (c2, f2) = figures(&at(12, 2_000_000_000, 2100, 1024), Some(&c1), epoch);
        assert_eq!(f2.0, Some(50.0));
        assert_eq!(f2.2.as_ref().unwrap().in_per_s, Some(1000));
        assert_eq!(f2.2.as_ref().unwrap().out_per_s, Some(0));
        let b = f2.3.unwrap();
        assert_eq!((b.in_per_s, b.out_total), (Some(512), 7));
        // A restarted container's counters start again: no rate rather than a wrong one.
        let (_, f3) = figures(&at(14, 5_000, 5, 0), Some(&c2), epoch);
        assert_eq!((f3.0, f3.2.unwrap().in_per_s), (None, None));
    }

    #[test]
    fn the_list_gives_names_states_and_docker_health() {
        let c = listed(&serde_json::json!({
            "Id": "73cf6779b5b3f9e4bbddd573", "Names": ["/web"], "Image": "nginx",
            "State": "running", "Status": "Up 2 minutes (health: starting)"
        }));
        assert_eq!((c.id.as_str(), c.name.as_str()), ("73cf6779b5b3", "web"));
        assert_eq!(c.health.as_deref(), Some("starting"));
        let odd = listed(&serde_json::json!({"Names": null, "State": 5}));
        assert_eq!((odd.name.as_str(), odd.state.as_str()), ("", ""));
    }
}
