//! HTTP routes: one function per route; `route` reads as the list of them.

use std::net::IpAddr;

use crate::app::App;
use crate::http::{Request, Response};
use crate::limits::{Refused, prefix64, prefix64_text};

/// What a request turns into.
pub enum Routed {
    /// Write this response.
    Response(Response),
    /// Upgrade to a WebSocket, subscribed on open to the topic if one is given (`/ws/{topic}`).
    Upgrade(Option<String>),
}

/// Routes one request from `peer`. `HEAD` is answered wherever `GET` is, with the same head
/// (uptime checkers and `curl -I` use it; the caller leaves the body out); on the WebSocket
/// routes it gets what a `GET` without an upgrade gets.
pub async fn route(app: &App, req: &Request, peer: IpAddr) -> Routed {
    let head = req.method == "HEAD";
    if req.method != "GET" && !head {
        return Routed::Response(
            Response::error(405, "only GET and HEAD are supported").with("Allow", "GET, HEAD"),
        );
    }
    if req.has_body {
        // Nothing here takes a body; refusing it keeps the parser from having to skip one.
        return Routed::Response(Response::error(400, "request bodies are not accepted"));
    }
    if host_checked(&req.path)
        && let Some(refused) = app.hosts.check(req)
    {
        app.limits.refuse(Refused::Host);
        log::debug!(
            "http {peer}: refused Host {}",
            req.host.as_deref().unwrap_or("")
        );
        return Routed::Response(refused);
    }
    Routed::Response(match req.path.as_str() {
        "/" => index(),
        "/app.js" => asset("text/javascript; charset=utf-8", APP_JS),
        "/app.css" => asset("text/css; charset=utf-8", APP_CSS),
        // Browsers ask for /favicon.ico whatever the page says; both get the same small icon.
        "/favicon.svg" | "/favicon.ico" => asset("image/svg+xml", FAVICON),
        "/api/websocket/admission" => admission(app, peer),
        "/healthz" => healthz(),
        "/api/websocket/stats" => stats(app),
        "/api/system" => system(app).await,
        "/api/history" => history(app, req).await,
        "/api/events" => Response::json(200, app.sampler.events_json()),
        "/api/topics" => topics(app),
        "/metrics" => metrics(app).await,
        "/ws" if head => Response::needs_upgrade(),
        "/ws" => return Routed::Upgrade(None),
        path => match path.strip_prefix("/ws/") {
            // SECURITY: the topic is matched exactly against the catalog, never decoded or used as a path.
            Some(topic) if app.topics.exists(topic) => {
                if head {
                    return Routed::Response(Response::needs_upgrade());
                }
                return Routed::Upgrade(Some(topic.to_string()));
            }
            Some(_) => Response::error(404, "unknown topic"),
            None => Response::error(404, "not found"),
        },
    })
}

/// Whether a request for `path` must pass the Host check (`host`): the dashboard, its assets,
/// `/api/*` and `/ws*`. `/healthz`, `/metrics` and unknown paths are answered whatever the name.
fn host_checked(path: &str) -> bool {
    matches!(
        path,
        "/" | "/app.js" | "/app.css" | "/favicon.svg" | "/favicon.ico" | "/ws"
    ) || path.starts_with("/api/")
        || path.starts_with("/ws/")
}

/// The dashboard, embedded in the binary: no files on disk, no requests to any other host.
const INDEX: &str = include_str!("dashboard/index.html");
const APP_JS: &str = include_str!("dashboard/app.js");
const APP_CSS: &str = include_str!("dashboard/app.css");
const FAVICON: &str = include_str!("dashboard/favicon.svg");

/// SECURITY: the page may load and connect only to its own origin (scripts, styles, fetches and its
/// WebSocket), runs no inline script, and cannot be framed by another site.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// A static asset; revalidated on every load, so an upgraded daemon never serves a stale page.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    Response::new(200, content_type, "no-cache", body.as_bytes())
}

/// `GET /`: the dashboard page.
fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX)
        .with("Content-Security-Policy", CSP)
        .with("Referrer-Policy", "no-referrer")
}

/// `GET /api/websocket/admission`: whether this client could open a WebSocket now, and which
/// limit stops it. A browser cannot read the status of a refused upgrade; the dashboard asks here.
fn admission(app: &App, peer: IpAddr) -> Response {
    let used = app.limits.per_ip_count(peer);
    // IPv6 clients also share their /64's slots (`null` for IPv4).
    let prefix = prefix64(peer).map(|p| {
        serde_json::json!({
            "prefix": prefix64_text(p),
            "used": app.limits.per_prefix_count(p),
            "limit": app.limits.max_per_prefix,
        })
    });
    Response::json(
        200,
        serde_json::json!({
            "ip": peer.to_canonical().to_string(),
            "per_ip": { "used": used, "limit": app.limits.max_per_ip },
            "prefix": prefix,
            "total": { "used": app.limits.active(), "limit": app.limits.max_total },
        })
        .to_string(),
    )
}

/// `GET /healthz`: 200 while the daemon serves.
fn healthz() -> Response {
    Response::new(200, "text/plain; charset=utf-8", "no-store", &b"ok\n"[..])
}

/// `GET /api/websocket/stats`.
fn stats(app: &App) -> Response {
    Response::json(200, app.stats().to_string())
}

/// `GET /api/system`: the newest sample, complete (details read on demand if nobody watched),
/// with `host`.
async fn system(app: &App) -> Response {
    match app.sampler.latest_complete().await {
        // `data` is a JSON object: splice `host` in as its first member.
        Some((s, _)) => Response::json(
            200,
            format!("{{\"host\":{},{}", app.sampler.host_json(), &s.data[1..]),
        ),
        None => Response::error(503, "no sample yet, retry in a second").with("Retry-After", "1"),
    }
}

/// `GET /api/history?range=10m|1h|6h|24h|7d`: the tiered history of the `system` series, ending
/// with the open interval. Built off the executor (a week is ~140,000 numbers), at most once a
/// sample per range, and shared.
async fn history(app: &App, req: &Request) -> Response {
    let range = req
        .query
        .as_deref()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("range=")))
        .unwrap_or("")
        .to_string();
    let sampler = app.sampler.clone();
    let answer = smol::unblock(move || sampler.history_answer(&range)).await;
    match answer {
        Some(a) => Response::json(200, a.whole()),
        None => Response::error(400, "unknown range: use range=10m, 1h, 6h, 24h or 7d"),
    }
}

/// `GET /metrics`: Prometheus text exposition, from the newest complete sample.
async fn metrics(app: &App) -> Response {
    let data = app.sampler.latest_complete().await.map(|(_, d)| d);
    let body = crate::metrics::render(app, data.as_deref()).into_bytes();
    Response::new(
        200,
        "text/plain; version=0.0.4; charset=utf-8",
        "no-store",
        body,
    )
}

/// `GET /api/topics`.
fn topics(app: &App) -> Response {
    Response::json(
        200,
        serde_json::json!({ "topics": app.topics.names() }).to_string(),
    )
}
