//! One WebSocket connection: a smol task that forwards its subscriptions' frames, answers client
//! commands, pings, enforces the timeouts, and always ends with an explicit, time-bounded close.
//!
//! The task owns a `ConnSlot` (the counted place) and drops it last, so the counters and the close
//! log line are right whichever way the task ends, a panic included. Every way it can end is one
//! `Ending` (in `ending.rs`): one `match` gives its close code, its `Display` the log line.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use async_channel::{Receiver, Sender};
use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::Message;
use async_tungstenite::tungstenite::error::Error as WsError;
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use smol::Timer;
use smol::future::FutureExt;
use smol::net::TcpStream;
use smol::stream::StreamExt;

mod commands;
mod ending;
mod watched;
mod writes;

use commands::Action;
pub(crate) use ending::Ending;
use watched::Watched;
use writes::ShutdownSignal;

use crate::app::App;
use crate::hub::{Frame, Subscription};
use crate::limits::{ConnSlot, Refused};
use crate::outlet::{Admit, Outlet};
use crate::protocol;
use crate::rate::{Bucket, READ_BATCH, WS_BURST, WS_EMPTY_CLOSE, WS_PER_SEC};

/// Largest client message: commands are small.
pub const MAX_CLIENT_MESSAGE: usize = 4 * 1024;
/// Subscriptions one connection may hold.
pub const MAX_SUBSCRIPTIONS: usize = 32;
/// Invalid commands a connection may send at once before it is closed with 1008; counted in a
/// window, not in a row (harmless commands in between reset nothing): the allowance refills at
/// `INVALID_PER_SEC`.
pub const INVALID_BURST: u32 = 100;
/// Invalid commands a second a connection may keep sending.
pub const INVALID_PER_SEC: u32 = 1;
/// How long a close handshake may take before the socket is shut down regardless.
pub const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// A topic's backfill (its history, or its latest frame) goes to one connection at most once in
/// this long: a subscribe/unsubscribe loop would otherwise turn each small command into kilobytes
/// sent back.
pub const BACKFILL_AGAIN_AFTER: Duration = Duration::from_secs(10);

/// Small buffers: tungstenite's defaults commit 128 KiB per connection.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(1024)
        // Write each frame straight to the socket; we flush per frame anyway.
        .write_buffer_size(0)
        // A blocked socket is bounded by --write-timeout; this bounds what piles up meanwhile.
        .max_write_buffer_size(64 * 1024)
        .max_message_size(Some(MAX_CLIENT_MESSAGE))
        .max_frame_size(Some(MAX_CLIENT_MESSAGE))
}

/// Runs one upgraded connection to its end. `leftover` holds bytes read past the HTTP head.
pub(crate) async fn serve(
    app: Arc<App>,
    stream: TcpStream,
    leftover: Vec<u8>,
    mut slot: ConnSlot,
    topic: Option<String>,
) {
    let peer = slot.peer();
    let tcp = stream.clone();
    let stream = Watched::new(stream);
    let ws =
        WebSocketStream::from_partially_read(stream, leftover, Role::Server, Some(ws_config()))
            .await;
    let (tx, rx) = async_channel::bounded(app.config.send_queue);
    let now = Instant::now();
    let mut session = Session {
        shutdown: ShutdownSignal::new(&app.shutdown),
        timer: Timer::never(),
        armed: None,
        frames_in_a_row: 0,
        clock: Clock::new(now, app.config.ping_interval),
        bucket: Bucket::new(WS_BURST, WS_PER_SEC, now),
        since_yield: 0,
        backfilled: Vec::new(),
        app,
        ws,
        tx,
        rx,
        subs: Vec::new(),
        invalid: Bucket::new(INVALID_BURST, INVALID_PER_SEC, now),
    };
    let ending = match AssertUnwindSafe(session.run(topic)).catch_unwind().await {
        Ok(ending) => ending,
        Err(panic) => {
            // The session's state is suspect now: do not speak WebSocket on it, just end it.
            log::error!("ws {peer}: task panicked: {}", panic_message(&*panic));
            Ending::Panic
        }
    };
    if ending == Ending::RateLimited {
        session.app.limits.refuse(Refused::WsRate);
    }
    // Unsubscribe and release the socket before the slot, so "remaining" counts this one as gone.
    drop(session);
    // The peer may already be gone; shutting down twice is harmless.
    let _ = tcp.shutdown(std::net::Shutdown::Both);
    slot.set_reason(ending.to_string());
}

