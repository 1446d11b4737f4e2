//! Not a scenario: the reader tasks and the latency `Sink` they record flood frames in, shared by
//! the fan-out and slow-consumer scenarios, which check DESIGN.md's p99 budget (`P99_MS`) on them.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use smol::Task;

use crate::client::{Client, flood_stamp_us, now_ns};

/// Latency samples of flood frames sent within a window.
pub(super) struct Sink {
    from_us: AtomicU64,
    until_us: AtomicU64,
    /// (kernel arrival - sent, user-space parse - sent), µs.
    samples: Mutex<Vec<(f64, f64)>>,
    /// Distinct frames (by send stamp) seen in the window.
    stamps: Mutex<HashSet<u64>>,
    /// Flood frames received at all.
    pub(super) frames: AtomicU64,
    /// Readers the server closed or lost.
    pub(super) lost: AtomicUsize,
}

impl Sink {
    pub(super) fn new() -> Arc<Sink> {
        Arc::new(Sink {
            from_us: AtomicU64::new(u64::MAX),
            until_us: AtomicU64::new(0),
            samples: Mutex::new(Vec::new()),
            stamps: Mutex::new(HashSet::new()),
            frames: AtomicU64::new(0),
            lost: AtomicUsize::new(0),
        })
    }

    fn record(&self, sent_us: u64, kernel_ns: u64, user_ns: u64) {
        self.frames.fetch_add(1, Ordering::Relaxed);
        let from = self.from_us.load(Ordering::Relaxed);
        if sent_us < from || sent_us >= self.until_us.load(Ordering::Relaxed) {
            return;
        }
        let k = if kernel_ns > 0 {
            (kernel_ns / 1000) as f64 - sent_us as f64
        } else {
            f64::NAN
        };
        let u = (user_ns / 1000) as f64 - sent_us as f64;
        self.samples.lock().unwrap().push((k, u));
        self.stamps.lock().unwrap().insert(sent_us);
    }

    /// What the window recorded, for `readers` subscribers: sorted latencies in ms and the share
    /// of the window's frames that reached every reader.
    pub(super) fn take(&self, readers: usize) -> Window {
        let samples = std::mem::take(&mut *self.samples.lock().unwrap());
        let frames = self.stamps.lock().unwrap().len();
        let sorted_ms = |v: Vec<f64>| {
            let mut v: Vec<f64> = v
                .into_iter()
                .map(|us| us / 1000.0)
                .filter(|ms| ms.is_finite())
                .collect();
            v.sort_by(f64::total_cmp);
            v
        };
        let expected = (frames * readers) as f64;
        Window {
            frames,
            delivered_pct: if expected > 0.0 {
                100.0 * samples.len() as f64 / expected
            } else {
                0.0
            },
            kernel_ms: sorted_ms(samples.iter().map(|s| s.0).collect()),
            user_ms: sorted_ms(samples.iter().map(|s| s.1).collect()),
        }
    }

    /// Opens the recording window now, for `w`.
    pub(super) fn open_window(&self, w: Duration) {
        let now = now_ns() / 1000;
        self.until_us
            .store(now + w.as_micros() as u64, Ordering::Relaxed);
        self.from_us.store(now, Ordering::Relaxed);
    }
}

/// A closed recording window.
pub(super) struct Window {
    /// Distinct frames sent within it.
    pub(super) frames: usize,
    /// Received samples as a share of `frames × readers`.
    pub(super) delivered_pct: f64,
    /// Sent stamp to kernel arrival, sorted.
    pub(super) kernel_ms: Vec<f64>,
    /// Sent stamp to the bench's parse, sorted.
    pub(super) user_ms: Vec<f64>,
}

/// Readers answer pings and record flood frames until `stop` closes; they hand their client back.
pub(super) fn spawn_readers(
    clients: Vec<Client>,
    sink: &Arc<Sink>,
    stop: &async_channel::Receiver<()>,
) -> Vec<Task<Option<Client>>> {
    clients
        .into_iter()
        .map(|mut c| {
            let (sink, stop) = (sink.clone(), stop.clone());
            smol::spawn(async move {
                let alive = {
                    let read = async {
                        loop {
                            match c.next().await {
                                Ok(f) if f.opcode == 0x1 => {
                                    if let Some(sent) = flood_stamp_us(&f.payload) {
                                        sink.record(sent, f.kernel_ns, f.user_ns);
                                    }
                                }
                                Ok(f) if f.opcode == 0x8 => return false,
                                Ok(_) => {}
                                Err(_) => return false,
                            }
                        }
                    };
                    smol::future::or(read, async {
                        let _ = stop.recv().await;
                        true
                    })
                    .await
                };
                if alive {
                    Some(c)
                } else {
                    sink.lost.fetch_add(1, Ordering::Relaxed);
                    None
                }
            })
        })
        .collect()
}

/// Stops the readers and collects their clients.
pub(super) async fn stop_readers(
    readers: Vec<Task<Option<Client>>>,
    stop: async_channel::Sender<()>,
) -> Vec<Client> {
    stop.close();
    let mut out = Vec::with_capacity(readers.len());
    for t in readers {
        if let Some(c) = t.await {
            out.push(c);
        }
    }
    out
}
