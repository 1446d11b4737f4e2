//! Hubs: one per topic, each an explicit list of subscribers, created with its first subscriber and
//! removed (producer stopped) once its last subscriber has been gone for `--hub-linger`.
//!
//! The registry lock covers both "find or create a hub" and "remove a hub", and a hub is marked
//! closed only while that lock is held, so a subscriber can never attach to a hub that is being torn
//! down: it either finds the live hub (and cancels its pending teardown) or creates a new one.
//!
//! Lock order, the only one in this module: `Registry::hubs`, then `Registry::counters` or one
//! `Hub::state`. Never the reverse, never two hubs' states at once, never across an `.await`, and
//! no task or producer is dropped while one is held (their drop code may take locks of its own).
//! Publishing takes no hub lock while it writes: it copies the list, then offers the frame to
//! each subscriber's `Outlet` (which takes that connection's lock, then its queue's).
//!
//! A publish writes the frame straight to every subscriber whose way is clear (see `outlet`), in
//! the producer's task: 2,000 subscribers are about 15 ms of writes in one poll on this project's
//! machine, where queueing woke 2,000 tasks that ran back to back in the same place of the
//! executor's queue, so nothing else waits longer than before. From 256 subscribers on, other
//! cores take chunks of the list (`spread`) and the publish returns when all are written.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use async_channel::Sender;
use async_tungstenite::tungstenite::protocol::frame::Utf8Bytes;
use smol::{Executor, Task, Timer};

use crate::lock::lock;
use crate::outlet::{Delivery, Outlet};
use crate::spread;

/// Subscribers per chunk of a publish (`spread`): about 0.6 ms of socket writes.
const CHUNK: usize = 64;

/// A boxed producer future: it publishes into its hub until cancelled.
pub type ProducerFuture = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// What topics exist and how to feed them.
pub trait Catalog: Send + Sync + 'static {
    /// The producer for `topic`, or `None` when no such topic exists (the subscriber gets "unknown topic").
    fn producer(&self, topic: &str, hub: Weak<Hub>) -> Option<ProducerFuture>;
}

/// One serialized frame, shared by every subscriber that receives it.
#[derive(Clone, Debug)]
pub struct Frame(Arc<FrameInner>);

#[derive(Debug)]
struct FrameInner {
    /// The topic, so a connection can tell its subscriptions' frames apart.
    topic: Arc<str>,
    /// The publishing hub, so a frame left over from a removed hub is not taken for the new one's.
    hub_id: u64,
    /// The frame's `seq`, so a connection can skip frames its history already covered.
    seq: u64,
    /// The JSON text, serialized once.
    text: Utf8Bytes,
    /// The topic's counters: charged when the frame is delivered, or pushed out of a full queue.
    counters: Arc<TopicCounters>,
}

/// A topic's frame counts since the daemon started; they outlive the topic's hubs.
#[derive(Debug, Default)]
pub struct TopicCounters {
    /// Frames written to clients.
    pub sent: AtomicU64,
    /// Frames dropped from full subscriber queues.
    pub dropped: AtomicU64,
}

impl Frame {
    /// The topic this frame belongs to.
    pub fn topic(&self) -> &str {
        &self.0.topic
    }

    /// The id of the hub that published the frame.
    pub fn hub_id(&self) -> u64 {
        self.0.hub_id
    }

    /// The frame's sequence number within its topic.
    pub fn seq(&self) -> u64 {
        self.0.seq
    }

    /// The serialized JSON (a cheap reference-counted clone).
    pub fn text(&self) -> Utf8Bytes {
        self.0.text.clone()
    }

    /// Counts the frame as written to a client.
    pub fn delivered(&self) {
        self.0.counters.sent.fetch_add(1, Ordering::Relaxed);
    }
}

/// A topic's hub.
pub struct Hub {
    /// Unique among all hubs this daemon ever made (a topic's hubs come and go).
    id: u64,
    /// The topic name, shared with every frame.
    topic: Arc<str>,
    /// Subscribers and lifecycle; a std lock, never held across an await or while dropping a task.
    state: Mutex<HubState>,
    /// The topic's counters, shared with every hub the topic ever had.
    counters: Arc<TopicCounters>,
    /// `counters.dropped` when this hub was created, so stats show this hub's own drops.
    dropped_base: u64,
    /// The numbering for producers that do not bring their own `seq`.
    next_seq: AtomicU64,
}

