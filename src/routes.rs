//! HTTP routes: one function per route; `route` reads as the list of them.

use std::borrow::Cow;

use crate::http::{Request, Response};
use crate::server::App;

/// What a request turns into.
pub enum Routed {
    /// Write this response.
    Response(Response),
    /// Upgrade to a WebSocket, subscribed on open to the topic if one is given (`/ws/{topic}`).
    Upgrade(Option<String>),
}

/// Routes one request.
pub fn route(app: &App, req: &Request) -> Routed {
    if req.method != "GET" {
        return Routed::Response(
            Response::error(405, "only GET is supported").with("Allow", "GET"),
        );
    }
    if req.has_body {
        // Nothing here takes a body; refusing it keeps the parser from having to skip one.
        return Routed::Response(Response::error(400, "request bodies are not accepted"));
    }
    Routed::Response(match req.path.as_str() {
        "/" => index(),
        "/healthz" => healthz(),
        "/api/websocket/stats" => stats(app),
        "/api/system" => system(app),
        "/api/topics" => topics(app),
        "/metrics" => metrics(app),
        "/ws" => return Routed::Upgrade(None),
        path => match path.strip_prefix("/ws/") {
            // SECURITY: the topic is matched exactly against the catalogue, never decoded or used as a path.
            Some(topic) if app.topics.exists(topic) => {
                return Routed::Upgrade(Some(topic.to_string()));
            }
            Some(_) => Response::error(404, "unknown topic"),
            None => Response::error(404, "not found"),
        },
    })
}

/// `GET /`: a placeholder page until the dashboard lands.
fn index() -> Response {
    Response {
        status: 200,
        content_type: "text/html; charset=utf-8",
        cache: "no-cache",
        headers: Vec::new(),
        body: Cow::Borrowed(INDEX.as_bytes()),
    }
}

const INDEX: &str = "<!doctype html><meta charset=utf-8><title>edgemon</title>\
<h1>edgemon</h1><p>The dashboard is not built yet. Live data: \
<code>/ws/system</code> (WebSocket), <a href=/api/system>/api/system</a>, \
<a href=/api/topics>/api/topics</a>, <a href=/api/websocket/stats>/api/websocket/stats</a>.</p>\n";

/// `GET /healthz`: 200 while the daemon serves.
fn healthz() -> Response {
    Response {
        status: 200,
        content_type: "text/plain; charset=utf-8",
        cache: "no-store",
        headers: Vec::new(),
        body: Cow::Borrowed(b"ok\n"),
    }
}

/// `GET /api/websocket/stats`.
fn stats(app: &App) -> Response {
    Response::json(200, app.stats().to_string())
}

/// `GET /api/system`: the newest cached sample, with `host`.
fn system(app: &App) -> Response {
    app.sampler.want_details();
    match app.sampler.latest() {
        // `data` is a JSON object: splice `host` in as its first member.
        Some(s) => Response::json(
            200,
            format!("{{\"host\":{},{}", app.sampler.host_json(), &s.data[1..]),
        ),
        None => Response::error(503, "no sample yet, retry in a second").with("Retry-After", "1"),
    }
}

/// `GET /metrics`: Prometheus text exposition.
fn metrics(app: &App) -> Response {
    Response {
        status: 200,
        content_type: "text/plain; version=0.0.4; charset=utf-8",
        cache: "no-store",
        headers: Vec::new(),
        body: Cow::Owned(crate::metrics::render(app).into_bytes()),
    }
}

/// `GET /api/topics`.
fn topics(app: &App) -> Response {
    Response::json(
        200,
        serde_json::json!({ "topics": app.topics.names() }).to_string(),
    )
}
