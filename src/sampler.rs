//! The sampler: one `std::thread` that measures the host every second and caches the result.
//!
//! Nothing on the executor ever measures: HTTP handlers and hubs read the cached sample. The thread
//! keeps a RAM ring of `--history` samples, each already serialized, records every sample into
//! the tiered history (`history`), and hands every new sample to the `system` hub's producer while
//! that hub exists.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::alerts::{self, Alerts};
use crate::collect::own::{Own, OwnMeter};
use crate::collect::{Collector, Details, SystemData};
use crate::events::{self, Events};
use crate::history::{self, History};
use crate::lock::lock;
use crate::protocol::unix_ms;
use crate::snapshot::{self, Snapshot, SnapshotRef};

/// How often the host is sampled.
pub const PERIOD: Duration = Duration::from_secs(1);
/// Delay before the first sample (sysinfo needs 200 ms between CPU readings).
const FIRST_SAMPLE: Duration = Duration::from_millis(300);
/// How often the runtime snapshot (tmpfs) is written, besides at stop.
pub const SNAPSHOT_EVERY: Duration = Duration::from_secs(300);
/// How soon after an alert changed the runtime snapshot is written, at most.
pub const ALERT_SAVE_EVERY: Duration = Duration::from_secs(10);

/// The alert rules and where their changes go.
#[derive(Clone, Debug)]
pub struct AlertSetup {
    /// The rules in force.
    pub rules: Vec<alerts::Rule>,
    /// A firing alert resolves after its condition has been false this long at least
    /// (`alerts::MIN_RESOLVE` but in tests).
    pub min_resolve: Duration,
    /// The notification targets' queues, if any.
    pub outbox: Option<crate::deliver::Outbox>,
}

/// Where the history is kept across restarts.
#[derive(Clone, Debug, Default)]
pub struct Keep {
    /// The runtime directory (tmpfs): written every `SNAPSHOT_EVERY` and at stop.
    pub runtime: Option<PathBuf>,
    /// `--state-dir`: written every `--state-interval` and at stop.
    pub state: Option<(PathBuf, Duration)>,
}

/// Nobody watching: details (temperatures, Pi flags, network, disks) every this many samples,
/// for the history.
pub const DETAILS_UNWATCHED_EVERY: u64 = 10;
/// How long one HTTP read keeps details (temperatures, network, disks) sampled.
pub const DETAILS_AFTER_READ: Duration = Duration::from_secs(60);
/// How long an HTTP reader waits for details the sampler thread reads for it on demand.
pub const DETAILS_WAIT: Duration = Duration::from_secs(2);

/// One serialized sample of the host.
#[derive(Debug)]
pub struct Sample {
    /// Rises by one per sample over the daemon's life; the `system` topic's `seq`.
    pub seq: u64,
    /// Unix time of the measurement, in milliseconds.
    pub ts: u64,
    /// The `data` object of the `system` topic, as JSON.
    pub data: Box<str>,
}

/// State shared between the sampler thread and its readers.
struct Shared {
    /// The last `capacity` samples, oldest first; the newest is what `/api/system` answers.
    ring: Mutex<VecDeque<Arc<Sample>>>,
    /// Ring size: one sample per second of `--history`, at least one.
    capacity: usize,
    /// The `system` producer's inbox while that hub exists; `None` (or closed) when nobody listens.
    listener: Mutex<Option<async_channel::Sender<Arc<Sample>>>>,
    /// The newest sample as data, for `/metrics`.
    latest_data: Mutex<Option<Arc<SystemData>>>,
    /// The daemon's own memory and CPU, for the `server` topic and `/metrics`.
    own: Mutex<Own>,
    /// HTTP readers (`/api/system`, `/metrics`) want details until then.
    details_until: Mutex<Option<Instant>>,
    /// A reader asked for details now and the thread has not answered yet (asks coalesce).
    details_asked: AtomicBool,
    /// Notified when the newest sample has gained its details on demand.
    details_ready: event_listener::Event,
    /// What the host is, as JSON; read once at start.
    host: Box<str>,
    /// Every sample's series in tiers (1 s to 5 min).
    history: Mutex<History>,
    /// The newest sample's `seq`.
    newest_seq: std::sync::atomic::AtomicU64,
    /// Flag changes, reboots, starts and stops, OOM kills.
    events: Mutex<Events>,
    /// The host name snapshots are written for.
    hostname: String,
    /// This boot's id, read once at start (it does not change while the daemon runs).
    boot_id: String,
    /// Whether the previous run stopped cleanly (`None`: no snapshot of it).
    previous_clean_stop: Option<bool>,
    /// Every alert rule's state, stepped with each sample.
    alerts: Mutex<Alerts>,
    /// Failed systemd units as last counted, and when.
    units_failed: Mutex<(crate::services::Count, Option<Instant>)>,
}

