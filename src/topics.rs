//! The topics edgemon serves and their producers: what a hub runs while it has subscribers, and
//! what a new subscriber receives first (the backfill).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_channel::Receiver;

use crate::collect::procs::Scanner;
use crate::containers::{LOG_PREFIX, LogAccess, MAX_LOG_TOPICS};
use crate::hub::{Catalog, Hub, ProducerFuture};
use crate::lock::lock;
use crate::logs::{ContainerSource, Ring, Source, follow_container, follow_file, follow_journal};
use crate::protocol::{Backfill, data_frame, history_frames, unix_ms};
use crate::sampler::{Sample, Sampler};

/// Topic of the host sample, published at 1 Hz.
pub const SYSTEM: &str = "system";
/// Topic of the top processes, published every `PROCESSES_PERIOD`.
pub const PROCESSES: &str = "processes";
/// Topic of the daemon's own figures, published every `SERVER_PERIOD`.
pub const SERVER: &str = "server";
/// How often the process table is scanned while someone watches.
pub const PROCESSES_PERIOD: Duration = Duration::from_secs(2);
/// How many processes the `processes` topic lists.
pub const TOP_PROCESSES: usize = 15;
/// How often the `server` topic publishes.
pub const SERVER_PERIOD: Duration = Duration::from_secs(2);
/// Topic of the alert rules' states, published when one changes (checked every
/// `ALERTS_CHECK`) and at least every `ALERTS_REFRESH` with fresh values.
pub const ALERTS: &str = "alerts";
/// How often the `alerts` producer looks for a changed state.
pub const ALERTS_CHECK: Duration = Duration::from_secs(1);
/// How often the `alerts` topic publishes when nothing changed (the values move on).
pub const ALERTS_REFRESH: Duration = Duration::from_secs(10);
/// Topic of systemd units (failed ones and `--unit` ones), read every `SERVICES_PERIOD` while
/// watched.
pub const SERVICES: &str = "services";
/// How often the `services` topic asks systemd while someone watches.
pub const SERVICES_PERIOD: Duration = Duration::from_secs(5);
/// Topic of the containers of `--docker-socket`, read every `containers::PERIOD` while watched.
pub const CONTAINERS: &str = "containers";
/// Topic of this board's compact state, published every `SUMMARY_PERIOD` while watched (by
/// other boards' fleets).
pub const SUMMARY: &str = "summary";
/// How often the `summary` topic publishes.
pub const SUMMARY_PERIOD: Duration = Duration::from_secs(1);
/// Topic of this board and its `--peer` boards, their states and summaries.
pub const FLEET: &str = "fleet";
/// Topic of padded frames published fast, only for tests and the benchmark (`Config::flood`).
pub const FLOOD: &str = "test/flood";

/// The daemon's view of itself, published by the `server` topic. Declared here and implemented by
/// the shared state above this module, so topics never import it.
pub trait DaemonView: Send + Sync + 'static {
    /// The `server` topic's `data`: connections, hubs, the daemon's own memory and CPU.
    fn daemon_view(&self) -> serde_json::Value;
}

/// The daemon's topic catalog.
pub struct Topics {
    /// Source of the `system` topic.
    sampler: Arc<Sampler>,
    /// Period and payload size of `test/flood`, only in tests.
    flood: Option<(Duration, usize)>,
    /// Producers running now; a producer that outlived its hub would show here.
    running: Arc<AtomicUsize>,
    /// Process-table scans since start: proof that scanning stops when nobody watches.
    scans: Arc<AtomicU64>,
    /// The daemon, for the `server` topic; weak because the daemon's state owns this catalog.
    daemon: Weak<dyn DaemonView>,
    /// The last `system` history frames built, reused until the next sample.
    history: Mutex<Option<Backfill>>,
    /// Notified when a producer stops (stats watchers, tests).
    changed: Arc<event_listener::Event>,
    /// Configured log topics (`logs/NAME`) and where their lines come from.
    logs: BTreeMap<String, Source>,
    /// The rings of live log hubs, for backfill; an entry lives exactly as long as its producer.
    rings: Arc<Mutex<HashMap<String, Arc<Ring>>>>,
    /// `--unit` names for the `services` topic.
    units: Arc<[String]>,
    /// The container engine, if `--docker-socket` was given.
    engine: Option<Arc<crate::engine::Engine>>,
    /// `--container-logs`.
    container_logs: LogAccess,
    /// The container names of the last `containers` reading (sorted): with
    /// `--container-logs all`, the log topics listed.
    known: Arc<Mutex<Vec<String>>>,
    /// This board's fleet address.
    me: String,
    /// `--peer` boards.
    peers: Arc<[String]>,
    /// How peers are reached.
    peer_settings: Arc<crate::fleet::Settings>,
    /// The mDNS responder, to browse for boards while the fleet is watched.
    mdns: Option<Arc<crate::mdns::Mdns>>,
}