struct HubState {
    /// The explicit subscriber list: one bounded sender per subscribed connection (shared, so
    /// a publish copies the list cheaply and writes with no hub lock held).
    subscribers: Vec<Arc<Subscriber>>,
    /// The producer task; dropping it cancels the producer.
    producer: Option<Task<()>>,
    /// Bumped each time the list becomes empty; a linger timer only reaps the epoch it was armed for.
    empty_epoch: u64,
    /// Set (under the registry lock) when the hub leaves the registry; nothing attaches after that.
    closed: bool,
    /// The last frame published, for subscribers who arrive between frames.
    last: Option<Frame>,
    /// When the list last became empty; the hub is removed `linger` after that.
    emptied_at: Instant,
    /// A linger timer is armed; at most one per hub, however often it empties.
    lingering: bool,
}

/// What a linger timer should do next.
enum Reap {
    /// The hub was removed, is in use again, or is gone: the timer ends.
    Done,
    /// The hub emptied again since: wait until then, for that epoch.
    Wait(Instant, u64),
}

struct Subscriber {
    /// The subscription's id, to find it again on unsubscribe.
    id: u64,
    /// The connection's queue; `force_send` drops the oldest frame when it is full.
    tx: Sender<Frame>,
    /// The connection's socket, to write to directly when its way is clear (`None`: queue only).
    outlet: Option<Arc<Outlet>>,
}

impl Hub {
    /// This hub's unique id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The topic this hub serves.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The next frame number for producers that number frames by hub.
    pub fn next_seq(&self) -> u64 {
        self.next_seq.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Current subscriber count.
    pub fn subscribers(&self) -> usize {
        self.lock().subscribers.len()
    }

    /// Frames dropped from full queues since the hub was created.
    pub fn dropped(&self) -> u64 {
        self.counters.dropped.load(Ordering::Relaxed) - self.dropped_base
    }

    /// The last frame published, if any.
    pub fn last_frame(&self) -> Option<Frame> {
        self.lock().last.clone()
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        lock(&self.state)
    }

    /// Sends one serialized frame to every subscriber without ever waiting: a full queue loses its
    /// oldest frame. Returns how many subscribers it reached.
    pub fn publish(&self, seq: u64, text: Utf8Bytes) -> usize {
        let frame = Frame(Arc::new(FrameInner {
            topic: self.topic.clone(),
            hub_id: self.id,
            seq,
            text,
            counters: self.counters.clone(),
        }));
        let subscribers: Arc<[Arc<Subscriber>]> = {
            let mut st = self.lock();
            st.last = Some(frame.clone());
            st.subscribers.as_slice().into()
        };
        // Encoded once for every subscriber a hub writes to directly.
        let wire = crate::outlet::wire_frame(frame.0.text.as_str());
        let n = subscribers.len();
        // Chunks of the list; from `spread::MIN_JOB` of them on, other cores write some (see
        // `spread`), and this returns when all are done, so frames still go out in order.
        spread::run(n.div_ceil(CHUNK), move |i| {
            let chunk = &subscribers[i * CHUNK..n.min((i + 1) * CHUNK)];
            chunk.iter().map(|s| offer(s, &frame, &wire)).sum()
        })
    }

    /// Removes a subscriber. If that emptied the hub and no linger timer is armed yet, arms one
    /// and returns the epoch it is for.
    fn remove(&self, id: u64) -> Option<u64> {
        let mut st = self.lock();
        let before = st.subscribers.len();
        st.subscribers.retain(|s| s.id != id);
        if before == 0 || !st.subscribers.is_empty() || st.closed {
            return None;
        }
        st.empty_epoch += 1;
        st.emptied_at = Instant::now();
        if st.lingering {
            // The armed timer will see the new epoch and wait again.
            return None;
        }
        st.lingering = true;
        Some(st.empty_epoch)
    }
}

/// Offers `frame` (`wire` on the wire) to one subscriber; 1 if it reached it (written, queued or
/// already covered), 0 if its queue is closed.
fn offer(s: &Subscriber, frame: &Frame, wire: &[u8]) -> usize {
    // The list is only ever changed by subscribe and unsubscribe, so emptiness (and teardown) has
    // exactly one path. A closed queue is skipped; its Subscription removes it on drop.
    let queue = || match s.tx.force_send(frame.clone()) {
        Ok(None) => Ok(true),
        Ok(Some(old)) => {
            old.0.counters.dropped.fetch_add(1, Ordering::Relaxed);
            Ok(false)
        }
        Err(_) => Err(()),
    };
    let seq = frame.0.seq;
    let delivery = match &s.outlet {
        Some(outlet) => outlet.deliver(s.id, seq, &frame.0.text, wire, queue),
        None => queue().map_or(Delivery::Gone, |_| Delivery::Queued),
    };
    match delivery {
        Delivery::Written => {
            frame.delivered();
            1
        }
        Delivery::Covered | Delivery::Queued => 1,
        Delivery::Gone => 0,
    }
}

/// Live figures of one hub.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct HubStats {
    /// The topic.
    pub topic: String,
    /// Subscribers now.
    pub subscribers: usize,
    /// Frames dropped from full queues.
    pub dropped_frames: u64,
}

