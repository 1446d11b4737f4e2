//! The WebSocket upgrade: the handshake checks (headers, key, origin), admission against the
//! connection limits with one `refusal()` for its 429/503 answers, the 101 answer, the send-buffer
//! cap, and the hand-over to a connection task of its own.

use std::net::SocketAddr;
use std::sync::Arc;

use async_channel::Sender;
use async_tungstenite::tungstenite::handshake::derive_accept_key;
use smol::net::TcpStream;

use crate::app::App;
use crate::connection;
use crate::http::{self, Request, Response};
use crate::limits::{ConnSlot, Limits, Rejection};

/// Checks a WebSocket upgrade, admits it, answers 101, and starts the connection task.
///
/// `drain` is handed on to the connection task, so shutdown waits for it too.
pub(crate) async fn upgrade(
    app: &Arc<App>,
    req: Request,
    mut stream: TcpStream,
    leftover: Vec<u8>,
    peer: SocketAddr,
    topic: Option<String>,
    drain: Sender<()>,
) {
    let write_timeout = app.config.write_timeout;
    let (slot, key) = match admit(app, &req, peer) {
        Ok(admitted) => admitted,
        Err(refused) => {
            http::write_last(&mut stream, &refused, write_timeout).await;
            return;
        }
    };
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
    // A task of its own, so the HTTP task's state (buffers, parser) is freed now. Without an
    // executor (shutting down) the task is dropped, and with it the slot and the drain handle.
    let task_app = app.clone();
    app.spawn(async move {
        connection::serve(task_app, stream, leftover, slot, topic).await;
        drop(drain);
    });
}

/// Checks the handshake and the origin, then takes a connection slot; the answer that refuses the
/// upgrade otherwise.
fn admit(app: &App, req: &Request, peer: SocketAddr) -> Result<(ConnSlot, String), Response> {
    let key = check_upgrade(req)?;
    if let Err(refused) = check_origin(req, &app.config.allow_origins) {
        log::warn!(
            "ws {peer}: refused origin {}",
            req.origin.as_deref().unwrap_or("")
        );
        return Err(refused);
    }
    let slot = app
        .limits
        .try_acquire(peer)
        .map_err(|why| refusal(why, &app.limits, peer))?;
    Ok((slot, key))
}

/// The answer to an upgrade a limit refuses, logged: 429 over `--max-per-ip` or the /64's share,
/// 503 over `--max-connections`, each with `Retry-After`.
fn refusal(why: Rejection, limits: &Limits, peer: SocketAddr) -> Response {
    let (status, limit, reached, message) = match why {
        Rejection::PerIp => (
            429,
            limits.max_per_ip,
            "the per-IP limit",
            "too many connections from this address",
        ),
        Rejection::Prefix => (
            429,
            limits.max_per_prefix,
            "its /64's share",
            "too many connections from this network (/64)",
        ),
        Rejection::Total => (
            503,
            limits.max_total,
            "the connection limit",
            "server is at its connection limit",
        ),
    };
    log::warn!("ws {peer}: refused, {reached} ({limit}) reached");
    Response::error(status, &format!("{message} (limit {limit})")).with("Retry-After", "5")
}

/// Validates the upgrade headers; returns the client key or the refusal.
fn check_upgrade(req: &Request) -> Result<String, Response> {
    let is_ws = req
        .upgrade
        .as_deref()
        .is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
    if !is_ws {
        return Err(Response::needs_upgrade());
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