/// What the catalog reaches beyond this host: the container engine and whose logs are topics,
/// and the peer boards of the fleet.
pub struct Remote {
    /// `--docker-socket`'s engine.
    pub engine: Option<Arc<crate::engine::Engine>>,
    /// `--container-logs`.
    pub logs: LogAccess,
    /// This board's address in the fleet (its listen address).
    pub me: String,
    /// `--peer` boards.
    pub peers: Vec<String>,
    /// How peers are reached (token, ping, pong).
    pub peer_settings: Arc<crate::fleet::Settings>,
    /// The mDNS responder (none with `--no-mdns` or on loopback).
    pub mdns: Option<Arc<crate::mdns::Mdns>>,
}

impl Topics {
    /// The catalog over the given sources; `daemon` feeds the `server` topic.
    pub fn new(
        sampler: Arc<Sampler>,
        flood: Option<(Duration, usize)>,
        logs: Vec<(String, Source)>,
        changed: Arc<event_listener::Event>,
        daemon: Weak<dyn DaemonView>,
        units: Vec<String>,
        containers: Remote,
    ) -> Topics {
        let mut logs: BTreeMap<String, Source> = logs
            .into_iter()
            .map(|(name, src)| (format!("logs/{name}"), src))
            .collect();
        // Named containers' log topics exist from the start, like files and journals.
        if let (Some(engine), LogAccess::Named(names)) = (&containers.engine, &containers.logs) {
            for name in names {
                let src = ContainerSource {
                    name: name.clone(),
                    engine: engine.clone(),
                };
                logs.insert(format!("{LOG_PREFIX}{name}"), Source::Container(src));
            }
        }
        Topics {
            units: units.into(),
            engine: containers.engine,
            container_logs: containers.logs,
            known: Arc::new(Mutex::new(Vec::new())),
            me: containers.me,
            peers: containers.peers.into(),
            peer_settings: containers.peer_settings,
            mdns: containers.mdns,
            changed,
            logs,
            rings: Arc::new(Mutex::new(HashMap::new())),
            sampler,
            flood,
            running: Arc::new(AtomicUsize::new(0)),
            scans: Arc::new(AtomicU64::new(0)),
            daemon,
            history: Mutex::new(None),
        }
    }

    /// The `system` history frames, built once per sample however many subscribe meanwhile.
    fn cached_system_history(&self) -> Backfill {
        let newest = self.sampler.latest().map_or(0, |s| s.seq);
        let mut cache = lock(&self.history);
        if cache.as_ref().is_none_or(|c| c.covers_seq != newest) {
            *cache = Some(system_history(
                &self.sampler.history(),
                self.sampler.host_json(),
                self.sampler.capacity(),
            ));
        }
        cache.clone().expect("filled above")
    }

    /// Process-table scans since start.
    pub fn scans(&self) -> u64 {
        self.scans.load(Ordering::Relaxed)
    }

    /// Every topic that can be subscribed now.
    pub fn names(&self) -> Vec<String> {
        let mut v = vec![
            SYSTEM.to_string(),
            PROCESSES.to_string(),
            SERVER.to_string(),
            ALERTS.to_string(),
            SERVICES.to_string(),
            CONTAINERS.to_string(),
            SUMMARY.to_string(),
            FLEET.to_string(),
        ];
        v.extend(self.logs.keys().cloned());
        if self.container_logs == LogAccess::All {
            let known = lock(&self.known);
            v.extend(
                known
                    .iter()
                    .take(MAX_LOG_TOPICS)
                    .map(|n| format!("{LOG_PREFIX}{n}")),
            );
        }
        if self.flood.is_some() {
            v.push(FLOOD.to_string());
        }
        v
    }

    /// Whether `topic` can be subscribed.
    pub fn exists(&self, topic: &str) -> bool {
        // SECURITY: exact matches against configured names only; a topic never becomes a path.
        matches!(
            topic,
            SYSTEM | PROCESSES | SERVER | ALERTS | SERVICES | CONTAINERS | SUMMARY | FLEET
        ) || self.log_source(topic).is_some()
            || (topic == FLOOD && self.flood.is_some())
    }