/// All live hubs, by topic.
pub struct Registry {
    /// The hubs; this lock also serializes creation against removal (see the module docs).
    hubs: Mutex<BTreeMap<Arc<str>, Arc<Hub>>>,
    /// Which topics exist and what feeds them.
    catalog: Arc<dyn Catalog>,
    /// Where producers and linger timers run; weak so that tasks never keep their executor alive.
    ex: Weak<Executor<'static>>,
    /// How long an empty hub waits before it is removed.
    linger: Duration,
    /// Subscription ids.
    next_id: AtomicU64,
    /// Per-topic frame counts; one entry per topic ever subscribed (bounded by the catalog).
    counters: Mutex<BTreeMap<Arc<str>, Arc<TopicCounters>>>,
    /// Called after a hub is created or removed (stats watchers, tests).
    on_change: Box<dyn Fn() + Send + Sync>,
}

/// The topic is not one the catalog knows.
#[derive(Debug, PartialEq, Eq)]
pub struct UnknownTopic;

impl std::fmt::Display for UnknownTopic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("unknown topic")
    }
}

impl Registry {
    /// A registry whose hubs run their producers and linger timers on `ex`.
    pub fn new(
        catalog: Arc<dyn Catalog>,
        ex: Weak<Executor<'static>>,
        linger: Duration,
        on_change: Box<dyn Fn() + Send + Sync>,
    ) -> Arc<Registry> {
        Arc::new(Registry {
            hubs: Mutex::new(BTreeMap::new()),
            catalog,
            ex,
            linger,
            next_id: AtomicU64::new(1),
            counters: Mutex::new(BTreeMap::new()),
            on_change,
        })
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<Arc<str>, Arc<Hub>>> {
        lock(&self.hubs)
    }

    /// Adds `tx` to the topic's hub, creating the hub and starting its producer if needed.
    pub fn subscribe(
        self: &Arc<Self>,
        topic: &str,
        tx: &Sender<Frame>,
    ) -> Result<Subscription, UnknownTopic> {
        self.attach(topic, tx, None)
    }

    /// `subscribe`, with the connection's socket for the hub to write to directly; the
    /// subscription's lane in `outlet` (its id) is the caller's to add.
    pub fn attach(
        self: &Arc<Self>,
        topic: &str,
        tx: &Sender<Frame>,
        outlet: Option<Arc<Outlet>>,
    ) -> Result<Subscription, UnknownTopic> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut created = false;
        let hub = {
            let mut hubs = self.lock();
            let hub = match hubs.get(topic) {
                Some(hub) => hub.clone(),
                None => {
                    // Counters exist only for topics the catalog knows: at most one per topic.
                    let counters = lock(&self.counters).get(topic).cloned().unwrap_or_default();
                    let hub = Arc::new(Hub {
                        id: self.next_id.fetch_add(1, Ordering::Relaxed),
                        topic: Arc::from(topic),
                        state: Mutex::new(HubState {
                            subscribers: Vec::new(),
                            producer: None,
                            empty_epoch: 0,
                            closed: false,
                            last: None,
                            emptied_at: Instant::now(),
                            lingering: false,
                        }),
                        dropped_base: counters.dropped.load(Ordering::Relaxed),
                        counters,
                        next_seq: AtomicU64::new(0),
                    });
                    let fut = self
                        .catalog
                        .producer(topic, Arc::downgrade(&hub))
                        .ok_or(UnknownTopic)?;
                    lock(&self.counters)
                        .entry(hub.topic.clone())
                        .or_insert_with(|| hub.counters.clone());
                    // Without an executor the daemon is shutting down: the hub simply has no producer.
                    let task = self.ex.upgrade().map(|ex| ex.spawn(fut));
                    hub.lock().producer = task;
                    hubs.insert(hub.topic.clone(), hub.clone());
                    created = true;
                    log::debug!("hub {topic} created");
                    hub
                }
            };
            let mut st = hub.lock();
            debug_assert!(!st.closed, "a closed hub is never in the registry");
            st.subscribers.push(Arc::new(Subscriber {
                id,
                tx: tx.clone(),
                outlet,
            }));
            drop(st);
            hub
        };
        if created {
            (self.on_change)();
        }
        Ok(Subscription {
            registry: self.clone(),
            hub,
            id,
        })
    }

