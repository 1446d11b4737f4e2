//! The server: the accept loop, one HTTP task per TCP connection reading request heads until the
//! connection closes or upgrades, and a shutdown that closes every client and drains within a
//! bound. `ServerHandle` runs a daemon on a thread of its own for tests and embedding.

use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_channel::Sender;
use event_listener::Listener;
use smol::future::FutureExt;
use smol::net::TcpStream;
use smol::{Async, Executor, Timer};

use crate::app::App;
use crate::auth;
use crate::config::Config;
use crate::connection::panic_message;
use crate::http::{self, HeadError, Response};
use crate::routes::{self, Routed};
use crate::upgrade::upgrade;

/// How long shutdown waits for connections to close before exiting anyway; under the contract's
/// 5 s so the process is gone within 5 s of the signal.
pub const DRAIN_TIMEOUT: Duration = Duration::from_millis(4500);

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
        let (shutdown_tx, shutdown) = async_channel::bounded(1);
        let app = App::new(config, &ex, shutdown)?;
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
        let routed = match auth::check(app.config.token.as_ref(), &req) {
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