/// Handle to the sampler thread; dropping it stops and joins the thread.
pub struct Sampler {
    /// What the thread writes and readers read.
    shared: Arc<Shared>,
    /// Sending on it asks the thread for details now; dropping it wakes the thread and stops it.
    wake: Option<mpsc::Sender<()>>,
    /// Joined on drop so no thread outlives its daemon.
    thread: Option<JoinHandle<()>>,
}

impl Shared {
    /// Whether the `system` producer is listening (its hub exists).
    fn watched(&self) -> bool {
        lock(&self.listener)
            .as_ref()
            .is_some_and(|tx| !tx.is_closed())
    }
}

impl Sampler {
    /// Starts the thread reading sysfs under `sys_root`; the first sample is ready 300 ms later.
    /// `history_days` is how many days the 5 min tier keeps; the alert rules are evaluated on
    /// every sample.
    pub fn start(
        history: Duration,
        history_days: u32,
        sys_root: PathBuf,
        keep: Keep,
        net_filter: crate::collect::net::Filter,
        setup: AlertSetup,
    ) -> std::io::Result<Sampler> {
        let capacity = (history.as_secs() as usize).max(1);
        let capacities = history::capacities(history, history_days);
        // Created here so a host without a readable /proc fails at start, not silently later.
        let mut collector = Collector::new(sys_root, net_filter)?;
        let described = collector.host();
        let hostname = described.hostname.clone();
        let host = serde_json::to_string(&described).expect("plain strings serialize");
        let now = unix_ms();
        let boot = events::boot_id();
        let (tiers, mut ring, first_seq, previous_clean_stop, previous_boot, firing) =
            match restore(&keep, &hostname, capacities) {
                Some(s) => {
                    let ring = s.events_ring();
                    let clean = Some(s.clean_stop);
                    (s.history, ring, s.seq, clean, Some(s.boot_id), s.firing)
                }
                None => (
                    History::new(capacities),
                    Events::default(),
                    0,
                    None,
                    None,
                    Vec::new(),
                ),
            };
        // A reboot: a boot other than the snapshot's, or, with no snapshot, the host up for less
        // than 10 minutes (a restart within the same boot is not one, however early).
        let uptime_ms = sysinfo::System::uptime()
            .ok()
            .map(|u| u.saturating_mul(1000));
        let rebooted = match &previous_boot {
            Some(b) => *b != boot && !boot.is_empty(),
            None => uptime_ms.is_some_and(|u| u < 600_000),
        };
        if let Some(uptime_ms) = uptime_ms.filter(|_| rebooted) {
            let text = format!(
                "the host booted {} s before the daemon started",
                uptime_ms / 1000
            );
            ring.push(now.saturating_sub(uptime_ms), "reboot", "once", &text);
        }
        let text = match previous_clean_stop {
            None => "started (no history kept from before)",
            Some(true) => "started; history kept from the previous run, which stopped cleanly",
            Some(false) => {
                "started; the previous run did not stop cleanly (a crash, a kill or the watchdog)"
            }
        };
        ring.push(now, "daemon_start", "once", text);
        // `daemon_restart`: only after a run that did not stop cleanly (a crash, the watchdog);
        // an upgrade or `systemctl restart` stops cleanly first.
        let unclean = (previous_clean_stop == Some(false)).then_some(now);
        let mut alerts = Alerts::new(setup.rules, unclean, setup.min_resolve);
        // Firing (and notified) before the restart: not notified again.
        alerts.restore(&firing);
        let alerts = Mutex::new(alerts);
        let shared = Arc::new(Shared {
            ring: Mutex::new(VecDeque::with_capacity(capacity)),
            capacity,
            listener: Mutex::new(None),
            latest_data: Mutex::new(None),
            own: Mutex::new(Own::default()),
            details_until: Mutex::new(None),
            details_asked: AtomicBool::new(false),
            details_ready: event_listener::Event::new(),
            host: host.into_boxed_str(),
            history: Mutex::new(tiers),
            newest_seq: std::sync::atomic::AtomicU64::new(first_seq),
            events: Mutex::new(ring),
            hostname,
            boot_id: boot,
            previous_clean_stop,
            alerts,
            units_failed: Mutex::new((crate::services::Count::NotRead, None)),
        });
        let (wake, woken) = mpsc::channel();
        let thread = std::thread::Builder::new().name("sampler".into()).spawn({
            let shared = shared.clone();
            let outbox = setup.outbox;
            move || {
                run(
                    collector,
                    &shared,
                    &woken,
                    first_seq,
                    &keep,
                    outbox.as_ref(),
                )
            }
        })?;
        Ok(Sampler {
            shared,
            wake: Some(wake),
            thread: Some(thread),
        })
    }

