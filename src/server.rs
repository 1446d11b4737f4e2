//! The server: the accept loop (one `http_task` per TCP connection, a reserve descriptor for when
//! descriptors run out), and a shutdown that closes every client and drains within a bound.
//! `ServerHandle` runs a daemon on a thread of its own for tests and embedding.

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
use crate::config::Config;
use crate::connection::panic_message;
use crate::http::Response;
use crate::http_task::serve_http;
use crate::limits::Refused;

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
    pub fn bind(mut config: Config) -> io::Result<Server> {
        let listener = Async::<TcpListener>::bind(config.listen)?;
        // The address actually bound (port 0 picks one): what notifications link to.
        config.listen = listener.get_ref().local_addr()?;
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
        // `--threads`: further threads run the same executor's tasks until `main` is done.
        let (done_tx, done) = async_channel::bounded::<()>(1);
        let helpers: Vec<JoinHandle<()>> = (1..app.config.threads)
            .filter_map(|i| {
                let (ex, done) = (ex.clone(), done.clone());
                let spawned = std::thread::Builder::new()
                    .name(format!("edgemon-{i}"))
                    .spawn(move || {
                        smol::block_on(ex.run(async {
                            // Errs when `done_tx` is dropped: the daemon is stopping.
                            let _ = done.recv().await;
                        }))
                    });
                // One thread fewer is still a working daemon.
                spawned
                    .inspect_err(|e| log::warn!("cannot start executor thread {i}: {e}"))
                    .ok()
            })
            .collect();
        smol::block_on(ex.run(main));
        drop(done_tx);
        for h in helpers {
            // A helper's panic was already printed; the daemon is stopping anyway.
            let _ = h.join();
        }
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
    // One descriptor held back: out of descriptors, it is closed so the waiting client can be
    // accepted, told why, and let go, instead of hanging in the backlog.
    let mut reserve = std::fs::File::open("/dev/null").ok();
    let mut accept_errors = Occasional::new(ACCEPT_ERROR_LOG_EVERY);
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
                if reserve.is_none() {
                    // Lost when descriptors ran out and could not be had back then: try again.
                    reserve = std::fs::File::open("/dev/null").ok();
                }
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
                if out_of_descriptors(&e) && reserve.take().is_some() {
                    app.limits.refuse(Refused::HttpCap);
                    turn_away(listener.get_ref());
                    reserve = std::fs::File::open("/dev/null").ok();
                }
                // Say so (not a line per failure: a flood would fill the journal), back off
                // briefly, keep serving.
                match accept_errors.due() {
                    Some(0) => log::warn!("accept failed: {e}"),
                    Some(more) => {
                        log::warn!("accept failed: {e} ({more} more since the last report)")
                    }
                    None => {}
                }
                Timer::after(Duration::from_millis(100)).await;
            }
        }
    }
}

/// How often at most a failing `accept` is logged.
const ACCEPT_ERROR_LOG_EVERY: Duration = Duration::from_secs(10);

/// A log line that is written at most once per period; the ones left out are counted.
struct Occasional {
    every: Duration,
    last: Option<Instant>,
    skipped: u64,
}

impl Occasional {
    fn new(every: Duration) -> Occasional {
        Occasional {
            every,
            last: None,
            skipped: 0,
        }
    }

    /// `Some(left out since the last line)` when a line is due now.
    fn due(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self.last.is_some_and(|at| now < at + self.every) {
            self.skipped += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.skipped))
    }
}

/// Whether an accept failed for want of file descriptors (the process's or the system's).
fn out_of_descriptors(e: &io::Error) -> bool {
    e.raw_os_error().is_some_and(|n| {
        n == rustix::io::Errno::MFILE.raw_os_error() || n == rustix::io::Errno::NFILE.raw_os_error()
    })
}

/// Accepts one waiting client with the descriptor just freed and answers 503 before closing it.
fn turn_away(listener: &TcpListener) {
    use std::io::Write as _;
    let Ok((mut client, peer)) = listener.accept() else {
        return;
    };
    let r =
        Response::error(503, "out of file descriptors; retry in a moment").with("Retry-After", "5");
    // A fresh socket's send buffer takes this at once; the client may be gone already.
    let _ = client.set_nonblocking(true);
    let _ = client.write_all(&r.to_bytes(false));
    log::debug!("http {peer}: turned away, out of file descriptors");
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
