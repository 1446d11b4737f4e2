//! One peer board, followed while the `fleet` topic is watched: a WebSocket client connection
//! subscribed to the peer's `summary`, pinged like the daemon pings its own clients, and
//! reconnected with backoff. What the peer sends is untrusted: frames are size-capped, counted
//! against a rate, and checked; a peer that breaks those rules is `broken` and is left alone
//! for a while.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::handshake::client::generate_key;
use async_tungstenite::tungstenite::handshake::derive_accept_key;
use async_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use async_tungstenite::tungstenite::{Error as WsError, Message};
use smol::future::FutureExt;
use smol::io::AsyncWriteExt;
use smol::net::TcpStream;
use smol::stream::StreamExt;

use super::summary;
use super::{Board, State};
use crate::auth::Secret;
use crate::lock::lock;

/// Largest frame or message a peer may send (a summary is a few hundred bytes; its
/// acknowledgement and error frames are smaller still).
pub const MAX_PEER_FRAME: usize = 16 * 1024;
/// Frames a peer may send in a burst, and per second after it (a summary comes once a second).
pub const PEER_BURST: u32 = 20;
/// Frames a second a peer may keep sending.
pub const PEER_PER_SEC: u32 = 5;
/// First reconnect delay; it doubles up to `BACKOFF_MAX`.
pub const BACKOFF_MIN: Duration = Duration::from_millis(500);
/// Longest reconnect delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// How long a broken or locked peer is left alone before it is tried again.
pub const LEFT_ALONE: Duration = Duration::from_secs(30);
/// How long connecting and the upgrade may take.
const CONNECT_DEADLINE: Duration = Duration::from_secs(5);
/// Largest upgrade answer head.
const MAX_HEAD: usize = 8 * 1024;

/// What the peer connections need from the daemon's configuration.
pub struct Settings {
    /// The token this board shares with its `--peer` boards.
    pub token: Option<Secret>,
    /// How often peers are pinged.
    pub ping: Duration,
    /// How long a ping may stay unanswered.
    pub pong: Duration,
}

/// How a connection to the peer ended.
enum End {
    /// It cannot be reached or stopped answering: try again soon.
    Offline(String),
    /// It needs a token we do not have.
    Locked(String),
    /// It broke the rules: leave it alone for a while.
    Broken(String),
}

/// Small buffers, and the cap on what a peer may send.
fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(0)
        .max_write_buffer_size(16 * 1024)
        .max_message_size(Some(MAX_PEER_FRAME))
        .max_frame_size(Some(MAX_PEER_FRAME))
}

/// Follows the peer at `address` (HOST:PORT as configured) for as long as this future lives,
/// keeping `board` up to date; `changed` is notified when its state changes.
pub async fn follow(
    address: String,
    settings: Arc<Settings>,
    board: Arc<Mutex<Board>>,
    changed: Arc<event_listener::Event>,
) {
    let mut backoff = BACKOFF_MIN;
    let mut seed = address
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(31) ^ u64::from(b));
    loop {
        let started = Instant::now();
        let end = connect_and_read(&address, &settings, &board, &changed).await;
        let wait = {
            let mut b = lock(&board);
            let (state, why, wait) = match end {
                End::Offline(why) => (State::Offline, why, None),
                End::Locked(why) => (State::Locked, why, Some(LEFT_ALONE)),
                End::Broken(why) => (State::Broken, why, Some(LEFT_ALONE)),
            };
            if b.state != state || b.reason.as_deref() != Some(&why) {
                log::info!("fleet: {address} is {}: {why}", state.name());
            }
            b.state = state;
            b.reason = Some(why);
            wait
        };
        changed.notify(usize::MAX);
        // A connection that was up a while starts the backoff again.
        if started.elapsed() > BACKOFF_MAX {
            backoff = BACKOFF_MIN;
        }
        // Jitter: a quarter either way, so boards restarted together do not call in step.
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let jitter = 0.75 + (seed >> 33) as f64 / (1u64 << 31) as f64 * 0.5;
        let delay = wait.unwrap_or_else(|| backoff.mul_f64(jitter));
        backoff = (backoff * 2).min(BACKOFF_MAX);
        smol::Timer::after(delay).await;
    }
}

