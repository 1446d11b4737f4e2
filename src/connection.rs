//! One WebSocket connection: a smol task that forwards its subscriptions' frames, answers client
//! commands, pings, enforces the timeouts, and always ends with an explicit, time-bounded close.
//!
//! The task owns a `ConnSlot` (the counted place) and drops it last, so the counters and the close
//! log line are right whichever way the task ends, a panic included. Every way it can end is one
//! [`Ending`]: one `match` gives its close code, its `Display` the log line.

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_channel::{Receiver, Sender};
use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::Message;
use async_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::protocol::frame::{CloseFrame, Utf8Bytes};
use async_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use smol::Timer;
use smol::future::FutureExt;
use smol::net::TcpStream;
use smol::stream::StreamExt;

use crate::app::App;
use crate::hub::{Frame, Subscription};
use crate::limits::ConnSlot;
use crate::protocol::{self, Command};

/// Largest client message: commands are small.
pub const MAX_CLIENT_MESSAGE: usize = 4 * 1024;
/// Subscriptions one connection may hold.
pub const MAX_SUBSCRIPTIONS: usize = 32;
/// Invalid commands in a row after which the connection is closed with 1008.
pub const MAX_INVALID_IN_A_ROW: u32 = 100;
/// How long a close handshake may take before the socket is shut down regardless.
pub const CLOSE_GRACE: Duration = Duration::from_secs(1);

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
    let ws =
        WebSocketStream::from_partially_read(stream, leftover, Role::Server, Some(ws_config()))
            .await;
    let (tx, rx) = async_channel::bounded(app.config.send_queue);
    let mut session = Session {
        clock: Clock::new(Instant::now(), app.config.ping_interval),
        app,
        ws,
        tx,
        rx,
        subs: Vec::new(),
        invalid_in_a_row: 0,
    };
    let ending = match AssertUnwindSafe(session.run(topic)).catch_unwind().await {
        Ok(ending) => ending,
        Err(panic) => {
            // The session's state is suspect now: do not speak WebSocket on it, just end it.
            log::error!("ws {peer}: task panicked: {}", panic_message(&*panic));
            Ending::Panic
        }
    };
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

/// Why a connection ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Ending {
    /// The daemon is shutting down.
    Shutdown,
    /// The daemon shut down while a write to this client was blocked.
    ShutdownDuringWrite,
    /// A ping went unanswered for `--pong-timeout`.
    PongTimeout,
    /// No subscription and no client message for `--idle-timeout`.
    Idle,
    /// `MAX_INVALID_IN_A_ROW` invalid commands in a row.
    InvalidCommands,
    /// A client message over `MAX_CLIENT_MESSAGE`; how big, where known.
    TooBig(String),
    /// The client broke the WebSocket protocol.
    ProtocolError(String),
    /// A text message that is not UTF-8.
    InvalidUtf8,
    /// A command handler (or the whole task) panicked.
    Panic,
    /// The client closed with this code (1005: none given); tungstenite answered it.
    ClientClosed(u16),
    /// A write blocked past `--write-timeout`.
    WriteTimeout,
    /// A write failed.
    WriteFailed(String),
    /// The client went away: the stream ended (`None`) or the socket failed.
    Gone(Option<String>),
    /// A read failed for another reason.
    ReadFailed(String),
}

impl Ending {
    /// The Close frame this ending sends (DESIGN.md's close-code table), or `None` where the
    /// socket cannot take one (gone, blocked, or the client's own close already answered).
    fn close_frame(&self) -> Option<(CloseCode, &'static str)> {
        match self {
            Ending::Shutdown => Some((CloseCode::Away, "server shutting down")),
            Ending::PongTimeout => Some((CloseCode::Policy, "pong timeout")),
            Ending::Idle => Some((CloseCode::Policy, "idle")),
            Ending::InvalidCommands => Some((CloseCode::Policy, "too many invalid commands")),
            Ending::TooBig(_) => Some((CloseCode::Size, "message too big")),
            Ending::ProtocolError(_) => Some((CloseCode::Protocol, "protocol error")),
            Ending::InvalidUtf8 => Some((CloseCode::Invalid, "invalid UTF-8")),
            Ending::Panic => Some((CloseCode::Error, "internal error")),
            Ending::ShutdownDuringWrite
            | Ending::ClientClosed(_)
            | Ending::WriteTimeout
            | Ending::WriteFailed(_)
            | Ending::Gone(_)
            | Ending::ReadFailed(_) => None,
        }
    }

