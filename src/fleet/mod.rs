//! The fleet: this board and its `--peer` boards, each with its state and compact summary, for
//! the `fleet` topic. Peers are followed only while the topic is watched (the producer owns
//! every peer connection, so they close with the hub).

pub mod peer;
pub mod summary;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use serde::Serialize;
use smol::future::FutureExt;

use crate::lock::lock;
pub use peer::Settings;
pub use summary::Summary;

/// Boards at most, this one included.
pub const MAX_BOARDS: usize = 64;
/// The fleet is published at least this often (this board's own summary moves every second)...
pub const PUBLISH_EVERY: Duration = Duration::from_secs(1);
/// ... and at most this often when peers change.
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
    /// Its state.
    pub state: State,
    /// Unix ms of its last summary.
    pub last_seen: Option<u64>,
    /// Why it is offline, locked or broken.
    pub reason: Option<String>,
    /// Its last summary (kept while offline, with `last_seen`).
    pub summary: Option<Summary>,
}

impl Board {
    fn peer(address: &str) -> Board {
        Board {
            address: address.to_string(),
            name: None,
            is_self: false,
            state: State::Offline,
            last_seen: None,
            reason: Some("not reached yet".into()),
            summary: None,
        }
    }
}

/// Follows every peer and publishes the fleet (this board first) through `publish` until it
/// says the hub is gone. `me` gives this board's summary now.
pub async fn watch(
    me_address: String,
    peers: Arc<[String]>,
    settings: Arc<Settings>,
    me: impl Fn() -> Option<Summary>,
    mut publish: impl FnMut(String) -> bool,
) {
    let changed = Arc::new(event_listener::Event::new());
    let boards: Vec<Arc<Mutex<Board>>> = peers
        .iter()
        .take(MAX_BOARDS - 1)
        .map(|a| Arc::new(Mutex::new(Board::peer(a))))
        .collect();
    let mut followers: Vec<Pin<Box<dyn Future<Output = ()> + Send>>> = boards
        .iter()
        .map(|b| {
            let address = lock(b).address.clone();
            Box::pin(peer::follow(
                address,
                settings.clone(),
                b.clone(),
                changed.clone(),
            )) as Pin<Box<dyn Future<Output = ()> + Send>>
        })
        .collect();
    // Every follower runs until this future is dropped; each is polled when any wakes (a few
    // dozen peers, a wake-up a second each).
    let follow_all = std::future::poll_fn(move |cx| {
        for f in &mut followers {
            let _ = f.as_mut().poll(cx);
        }
        Poll::<()>::Pending
    });
    let publisher = async {
        loop {
            let listener = changed.listen();
            let mut list = Vec::with_capacity(boards.len() + 1);
            let summary = me();
            list.push(Board {
                address: me_address.clone(),
                name: summary.as_ref().map(|s| s.name.clone()),
                is_self: true,
                state: State::Online,
                last_seen: Some(crate::protocol::unix_ms()),
                reason: None,
                summary,
            });
            list.extend(boards.iter().map(|b| lock(b).clone()));
            let json = serde_json::to_string(&list).expect("plain data always serializes");
            if !publish(json) {
                return;
            }
            smol::Timer::after(PUBLISH_GAP).await;
            listener
                .or(async {
                    smol::Timer::after(PUBLISH_EVERY - PUBLISH_GAP).await;
                })
                .await;
        }
    };
    publisher.or(follow_all).await;
}
