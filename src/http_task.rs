//! One plain-HTTP connection's task: request heads read under the connection caps, the request
//! rate and the keep-alive life, each answered (token, then route), until the connection closes
//! or upgrades to a WebSocket.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use async_channel::Sender;
use smol::Timer;
use smol::future::FutureExt;
use smol::net::TcpStream;

use crate::app::App;
use crate::auth;
use crate::http::{self, HeadError, Request, Response};
use crate::http_slots::HttpSlot;
use crate::limits::Refused;
use crate::rate::{Bucket, HTTP_BURST, HTTP_PER_SEC, READ_BATCH};
use crate::routes::{self, Routed};
use crate::upgrade::upgrade;

/// Serves HTTP requests on one TCP connection until it closes or upgrades.
///
/// `drain` is held for as long as the socket is served (and handed on to the WebSocket task), so
/// shutdown can wait for every connection to finish.
pub(crate) async fn serve_http(
    app: Arc<App>,
    mut stream: TcpStream,
    peer: SocketAddr,
    drain: Sender<()>,
) {
    // Replies are tiny: let them go out at once.
    let _ = stream.set_nodelay(true);
    // The cap is set before the first answer, so it holds for the WebSocket this may become.
    if let Err(e) = rustix::net::sockopt::set_socket_send_buffer_size(&stream, http::SEND_BUFFER) {
        // Not fatal: the connection works with the kernel's default, only costs more if stalled.
        log::debug!("http {peer}: cannot cap the send buffer: {e}");
    }
    let cfg = &app.config;
    let Some(slot) = app.http_slots.admit(peer.ip()) else {
        app.limits.refuse(Refused::HttpCap);
        log::debug!("http {peer}: refused, at a connection cap with none idle");
        let r = Response::error(503, "too many open HTTP connections; retry in a moment")
            .with("Retry-After", "5");
        http::write_last(&mut stream, &r, cfg.write_timeout).await;
        return;
    };
    let opened = Instant::now();
    let mut bucket = Bucket::new(HTTP_BURST, HTTP_PER_SEC, opened);
    let mut held_back = false;
    let mut served = 0u32;
    let mut buf = Vec::new();
    loop {
        // Judged before every request, however busy the connection is.
        let life_left = cfg.keepalive_life.saturating_sub(opened.elapsed());
        if life_left.is_zero() {
            break;
        }
        if !bucket.has_token(Instant::now()) {
            // Backpressure: this socket is not read until a token is back; nobody else waits.
            if !held_back {
                held_back = true;
                app.limits.refuse(Refused::HttpRate);
                log::debug!("http {peer}: over {HTTP_PER_SEC} requests/s, slowed down");
            }
            let refilled = Timer::at(bucket.ready_at());
            if unless_closed(&app, &slot, peer, refilled).await.is_none() {
                break;
            }
            continue;
        }
        held_back = held_back && bucket.held_back_since(Instant::now()).is_some();
        // Idle keep-alive connections may be closed to make room for new clients.
        slot.set_idle(served > 0 && buf.is_empty());
        let head_timeout = cfg.head_timeout.min(life_left);
        let read = http::read_head(&mut stream, &mut buf, head_timeout);
        let head = unless_closed(&app, &slot, peer, read).await;
        slot.set_idle(false);
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
                http::write_last(&mut stream, &r, cfg.write_timeout).await;
                return;
            }
        };
        bucket.take(Instant::now());
        served += 1;
        // The buffer grew for this head at most; give the memory back while the connection idles.
        buf.shrink_to(1024);
        let keep_alive = req.keep_alive() && !req.has_body && opened.elapsed() < cfg.keepalive_life;
        match answer(&app, &req, peer).await {
            Routed::Response(r) => {
                let bytes = if req.method == "HEAD" {
                    r.head_bytes(keep_alive)
                } else {
                    r.to_bytes(keep_alive)
                };
                if http::write_all(&mut stream, &bytes, cfg.write_timeout)
                    .await
                    .is_err()
                    || !keep_alive
                {
                    break;
                }
            }
            Routed::Upgrade(topic) => {
                // From here the WebSocket limits count this connection.
                drop(slot);
                upgrade(&app, req, stream, buf, peer, topic, drain).await;
                return;
            }
        }
        if served % READ_BATCH == 0 {
            // Pipelined requests are ready without waiting: let every other task run too.
            smol::future::yield_now().await;
        }
    }
    // The peer may be gone already.
    let _ = stream.shutdown(std::net::Shutdown::Both);
    crate::trim::note_release();
}

/// `fut`, unless the daemon shuts down or the connection is closed to make room first (`None`).
async fn unless_closed<T>(
    app: &App,
    slot: &HttpSlot,
    peer: SocketAddr,
    fut: impl Future<Output = T>,
) -> Option<T> {
    async { Some(fut.await) }
        .or(async {
            let _ = app.shutdown.recv().await;
            None
        })
        .or(async {
            slot.evicted().await;
            log::debug!("http {peer}: idle keep-alive closed to make room");
            None
        })
        .await
}

/// One request's answer: the token check, then the route (which applies the Host check).
async fn answer(app: &App, req: &Request, peer: SocketAddr) -> Routed {
    match auth::check(app.config.token.as_ref(), req) {
        Some(answer) => Routed::Response(answer),
        None => routes::route(app, req, peer.ip()).await,
    }
}