    /// How a read error ends the connection.
    fn from_read(e: WsError) -> Ending {
        match e {
            WsError::Capacity(CapacityError::MessageTooLong { size, max_size }) => {
                Ending::TooBig(format!("{size} > {max_size} bytes"))
            }
            WsError::Capacity(e) => Ending::TooBig(e.to_string()),
            WsError::Protocol(e) => Ending::ProtocolError(e.to_string()),
            WsError::Utf8(_) => Ending::InvalidUtf8,
            WsError::Io(e) => Ending::Gone(Some(e.to_string())),
            e => Ending::ReadFailed(e.to_string()),
        }
    }
}

/// The `reason=` of the close log line.
impl fmt::Display for Ending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ending::Shutdown => f.write_str("server shutdown"),
            Ending::ShutdownDuringWrite => f.write_str("server shutdown during a blocked write"),
            Ending::PongTimeout => f.write_str("pong timeout"),
            Ending::Idle => f.write_str("idle timeout"),
            Ending::InvalidCommands => f.write_str("too many invalid commands"),
            Ending::TooBig(size) => write!(f, "message too big ({size})"),
            Ending::ProtocolError(e) => write!(f, "protocol error: {e}"),
            Ending::InvalidUtf8 => f.write_str("invalid UTF-8 in a text frame"),
            Ending::Panic => f.write_str("internal error (panic)"),
            Ending::ClientClosed(code) => write!(f, "client closed ({code})"),
            Ending::WriteTimeout => f.write_str("write timeout"),
            Ending::WriteFailed(e) => write!(f, "write failed: {e}"),
            Ending::Gone(None) => f.write_str("peer closed the socket"),
            Ending::Gone(Some(e)) => write!(f, "peer gone: {e}"),
            Ending::ReadFailed(e) => write!(f, "read failed: {e}"),
        }
    }
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
    ws: WebSocketStream<TcpStream>,
    /// Handed to each hub this connection subscribes to.
    tx: Sender<Frame>,
    /// This connection's queue of frames from every subscribed hub (bounded by `--send-queue`).
    rx: Receiver<Frame>,
    /// Consecutive invalid commands.
    invalid_in_a_row: u32,
    /// The ping, pong and idle deadlines.
    clock: Clock,
}

struct Sub {
    /// Subscribed topic.
    topic: String,
    /// The hub membership; dropping it unsubscribes.
    membership: Subscription,
    /// The last `seq` sent (or covered by the backfill); older frames are skipped.
    last_seq: u64,
    /// A log topic: a jump in `seq` is announced with a `missed` marker.
    marks_gaps: bool,
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

/// What a client command asks for.
enum Action {
    /// Send these frames back.
    Reply(Vec<Utf8Bytes>),
    /// Subscribe to this topic (async: the backfill may wait for its producer's first read).
    Subscribe(String),
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
        if let Some((code, text)) = ending.close_frame() {
            self.close(code, text).await;
        }
        ending
    }

    /// Serves until something ends the connection: each wake-up goes to its own method.
    async fn serve(&mut self, topic: Option<String>) -> Ending {
        if let Some(topic) = topic
            && let Err(ending) = self.subscribe_and_reply(&topic).await
        {
            return ending;
        }
        self.clock = Clock::new(Instant::now(), self.app.config.ping_interval);
        loop {
            let step = match self.next_wake().await {
                Wake::Shutdown => Err(Ending::Shutdown),
                Wake::Tick => self.on_tick().await,
                Wake::Frame(frame) => self.on_frame(frame).await,
                Wake::Client(None) => Err(Ending::Gone(None)),
                Wake::Client(Some(Err(e))) => Err(Ending::from_read(e)),
                Wake::Client(Some(Ok(msg))) => self.on_message(msg).await,
            };
            if let Err(ending) = step {
                return ending;
            }
        }
    }

    /// Waits for whichever comes first. Shutdown first; the client before the timer, so a pong
    /// that arrived while a write was blocked counts before the pong deadline is judged.
    async fn next_wake(&mut self) -> Wake {
        let cfg = &self.app.config;
        let deadline = match self.clock.ping_sent {
            Some(at) => at + cfg.pong_timeout,
            None => self.clock.next_ping,
        };
        let deadline = if self.subs.is_empty() {
            deadline.min(self.clock.last_client + cfg.idle_timeout)
        } else {
            deadline
        };
        let ws = &mut self.ws;
        let rx = &self.rx;
        let shutdown = &self.app.shutdown;
        async {
            // Errs at once when the shutdown channel is closed.
            let _ = shutdown.recv().await;
            Wake::Shutdown
        }
        .or(async { Wake::Client(ws.next().await) })
        .or(async {
            Timer::at(deadline).await;
            Wake::Tick
        })
        .or(async {
            // We hold a sender ourselves, so this only errs if the channel is closed.
            rx.recv().await.map_or(Wake::Shutdown, Wake::Frame)
        })
        .await
    }

