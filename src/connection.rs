//! One WebSocket connection: a smol task that forwards its subscriptions' frames, answers client
//! commands, pings, enforces the timeouts, and always ends with an explicit, time-bounded close.
//!
//! The task owns a `ConnSlot` (the counted place) and drops it last, so the counters and the close
//! log line are right whichever way the task ends, a panic included.

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

use crate::hub::{Frame, Subscription};
use crate::limits::ConnSlot;
use crate::protocol::{self, Command};
use crate::server::App;

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
pub async fn serve(
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
        app,
        ws,
        tx,
        rx,
        subs: Vec::new(),
        invalid_in_a_row: 0,
    };
    let reason = match AssertUnwindSafe(session.run(topic)).catch_unwind().await {
        Ok(reason) => reason,
        Err(panic) => {
            // The session's state is suspect now: do not speak WebSocket on it, just end it.
            log::error!("ws {peer}: task panicked: {}", panic_message(&*panic));
            "internal error (panic)".to_string()
        }
    };
    // Unsubscribe and release the socket before the slot, so "remaining" counts this one as gone.
    drop(session);
    // The peer may already be gone; shutting down twice is harmless.
    let _ = tcp.shutdown(std::net::Shutdown::Both);
    slot.set_reason(reason);
}

/// The text of a panic payload.
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> &str {
    p.downcast_ref::<&str>()
        .copied()
        .or_else(|| p.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(non-text panic)")
}

// Fields drop in declaration order: subscriptions go first, so a hub never holds the sender of a
// connection whose queue is already closed.
struct Session {
    /// Subscriptions held; dropping one unsubscribes.
    subs: Vec<Sub>,
    /// Configuration, shutdown signal, registry, catalogue.
    app: Arc<App>,
    /// The WebSocket.
    ws: WebSocketStream<TcpStream>,
    /// Handed to each hub this connection subscribes to.
    tx: Sender<Frame>,
    /// This connection's queue of frames from every subscribed hub (bounded by `--send-queue`).
    rx: Receiver<Frame>,
    /// Consecutive invalid commands.
    invalid_in_a_row: u32,
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

/// What a client command asks for.
enum Action {
    /// Send these frames back.
    Reply(Vec<Utf8Bytes>),
    /// Subscribe to this topic (async: the backfill may wait for its producer's first read).
    Subscribe(String),
}

/// What woke the session.
enum Event {
    /// The daemon is shutting down.
    Shutdown,
    /// A timer deadline passed (ping, pong, idle).
    Tick,
    /// The client sent something, or the stream ended.
    Client(Option<Result<Message, WsError>>),
    /// A hub published a frame for us.
    Frame(Frame),
}

/// Whether the ending still allows a Close frame.
enum End {
    /// Send this close code and reason, then shut the socket.
    Close(CloseCode, &'static str),
    /// The socket is unusable (gone, blocked): just shut it.
    Abort,
}

impl Session {
    /// The connection's life; returns why it ended.
    async fn run(&mut self, topic: Option<String>) -> String {
        let (end, reason) = self.serve(topic).await;
        if let End::Close(code, text) = end {
            self.close(code, text).await;
        }
        reason
    }

    /// Serves until something ends the connection.
    async fn serve(&mut self, topic: Option<String>) -> (End, String) {
        let cfg = &self.app.config;
        let (ping_interval, pong_timeout, idle_timeout) =
            (cfg.ping_interval, cfg.pong_timeout, cfg.idle_timeout);
        if let Some(topic) = topic {
            let replies = match self.subscribe(&topic).await {
                Ok(r) => r,
                Err(end) => return end,
            };
            if let Err(e) = self.send_all(replies).await {
                return (End::Abort, e);
            }
        }
        let mut last_client = Instant::now();
        let mut next_ping = last_client + ping_interval;
        let mut ping_sent: Option<Instant> = None;
        loop {
            let deadline = match ping_sent {
                Some(at) => at + pong_timeout,
                None => next_ping,
            };
            let deadline = if self.subs.is_empty() {
                deadline.min(last_client + idle_timeout)
            } else {
                deadline
            };
            // Wait for whichever comes first. Shutdown first; the client before the timer, so a pong
            // that arrived while a write was blocked counts before the pong deadline is judged.
            let event = {
                let ws = &mut self.ws;
                let rx = &self.rx;
                let shutdown = &self.app.shutdown;
                async {
                    // Errs at once when the shutdown channel is closed.
                    let _ = shutdown.recv().await;
                    Event::Shutdown
                }
                .or(async { Event::Client(ws.next().await) })
                .or(async {
                    Timer::at(deadline).await;
                    Event::Tick
                })
                .or(async {
                    // We hold a sender ourselves, so this only errs if the channel is closed.
                    rx.recv().await.map_or(Event::Shutdown, Event::Frame)
                })
                .await
            };
            match event {
                Event::Shutdown => {
                    return (
                        End::Close(CloseCode::Away, "server shutting down"),
                        "server shutdown".into(),
                    );
                }
                Event::Tick => {
                    let now = Instant::now();
                    if ping_sent.is_some_and(|at| now >= at + pong_timeout) {
                        return (
                            End::Close(CloseCode::Policy, "pong timeout"),
                            "pong timeout".into(),
                        );
                    }
                    if self.subs.is_empty() && now >= last_client + idle_timeout {
                        return (End::Close(CloseCode::Policy, "idle"), "idle timeout".into());
                    }
                    if ping_sent.is_none() && now >= next_ping {
                        if let Err(e) = self.send(Message::Ping(Default::default())).await {
                            return (End::Abort, e);
                        }
                        ping_sent = Some(now);
                        next_ping = now + ping_interval;
                    }
                }
                Event::Frame(frame) => {
                    let Some(sub) = self
                        .subs
                        .iter_mut()
                        .find(|s| s.membership.hub().id() == frame.hub_id())
                    else {
                        // Queued before an unsubscribe, or by a hub since replaced.
                        continue;
                    };
                    let seq = frame.seq();
                    let mut missed = 0;
                    // seq 0 is a notice (an error frame), outside the numbering.
                    if seq != 0 {
                        if seq <= sub.last_seq {
                            // Already in the backfill.
                            continue;
                        }
                        if sub.marks_gaps {
                            missed = seq - sub.last_seq - 1;
                        }
                        sub.last_seq = seq;
                    }
                    if missed > 0 {
                        let marker = serde_json::json!({
                            "type": "missed", "topic": frame.topic(), "lines": missed,
                        });
                        let marker = Message::Text(Utf8Bytes::from(marker.to_string()));
                        if let Err(e) = self.send(marker).await {
                            return (End::Abort, e);
                        }
                    }
                    if let Err(e) = self.send(Message::Text(frame.text())).await {
                        return (End::Abort, e);
                    }
                    frame.delivered();
                }
                Event::Client(None) => return (End::Abort, "peer closed the socket".into()),
                Event::Client(Some(Err(e))) => return client_error(e),
                Event::Client(Some(Ok(msg))) => {
                    // Only what the client says counts as activity: a browser answers pings by
                    // itself, so pongs would keep a forgotten, unsubscribed tab open forever.
                    if matches!(msg, Message::Text(_) | Message::Binary(_)) {
                        last_client = Instant::now();
                    }
                    let replies = match msg {
                        Message::Text(text) => match self.command_guarded(&text) {
                            Ok(Action::Reply(r)) => Ok(r),
                            Ok(Action::Subscribe(topic)) => self.subscribe(&topic).await,
                            Err(end) => Err(end),
                        },
                        Message::Binary(_) => self.invalid("binary frames are not supported", None),
                        Message::Pong(_) => {
                            ping_sent = None;
                            Ok(Vec::new())
                        }
                        // tungstenite queues the pong and sends it with our next read or write.
                        Message::Ping(_) | Message::Frame(_) => Ok(Vec::new()),
                        Message::Close(frame) => {
                            let code = frame.map_or(CloseCode::Status, |f| f.code);
                            // tungstenite has queued the Close reply; the next read flushes it.
                            self.finish_close().await;
                            return (End::Abort, format!("client closed ({})", u16::from(code)));
                        }
                    };
                    match replies {
                        Ok(replies) => {
                            if let Err(e) = self.send_all(replies).await {
                                return (End::Abort, e);
                            }
                        }
                        Err(end) => return end,
                    }
                }
            }
        }
    }

    /// Runs a client command, turning a panic in it into a 1011 close of this connection only.
    fn command_guarded(&mut self, text: &str) -> Result<Action, (End, String)> {
        match std::panic::catch_unwind(AssertUnwindSafe(|| self.command(text))) {
            Ok(r) => r,
            Err(panic) => {
                log::error!("ws command handler panicked: {}", panic_message(&*panic));
                Err((
                    End::Close(CloseCode::Error, "internal error"),
                    "internal error (panic)".into(),
                ))
            }
        }
    }

    /// Handles one client command; returns the frames to send back.
    fn command(&mut self, text: &str) -> Result<Action, (End, String)> {
        match protocol::parse(text) {
            Err(e) => self.invalid(&e, None).map(Action::Reply),
            Ok(Command::Subscribe(topic)) => Ok(Action::Subscribe(topic)),
            Ok(Command::Unsubscribe(topic)) => {
                self.invalid_in_a_row = 0;
                self.subs.retain(|s| s.topic != topic);
                Ok(Action::Reply(vec![reply("unsubscribed", &topic)]))
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

    /// Subscribes to `topic`; returns the acknowledgement and the backfill, or an error frame.
    async fn subscribe(&mut self, topic: &str) -> Result<Vec<Utf8Bytes>, (End, String)> {
        if self.subs.iter().any(|s| s.topic == topic) {
            self.invalid_in_a_row = 0;
            return Ok(vec![reply("subscribed", topic)]);
        }
        if self.subs.len() >= MAX_SUBSCRIPTIONS {
            let msg = format!("too many subscriptions (at most {MAX_SUBSCRIPTIONS})");
            return self.invalid(&msg, Some(topic));
        }
        // SECURITY: only catalogue names are topics; a name never reaches the filesystem.
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
        let mut out = vec![reply("subscribed", topic)];
        out.extend(backfill.frames);
        Ok(out)
    }

    /// An error frame for an invalid command; too many in a row end the connection with 1008.
    fn invalid(
        &mut self,
        error: &str,
        topic: Option<&str>,
    ) -> Result<Vec<Utf8Bytes>, (End, String)> {
        self.invalid_in_a_row += 1;
        if self.invalid_in_a_row >= MAX_INVALID_IN_A_ROW {
            return Err((
                End::Close(CloseCode::Policy, "too many invalid commands"),
                "too many invalid commands".into(),
            ));
        }
        let mut v = serde_json::json!({ "type": "error", "error": error });
        if let Some(t) = topic {
            v["topic"] = t.into();
        }
        Ok(vec![Utf8Bytes::from(v.to_string())])
    }

    /// Sends each frame; the first failure ends the connection.
    async fn send_all(&mut self, frames: Vec<Utf8Bytes>) -> Result<(), String> {
        for f in frames {
            self.send(Message::Text(f)).await?;
        }
        Ok(())
    }

    /// Sends one message within `--write-timeout`, giving up at once if the daemon shuts down (a
    /// write that is blocked would otherwise hold up the shutdown drain).
    async fn send(&mut self, msg: Message) -> Result<(), String> {
        let timeout = self.app.config.write_timeout;
        let shutdown = &self.app.shutdown;
        match self
            .ws
            .send(msg)
            .or(async {
                Timer::after(timeout).await;
                Err(WsError::Io(std::io::ErrorKind::TimedOut.into()))
            })
            .or(async {
                let _ = shutdown.recv().await;
                Err(WsError::Io(std::io::ErrorKind::Interrupted.into()))
            })
            .await
        {
            Ok(()) => Ok(()),
            Err(WsError::Io(e)) if e.kind() == std::io::ErrorKind::TimedOut => {
                Err("write timeout".into())
            }
            Err(WsError::Io(e)) if e.kind() == std::io::ErrorKind::Interrupted => {
                Err("server shutdown during a blocked write".into())
            }
            Err(e) => Err(format!("write failed: {e}")),
        }
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

/// How a read error ends the connection.
fn client_error(e: WsError) -> (End, String) {
    match e {
        WsError::Capacity(CapacityError::MessageTooLong { size, max_size }) => (
            End::Close(CloseCode::Size, "message too big"),
            format!("message too big ({size} > {max_size} bytes)"),
        ),
        WsError::Capacity(e) => (
            End::Close(CloseCode::Size, "message too big"),
            format!("capacity: {e}"),
        ),
        WsError::Protocol(e) => (
            End::Close(CloseCode::Protocol, "protocol error"),
            format!("protocol error: {e}"),
        ),
        WsError::Utf8(_) => (
            End::Close(CloseCode::Invalid, "invalid UTF-8"),
            "invalid UTF-8 in a text frame".into(),
        ),
        WsError::Io(e) => (End::Abort, format!("peer gone: {e}")),
        e => (End::Abort, format!("read failed: {e}")),
    }
}

/// `{"type": kind, "topic": topic}`.
fn reply(kind: &str, topic: &str) -> Utf8Bytes {
    Utf8Bytes::from(serde_json::json!({ "type": kind, "topic": topic }).to_string())
}
