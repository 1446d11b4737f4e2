//! The server: shared state, the accept loop, one HTTP task per TCP connection, the WebSocket
//! upgrade, and a shutdown that closes every client and drains within a bound.

use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_channel::{Receiver, Sender};
use async_tungstenite::tungstenite::handshake::derive_accept_key;
use event_listener::{Event, Listener};
use smol::future::FutureExt;
use smol::net::TcpStream;
use smol::{Async, Executor, Timer};

use crate::auth;
use crate::config::Config;
use crate::connection::{self, panic_message};
use crate::http::{self, HeadError, Request, Response};
use crate::hub::Registry;
use crate::limits::{Limits, Rejection};
use crate::logs::Source;
use crate::routes::{self, Routed};
use crate::sampler::Sampler;
use crate::topics::Topics;

/// Kernel send buffer of a WebSocket socket. The kernel's autotuning lets a stalled client pin
/// megabytes of kernel memory before a write ever blocks; capped, a client that stops reading
/// blocks our writes within a few frames and `--write-timeout` ends it.
pub const WS_SEND_BUFFER: usize = 64 * 1024;

/// How long shutdown waits for connections to close before exiting anyway; under the contract's
/// 5 s so the process is gone within 5 s of the signal.
pub const DRAIN_TIMEOUT: Duration = Duration::from_millis(4500);

/// State shared by every task of one daemon.
pub struct App {
    /// The validated configuration.
    pub config: Config,
    /// Admission counters (global and per IP).
    pub limits: Arc<Limits>,
    /// Live hubs.
    pub registry: Arc<Registry>,
    /// Which topics exist.
    pub topics: Arc<Topics>,
    /// The measuring thread's cache.
    pub sampler: Arc<Sampler>,
    /// Closed at shutdown; every task races its waits against it.
    pub shutdown: Receiver<()>,
    /// Notified when connections or hubs change (stats watchers, tests).
    pub changed: Arc<Event>,
    /// When the daemon started.
    pub started: Instant,
    /// Where tasks are spawned; weak so no task keeps the executor (and so itself) alive.
    ex: Weak<Executor<'static>>,
}

impl App {
    /// The `server` topic's data: the daemon's own view of itself.
    pub fn server_view(&self) -> serde_json::Value {
        let own = self.sampler.own();
        let per_ip: Vec<_> = self
            .limits
            .per_ip()
            .into_iter()
            .map(|(ip, n)| serde_json::json!({ "ip": ip.to_string(), "connections": n }))
            .collect();
        let frames_sent: u64 = self.registry.topic_counters().iter().map(|c| c.1).sum();
        serde_json::json!({
            "active_connections": self.limits.active(),
            "connections_total": self.limits.connections_total(),
            "per_ip": per_ip,
            "hubs": self.registry.stats(),
            "rss": own.rss,
            "cpu": own.cpu,
            "uptime": self.started.elapsed().as_secs(),
            "frames_sent": frames_sent,
        })
    }

    /// `/api/websocket/stats`, live.
    pub fn stats(&self) -> serde_json::Value {
        let (per_ip, total) = self.limits.rejected();
        serde_json::json!({
            "status": "healthy",
            "active_connections": self.limits.active(),
            "max_connections": self.limits.max_total,
            "max_per_ip": self.limits.max_per_ip,
            "hubs": self.registry.stats(),
            "connections_total": self.limits.connections_total(),
            "rejected_total": per_ip + total,
            "rejected": { "per_ip": per_ip, "max_connections": total },
            "producers": self.topics.running(),
            "uptime_seconds": self.started.elapsed().as_secs(),
        })
    }
}

/// A bound, not yet running daemon.
pub struct Server {
    /// Shared state.
    app: Arc<App>,
    /// The executor every task of this daemon runs on; dropped after the drain.
    ex: Arc<Executor<'static>>,
    /// The listening socket.
    listener: Async<TcpListener>,
    /// Closing it tells every task to wind down.
    shutdown_tx: Sender<()>,
}

