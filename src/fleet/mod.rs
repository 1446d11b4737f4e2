//! The fleet: this board and its `--peer` boards, each with its state and compact summary, for
//! the `fleet` topic. Peers are followed only while the topic is watched (the producer owns
//! every peer connection, so they close with the hub).

pub mod peer;
pub mod summary;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use serde::Serialize;
use smol::future::FutureExt;

use crate::lock::lock;
pub use peer::Settings;
pub use summary::Summary;

/// Boards at most, this one included.
pub const MAX_BOARDS: usize = 64;
/// The fleet is published this often with the boards' latest figures (this board's own summary
/// moves every second)...
pub const PUBLISH_EVERY: Duration = Duration::from_secs(1);
/// ... and sooner, but at most this often, when a board's state changes.
const PUBLISH_GAP: Duration = Duration::from_millis(200);

/// A board's state as the fleet sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Its summaries arrive.
    Online,
    /// It cannot be reached, or stopped answering (not yet reached, too).
    Offline,
    /// It needs a token this board does not have.
    Locked,
    /// It sent what a board does not send (oversized, malformed or too many frames).
    Broken,
}

impl State {
    /// The state's name.
    pub fn name(self) -> &'static str {
        match self {
            State::Online => "online",
            State::Offline => "offline",
            State::Locked => "locked",
            State::Broken => "broken",
        }
    }
}

/// One board of the fleet.
#[derive(Clone, Debug, Serialize)]
pub struct Board {
    /// HOST:PORT as configured (this board: its listen address).
    pub address: String,
    /// Its host name, from its summary.
    pub name: Option<String>,
    /// Whether it is this board.
    #[serde(rename = "self")]
    pub is_self: bool,
    /// Whether it was found by mDNS (not a `--peer`).
    pub discovered: bool,
    /// Its state.
    pub state: State,
    /// Unix ms of its last summary.
    pub last_seen: Option<u64>,
    /// Why it is offline, locked or broken.
    pub reason: Option<String>,
    /// Its last summary (kept while offline, with `last_seen`).
    pub summary: Option<Summary>,
    /// The address its connection reached (a configured name resolves to it).
    #[serde(skip)]
    pub connected: Option<std::net::SocketAddr>,
}

impl Board {
    fn peer(address: &str, discovered: bool) -> Board {
        Board {
            address: address.to_string(),
            name: None,
            is_self: false,
            discovered,
            connected: None,
            state: State::Offline,
            last_seen: None,
            reason: Some("not reached yet".into()),
            summary: None,
        }
    }
}

/// Follows every peer and publishes the fleet (this board first) through `publish` until it
/// says the hub is gone. `me` gives this board's summary now. With `browse`, boards announced
/// by mDNS join the fleet too (after the configured ones, up to `MAX_BOARDS`), followed
/// without the token.
pub async fn watch(
    me_address: String,
    peers: Arc<[String]>,
    settings: Arc<Settings>,
    mut browse: Option<crate::mdns::Browse>,
    me: impl Fn() -> Option<Summary>,
    mut publish: impl FnMut(String) -> bool,
) {
    let changed = Arc::new(event_listener::Event::new());
    let mut boards: Vec<Arc<Mutex<Board>>> = Vec::new();
    let mut followers = Followers::new();
    let follower = |b: &Arc<Mutex<Board>>, settings: &Arc<Settings>| -> Follower {
        let address = lock(b).address.clone();
        Box::pin(peer::follow(
            address,
            settings.clone(),
            b.clone(),
            changed.clone(),
        ))
    };
    for a in peers.iter().take(MAX_BOARDS - 1) {
        let b = Arc::new(Mutex::new(Board::peer(a, false)));
        followers.push(follower(&b, &settings));
        boards.push(b);
    }
    // Discovered boards get no token: it goes only to the boards it was configured for.
    let untrusted = Arc::new(Settings {
        token: None,
        ping: settings.ping,
        pong: settings.pong,
    });
    enum Wake {
        Publish,
        Changed,
        Found(crate::mdns::Found),
    }
    let mut listener = changed.listen();
    let mut due = Instant::now();
    let mut last = None::<Instant>;
    // Soon after a change, but not more often than every PUBLISH_GAP.
    let soon = |due: Instant, last: Option<Instant>| {
        due.min(last.map_or(Instant::now(), |t| t + PUBLISH_GAP))
    };
    loop {
        let wake = async {
            (&mut followers).await;
            Wake::Changed
        }
        .or(async {
            smol::Timer::at(due).await;
            Wake::Publish
        })
        .or(async {
            (&mut listener).await;
            Wake::Changed
        })
        .or(async {
            match browse.as_mut() {
                Some(b) => Wake::Found(b.next().await),
                None => std::future::pending().await,
            }
        })
        .await;
        match wake {
            Wake::Publish => {
                listener = changed.listen();
                let list = fleet_list(&me_address, me(), &boards);
                let json = serde_json::to_string(&list).expect("plain data always serializes");
                if !publish(json) {
                    return;
                }
                let now = Instant::now();
                last = Some(now);
                due = now + PUBLISH_EVERY;
            }
            Wake::Changed => {
                listener = changed.listen();
                due = soon(due, last);
            }
            Wake::Found(found) => {
                let address = found.address.to_string();
                let known = boards.iter().any(|b| {
                    let b = lock(b);
                    b.address == address || b.connected == Some(found.address.into())
                });
                if known {
                    continue;
                }
                if boards.len() + 1 >= MAX_BOARDS {
                    if let Some(b) = &browse {
                        b.ignored();
                    }
                    continue;
                }
                log::info!("fleet: found {address} ({}) by mDNS", found.name);
                let b = Arc::new(Mutex::new(Board::peer(&address, true)));
                lock(&b).name = Some(found.name);
                followers.push(follower(&b, &untrusted));
                boards.push(b);
                due = soon(due, last);
            }
        }
    }
}