    /// The newest sample, if one has been taken yet. Never blocks on measurement.
    pub fn latest(&self) -> Option<Arc<Sample>> {
        lock(&self.shared.ring).back().cloned()
    }

    /// How many samples the ring keeps (`--history` in seconds, at least one).
    pub fn capacity(&self) -> usize {
        self.shared.capacity
    }

    /// The kept samples, oldest first.
    pub fn history(&self) -> Vec<Arc<Sample>> {
        lock(&self.shared.ring).iter().cloned().collect()
    }

    /// Registers the `system` producer's inbox: every new sample goes there until it is closed.
    pub fn listen(&self) -> async_channel::Receiver<Arc<Sample>> {
        // One slot: a producer that fell behind gets the newest sample, not a backlog.
        let (tx, rx) = async_channel::bounded(1);
        *lock(&self.shared.listener) = Some(tx);
        rx
    }

    /// The newest sample as data.
    pub fn latest_data(&self) -> Option<Arc<SystemData>> {
        lock(&self.shared.latest_data).clone()
    }

    /// Failed systemd units as last counted (the `units_failed` alert metric, `/metrics`).
    pub fn units_failed(&self) -> crate::services::Count {
        lock(&self.shared.units_failed).0
    }

    /// How long ago the failed units were last counted; `None` if never.
    pub fn units_failed_age(&self) -> Option<Duration> {
        lock(&self.shared.units_failed).1.map(|t| t.elapsed())
    }

    /// Records a count of failed units (the 30 s count, or a `services` topic reading).
    pub fn set_units_failed(&self, c: crate::services::Count) {
        *lock(&self.shared.units_failed) = (c, Some(Instant::now()));
    }

    /// The daemon's own memory and CPU at the last tick.
    pub fn own(&self) -> Own {
        lock(&self.shared.own).clone()
    }

    /// What the host is, as a JSON object.
    pub fn host_json(&self) -> &str {
        &self.shared.host
    }

    /// Asks for details (temperatures, network, disks) for the next `DETAILS_AFTER_READ`: an HTTP
    /// reader is looking.
    pub fn want_details(&self) {
        *lock(&self.shared.details_until) = Some(Instant::now() + DETAILS_AFTER_READ);
    }