    /// Where log `topic`'s lines come from: a configured log, or with `--container-logs all`
    /// a container's (a live one, or any valid name while fewer than `MAX_LOG_TOPICS`
    /// container log hubs run).
    fn log_source(&self, topic: &str) -> Option<Source> {
        if let Some(src) = self.logs.get(topic) {
            return Some(src.clone());
        }
        let name = topic.strip_prefix(LOG_PREFIX)?;
        let engine = self.engine.as_ref()?;
        if self.container_logs != LogAccess::All || !crate::engine::valid_name(name) {
            return None;
        }
        let rings = lock(&self.rings);
        let live = rings.keys().filter(|t| t.starts_with(LOG_PREFIX)).count();
        (rings.contains_key(topic) || live < MAX_LOG_TOPICS).then(|| {
            Source::Container(ContainerSource {
                name: name.to_string(),
                engine: engine.clone(),
            })
        })
    }

    /// Producers running now.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }

    /// Whether `topic` is a log topic (its subscribers get markers for missed lines).
    pub fn is_log(&self, topic: &str) -> bool {
        self.logs.contains_key(topic) || topic.starts_with(LOG_PREFIX)
    }

    /// What a subscriber of log `topic` that had the line at `after` receives first: the lines
    /// after it, or a `missed` frame and the backlog (`logs::Ring::resume`).
    pub async fn resume(&self, topic: &str, after: &crate::logs::Pos, may_read: bool) -> Backfill {
        let ring = lock(&self.rings).get(topic).cloned();
        match (ring, self.log_source(topic)) {
            (Some(ring), Some(source)) => ring.resume(after, &source, may_read).await,
            _ => Backfill::default(),
        }
    }

    /// What a new subscriber of `topic` receives first. For a log topic this waits (bounded) for
    /// the producer's first read.
    pub async fn backfill(&self, topic: &str) -> Backfill {
        match topic {
            SYSTEM => self.cached_system_history(),
            // The state now, as one `data` frame; the producer's frames that follow are newer.
            ALERTS => {
                let seq = self.sampler.newest_seq();
                let json = self.sampler.alerts_json();
                Backfill {
                    frames: vec![data_frame(ALERTS, seq, unix_ms(), &json)],
                    covers_seq: seq,
                }
            }
            t if self.is_log(t) => {
                let ring = lock(&self.rings).get(t).cloned();
                match ring {
                    Some(ring) => ring.backfill().await,
                    None => Backfill::default(),
                }
            }
            _ => Backfill::default(),
        }
    }
}

impl Catalog for Topics {
    fn producer(&self, topic: &str, hub: Weak<Hub>) -> Option<ProducerFuture> {
        let running = Running::new(&self.running, &self.changed);
        match topic {
            // Registered now, not on the producer's first poll, so no sample falls between the
            // subscriber's history and its first live frame.
            SYSTEM => Some(Box::pin(system(
                SystemFeed {
                    samples: self.sampler.listen(),
                    _running: running,
                },
                hub,
            ))),
            PROCESSES => Some(Box::pin(processes(self.scans.clone(), hub, running))),
            SERVER => Some(Box::pin(daemon_figures(self.daemon.clone(), hub, running))),
            ALERTS => Some(Box::pin(alert_states(self.sampler.clone(), hub, running))),
            SERVICES => Some(Box::pin(services(
                ServicesFeed {
                    sampler: self.sampler.clone(),
                    units: self.units.clone(),
                    _running: running,
                },
                hub,
            ))),
            SUMMARY => Some(Box::pin(summary(self.sampler.clone(), hub, running))),
            FLEET => {
                let sampler = self.sampler.clone();
                let (me, peers, settings) = (
                    self.me.clone(),
                    self.peers.clone(),
                    self.peer_settings.clone(),
                );
                let browse = self.mdns.as_ref().map(|m| m.browse());
                Some(Box::pin(async move {
                    let _running = running;
                    let own = || own_summary(&sampler);
                    crate::fleet::watch(me, peers, settings, browse, own, |json| {
                        let Some(hub) = hub.upgrade() else {
                            return false;
                        };
                        let seq = hub.next_seq();
                        hub.publish(seq, data_frame(FLEET, seq, unix_ms(), &json));
                        true
                    })
                    .await;
                }))
            }
            CONTAINERS => Some(Box::pin(containers(
                ContainersFeed {
                    watcher: self.engine.as_ref().map(|e| {
                        crate::containers::Watcher::new(e.clone(), self.container_logs.clone())
                    }),
                    known: self.known.clone(),
                    _running: running,
                },
                hub,
            ))),
            t if self.is_log(t) => {
                let source = self.log_source(t)?;
                let (ring, ready) = Ring::new(t);
                let guard = RingEntry::insert(&self.rings, t, &ring);
                let fut: ProducerFuture = match source {
                    Source::File(file) => Box::pin(async move {
                        let _held = (guard, running);
                        follow_file(file, ring, ready, hub).await;
                    }),
                    Source::Journal { unit, dir } => Box::pin(async move {
                        let _held = (guard, running);
                        follow_journal(unit, dir, ring, ready, hub).await;
                    }),
                    Source::Container(src) => Box::pin(async move {
                        let _held = (guard, running);
                        follow_container(src, ring, ready, hub).await;
                    }),
                };
                Some(fut)
            }
            FLOOD => {
                let (period, size) = self.flood?;
                Some(Box::pin(flood(period, size, hub, running)))
            }
            _ => None,
        }
    }
}