    /// Runs the linger timer of a hub that just became empty (or reaps it at once with no linger).
    fn hub_emptied(self: &Arc<Self>, hub: &Arc<Hub>, epoch: u64) {
        if self.linger.is_zero() {
            // Another subscriber may have come and gone since this one emptied the hub; it left
            // the reaping to us (the "timer" is armed), so follow newer epochs until done.
            let mut epoch = epoch;
            while let Reap::Wait(_, newer) = self.reap(hub, epoch) {
                epoch = newer;
            }
            return;
        }
        let Some(ex) = self.ex.upgrade() else {
            // Shutting down: the executor is going away and takes every hub with it.
            return;
        };
        // Weak references: a pending timer keeps neither the hub nor the registry alive.
        let registry = Arc::downgrade(self);
        let hub = Arc::downgrade(hub);
        let mut until = Instant::now() + self.linger;
        let mut epoch = epoch;
        ex.spawn(async move {
            loop {
                Timer::at(until).await;
                let (Some(registry), Some(hub)) = (registry.upgrade(), hub.upgrade()) else {
                    return;
                };
                match registry.reap(&hub, epoch) {
                    Reap::Done => return,
                    Reap::Wait(at, newer) => (until, epoch) = (at, newer),
                }
            }
        })
        .detach();
    }

    /// Removes the hub and stops its producer if it is still empty since `epoch`.
    fn reap(&self, hub: &Arc<Hub>, epoch: u64) -> Reap {
        let producer = {
            let mut hubs = self.lock();
            let current = hubs.get(hub.topic()).is_some_and(|h| Arc::ptr_eq(h, hub));
            let mut st = hub.lock();
            if !current || st.closed {
                return Reap::Done;
            }
            if !st.subscribers.is_empty() {
                // In use again; the next emptying arms a new timer.
                st.lingering = false;
                return Reap::Done;
            }
            if st.empty_epoch != epoch {
                return Reap::Wait(st.emptied_at + self.linger, st.empty_epoch);
            }
            st.closed = true;
            let producer = st.producer.take();
            drop(st);
            hubs.remove(hub.topic());
            producer
        };
        // Cancel the producer outside every lock: its drop code may take locks of its own.
        drop(producer);
        log::debug!("hub {} removed", hub.topic());
        (self.on_change)();
        Reap::Done
    }

    /// Number of live hubs.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no hub is live.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// The live hub of `topic`, if any.
    pub fn get(&self, topic: &str) -> Option<Arc<Hub>> {
        self.lock().get(topic).cloned()
    }

    /// Frames sent and dropped per topic since start, by topic.
    pub fn topic_counters(&self) -> Vec<(String, u64, u64)> {
        lock(&self.counters)
            .iter()
            .map(|(t, c)| {
                (
                    t.to_string(),
                    c.sent.load(Ordering::Relaxed),
                    c.dropped.load(Ordering::Relaxed),
                )
            })
            .collect()
    }

    /// Figures of every live hub, by topic.
    pub fn stats(&self) -> Vec<HubStats> {
        let hubs: Vec<Arc<Hub>> = self.lock().values().cloned().collect();
        hubs.iter()
            .map(|h| HubStats {
                topic: h.topic().to_string(),
                subscribers: h.subscribers(),
                dropped_frames: h.dropped(),
            })
            .collect()
    }
}

/// One connection's subscription to one topic; dropping it unsubscribes.
pub struct Subscription {
    /// To arm the linger timer when this was the last subscriber.
    registry: Arc<Registry>,
    /// The hub subscribed to.
    hub: Arc<Hub>,
    /// This subscription's entry in the hub's list.
    id: u64,
}

impl Subscription {
    /// The subscription's id (its lane in the connection's outlet).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The hub this subscription is attached to.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(epoch) = self.hub.remove(self.id) {
            self.registry.hub_emptied(&self.hub, epoch);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Instant;