    /// The newest sample, complete, for an HTTP reader (`/api/system`, `/metrics`): if it lacks
    /// details (nobody watched lately), the sampler thread reads them now and this waits for
    /// them, at most `DETAILS_WAIT`. Nothing is measured on the caller's thread. Like any HTTP
    /// read it keeps details sampled for the next `DETAILS_AFTER_READ`; after that, until the next
    /// read, none are.
    pub async fn latest_complete(&self) -> Option<(Arc<Sample>, Arc<SystemData>)> {
        self.want_details();
        let current = || Some((self.latest()?, self.latest_data()?));
        let complete = |c: &Option<(Arc<Sample>, Arc<SystemData>)>| {
            c.as_ref().is_some_and(|(_, d)| d.has_details())
        };
        // Listening before looking, so a completion in between is not missed.
        let ready = self.shared.details_ready.listen();
        let now = current();
        if now.is_none() || complete(&now) {
            return now;
        }
        if !self.shared.details_asked.swap(true, Ordering::SeqCst)
            && let Some(wake) = &self.wake
        {
            // The thread is gone only when the daemon is: then the wait below just times out.
            let _ = wake.send(());
        }
        let _ = smol::future::or(
            async {
                ready.await;
            },
            async {
                smol::Timer::after(DETAILS_WAIT).await;
            },
        )
        .await;
        current()
    }

    /// The history answer for `range` (`10m 1h 6h 24h 7d`) in pieces (whole for HTTP, in
    /// parts for WebSocket), or `None` for an unknown range. The history builds each range's
    /// closed points at most once per tier step and shares them; call this off the executor all
    /// the same, for the step that builds them.
    pub fn history_answer(&self, range: &str) -> Option<history::Pieces> {
        lock(&self.shared.history).pieces(range)
    }

    /// `{"events":[…]}`, oldest first.
    pub fn events_json(&self) -> String {
        lock(&self.shared.events).to_json()
    }

    /// Whether the previous run stopped cleanly (`None`: no snapshot of it was found).
    pub fn previous_clean_stop(&self) -> Option<bool> {
        self.shared.previous_clean_stop
    }

    /// `{"alerts":[…],"resolved":[…]}`: every rule's state (`GET /api/alerts`, topic `alerts`).
    pub fn alerts_json(&self) -> String {
        lock(&self.shared.alerts).to_json().to_string()
    }

    /// Rises whenever an alert's state changes.
    pub fn alerts_version(&self) -> u64 {
        lock(&self.shared.alerts).version()
    }

    /// `(name, severity, target, firing)` of every alert instance, for `/metrics`.
    pub fn alerts_firing(&self) -> Vec<(String, &'static str, String, bool)> {
        lock(&self.shared.alerts).firing()
    }

    /// The newest sample's `seq`.
    pub fn newest_seq(&self) -> u64 {
        self.shared.newest_seq.load(Ordering::SeqCst)
    }

    /// Whether a producer is listening (the hub exists).
    pub fn has_listener(&self) -> bool {
        self.shared.watched()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        drop(self.wake.take());
        if let Some(t) = self.thread.take() {
            // A panicked sampler has already logged through the panic hook; nothing more to do.
            let _ = t.join();
        }
    }
}

