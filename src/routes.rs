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
        "/" => index(req),
        "/app.js" => asset(req, &APP_JS),
        "/app.css" => asset(req, &APP_CSS),
        // Browsers ask for /favicon.ico whatever the page says; both get the same small icon.
        "/favicon.svg" | "/favicon.ico" => asset(req, &FAVICON),
        "/api/websocket/admission" => admission(app, peer),
        "/healthz" => healthz(),
        "/api/websocket/stats" => stats(app),
        "/api/system" => system(app).await,
        "/api/history" => history(app, req).await,
        "/api/events" => Response::json(200, app.sampler.events_json()),
        "/api/alerts" => Response::json(200, app.sampler.alerts_json()),
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

/// One file of the dashboard, embedded in the binary as it is and gzip-compressed (by
/// `build.rs`, at build time), each representation with its strong `ETag`.
pub struct Asset {
    content_type: &'static str,
    identity: &'static [u8],
    gzip: &'static [u8],
    etag: &'static str,
    gzip_etag: &'static str,
}

include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// Embeds the build's copy of `src/dashboard/FILE` (build.rs) and its compressed copy.
macro_rules! asset {
    ($file:literal, $content_type:literal, $etag:ident, $gzip_etag:ident) => {
        Asset {
            content_type: $content_type,
            identity: include_bytes!(concat!(env!("OUT_DIR"), "/", $file)),
            gzip: include_bytes!(concat!(env!("OUT_DIR"), "/", $file, ".gz")),
            etag: $etag,
            gzip_etag: $gzip_etag,
        }
    };
}

/// The dashboard, embedded in the binary: no files on disk, no requests to any other host.
const INDEX: Asset = asset!(
    "index.html",
    "text/html; charset=utf-8",
    INDEX_ETAG,
    INDEX_GZIP_ETAG
);
const APP_JS: Asset = asset!(
    "app.js",
    "text/javascript; charset=utf-8",
    APP_JS_ETAG,
    APP_JS_GZIP_ETAG
);
const APP_CSS: Asset = asset!(
    "app.css",
    "text/css; charset=utf-8",
    APP_CSS_ETAG,
    APP_CSS_GZIP_ETAG
);
const FAVICON: Asset = asset!(
    "favicon.svg",
    "image/svg+xml",
    FAVICON_ETAG,
    FAVICON_GZIP_ETAG
);

/// SECURITY: the page may load and connect only to its own origin (scripts, styles, fetches and its
/// WebSocket), runs no inline script, and cannot be framed by another site.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// A static asset: gzip-compressed when the client accepts it, `304` when the client's copy
/// (`If-None-Match`) is current. Revalidated on every load (`no-cache`), so an upgraded daemon
/// never serves a stale page, and a reload costs a few hundred bytes.
fn asset(req: &Request, a: &Asset) -> Response {
    let gzip = accepts_gzip(req.accept_encoding.as_deref().unwrap_or(""));
    let (body, etag) = if gzip {
        (a.gzip, a.gzip_etag)
    } else {
        (a.identity, a.etag)
    };
    let current = req
        .if_none_match
        .as_deref()
        .is_some_and(|tags| none_match_covers(tags, etag));
    let r = if current {
        Response::new(304, a.content_type, "no-cache", &b""[..])
    } else if gzip {
        Response::new(200, a.content_type, "no-cache", body).with("Content-Encoding", "gzip")
    } else {
        Response::new(200, a.content_type, "no-cache", body)
    };
    r.with("ETag", etag).with("Vary", "Accept-Encoding")
}

/// Whether an `Accept-Encoding` value (every occurrence, joined with commas) admits gzip: named
/// (or `*`) without `q=0` (RFC 9110, section 12.5.3). Names and parameters are case-insensitive.
fn accepts_gzip(accept_encoding: &str) -> bool {
    let weight = |coding: &str| {
        accept_encoding.split(',').find_map(|item| {
            let mut parts = item.split(';');
            let name = parts.next()?.trim();
            if !name.eq_ignore_ascii_case(coding) {
                return None;
            }
            let q = parts
                .filter_map(|p| p.trim().split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
                .map_or(1.0, |(_, v)| v.trim().parse::<f32>().unwrap_or(0.0));
            Some(q)
        })
    };
    weight("gzip")
        .or_else(|| weight("*"))
        .is_some_and(|q| q > 0.0)
}

/// Whether an `If-None-Match` value (every occurrence, joined with commas) lists `etag` or is
/// `*`; the comparison is the weak one the field calls for (RFC 9110, section 13.1.2).
fn none_match_covers(tags: &str, etag: &str) -> bool {
    tags.split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag)
}

/// `GET /`: the dashboard page.
fn index(req: &Request) -> Response {
    asset(req, &INDEX)
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