    /// Counts live producers of the topic `t` and publishes a numbered frame every millisecond.
    struct Counting {
        live: Arc<AtomicUsize>,
        started: Arc<AtomicUsize>,
    }

    struct LiveGuard(Arc<AtomicUsize>);
    impl Drop for LiveGuard {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    impl Catalog for Counting {
        fn producer(&self, topic: &str, hub: Weak<Hub>) -> Option<ProducerFuture> {
            if topic != "t" {
                return None;
            }
            self.live.fetch_add(1, Ordering::SeqCst);
            self.started.fetch_add(1, Ordering::SeqCst);
            let guard = LiveGuard(self.live.clone());
            Some(Box::pin(async move {
                let _guard = guard;
                loop {
                    Timer::after(Duration::from_millis(1)).await;
                    let Some(hub) = hub.upgrade() else { return };
                    let seq = hub.next_seq();
                    hub.publish(seq, Utf8Bytes::from(format!("{seq}")));
                }
            }))
        }
    }

    struct Fixture {
        ex: Arc<Executor<'static>>,
        registry: Arc<Registry>,
        live: Arc<AtomicUsize>,
        started: Arc<AtomicUsize>,
        stop: Sender<()>,
        threads: Vec<std::thread::JoinHandle<()>>,
    }

    fn fixture(linger: Duration, threads: usize) -> Fixture {
        let ex = Arc::new(Executor::new());
        let live = Arc::new(AtomicUsize::new(0));
        let started = Arc::new(AtomicUsize::new(0));
        let catalog = Arc::new(Counting {
            live: live.clone(),
            started: started.clone(),
        });
        let registry = Registry::new(catalog, Arc::downgrade(&ex), linger, Box::new(|| {}));
        let (stop, stopped) = async_channel::bounded::<()>(1);
        let threads = (0..threads)
            .map(|_| {
                let ex = ex.clone();
                let stopped = stopped.clone();
                std::thread::spawn(move || {
                    let _ = smol::block_on(ex.run(stopped.recv()));
                })
            })
            .collect();
        Fixture {
            ex,
            registry,
            live,
            started,
            stop,
            threads,
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            self.stop.close();
            for t in self.threads.drain(..) {
                t.join().unwrap();
            }
        }
    }

    /// Waits (bounded) until `f` holds, checking as the executor makes progress.
    fn eventually(what: &str, f: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::yield_now();
        }
    }

