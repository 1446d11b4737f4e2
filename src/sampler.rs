//! The sampler: one `std::thread` that measures the host every second and caches the result.
//!
//! Nothing on the executor ever measures: HTTP handlers and hubs read the cached sample. The thread
//! keeps a RAM ring of `--history` samples, each already serialized, and hands every new sample to the
//! `system` hub's producer while that hub exists.

use std::collections::VecDeque;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use sysinfo::{CpuRefreshKind, MemoryRefreshKind, RefreshKind, System};

/// How often the host is sampled.
pub const PERIOD: Duration = Duration::from_secs(1);
/// Delay before the first sample (sysinfo needs 200 ms between CPU readings).
const FIRST_SAMPLE: Duration = Duration::from_millis(300);

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

/// The `data` of a `system` frame.
#[derive(Debug, Serialize)]
pub struct SystemData {
    /// CPU usage.
    pub cpu: Cpu,
    /// Load averages (`null` where the host does not expose them).
    pub load: Option<Load>,
    /// RAM in bytes.
    pub memory: Memory,
    /// Swap in bytes.
    pub swap: Swap,
    /// Seconds since boot (`null` if unreadable).
    pub uptime: Option<u64>,
}

/// CPU usage in percent.
#[derive(Debug, Serialize)]
pub struct Cpu {
    /// All cores together, 0-100.
    pub total: f32,
    /// Each core, 0-100.
    pub cores: Vec<f32>,
}

/// Load averages.
#[derive(Debug, Serialize)]
pub struct Load {
    /// Over one minute.
    pub one: f64,
    /// Over five minutes.
    pub five: f64,
    /// Over fifteen minutes.
    pub fifteen: f64,
}

/// RAM in bytes.
#[derive(Debug, Serialize)]
pub struct Memory {
    /// Installed.
    pub total: u64,
    /// In use (total minus available).
    pub used: u64,
    /// Available to new programs without swapping.
    pub available: u64,
}

/// Swap in bytes.
#[derive(Debug, Serialize)]
pub struct Swap {
    /// Configured.
    pub total: u64,
    /// In use.
    pub used: u64,
}

/// State shared between the sampler thread and its readers.
struct Shared {
    /// The last `capacity` samples, oldest first; the newest is what `/api/system` answers.
    ring: Mutex<VecDeque<Arc<Sample>>>,
    /// Ring size: one sample per second of `--history`, at least one.
    capacity: usize,
    /// The `system` producer's inbox while that hub exists; `None` (or closed) when nobody listens.
    listener: Mutex<Option<async_channel::Sender<Arc<Sample>>>>,
}

/// Handle to the sampler thread; dropping it stops and joins the thread.
pub struct Sampler {
    /// What the thread writes and readers read.
    shared: Arc<Shared>,
    /// Dropping this wakes the thread from its sleep and stops it.
    stop: Option<mpsc::Sender<()>>,
    /// Joined on drop so no thread outlives its daemon.
    thread: Option<JoinHandle<()>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The data behind these locks stays consistent even if a holder panicked.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Sampler {
    /// Starts the thread; the first sample is ready about one second later.
    pub fn start(history: Duration) -> std::io::Result<Sampler> {
        let capacity = (history.as_secs() as usize).max(1);
        let shared = Arc::new(Shared {
            ring: Mutex::new(VecDeque::with_capacity(capacity)),
            capacity,
            listener: Mutex::new(None),
        });
        // Created here so a host without a readable /proc fails at start, not silently later.
        let sys = System::new_with_specifics(
            RefreshKind::nothing()
                .with_cpu(CpuRefreshKind::nothing().with_usage())
                .with_memory(MemoryRefreshKind::everything()),
        )
        .map_err(|e| std::io::Error::other(format!("cannot read host figures: {e}")))?;
        let (stop, stopped) = mpsc::channel();
        let thread = std::thread::Builder::new().name("sampler".into()).spawn({
            let shared = shared.clone();
            move || run(sys, &shared, &stopped)
        })?;
        Ok(Sampler {
            shared,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The newest sample, if one has been taken yet. Never blocks on measurement.
    pub fn latest(&self) -> Option<Arc<Sample>> {
        lock(&self.shared.ring).back().cloned()
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

    /// Whether a producer is listening (the hub exists).
    pub fn has_listener(&self) -> bool {
        lock(&self.shared.listener)
            .as_ref()
            .is_some_and(|tx| !tx.is_closed())
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            // A panicked sampler has already logged through the panic hook; nothing more to do.
            let _ = t.join();
        }
    }
}

/// The thread body: measure, cache, notify, sleep until the next second or until stopped.
fn run(mut sys: System, shared: &Shared, stopped: &mpsc::Receiver<()>) {
    let mut seq = 0u64;
    let mut trim = crate::trim::Policy::default();
    // CPU usage needs two readings at least 200 ms apart; the first sample comes soon after start.
    let mut next = Instant::now() + FIRST_SAMPLE;
    loop {
        // Sleep until the next tick; a dropped Sampler wakes us at once.
        match stopped.recv_timeout(next.saturating_duration_since(Instant::now())) {
            Err(RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        next += PERIOD;
        let now = Instant::now();
        if next < now {
            // We overslept (suspended host, stopped process): restart the cadence instead of bursting.
            next = now + PERIOD;
        }
        sys.refresh_cpu_usage();
        sys.refresh_memory();
        seq += 1;
        let sample = Arc::new(Sample {
            seq,
            ts: unix_ms(),
            data: serde_json::to_string(&measure(&sys))
                .expect("plain numbers always serialize")
                .into_boxed_str(),
        });
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

/// Reads the refreshed counters into plain data.
fn measure(sys: &System) -> SystemData {
    let load = System::load_average().ok();
    let total = sys.total_memory();
    let available = sys.available_memory();
    SystemData {
        cpu: Cpu {
            total: round1(sys.global_cpu_usage()),
            cores: sys.cpus().iter().map(|c| round1(c.usage())).collect(),
        },
        load: load.map(|l| Load {
            one: l.one,
            five: l.five,
            fifteen: l.fifteen,
        }),
        memory: Memory {
            total,
            used: total.saturating_sub(available),
            available,
        },
        swap: Swap {
            total: sys.total_swap(),
            used: sys.used_swap(),
        },
        uptime: System::uptime().ok(),
    }
}

/// One decimal is all a dashboard shows, and it keeps frames short.
fn round1(x: f32) -> f32 {
    if x.is_finite() {
        (x * 10.0).round() / 10.0
    } else {
        0.0
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_has_the_contract_fields() {
        let mut sys = System::new().unwrap();
        sys.refresh_cpu_usage();
        sys.refresh_memory();
        let v: serde_json::Value = serde_json::to_value(measure(&sys)).unwrap();
        for path in [
            "/cpu/total",
            "/cpu/cores",
            "/load/one",
            "/load/five",
            "/load/fifteen",
            "/memory/total",
            "/memory/used",
            "/memory/available",
            "/swap/total",
            "/swap/used",
            "/uptime",
        ] {
            assert!(v.pointer(path).is_some(), "missing {path} in {v}");
        }
        assert!(v["memory"]["total"].as_u64().unwrap() > 0);
        assert!(!v["cpu"]["cores"].as_array().unwrap().is_empty());
    }

    #[test]
    fn ring_keeps_history_and_feeds_the_listener() {
        let s = Sampler::start(Duration::from_secs(2)).unwrap();
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

    #[test]
    fn rounding_keeps_one_decimal() {
        assert_eq!(round1(12.345), 12.3);
        assert_eq!(round1(f32::NAN), 0.0);
    }
}