    /// A deadline passed: end an unanswered ping or an idle connection, or send the next ping.
    async fn on_tick(&mut self) -> Step {
        let cfg = &self.app.config;
        let now = Instant::now();
        if self
            .clock
            .ping_sent
            .is_some_and(|at| now >= at + cfg.pong_timeout)
        {
            return Err(Ending::PongTimeout);
        }
        if self.subs.is_empty() && now >= self.clock.last_client + cfg.idle_timeout {
            return Err(Ending::Idle);
        }
        if self.clock.ping_sent.is_none() && now >= self.clock.next_ping {
            let next_ping = now + cfg.ping_interval;
            self.send(Message::Ping(Default::default())).await?;
            self.clock.ping_sent = Some(now);
            self.clock.next_ping = next_ping;
        }
        Ok(())
    }

    /// A hub published: forward the frame unless the backfill covered it, with a `missed`
    /// marker first where a log subscriber lost lines.
    async fn on_frame(&mut self, frame: Frame) -> Step {
        let Some(sub) = self
            .subs
            .iter_mut()
            .find(|s| s.membership.hub().id() == frame.hub_id())
        else {
            // Queued before an unsubscribe, or by a hub since replaced.
            return Ok(());
        };
        let seq = frame.seq();
        let mut missed = 0;
        // seq 0 is a notice (an error frame), outside the numbering.
        if seq != 0 {
            if seq <= sub.last_seq {
                // Already in the backfill.
                return Ok(());
            }
            if sub.marks_gaps {
                missed = seq - sub.last_seq - 1;
            }
            sub.last_seq = seq;
        }
        if missed > 0 {
            let marker = protocol::missed(frame.topic(), missed);
            self.send(Message::Text(marker)).await?;
        }
        self.send(Message::Text(frame.text())).await?;
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
                Action::Subscribe(topic) => return self.subscribe_and_reply(&topic).await,
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

    /// Runs a client command, turning a panic in it into a 1011 close of this connection only.
    fn command_guarded(&mut self, text: &str) -> Step<Action> {
        match std::panic::catch_unwind(AssertUnwindSafe(|| self.command(text))) {
            Ok(r) => r,
            Err(panic) => {
                log::error!("ws command handler panicked: {}", panic_message(&*panic));
                Err(Ending::Panic)
            }
        }
    }

    /// Handles one client command; returns the frames to send back.
    fn command(&mut self, text: &str) -> Step<Action> {
        match protocol::parse(text) {
            Err(e) => self.invalid(&e, None).map(Action::Reply),
            Ok(Command::Subscribe(topic)) => Ok(Action::Subscribe(topic)),
            Ok(Command::Unsubscribe(topic)) => {
                self.invalid_in_a_row = 0;
                self.subs.retain(|s| s.topic != topic);
                Ok(Action::Reply(vec![protocol::unsubscribed(&topic)]))
            }
            Ok(Command::Other(op)) if op == "panic" && self.app.config.test_hooks => {
                panic!("test hook: injected panic in a connection handler")
            }
            Ok(Command::Other(op)) => self
                .invalid(
                    &format!("unknown op '{op}' (expected subscribe or unsubscribe)"),
                    None,
                )
                .map(Action::Reply),
        }
    }

    /// Subscribes to `topic` and sends the acknowledgement and backfill (or the error frame).
    async fn subscribe_and_reply(&mut self, topic: &str) -> Step {
        let replies = self.subscribe(topic).await?;
        self.send_all(replies).await
    }

    /// Subscribes to `topic`; returns the acknowledgement and the backfill, or an error frame.
    async fn subscribe(&mut self, topic: &str) -> Step<Vec<Utf8Bytes>> {
        if self.subs.iter().any(|s| s.topic == topic) {
            self.invalid_in_a_row = 0;
            return Ok(vec![protocol::subscribed(topic)]);
        }
        if self.subs.len() >= MAX_SUBSCRIPTIONS {
            let msg = format!("too many subscriptions (at most {MAX_SUBSCRIPTIONS})");
            return self.invalid(&msg, Some(topic));
        }
        // SECURITY: only catalog names are topics; a name never reaches the filesystem.
        let sub = match self.app.registry.subscribe(topic, &self.tx) {
            Ok(sub) => sub,
            Err(e) => return self.invalid(&e.to_string(), Some(topic)),
        };
        self.invalid_in_a_row = 0;
        // Taken after subscribing, so nothing published in between is missed; overlap is skipped by seq.
        let mut backfill = self.app.topics.backfill(topic).await;
        if backfill.frames.is_empty()
            && let Some(last) = sub.hub().last_frame()
        {
            // Periodic topics: the latest frame now rather than up to a period from now.
            backfill.covers_seq = last.seq();
            backfill.frames.push(last.text());
        }
        self.subs.push(Sub {
            topic: topic.to_string(),
            membership: sub,
            last_seq: backfill.covers_seq,
            marks_gaps: self.app.topics.is_log(topic),
        });
        let mut out = vec![protocol::subscribed(topic)];
        out.extend(backfill.frames);
        Ok(out)
    }

    /// An error frame for an invalid command; too many in a row end the connection with 1008.
    fn invalid(&mut self, error: &str, topic: Option<&str>) -> Step<Vec<Utf8Bytes>> {
        self.invalid_in_a_row += 1;
        if self.invalid_in_a_row >= MAX_INVALID_IN_A_ROW {
            return Err(Ending::InvalidCommands);
        }
        Ok(vec![protocol::error_frame(error, topic)])
    }

    /// Sends each frame; the first failure ends the connection.
    async fn send_all(&mut self, frames: Vec<Utf8Bytes>) -> Step {
        for f in frames {
            self.send(Message::Text(f)).await?;
        }
        Ok(())
    }

    /// Sends one message within `--write-timeout`, giving up at once if the daemon shuts down (a
    /// write that is blocked would otherwise hold up the shutdown drain).
    async fn send(&mut self, msg: Message) -> Step {
        let timeout = self.app.config.write_timeout;
        let shutdown = &self.app.shutdown;
        async {
            self.ws
                .send(msg)
                .await
                .map_err(|e| Ending::WriteFailed(e.to_string()))
        }
        .or(async {
            Timer::after(timeout).await;
            Err(Ending::WriteTimeout)
        })
        .or(async {
            let _ = shutdown.recv().await;
            Err(Ending::ShutdownDuringWrite)
        })
        .await
    }

    /// Sends a Close frame and waits (bounded) for the client's reply.
    async fn close(&mut self, code: CloseCode, reason: &'static str) {
        let frame = CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        };
        let sent = self
            .ws
            .close(Some(frame))
            .or(async {
                Timer::after(CLOSE_GRACE).await;
                Err(WsError::Io(std::io::ErrorKind::TimedOut.into()))
            })
            .await;
        if sent.is_ok() {
            self.finish_close().await;
        }
    }