    #[test]
    fn unknown_topic_creates_nothing() {
        let fx = fixture(Duration::ZERO, 1);
        let (tx, _rx) = async_channel::bounded(4);
        assert!(fx.registry.subscribe("nope", &tx).is_err());
        assert_eq!(fx.registry.len(), 0);
        assert_eq!(fx.started.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn last_unsubscribe_stops_producer_after_linger_and_resubscribe_recreates() {
        let fx = fixture(Duration::from_millis(50), 1);
        let (tx, rx) = async_channel::bounded(4);
        let a = fx.registry.subscribe("t", &tx).unwrap();
        let b = fx.registry.subscribe("t", &tx).unwrap();
        assert_eq!(fx.registry.len(), 1);
        assert_eq!(fx.started.load(Ordering::SeqCst), 1, "one producer per hub");
        smol::block_on(rx.recv()).unwrap();
        drop(a);
        drop(b);
        // Lingering: the hub is still there right after the last subscriber left.
        assert_eq!(fx.registry.len(), 1);
        eventually("hub removal", || fx.registry.is_empty());
        eventually("producer stop", || fx.live.load(Ordering::SeqCst) == 0);
        let c = fx.registry.subscribe("t", &tx).unwrap();
        assert_eq!(
            fx.started.load(Ordering::SeqCst),
            2,
            "a new hub, a new producer"
        );
        assert_eq!(c.hub().subscribers(), 1);
    }

    #[test]
    fn resubscribe_during_linger_keeps_the_same_hub() {
        let fx = fixture(Duration::from_millis(100), 1);
        let (tx, _rx) = async_channel::bounded(4);
        let a = fx.registry.subscribe("t", &tx).unwrap();
        let first = a.hub().clone();
        drop(a);
        let b = fx.registry.subscribe("t", &tx).unwrap();
        assert!(Arc::ptr_eq(&first, b.hub()));
        // Past the first linger, the hub is still in use and must survive.
        smol::block_on(Timer::after(Duration::from_millis(250)));
        assert!(Arc::ptr_eq(&fx.registry.get("t").unwrap(), b.hub()));
        assert_eq!(fx.started.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn full_queue_drops_oldest_and_counts_it() {
        let fx = fixture(Duration::ZERO, 1);
        let (tx, rx) = async_channel::bounded(2);
        let sub = fx.registry.subscribe("t", &tx).unwrap();
        let hub = sub.hub().clone();
        // The producer publishes every millisecond; this reader never reads until the queue overflowed.
        eventually("drops", || hub.dropped() >= 3);
        assert_eq!(rx.len(), 2, "the queue never grows past its bound");
        let a = rx.try_recv().unwrap().seq();
        let b = rx.try_recv().unwrap().seq();
        assert!(
            a > 1 && b > a,
            "the oldest frames were the ones dropped ({a}, {b})"
        );
        drop(sub);
    }

    /// A publish to enough subscribers to be shared with other cores (`spread`) still reaches
    /// every one of them, each frame after the one before.
    #[test]
    fn a_large_publish_reaches_everyone_in_order() {
        // No executor threads: the producer never runs, only this test publishes.
        let fx = fixture(Duration::ZERO, 0);
        let n = CHUNK * spread::MIN_JOB * 3 + 7;
        let frames = 40;
        let queues: Vec<_> = (0..n).map(|_| async_channel::bounded(frames)).collect();
        let subs: Vec<_> = queues
            .iter()
            .map(|(tx, _)| fx.registry.subscribe("t", tx).unwrap())
            .collect();
        let hub = fx.registry.get("t").unwrap();
        for seq in 1..=frames as u64 {
            assert_eq!(hub.publish(seq, Utf8Bytes::from(format!("{seq}"))), n);
        }
        for (i, (_, rx)) in queues.iter().enumerate() {
            let got: Vec<u64> =
                std::iter::from_fn(|| rx.try_recv().ok().map(|f| f.seq())).collect();
            assert_eq!(
                got,
                (1..=frames as u64).collect::<Vec<_>>(),
                "subscriber {i}"
            );
        }
        drop(subs);
    }

    /// Many threads subscribe and unsubscribe at once while empty hubs are reaped immediately:
    /// every subscription must land on the registry's live hub, and at the end nothing is left.
    #[test]
    fn subscribe_racing_teardown_never_attaches_to_a_dead_hub() {
        hammer(Duration::ZERO);
    }

    /// The same race through the linger timers.
    #[test]
    fn subscribe_racing_linger_timers_leaves_nothing_behind() {
        hammer(Duration::from_millis(1));
    }

    #[test]
    fn linger_counts_from_the_latest_emptying() {
        let fx = fixture(Duration::from_secs(1), 1);
        let (tx, _rx) = async_channel::bounded(4);
        let t0 = Instant::now();
        drop(fx.registry.subscribe("t", &tx).unwrap());
        smol::block_on(Timer::at(t0 + Duration::from_millis(500)));
        drop(fx.registry.subscribe("t", &tx).unwrap());
        // The first emptying's timer fires at 1 s; the hub must stay until 1.5 s.
        smol::block_on(Timer::at(t0 + Duration::from_millis(1100)));
        assert_eq!(
            fx.registry.len(),
            1,
            "removed a linger after the first emptying"
        );
        eventually("hub removal", || fx.registry.is_empty());
        assert!(t0.elapsed() >= Duration::from_millis(1500));
    }

    fn hammer(linger: Duration) {
        let fx = fixture(linger, 2);
        let registry = fx.registry.clone();
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let registry = registry.clone();
                std::thread::spawn(move || {
                    let (tx, _rx) = async_channel::bounded(1);
                    for i in 0..5_000 {
                        let sub = registry.subscribe("t", &tx).unwrap();
                        let live = registry.get("t").expect("a subscribed hub is registered");
                        assert!(Arc::ptr_eq(&live, sub.hub()), "attached to a dead hub");
                        if i % 7 == 0 {
                            std::thread::yield_now();
                        }
                        drop(sub);
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        eventually("no hub outlives its subscribers", || registry.is_empty());
        eventually("every producer stopped", || {
            fx.live.load(Ordering::SeqCst) == 0
        });
        assert!(fx.started.load(Ordering::SeqCst) >= 1);
        drop(fx.ex.clone());
    }
}