/// One connection: upgrade, subscribe, read summaries until it ends.
async fn connect_and_read(
    address: &str,
    settings: &Settings,
    board: &Mutex<Board>,
    changed: &event_listener::Event,
) -> End {
    let ws = match upgrade(address, settings.token.as_ref())
        .or(async {
            smol::Timer::after(CONNECT_DEADLINE).await;
            Err(End::Offline(format!(
                "no answer within {} s",
                CONNECT_DEADLINE.as_secs()
            )))
        })
        .await
    {
        Ok(ws) => ws,
        Err(end) => return end,
    };
    if let Ok(a) = ws.get_ref().peer_addr() {
        lock(board).connected = Some(a);
    }
    read(ws, settings, board, changed).await
}

/// Connects and upgrades: the `Host` header is the IP literal connected to, so the peer's Host
/// check admits it whatever name it was configured by.
async fn upgrade(address: &str, token: Option<&Secret>) -> Result<WebSocketStream<TcpStream>, End> {
    let (host, port) = address
        .rsplit_once(':')
        .and_then(|(h, p)| {
            Some((
                h.trim_start_matches('[').trim_end_matches(']'),
                p.parse().ok()?,
            ))
        })
        .ok_or_else(|| End::Offline(format!("{address} is not HOST:PORT")))?;
    // An IP literal is connected to as it is: a (name, port) pair is resolved on smol's blocking
    // pool, a thread (up to one per peer when they all connect at once).
    let connect = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => TcpStream::connect(std::net::SocketAddr::new(ip, port)).await,
        Err(_) => TcpStream::connect((host, port)).await,
    };
    let mut tcp = connect.map_err(|e| End::Offline(format!("cannot connect to {address}: {e}")))?;
    let addr = tcp
        .peer_addr()
        .map_err(|e| End::Offline(format!("{address}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    let key = generate_key();
    let auth = token.map_or(String::new(), |t| {
        format!("Authorization: Bearer {}\r\n", t.expose())
    });
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\
         User-Agent: edgemon/{}\r\n{auth}\r\n",
        env!("CARGO_PKG_VERSION")
    );
    let io = |e: std::io::Error| End::Offline(format!("{addr}: {e}"));
    tcp.write_all(request.as_bytes()).await.map_err(io)?;
    let head = crate::http::read_response_head(&mut tcp, MAX_HEAD)
        .await
        .map_err(|e| match e {
            crate::http::ResponseHeadError::Io(m) => End::Offline(format!("{addr}: {m}")),
            crate::http::ResponseHeadError::NotHttp(m) => {
                End::Broken(format!("{addr} answered the upgrade with {m}"))
            }
        })?;
    let status = head.status;
    match status {
        101 => {}
        401 => {
            return Err(End::Locked(match token {
                Some(_) => format!("{addr} refuses this board's token"),
                None => format!("{addr} needs a token (--token-file)"),
            }));
        }
        // Full, or too many from this address: it may have room later.
        429 | 503 => return Err(End::Offline(format!("{addr} answered {status} (full)"))),
        s => return Err(End::Broken(format!("{addr} refused the upgrade with {s}"))),
    }
    if head.header("sec-websocket-accept") != Some(derive_accept_key(key.as_bytes()).as_str()) {
        return Err(End::Broken(format!(
            "{addr} answered 101 without the right Sec-WebSocket-Accept"
        )));
    }
    // Bytes past the head (the first frames, if the peer was quick) are not lost.
    Ok(WebSocketStream::from_partially_read(tcp, head.rest, Role::Client, Some(config())).await)
}

/// What woke the reader.
enum Wake {
    Frame(Option<Result<Message, WsError>>),
    Tick,
}

/// Subscribes to `summary` and reads frames until the connection ends; pings every
/// `settings.ping` and ends when a ping stays unanswered for `settings.pong`.
async fn read(
    mut ws: WebSocketStream<TcpStream>,
    settings: &Settings,
    board: &Mutex<Board>,
    changed: &event_listener::Event,
) -> End {
    let sub = r#"{"op":"subscribe","topic":"summary"}"#;
    if let Err(e) = ws.send(Message::text(sub)).await {
        return End::Offline(format!("cannot subscribe: {e}"));
    }
    let mut bucket = crate::rate::Bucket::new(PEER_BURST, PEER_PER_SEC, Instant::now());
    let mut next_ping = Instant::now() + settings.ping;
    // When the unanswered ping was sent.
    let mut ping_out: Option<Instant> = None;
    loop {
        // Every deadline is judged on every wake-up.
        let now = Instant::now();
        if let Some(sent) = ping_out
            && now >= sent + settings.pong
        {
            return End::Offline(format!("no pong within {} s", settings.pong.as_secs_f32()));
        }
        if ping_out.is_none() && now >= next_ping {
            if let Err(e) = ws.send(Message::Ping(Default::default())).await {
                return End::Offline(format!("cannot ping: {e}"));
            }
            ping_out = Some(now);
            next_ping = now + settings.ping;
        }
        let due = match ping_out {
            Some(sent) => sent + settings.pong,
            None => next_ping,
        };
        let wake = async { Wake::Frame(ws.next().await) }
            .or(async {
                smol::Timer::at(due).await;
                Wake::Tick
            })
            .await;
        let msg = match wake {
            Wake::Tick => continue,
            Wake::Frame(None) => return End::Offline("the connection ended".into()),
            Wake::Frame(Some(Err(WsError::Capacity(e)))) => {
                return End::Broken(format!("sent a frame over {MAX_PEER_FRAME} bytes ({e})"));
            }
            Wake::Frame(Some(Err(WsError::Protocol(e)))) => {
                return End::Broken(format!("broke the WebSocket protocol ({e})"));
            }
            Wake::Frame(Some(Err(e))) => return End::Offline(format!("the connection broke: {e}")),
            Wake::Frame(Some(Ok(m))) => m,
        };
        let now = Instant::now();
        if !bucket.has_token(now) {
            return End::Broken(format!("sent more than {PEER_PER_SEC} frames a second"));
        }
        bucket.take(now);
        let text = match msg {
            Message::Text(t) => t,
            Message::Pong(_) => {
                ping_out = None;
                continue;
            }
            Message::Close(_) => return End::Offline("it closed the connection".into()),
            Message::Ping(_) | Message::Frame(_) => continue,
            Message::Binary(_) => return End::Broken("sent a binary frame".into()),
        };
        // Any frame proves the peer alive, like a pong.
        ping_out = None;
        let v: serde_json::Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(e) => return End::Broken(format!("sent a frame that is not JSON ({e})")),
        };
        match (v["type"].as_str(), v["topic"].as_str()) {
            (Some("data"), Some("summary")) => {}
            (Some("error"), _) => {
                let why = v["error"].as_str().unwrap_or("an error");
                let mut why = why.to_string();
                why.truncate(crate::collect::floor_char_boundary(&why, 200));
                return End::Broken(format!("answered the subscription with: {why}"));
            }
            // Acknowledgements and other topics' frames carry nothing for the fleet.
            (Some(_), _) => continue,
            _ => return End::Broken("sent a frame without a type".into()),
        }
        let s = match summary::validate(&v["data"]) {
            Ok(s) => s,
            Err(why) => return End::Broken(why),
        };
        let came_online = {
            let mut b = lock(board);
            let came = b.state != State::Online;
            if came {
                log::info!("fleet: {} is online ({})", b.address, s.name);
            }
            b.state = State::Online;
            b.reason = None;
            b.last_seen = Some(crate::protocol::unix_ms());
            b.name = Some(s.name.clone());
            b.summary = Some(s);
            came
        };
        // A new state is published at once; new figures go with the next publication (every
        // second), so 50 peers' summaries do not make the fleet frame five times a second.
        if came_online {
            changed.notify(usize::MAX);
        }
    }
}