/// The thread body: measure, cache, notify, sleep until the next second or until stopped;
/// woken early, add the details a reader asked for to the newest sample.
fn run(
    mut collector: Collector,
    shared: &Shared,
    woken: &mpsc::Receiver<()>,
    first_seq: u64,
    keep: &Keep,
    outbox: Option<&crate::deliver::Outbox>,
) {
    let mut seq = first_seq;
    // An alert changed since the runtime snapshot was written (saved within `ALERT_SAVE_EVERY`).
    let mut alerts_unsaved = false;
    let mut saved_alerts: Option<Instant> = None;
    let started = Instant::now();
    let mut saved_runtime = started;
    let mut saved_state = started;
    let mut trim = crate::trim::Policy::default();
    let mut own = OwnMeter::default();
    // CPU usage needs two readings at least 200 ms apart; the first sample comes soon after start.
    let mut next = Instant::now() + FIRST_SAMPLE;
    loop {
        // Sleep until the next tick; a reader asking for details or a dropped Sampler wakes us.
        match woken.recv_timeout(next.saturating_duration_since(Instant::now())) {
            Ok(()) => {
                complete_newest(&mut collector, shared);
                continue;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                // The daemon stops: the last snapshot, marked clean.
                lock(&shared.events).push(unix_ms(), "daemon_stop", "once", "stopped");
                let state = keep.state.as_ref().map(|(d, _)| d.as_path());
                save(shared, &[keep.runtime.as_deref(), state], seq, true);
                return;
            }
        }
        next += PERIOD;
        let now = Instant::now();
        if next < now {
            // We overslept (suspended host, stopped process): restart the cadence instead of bursting.
            next = now + PERIOD;
        }
        let watched = shared.watched();
        let asked = lock(&shared.details_until).is_some_and(|until| now < until);
        seq += 1;
        let details = if watched || asked {
            Details::All
        } else if seq % DETAILS_UNWATCHED_EVERY == 1 {
            Details::ForHistory
        } else {
            Details::None
        };
        let data = Arc::new(collector.sample(details));
        let ts = unix_ms();
        lock(&shared.history).record(ts, &history::series_of(&data));
        shared.newest_seq.store(seq, Ordering::SeqCst);
        // Read every second: one small procfs file, and `oom_kills` alerts count from it.
        let oom_total = events::read_oom_kills();
        {
            let mut ev = lock(&shared.events);
            // Present only in samples that read details.
            if let Some(pi) = &data.pi {
                ev.pi_flags(ts, pi);
            }
            if let Some(n) = oom_total {
                ev.oom_kills(ts, n);
            }
        }
        let units_failed = lock(&shared.units_failed).0;
        let cx = alerts::Context {
            ts,
            oom_total,
            units_failed,
        };
        alerts_unsaved |= step_alerts(shared, &data, cx, outbox);
        // The tmpfs snapshot also when an alert changed (at most every `ALERT_SAVE_EVERY`), so a
        // crash right after a notification does not send it again after the restart.
        let alert_save = alerts_unsaved
            && saved_alerts.is_none_or(|t| now.duration_since(t) >= ALERT_SAVE_EVERY);
        if alert_save || now.duration_since(saved_runtime) >= SNAPSHOT_EVERY {
            saved_runtime = now;
            saved_alerts = Some(now);
            alerts_unsaved = false;
            save(shared, &[keep.runtime.as_deref()], seq, false);
        }
        if let Some((dir, every)) = &keep.state
            && now.duration_since(saved_state) >= *every
        {
            saved_state = now;
            save(shared, &[Some(dir)], seq, false);
        }
        let sample = Arc::new(Sample {
            seq,
            ts,
            data: serde_json::to_string(&*data)
                .expect("plain data always serializes")
                .into_boxed_str(),
        });
        *lock(&shared.latest_data) = Some(data);
        if let Some(o) = own.read() {
            *lock(&shared.own) = o;
        }
        {
            let mut ring = lock(&shared.ring);
            if ring.len() == shared.capacity {
                ring.pop_front();
            }
            ring.push_back(sample.clone());
        }
        {
            let mut listener = lock(&shared.listener);
            if let Some(tx) = listener.as_ref() {
                // Never wait for the producer: keep only the newest sample in its one-slot inbox.
                if tx.force_send(sample).is_err() {
                    *listener = None;
                }
            }
        }
        // Here, off the executor: return memory freed by closed connections once churn settles.
        trim.tick_and_trim();
    }
}

/// Evaluates the alert rules on a sample; each firing and resolve is logged, becomes an event
/// and goes to the notification targets' queues. Whether anything changed.
fn step_alerts(
    shared: &Shared,
    data: &SystemData,
    cx: alerts::Context,
    outbox: Option<&crate::deliver::Outbox>,
) -> bool {
    let changes = lock(&shared.alerts).step(data, &cx);
    if changes.is_empty() {
        return false;
    }
    let mut ev = lock(&shared.events);
    for c in &changes {
        let text = c.text();
        if c.state == "firing" {
            log::warn!("{text}");
        } else {
            log::info!("{text}");
        }
        let state = if c.state == "firing" { "on" } else { "off" };
        ev.push(cx.ts, "alert", state, &text);
        if let Some(o) = outbox {
            o.post(c);
        }
    }
    true
}