impl Server {
    /// Binds the listening socket and starts the sampler thread.
    pub fn bind(config: Config) -> io::Result<Server> {
        let listener = Async::<TcpListener>::bind(config.listen)?;
        let ex = Arc::new(Executor::new());
        let changed = Arc::new(Event::new());
        let notify = |e: &Arc<Event>| {
            let e = e.clone();
            Box::new(move || {
                e.notify(usize::MAX);
            }) as Box<dyn Fn() + Send + Sync>
        };
        let sampler = Arc::new(Sampler::start(config.history, config.sys_root.clone())?);
        let flood = config.flood;
        let mut logs: Vec<(String, Source)> = config
            .logs
            .iter()
            .map(|(name, path)| (name.clone(), Source::File(path.clone())))
            .collect();
        logs.extend(config.journals.iter().map(|(name, unit)| {
            let source = Source::Journal {
                unit: unit.clone(),
                dir: config.journal_dir.clone(),
            };
            (name.clone(), source)
        }));
        let topics = Arc::new(Topics::new(sampler.clone(), flood, logs, changed.clone()));
        let registry = Registry::new(
            topics.clone(),
            Arc::downgrade(&ex),
            config.hub_linger,
            notify(&changed),
        );
        let limits = Arc::new(Limits::new(
            config.max_connections,
            config.max_per_ip,
            notify(&changed),
        ));
        let (shutdown_tx, shutdown) = async_channel::bounded(1);
        let app = Arc::new(App {
            config,
            limits,
            registry,
            topics,
            sampler,
            shutdown,
            changed,
            started: Instant::now(),
            ex: Arc::downgrade(&ex),
        });
        app.topics.set_app(Arc::downgrade(&app));
        Ok(Server {
            app,
            ex,
            listener,
            shutdown_tx,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.get_ref().local_addr()
    }

    /// The shared state.
    pub fn app(&self) -> Arc<App> {
        self.app.clone()
    }

    /// Serves on the current thread until `stop` completes, then closes every client (1001) and
    /// returns once all connections are gone or `DRAIN_TIMEOUT` has passed.
    pub fn run(self, stop: impl Future<Output = ()> + Send + 'static) {
        let Server {
            app,
            ex,
            listener,
            shutdown_tx,
        } = self;
        let main = {
            let ex = ex.clone();
            let app = app.clone();
            async move {
                // Every accepted socket's task holds a clone; the channel closes when all are done.
                let (drain_tx, drain_rx) = async_channel::bounded::<()>(1);
                accept_loop(&ex, &app, &listener, &drain_tx, stop).await;
                drop(listener);
                log::info!(
                    "shutting down: closing {} connection(s)",
                    app.limits.active()
                );
                shutdown_tx.close();
                drop(drain_tx);
                let drained = async {
                    // Errs when every task's sender is gone, which is exactly what we wait for.
                    let _ = drain_rx.recv().await;
                    true
                }
                .or(async {
                    Timer::after(DRAIN_TIMEOUT).await;
                    false
                })
                .await;
                if !drained {
                    log::warn!(
                        "shutdown: {} connection(s) still open after {DRAIN_TIMEOUT:?}, dropping them",
                        app.limits.active()
                    );
                }
            }
        };
        smol::block_on(ex.run(main));
        // Dropping the executor drops every task still in it; their guards give their places back.
        drop(ex);
    }
}

/// Accepts connections until `stop` completes.
async fn accept_loop(
    ex: &Executor<'static>,
    app: &Arc<App>,
    listener: &Async<TcpListener>,
    drain: &Sender<()>,
    stop: impl Future<Output = ()>,
) {
    let mut stop = std::pin::pin!(stop);
    let mut accepted = 0u32;
    loop {
        // Stop is polled first, so a flood of connections cannot hold up shutdown.
        let next = async {
            (&mut stop).await;
            None
        }
        .or(async { Some(listener.accept().await) })
        .await;
        accepted = accepted.wrapping_add(1);
        if accepted % 64 == 0 {
            // Under a flood the backlog never empties: let the connection tasks run too.
            smol::future::yield_now().await;
        }
        match next {
            None => return,
            Some(Ok((stream, peer))) => {
                let app = app.clone();
                let drain = drain.clone();
                ex.spawn(async move {
                    let task = serve_http(app, TcpStream::from(stream), peer, drain);
                    if let Err(p) = std::panic::AssertUnwindSafe(task).catch_unwind().await {
                        log::error!("http {peer}: task panicked: {}", panic_message(&*p));
                    }
                })
                .detach();
            }
            Some(Err(e)) => {
                // Out of file descriptors or similar: say so, back off briefly, keep serving.
                log::warn!("accept failed: {e}");
                Timer::after(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Serves HTTP requests on one TCP connection until it closes or upgrades.
///
/// `drain` is held for as long as the socket is served (and handed on to the WebSocket task), so
/// shutdown can wait for every connection to finish.
async fn serve_http(app: Arc<App>, mut stream: TcpStream, peer: SocketAddr, drain: Sender<()>) {
    // Replies are tiny: let them go out at once.
    let _ = stream.set_nodelay(true);
    let head_timeout = app.config.head_timeout;
    let write_timeout = app.config.write_timeout;
    let mut buf = Vec::new();
    loop {
        let head = async { Some(http::read_head(&mut stream, &mut buf, head_timeout).await) }
            .or(async {
                let _ = app.shutdown.recv().await;
                None
            })
            .await;
        let req = match head {
            None | Some(Ok(None)) => break,
            Some(Ok(Some(req))) => req,
            Some(Err(HeadError::Timeout)) => {
                log::debug!("http {peer}: request head timed out");
                break;
            }
            Some(Err(HeadError::Io(_))) => break,
            Some(Err(refused @ (HeadError::TooLarge | HeadError::Malformed(_)))) => {
                let r = match refused {
                    HeadError::Malformed(why) => {
                        Response::error(400, &format!("malformed request: {why}"))
                    }
                    _ => Response::error(431, "request head too large (limit 8 KiB)"),
                };
                // The client may not read the answer; the connection ends either way.
                let _ = http::write_all(&mut stream, &r.to_bytes(false), write_timeout).await;
                break;
            }
        };
        // The buffer grew for this head at most; give the memory back while the connection idles.
        buf.shrink_to(1024);
        let keep_alive = req.keep_alive() && !req.has_body;
        let routed = match check_token(&app, &req) {
            Some(answer) => Routed::Response(answer),
            None => routes::route(&app, &req, peer.ip()),
        };
        match routed {
            Routed::Response(r) => {
                let bytes = r.to_bytes(keep_alive);
                if http::write_all(&mut stream, &bytes, write_timeout)
                    .await
                    .is_err()
                    || !keep_alive
                {
                    break;
                }
            }
            Routed::Upgrade(topic) => {
                upgrade(&app, req, stream, buf, peer, topic, drain).await;
                return;
            }
        }
    }
    // The peer may be gone already.
    let _ = stream.shutdown(std::net::Shutdown::Both);
    crate::trim::note_release();
}

/// SECURITY: with `--token-file`, every route but `/healthz` needs the token. Returns the answer
/// that replaces the route's (401, or the redirect that turns `?token=` into a cookie), or `None`
/// to serve the route.
fn check_token(app: &App, req: &Request) -> Option<Response> {
    let secret = app.config.token.as_ref()?;
    if req.path == "/healthz" {
        return None;
    }
    match auth::presented(secret, req) {
        auth::Presented::Header(true) => None,
        // The page was opened as /?token=...: keep the token in an HttpOnly cookie and load the
        // page again without it, so it stays out of the address bar and history.
        auth::Presented::Query if req.path == "/" => Some(
            Response::json(303, "{}".into())
                .with("Location", "/")
                .with("Set-Cookie", secret.cookie()),
        ),
        auth::Presented::Query => None,
        _ => Some(
            Response::error(
                401,
                "this daemon needs its token: send Authorization: Bearer <token>, or open /?token=<token> once in the browser",
            )
            .with("WWW-Authenticate", "Bearer realm=\"edgemon\""),
        ),
    }
}

/// Checks a WebSocket upgrade, admits it, answers 101, and starts the connection task.
async fn upgrade(
    app: &Arc<App>,
    req: Request,
    mut stream: TcpStream,
    leftover: Vec<u8>,
    peer: SocketAddr,
    topic: Option<String>,
    drain: Sender<()>,
) {
    let write_timeout = app.config.write_timeout;
    let refuse = |r: Response| r.to_bytes(false);
    let answer = match check_upgrade(&req).and_then(|key| {
        check_origin(&req, &app.config.allow_origins)?;
        Ok(key)
    }) {
        Err(r) => {
            if r.status == 403 {
                log::warn!(
                    "ws {peer}: refused origin {}",
                    req.origin.as_deref().unwrap_or("")
                );
            }
            Err(refuse(r))
        }
        Ok(key) => match app.limits.try_acquire(peer) {
            Err(Rejection::PerIp) => {
                log::warn!(
                    "ws {peer}: refused, per-IP limit {} reached",
                    app.limits.max_per_ip
                );
                Err(refuse(
                    Response::error(
                        429,
                        &format!(
                            "too many connections from this address (limit {})",
                            app.limits.max_per_ip
                        ),
                    )
                    .with("Retry-After", "5"),
                ))
            }
            Err(Rejection::Total) => {
                log::warn!(
                    "ws {peer}: refused, limit of {} connections reached",
                    app.limits.max_total
                );
                Err(refuse(
                    Response::error(
                        503,
                        &format!(
                            "server is at its connection limit ({})",
                            app.limits.max_total
                        ),
                    )
                    .with("Retry-After", "5"),
                ))
            }
            Ok(slot) => Ok((slot, key)),
        },
    };
    let (slot, key) = match answer {
        Err(bytes) => {
            let _ = http::write_all(&mut stream, &bytes, write_timeout).await;
            let _ = stream.shutdown(std::net::Shutdown::Both);
            return;
        }
        Ok(x) => x,
    };
    if let Err(e) = rustix::net::sockopt::set_socket_send_buffer_size(&stream, WS_SEND_BUFFER) {
        // Not fatal: the connection works with the kernel's default, only costs more if stalled.
        log::debug!("ws {peer}: cannot cap the send buffer: {e}");
    }
    let head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    );
    if let Err(e) = http::write_all(&mut stream, head.as_bytes(), write_timeout).await {
        log::debug!("ws {peer}: handshake write failed: {e}");
        return; // dropping the slot gives the place back
    }
    log::info!(
        "ws open {peer} path={} remaining={}",
        req.path,
        app.limits.active()
    );
    // A task of its own, so the HTTP task's state (buffers, parser) is freed now.
    let Some(ex) = app.ex.upgrade() else { return };
    let app = app.clone();
    ex.spawn(async move {
        connection::serve(app, stream, leftover, slot, topic).await;
        drop(drain);
    })
    .detach();
}

/// Validates the upgrade headers; returns the client key or the refusal.
fn check_upgrade(req: &Request) -> Result<String, Response> {
    let is_ws = req
        .upgrade
        .as_deref()
        .is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
    if !is_ws {
        return Err(Response::error(426, "this route needs a WebSocket upgrade")
            .with("Upgrade", "websocket"));
    }
    if req.version != 1 {
        return Err(Response::error(400, "WebSocket needs HTTP/1.1"));
    }
    if !req.connection_upgrade() {
        return Err(Response::error(400, "missing Connection: Upgrade"));
    }
    if req.ws_version.as_deref() != Some("13") {
        return Err(
            Response::error(426, "unsupported Sec-WebSocket-Version (expected 13)")
                .with("Sec-WebSocket-Version", "13"),
        );
    }
    match req.ws_key.as_deref() {
        Some(k) if valid_key(k) => Ok(k.to_string()),
        _ => Err(Response::error(
            400,
            "missing or malformed Sec-WebSocket-Key",
        )),
    }
}

/// SECURITY: any web page a LAN user visits can try to open a WebSocket to the daemon (cross-site
/// WebSocket hijacking) and read process lists and logs. Browsers always send `Origin`; it must be
/// the daemon's own address (as the browser reached it, i.e. `Host`) or one listed with
/// `--allow-origin`. Clients that send no `Origin` (scripts, wscat) are not browsers and pass.
fn check_origin(req: &Request, allowed: &[String]) -> Result<(), Response> {
    let Some(origin) = req.origin.as_deref() else {
        return Ok(());
    };
    let same_host = req
        .host
        .as_deref()
        .zip(origin_authority(origin))
        // The daemon speaks plain HTTP, so a Host without a port means port 80.
        .is_some_and(|(host, (auth, default_port))| {
            with_port(host, 80).eq_ignore_ascii_case(&with_port(auth, default_port))
        });
    if same_host || allowed.iter().any(|a| a.eq_ignore_ascii_case(origin)) {
        Ok(())
    } else {
        Err(Response::error(
            403,
            "origin not allowed (open the dashboard from the daemon itself, or start it with --allow-origin)",
        ))
    }
}

/// The authority of an `http(s)://authority` origin and its scheme's default port.
fn origin_authority(origin: &str) -> Option<(&str, u16)> {
    let (rest, port) = if let Some(r) = origin.strip_prefix("http://") {
        (r, 80)
    } else {
        (origin.strip_prefix("https://")?, 443)
    };
    (!rest.is_empty() && !rest.contains('/')).then_some((rest, port))
}

/// `host` with `:port` added if it has none (IPv6 literals are bracketed).
fn with_port(authority: &str, default_port: u16) -> String {
    let has_port = match authority.rfind(']') {
        Some(close) => authority[close..].contains(':'),
        None => authority.contains(':'),
    };
    if has_port {
        authority.to_string()
    } else {
        format!("{authority}:{default_port}")
    }
}

/// A key is base64 of 16 bytes: 22 base64 characters then `==`.
fn valid_key(k: &str) -> bool {
    let b = k.as_bytes();
    b.len() == 24
        && b[22..] == *b"=="
        && b[..22]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/')
}

/// A daemon running on a thread of its own, for tests and embedding; dropping it shuts it down.
pub struct ServerHandle {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its shared state.
    pub app: Arc<App>,
    /// Closing it stops the daemon.
    stop: Sender<()>,
    /// The serving thread.
    thread: Option<JoinHandle<()>>,
}

impl ServerHandle {
    /// Binds (use port 0 in tests) and serves on a new thread.
    pub fn start(config: Config) -> io::Result<ServerHandle> {
        let server = Server::bind(config)?;
        let addr = server.local_addr()?;
        let app = server.app();
        let (stop, stopped) = async_channel::bounded::<()>(1);
        let thread = std::thread::Builder::new()
            .name("edgemon".into())
            .spawn(move || {
                server.run(async move {
                    let _ = stopped.recv().await;
                })
            })?;
        Ok(ServerHandle {
            addr,
            app,
            stop,
            thread: Some(thread),
        })
    }

    /// Waits until `pred` holds for the live stats, waking on every change; false on timeout.
    pub fn wait_until(&self, timeout: Duration, pred: impl Fn(&serde_json::Value) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let listener = self.app.changed.listen();
            if pred(&self.app.stats()) {
                return true;
            }
            if listener.wait_deadline(deadline).is_none() {
                return pred(&self.app.stats());
            }
        }
    }

    /// Stops the daemon and waits for its thread.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.stop.close();
        if let Some(t) = self.thread.take() {
            // A panic on the serving thread was already printed; the test will notice the effects.
            let _ = t.join();
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upgrade_from(origin: Option<&str>, host: &str) -> Request {
        Request {
            host: Some(host.into()),
            origin: origin.map(Into::into),
            ..Request::default()
        }
    }

    #[test]
    fn origins_must_be_the_daemon_itself_or_allowed() {
        let allowed = vec!["https://grafana.lan".to_string()];
        let ok = |o: Option<&str>, h: &str| check_origin(&upgrade_from(o, h), &allowed).is_ok();
        assert!(ok(None, "pi:9753"), "scripts send no Origin");
        assert!(ok(Some("http://pi:9753"), "pi:9753"));
        assert!(ok(Some("http://PI:9753"), "pi:9753"));
        assert!(ok(Some("http://pi"), "pi:80"));
        assert!(ok(Some("http://[::1]:9753"), "[::1]:9753"));
        assert!(ok(Some("https://grafana.lan"), "pi:9753"));
        assert!(!ok(Some("http://evil.example"), "pi:9753"));
        assert!(!ok(Some("http://pi:9754"), "pi:9753"));
        assert!(
            !ok(Some("https://pi"), "pi"),
            "an https page is another origin"
        );
        assert!(!ok(Some("null"), "pi:9753"));
        assert!(!ok(Some("http://pi:9753/x"), "pi:9753"));
        assert_eq!(
            check_origin(&upgrade_from(Some("http://evil"), "pi"), &allowed)
                .unwrap_err()
                .status,
            403
        );
    }

    #[test]
    fn websocket_keys_are_checked() {
        assert!(valid_key("dGhlIHNhbXBsZSBub25jZQ=="));
        assert!(!valid_key("dGhlIHNhbXBsZSBub25jZQ="));
        assert!(!valid_key("dGhlIHNhbXBsZSBub25jZ!=="));
        assert!(!valid_key(""));
    }
}