    /// Reads until the close handshake completes or the grace period ends; data read is discarded.
    async fn finish_close(&mut self) {
        let ws = &mut self.ws;
        let _ = async { while let Some(Ok(_)) = ws.next().await {} }
            .or(async {
                Timer::after(CLOSE_GRACE).await;
            })
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_ending_has_one_close_code_and_a_log_line() {
        let cases: &[(Ending, Option<u16>, &str)] = &[
            (Ending::Shutdown, Some(1001), "server shutdown"),
            (Ending::PongTimeout, Some(1008), "pong timeout"),
            (Ending::Idle, Some(1008), "idle timeout"),
            (
                Ending::InvalidCommands,
                Some(1008),
                "too many invalid commands",
            ),
            (
                Ending::TooBig("5000 > 4096 bytes".into()),
                Some(1009),
                "message too big (5000 > 4096 bytes)",
            ),
            (Ending::Panic, Some(1011), "internal error (panic)"),
            (Ending::ClientClosed(1000), None, "client closed (1000)"),
            (Ending::WriteTimeout, None, "write timeout"),
            (Ending::Gone(None), None, "peer closed the socket"),
        ];
        for (ending, code, line) in cases {
            assert_eq!(
                ending.close_frame().map(|(c, _)| u16::from(c)),
                *code,
                "{ending:?}"
            );
            assert_eq!(ending.to_string(), *line);
        }
    }

    #[test]
    fn read_errors_map_to_endings() {
        let too_long = WsError::Capacity(CapacityError::MessageTooLong {
            size: 5000,
            max_size: 4096,
        });
        assert_eq!(
            Ending::from_read(too_long),
            Ending::TooBig("5000 > 4096 bytes".into())
        );
        let gone = WsError::Io(std::io::ErrorKind::ConnectionReset.into());
        assert!(matches!(Ending::from_read(gone), Ending::Gone(Some(_))));
    }
}