/// A live log hub's ring in the catalog; removed when the producer holding it is dropped.
struct RingEntry {
    rings: Arc<Mutex<HashMap<String, Arc<Ring>>>>,
    topic: String,
    ring: Weak<Ring>,
}

impl RingEntry {
    fn insert(
        rings: &Arc<Mutex<HashMap<String, Arc<Ring>>>>,
        topic: &str,
        ring: &Arc<Ring>,
    ) -> Self {
        lock(rings).insert(topic.to_string(), ring.clone());
        RingEntry {
            rings: rings.clone(),
            topic: topic.to_string(),
            ring: Arc::downgrade(ring),
        }
    }
}

impl Drop for RingEntry {
    fn drop(&mut self) {
        let mut rings = lock(&self.rings);
        // A newer hub of the same topic may have put its own ring here already: leave that one.
        let ours = rings
            .get(&self.topic)
            .is_some_and(|r| std::ptr::eq(Arc::as_ptr(r), self.ring.as_ptr()));
        if ours {
            rings.remove(&self.topic);
        }
    }
}

/// Counts a running producer; the count drops when the producer's future is dropped (cancelled).
struct Running(Arc<AtomicUsize>, Arc<event_listener::Event>);

impl Running {
    fn new(count: &Arc<AtomicUsize>, changed: &Arc<event_listener::Event>) -> Running {
        count.fetch_add(1, Ordering::SeqCst);
        Running(count.clone(), changed.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
        // A cancelled producer is dropped a moment after its hub left the registry: say so too.
        self.1.notify(usize::MAX);
    }
}

/// The `system` producer's inbox and its running guard. Fields drop in this order: the sampler
/// sees its listener gone before the producer count (and its change notification) says so.
struct SystemFeed {
    samples: Receiver<Arc<Sample>>,
    _running: Running,
}

/// Publishes every sample the sampler thread takes while the `system` hub lives.
async fn system(feed: SystemFeed, hub: Weak<Hub>) {
    while let Ok(s) = feed.samples.recv().await {
        let Some(hub) = hub.upgrade() else { return };
        hub.publish(s.seq, data_frame(SYSTEM, s.seq, s.ts, &s.data));
    }
}

/// Scans the process table every `PROCESSES_PERIOD` on a blocking thread and publishes the top.
async fn processes(scans: Arc<AtomicU64>, hub: Weak<Hub>, _running: Running) {
    // The first reading only primes CPU counters; the second, shortly after, is worth sending.
    let Some(scanner) = smol::unblock(Scanner::new).await else {
        log::warn!("processes: cannot read the process table");
        return;
    };
    let mut scanner = Some(scanner);
    let mut wait = Duration::from_millis(500);
    loop {
        smol::Timer::after(wait).await;
        wait = PROCESSES_PERIOD;
        let mut s = scanner
            .take()
            .expect("the scanner comes back from every scan");
        let (s, top) = smol::unblock(move || {
            let top = s.scan(TOP_PROCESSES);
            (s, top)
        })
        .await;
        scanner = Some(s);
        scans.fetch_add(1, Ordering::Relaxed);
        let Some(hub) = hub.upgrade() else { return };
        let data = serde_json::to_string(&top).expect("plain data always serializes");
        let seq = hub.next_seq();
        hub.publish(seq, data_frame(PROCESSES, seq, unix_ms(), &data));
    }
}

/// Publishes the daemon's own figures (the `server` topic) every `SERVER_PERIOD`.
async fn daemon_figures(daemon: Weak<dyn DaemonView>, hub: Weak<Hub>, _running: Running) {
    let mut timer = smol::Timer::interval(SERVER_PERIOD);
    loop {
        {
            let (Some(daemon), Some(hub)) = (daemon.upgrade(), hub.upgrade()) else {
                return;
            };
            let data = daemon.daemon_view().to_string();
            let seq = hub.next_seq();
            hub.publish(seq, data_frame(SERVER, seq, unix_ms(), &data));
        }
        smol::stream::StreamExt::next(&mut timer).await;
    }
}

/// Publishes the alerts' states (the `alerts` topic) when one changes and every
/// `ALERTS_REFRESH` otherwise; a frame's `seq` is the sample it reflects, so a subscriber's
/// backfill and the live frames never go back in time.
async fn alert_states(sampler: Arc<Sampler>, hub: Weak<Hub>, _running: Running) {
    let mut timer = smol::Timer::interval(ALERTS_CHECK);
    // A new subscriber's backfill holds the state now: publish only what follows it.
    let mut last = (sampler.alerts_version(), sampler.newest_seq());
    let mut published = std::time::Instant::now();
    loop {
        smol::stream::StreamExt::next(&mut timer).await;
        let Some(hub) = hub.upgrade() else { return };
        let (version, seq) = (sampler.alerts_version(), sampler.newest_seq());
        let due = version != last.0 || published.elapsed() >= ALERTS_REFRESH;
        if !due || seq <= last.1 {
            continue;
        }
        let data = sampler.alerts_json();
        hub.publish(seq, data_frame(ALERTS, seq, unix_ms(), &data));
        last = (version, seq);
        published = std::time::Instant::now();
    }
}

/// What the `services` producer holds.
struct ServicesFeed {
    sampler: Arc<Sampler>,
    units: Arc<[String]>,
    _running: Running,
}

/// Asks systemd every `SERVICES_PERIOD` while the `services` hub lives and publishes what it
/// said (the failed-unit count also feeds the `units_failed` alert metric).
async fn services(feed: ServicesFeed, hub: Weak<Hub>) {
    loop {
        let reading = crate::services::read(&feed.units).await;
        feed.sampler
            .set_units_failed(crate::services::count_of(&reading));
        {
            let Some(hub) = hub.upgrade() else { return };
            let data = serde_json::to_string(&reading).expect("plain data always serializes");
            let seq = hub.next_seq();
            // The hub keeps it as its last frame: a later subscriber gets it at once.
            hub.publish(seq, data_frame(SERVICES, seq, unix_ms(), &data));
        }
        smol::Timer::after(SERVICES_PERIOD).await;
    }
}

/// This board's summary now (details are asked for: the summary has temperatures and disks).
fn own_summary(sampler: &Sampler) -> Option<crate::fleet::Summary> {
    sampler.want_details();
    let data = sampler.latest_data()?;
    let host: serde_json::Value = serde_json::from_str(sampler.host_json()).ok()?;
    let firing: Vec<&'static str> = sampler
        .alerts_firing()
        .into_iter()
        .filter(|a| a.3)
        .map(|a| a.1)
        .collect();
    let name = host["hostname"].as_str().unwrap_or("");
    Some(crate::fleet::summary::build(name, &data, &firing))
}

/// Publishes this board's summary every `SUMMARY_PERIOD` while the `summary` hub lives.
async fn summary(sampler: Arc<Sampler>, hub: Weak<Hub>, _running: Running) {
    let mut timer = smol::Timer::interval(SUMMARY_PERIOD);
    loop {
        if let Some(s) = own_summary(&sampler) {
            let Some(hub) = hub.upgrade() else { return };
            let data = serde_json::to_string(&s).expect("plain data always serializes");
            let seq = hub.next_seq();
            hub.publish(seq, data_frame(SUMMARY, seq, unix_ms(), &data));
        }
        smol::stream::StreamExt::next(&mut timer).await;
    }
}

/// What the `containers` producer holds: the watcher (none without `--docker-socket`).
struct ContainersFeed {
    watcher: Option<crate::containers::Watcher>,
    known: Arc<Mutex<Vec<String>>>,
    _running: Running,
}

/// Reads the engine every `containers::PERIOD` while the `containers` hub lives; without
/// `--docker-socket`, publishes once that containers are off.
async fn containers(mut feed: ContainersFeed, hub: Weak<Hub>) {
    let Some(watcher) = feed.watcher.as_mut() else {
        if let Some(hub) = hub.upgrade() {
            let r = crate::containers::Reading::unavailable(crate::containers::NO_SOCKET);
            let data = serde_json::to_string(&r).expect("plain data always serializes");
            let seq = hub.next_seq();
            // The hub keeps it as its last frame for every later subscriber.
            hub.publish(seq, data_frame(CONTAINERS, seq, unix_ms(), &data));
        }
        return std::future::pending().await;
    };
    loop {
        let (reading, names) = watcher.read().await;
        *lock(&feed.known) = names;
        {
            let Some(hub) = hub.upgrade() else { return };
            let data = serde_json::to_string(&reading).expect("plain data always serializes");
            let seq = hub.next_seq();
            hub.publish(seq, data_frame(CONTAINERS, seq, unix_ms(), &data));
        }
        smol::Timer::after(crate::containers::PERIOD).await;
    }
}

/// Publishes a frame of about `size` bytes every `period`, its data `{"sent_us":..,"pad":".."}`
/// stamped just before publishing (tests and the benchmark's fan-out latency).
async fn flood(period: Duration, size: usize, hub: Weak<Hub>, _running: Running) {
    let mut timer = smol::Timer::interval(period);
    loop {
        smol::stream::StreamExt::next(&mut timer).await;
        let Some(hub) = hub.upgrade() else { return };
        let seq = hub.next_seq();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let framed = |pad: usize| {
            let data = format!(
                "{{\"sent_us\":{},\"pad\":\"{}\"}}",
                now.as_micros(),
                "x".repeat(pad)
            );
            data_frame(FLOOD, seq, now.as_millis() as u64, &data)
        };
        let bare = framed(0);
        let frame = match size.checked_sub(bare.len()) {
            Some(pad) if pad > 0 => framed(pad),
            _ => bare,
        };
        hub.publish(seq, frame);
    }
}

/// The `system` history: the sampler's ring, with `host` in the first frame.
/// `capacity` (the `--history` length in samples) goes in as `history_seconds`, so a client can
/// size its graphs.
pub fn system_history(samples: &[Arc<Sample>], host: &str, capacity: usize) -> Backfill {
    let items: Vec<(u64, u64, &str)> = samples.iter().map(|s| (s.seq, s.ts, &*s.data)).collect();
    history_frames(
        SYSTEM,
        &format!("\"host\":{host},\"history_seconds\":{capacity},"),
        &items,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::MAX_HISTORY_FRAME;

    fn sample(seq: u64, pad: usize) -> Arc<Sample> {
        Arc::new(Sample {
            seq,
            ts: 1000 + seq,
            data: format!("{{\"p\":\"{}\"}}", "x".repeat(pad)).into_boxed_str(),
        })
    }

    #[test]
    fn history_is_split_into_bounded_frames_in_order() {
        let samples: Vec<_> = (1..=300).map(|i| sample(i, 250)).collect();
        let b = system_history(&samples, "{\"hostname\":\"pi\"}", 300);
        assert!(b.frames.len() > 1);
        assert_eq!(b.covers_seq, 300);
        let mut seqs = Vec::new();
        for (i, f) in b.frames.iter().enumerate() {
            assert!(f.len() <= MAX_HISTORY_FRAME, "frame of {} bytes", f.len());
            let v: serde_json::Value = serde_json::from_str(f).unwrap();
            assert_eq!(v["type"], "history");
            assert_eq!(v["topic"], "system");
            assert_eq!(v["host"]["hostname"].as_str(), (i == 0).then_some("pi"));
            for item in v["data"].as_array().unwrap() {
                seqs.push(item["seq"].as_u64().unwrap());
                assert!(item["ts"].is_u64() && item["data"].is_object());
            }
        }
        assert_eq!(seqs, (1..=300).collect::<Vec<_>>());
    }

    #[test]
    fn empty_history_is_one_empty_frame() {
        let b = system_history(&[], "{}", 300);
        assert_eq!(b.frames.len(), 1);
        assert_eq!(
            &*b.frames[0],
            "{\"type\":\"history\",\"topic\":\"system\",\"host\":{},\"history_seconds\":300,\"data\":[]}"
        );
        assert_eq!(b.covers_seq, 0);
    }

    #[test]
    fn oversized_sample_still_goes_out_alone() {
        let samples = vec![sample(1, 10), sample(2, MAX_HISTORY_FRAME), sample(3, 10)];
        let b = system_history(&samples, "{}", 300);
        assert_eq!(b.frames.len(), 3);
    }
}