/// The text of a panic payload.
pub(crate) fn panic_message(p: &(dyn std::any::Any + Send)) -> &str {
    p.downcast_ref::<&str>()
        .copied()
        .or_else(|| p.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(non-text panic)")
}

/// What one handled wake-up leads to: carry on, or end the connection.
type Step<T = ()> = Result<T, Ending>;

// Fields drop in declaration order: subscriptions go first, so a hub never holds the sender of a
// connection whose queue is already closed.
struct Session {
    /// Subscriptions held; dropping one unsubscribes.
    subs: Vec<Sub>,
    /// Configuration, shutdown signal, registry, catalog.
    app: Arc<App>,
    /// The WebSocket.
    ws: WebSocketStream<Watched>,
    /// Handed to each hub this connection subscribes to.
    tx: Sender<Frame>,
    /// This connection's queue of frames from every subscribed hub (bounded by `--send-queue`).
    rx: Receiver<Frame>,
    /// The allowance of invalid commands.
    invalid: Bucket,
    /// The ping, pong and idle deadlines.
    clock: Clock,
    /// The client's message allowance; the socket is not read while it is empty.
    bucket: Bucket,
    /// Wake-ups handled since this task last yielded to the executor.
    since_yield: u32,
    /// When each topic's backfill last went out (entries older than `BACKFILL_AGAIN_AFTER` are
    /// dropped, so at most one per topic of the catalog).
    backfilled: Vec<(String, Instant)>,
    /// The daemon's shutdown, one wait kept for the connection's life.
    shutdown: ShutdownSignal,
    /// The next deadline's timer, moved only when the deadline moves.
    timer: Timer,
    /// What `timer` is set to (`None` once it fired).
    armed: Option<Instant>,
    /// Frames forwarded in a row: the queue goes first, but after `READ_BATCH` of them the
    /// client gets its turn.
    frames_in_a_row: u32,
}

/// One subscription; its numbering (what was sent, what the backfill covered) is its lane in the
/// connection's outlet, where the hub writing directly keeps it too.
struct Sub {
    /// Subscribed topic.
    topic: String,
    /// The hub membership; dropping it unsubscribes.
    membership: Subscription,
    /// Where the subscription's lane lives; dropping the `Sub` removes the lane.
    outlet: Arc<Outlet>,
}

impl Drop for Sub {
    fn drop(&mut self) {
        // Before the membership: until the hub forgets us, its frames find no lane and queue,
        // and the queue skips them.
        self.outlet.remove_lane(self.membership.id());
    }
}

/// When the client last spoke and where the ping cycle stands.
struct Clock {
    /// The last text or binary message from the client (idle is judged from it).
    last_client: Instant,
    /// When the next ping is due.
    next_ping: Instant,
    /// When the unanswered ping went out, if one is out.
    ping_sent: Option<Instant>,
}

impl Clock {
    fn new(now: Instant, ping_interval: Duration) -> Clock {
        Clock {
            last_client: now,
            next_ping: now + ping_interval,
            ping_sent: None,
        }
    }
}

/// What a passed deadline brings.
enum Due {
    /// The connection ends.
    End(Ending),
    /// The next ping goes out.
    Ping,
}

/// What woke the session.
enum Wake {
    /// The daemon is shutting down.
    Shutdown,
    /// A timer deadline passed (ping, pong, idle).
    Tick,
    /// The client sent something, or the stream ended.
    Client(Option<Result<Message, WsError>>),
    /// A hub published a frame for us.
    Frame(Frame),
}

impl Session {
    /// The connection's life; returns why it ended.
    async fn run(&mut self, topic: Option<String>) -> Ending {
        let ending = self.serve(topic).await;
        // Hubs write nothing after the close frame (or onto a socket being dropped).
        self.ws.get_ref().outlet().shut();
        if let Some((code, text)) = ending.close_frame() {
            self.close(code, text).await;
        }
        ending
    }

    /// Serves until something ends the connection: each wake-up goes to its own method, then
    /// every deadline is judged, whatever woke the task, and the task yields after
    /// `READ_BATCH` wake-ups so a client with endless input cannot hold the executor.
    async fn serve(&mut self, topic: Option<String>) -> Ending {
        if let Some(topic) = topic
            && let Err(ending) = self.subscribe_and_reply(&topic, None).await
        {
            return ending;
        }
        self.clock = Clock::new(Instant::now(), self.app.config.ping_interval);
        loop {
            let step = match self.next_wake().await {
                Wake::Shutdown => Err(Ending::Shutdown),
                // Judged below, like after every wake-up.
                Wake::Tick => Ok(()),
                Wake::Frame(frame) => self.on_frame(frame).await,
                Wake::Client(None) => Err(Ending::Gone(None)),
                Wake::Client(Some(Err(e))) => Err(Ending::from_read(e)),
                Wake::Client(Some(Ok(msg))) => {
                    self.bucket.take(Instant::now());
                    self.on_message(msg).await
                }
            };
            if let Err(ending) = step {
                return ending;
            }
            if let Err(ending) = self.judge_deadlines().await {
                return ending;
            }
            self.since_yield += 1;
            if self.since_yield >= READ_BATCH {
                self.since_yield = 0;
                smol::future::yield_now().await;
            }
        }
    }

    /// Every deadline in force now, with what it brings when it passes: the ending, or the next
    /// ping. One list, so waking for a deadline and judging it cannot drift apart.
    fn deadlines(&mut self, now: Instant) -> [(Option<Instant>, Due); 5] {
        let cfg = &self.app.config;
        let ping_sent = self.clock.ping_sent;
        [
            (
                ping_sent.map(|at| at + cfg.pong_timeout),
                Due::End(Ending::PongTimeout),
            ),
            (
                self.subs
                    .is_empty()
                    .then(|| self.clock.last_client + cfg.idle_timeout),
                Due::End(Ending::Idle),
            ),
            (
                self.bucket
                    .held_back_since(now)
                    .map(|since| since + WS_EMPTY_CLOSE),
                Due::End(Ending::RateLimited),
            ),
            (
                self.ws
                    .get_ref()
                    .blocked_since()
                    .map(|since| since + cfg.write_timeout),
                Due::End(Ending::WriteTimeout),
            ),
            (
                ping_sent.is_none().then_some(self.clock.next_ping),
                Due::Ping,
            ),
        ]
    }

    /// Waits for whichever comes first: shutdown, then the queue of frames, then the client,
    /// then the timer. The queue goes before the socket (a frame to forward costs no read), but
    /// after `READ_BATCH` frames in a row the client goes first once, so a busy topic cannot
    /// keep a client's messages (its pongs) unread. The client goes before the timer, so a pong
    /// that arrived while a write was blocked counts before the pong deadline is judged. A
    /// client whose bucket is empty is not read until a token is back. The shutdown wait and the
    /// timer live across wake-ups; the timer moves only when the deadline does.
    async fn next_wake(&mut self) -> Wake {
        let now = Instant::now();
        let may_read = self.bucket.has_token(now);
        let mut deadline = self
            .deadlines(now)
            .iter()
            .filter_map(|(at, _)| *at)
            .min()
            .unwrap_or(now + self.app.config.ping_interval);
        if !may_read {
            deadline = deadline.min(self.bucket.ready_at());
        }
        if self.armed != Some(deadline) {
            self.timer.set_at(deadline);
            self.armed = Some(deadline);
        }
        let frames_first = self.frames_in_a_row < READ_BATCH;
        let (ws, rx, timer, armed) = (&mut self.ws, &self.rx, &mut self.timer, &mut self.armed);
        let shutdown = &mut self.shutdown;
        let mut frame = pin!(async {
            // We hold a sender ourselves, so this only errs if the channel is closed.
            rx.recv().await.map_or(Wake::Shutdown, Wake::Frame)
        });
        let mut client = pin!(async {
            if !may_read {
                // Backpressure: the kernel buffers fill and the client's sends block.
                std::future::pending::<()>().await;
            }
            Wake::Client(ws.next().await)
        });
        let mut tick = pin!(async {
            timer.await;
            // Fired: the next wait sets it again, even for the same deadline.
            *armed = None;
            Wake::Tick
        });
        let wake = std::future::poll_fn(|cx| {
            if shutdown.poll_fired(cx).is_ready() {
                return Poll::Ready(Wake::Shutdown);
            }
            let (a, b): (
                Pin<&mut dyn Future<Output = Wake>>,
                Pin<&mut dyn Future<Output = Wake>>,
            ) = if frames_first {
                (frame.as_mut(), client.as_mut())
            } else {
                (client.as_mut(), frame.as_mut())
            };
            for f in [a, b] {
                if let Poll::Ready(w) = f.poll(cx) {
                    return Poll::Ready(w);
                }
            }
            tick.as_mut().poll(cx)
        })
        .await;
        match wake {
            Wake::Frame(_) if frames_first => self.frames_in_a_row += 1,
            // The client had its turn (or something else woke us): the queue goes first again.
            _ => self.frames_in_a_row = 0,
        }
        wake
    }

    /// Judges every deadline now: an unanswered ping, an idle connection, a client held back
    /// too long, a socket whose writes stay blocked; sends the next ping when it is due.
    async fn judge_deadlines(&mut self) -> Step {
        let now = Instant::now();
        for (at, due) in self.deadlines(now) {
            if at.is_none_or(|at| now < at) {
                continue;
            }
            match due {
                Due::End(ending) => return Err(ending),
                Due::Ping => {
                    let next_ping = now + self.app.config.ping_interval;
                    self.send(Message::Ping(Default::default())).await?;
                    self.clock.ping_sent = Some(now);
                    self.clock.next_ping = next_ping;
                }
            }
        }
        Ok(())
    }

    /// A hub published: forward the frame unless the backfill covered it, with a `missed`
    /// marker first where a log subscriber lost lines.
    async fn on_frame(&mut self, frame: Frame) -> Step {
        let step = self.forward(frame).await;
        self.ws.get_ref().outlet().handled();
        step
    }

    /// `on_frame`'s work: the frame, unless skipped, after the rest of a frame a hub could write
    /// only in part (this one, or one before it) and after its `missed` marker, if any.
    async fn forward(&mut self, frame: Frame) -> Step {
        let outlet = self.ws.get_ref().outlet().clone();
        if outlet.has_partial() {
            self.finish_partial().await?;
        }
        let Some(sub) = self
            .subs
            .iter()
            .find(|s| s.membership.hub().id() == frame.hub_id())
        else {
            // Queued before an unsubscribe, or by a hub since replaced.
            return Ok(());
        };
        let missed = match outlet.admit(sub.membership.id(), frame.seq()) {
            Admit::Skip => return Ok(()),
            Admit::Send { missed } => missed,
        };
        if missed > 0 {
            let marker = protocol::missed(frame.topic(), missed);
            self.send_text(&marker).await?;
        }
        self.send_text(&frame.text()).await?;
        frame.delivered();
        Ok(())
    }

    /// The client sent a message: a command, a pong, or its close.
    async fn on_message(&mut self, msg: Message) -> Step {
        // Only what the client says counts as activity: a browser answers pings by itself, so
        // pongs would keep a forgotten, unsubscribed tab open forever.
        if matches!(msg, Message::Text(_) | Message::Binary(_)) {
            self.clock.last_client = Instant::now();
        }
        let replies = match msg {
            Message::Text(text) => match self.command_guarded(&text)? {
                Action::Reply(r) => r,
                Action::Subscribe(topic, after) => {
                    return self.subscribe_and_reply(&topic, after.as_ref()).await;
                }
                Action::History(range) => return self.send_history(&range).await,
            },
            Message::Binary(_) => self.invalid("binary frames are not supported", None)?,
            Message::Pong(_) => {
                self.clock.ping_sent = None;
                return Ok(());
            }
            // tungstenite queues the pong and sends it with our next read or write.
            Message::Ping(_) | Message::Frame(_) => return Ok(()),
            Message::Close(frame) => {
                let code = frame.map_or(CloseCode::Status, |f| f.code);
                // tungstenite has queued the Close reply; the next read flushes it.
                self.finish_close().await;
                return Err(Ending::ClientClosed(u16::from(code)));
            }
        };
        self.send_all(replies).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every connection's task is one allocation of its future's size, for as long as it is
    /// open, so what a rare command awaits (a log resume that reads a file, the journal or a
    /// container engine) must be boxed, not inlined: inlined, the container engine's reads
    /// made each task 11.7 KB and an idle WebSocket cost 15 KiB of RSS instead of 6.6.
    #[test]
    fn a_connection_task_stays_small() {
        let ex = Arc::new(smol::Executor::new());
        let (_stop, shutdown) = async_channel::bounded::<()>(1);
        let config = crate::config::Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            mdns: false,
            ..Default::default()
        };
        let app = App::new(config, &ex, shutdown).expect("the app starts");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, peer) = listener.accept().unwrap();
        let stream = TcpStream::try_from(server).unwrap();
        let slot = app.limits.try_acquire(peer).expect("a slot");
        let task = serve(app, stream, Vec::new(), slot, None);
        let size = std::mem::size_of_val(&task);
        drop((task, client));
        // 2.6 KB in a test build, 2.9 KB in a release build.
        assert!(size <= 4096, "a connection's task is {size} bytes");
    }
}