/// The newest snapshot that decodes among the runtime and state directories; a file that does
/// not is a warning and is left alone (the next save replaces it).
fn restore(keep: &Keep, hostname: &str, capacities: [usize; 4]) -> Option<Snapshot> {
    let dirs = [
        keep.runtime.as_deref(),
        keep.state.as_ref().map(|(d, _)| d.as_path()),
    ];
    let mut best: Option<Snapshot> = None;
    for dir in dirs.into_iter().flatten() {
        let path = dir.join(snapshot::FILE);
        match snapshot::read(dir).and_then(|b| {
            b.map(|b| Snapshot::decode(&b, hostname, capacities))
                .transpose()
        }) {
            Ok(None) => {}
            Ok(Some(s)) => {
                if best.as_ref().is_none_or(|b| s.saved_ms > b.saved_ms) {
                    best = Some(s);
                }
            }
            Err(why) => log::warn!(
                "history: not using {}: {why}; starting from what else is kept",
                path.display()
            ),
        }
    }
    if let Some(s) = &best {
        log::info!(
            "history: restored {} series and {} events from a snapshot saved {} s ago",
            s.history.series_count(),
            s.events.len(),
            unix_ms().saturating_sub(s.saved_ms) / 1000
        );
    }
    best
}

/// Writes one snapshot into each directory given (encoded once); a failure is a warning (the
/// daemon serves on).
fn save(shared: &Shared, dirs: &[Option<&std::path::Path>], seq: u64, clean_stop: bool) {
    if dirs.iter().all(Option::is_none) {
        return;
    }
    let bytes = {
        let firing = lock(&shared.alerts).firing_now();
        let history = lock(&shared.history);
        let events = lock(&shared.events);
        let snap = SnapshotRef {
            host: &shared.hostname,
            boot_id: shared.boot_id.clone(),
            saved_ms: unix_ms(),
            seq,
            clean_stop,
            history: &history,
            events: &events,
            firing: &firing,
        };
        snap.encode()
    };
    for dir in dirs.iter().flatten() {
        if let Err(e) = snapshot::write(dir, &bytes) {
            log::warn!(
                "history: cannot write {}: {e}",
                dir.join(snapshot::FILE).display()
            );
        }
    }
}

/// Adds details to the newest sample (same `seq` and `ts`: the host as it was, with what an
/// HTTP reader needs), then tells the waiting readers.
fn complete_newest(collector: &mut Collector, shared: &Shared) {
    shared.details_asked.store(false, Ordering::SeqCst);
    let newest = lock(&shared.latest_data).clone();
    if let Some(basic) = newest.filter(|d| !d.has_details()) {
        let mut data = (*basic).clone();
        collector.add_details(&mut data, true);
        let data = Arc::new(data);
        let json = serde_json::to_string(&*data)
            .expect("plain data always serializes")
            .into_boxed_str();
        {
            let mut ring = lock(&shared.ring);
            if let Some(last) = ring.back_mut() {
                *last = Arc::new(Sample {
                    seq: last.seq,
                    ts: last.ts,
                    data: json,
                });
            }
        }
        *lock(&shared.latest_data) = Some(data);
    }
    shared.details_ready.notify(usize::MAX);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_history_and_feeds_the_listener() {
        let s = Sampler::start(
            Duration::from_secs(2),
            7,
            "/sys".into(),
            Keep::default(),
            Default::default(),
            AlertSetup {
                rules: Vec::new(),
                min_resolve: alerts::MIN_RESOLVE,
                outbox: None,
            },
        )
        .unwrap();
        let rx = s.listen();
        assert!(s.has_listener());
        let a = smol::block_on(rx.recv()).unwrap();
        let b = smol::block_on(rx.recv()).unwrap();
        let c = smol::block_on(rx.recv()).unwrap();
        assert_eq!((b.seq, c.seq), (a.seq + 1, a.seq + 2));
        let h = s.history();
        assert!(h.len() <= 2, "ring is bounded by --history");
        assert_eq!(s.latest().unwrap().seq, h.last().unwrap().seq);
        drop(rx);
        assert!(!s.has_listener(), "a closed inbox is no listener");
    }
}