/// The fleet as published: this board, then every other, except a discovered board that is a
/// configured one seen by another address (a `--peer` given by name, once it has connected).
fn fleet_list(
    me_address: &str,
    summary: Option<Summary>,
    boards: &[Arc<Mutex<Board>>],
) -> Vec<Board> {
    let mut list = Vec::with_capacity(boards.len() + 1);
    list.push(Board {
        address: me_address.to_string(),
        name: summary.as_ref().map(|s| s.name.clone()),
        is_self: true,
        discovered: false,
        state: State::Online,
        last_seen: Some(crate::protocol::unix_ms()),
        reason: None,
        summary,
        connected: None,
    });
    let boards: Vec<Board> = boards.iter().map(|b| lock(b).clone()).collect();
    let configured: Vec<std::net::SocketAddr> = boards
        .iter()
        .filter(|b| !b.discovered)
        .filter_map(|b| b.connected)
        .collect();
    list.extend(boards.into_iter().filter(|b| {
        !(b.discovered
            && b.address
                .parse::<std::net::SocketAddr>()
                .is_ok_and(|a| configured.contains(&a)))
    }));
    list
}

/// One peer's follower: it loops until dropped.
type Follower = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Which followers were woken since they were last polled (one bit each: at most 64 boards),
/// and the waker of the task that polls them.
struct Woken {
    bits: AtomicU64,
    task: Mutex<Option<Waker>>,
}

/// One follower's waker: marks its bit and wakes the polling task.
struct FollowerWaker {
    woken: Arc<Woken>,
    bit: u64,
}

impl Wake for FollowerWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.bits.fetch_or(self.bit, Ordering::AcqRel);
        if let Some(w) = lock(&self.woken.task).as_ref() {
            w.wake_by_ref();
        }
    }
}

/// Every follower, run until dropped; a wake-up polls only the followers that were woken (50
/// peers each waking once a second would otherwise poll all 50, a read attempt each, 50 times
/// a second).
struct Followers {
    futures: Vec<(Follower, Waker)>,
    woken: Arc<Woken>,
}

impl Followers {
    fn new() -> Followers {
        Followers {
            futures: Vec::new(),
            woken: Arc::new(Woken {
                bits: AtomicU64::new(0),
                task: Mutex::new(None),
            }),
        }
    }

    /// Adds a follower (at most 64), polled at the next poll.
    fn push(&mut self, f: Follower) {
        let i = self.futures.len();
        assert!(i < 64, "one bit per follower");
        let waker = Waker::from(Arc::new(FollowerWaker {
            woken: self.woken.clone(),
            bit: 1 << i,
        }));
        self.futures.push((f, waker));
        self.woken.bits.fetch_or(1 << i, Ordering::AcqRel);
    }
}

impl Future for Followers {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        {
            let mut task = lock(&self.woken.task);
            if !task.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *task = Some(cx.waker().clone());
            }
        }
        // Bounded work per wake-up: each follower is polled at most once.
        let bits = self.woken.bits.swap(0, Ordering::AcqRel);
        for (i, (f, waker)) in self.futures.iter_mut().enumerate() {
            if bits & (1 << i) != 0 {
                // A follower loops until dropped; it never completes.
                let _ = f.as_mut().poll(&mut Context::from_waker(waker));
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A follower that counts its polls and keeps its latest waker.
    fn counting(polls: Arc<AtomicUsize>, waker: Arc<Mutex<Option<Waker>>>) -> Follower {
        Box::pin(std::future::poll_fn(move |cx| {
            polls.fetch_add(1, Ordering::SeqCst);
            *lock(&waker) = Some(cx.waker().clone());
            Poll::Pending
        }))
    }

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_wake_up_polls_only_the_followers_that_were_woken() {
        let polls: Vec<_> = (0..3).map(|_| Arc::new(AtomicUsize::new(0))).collect();
        let wakers: Vec<_> = (0..3).map(|_| Arc::new(Mutex::new(None))).collect();
        let mut all = Followers::new();
        for i in 0..3 {
            all.push(counting(polls[i].clone(), wakers[i].clone()));
        }
        let task = Arc::new(Count(AtomicUsize::new(0)));
        let task_waker = Waker::from(task.clone());
        let mut cx = Context::from_waker(&task_waker);
        let counts = || {
            polls
                .iter()
                .map(|p| p.load(Ordering::SeqCst))
                .collect::<Vec<_>>()
        };

        assert!(Pin::new(&mut all).poll(&mut cx).is_pending());
        assert_eq!(counts(), [1, 1, 1], "every follower's first poll");
        // Nothing woken: a spurious wake-up polls none.
        assert!(Pin::new(&mut all).poll(&mut cx).is_pending());
        assert_eq!(counts(), [1, 1, 1]);

        lock(&wakers[1]).as_ref().unwrap().wake_by_ref();
        assert_eq!(
            task.0.load(Ordering::SeqCst),
            1,
            "the polling task is woken"
        );
        assert!(Pin::new(&mut all).poll(&mut cx).is_pending());
        assert_eq!(counts(), [1, 2, 1]);

        // Woken twice before the poll: polled once.
        lock(&wakers[2]).as_ref().unwrap().wake_by_ref();
        lock(&wakers[2]).as_ref().unwrap().wake_by_ref();
        assert!(Pin::new(&mut all).poll(&mut cx).is_pending());
        assert_eq!(counts(), [1, 2, 2]);
    }
}
