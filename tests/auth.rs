//! `--token-file`: required on every route but `/healthz`, by Bearer header, cookie, or `?token=`.

mod common;

use async_tungstenite::tungstenite::client::IntoClientRequest;
use common::*;
use edgemon::Config;
use edgemon::auth::Secret;

const TOKEN: &str = "k9Zq-8Jx_2m.Vt~4Rr+Lp/Aw=";

fn guarded() -> edgemon::ServerHandle {
    start(Config {
        token: Some(Secret::new(TOKEN).unwrap()),
        ..config()
    })
}

fn get_with(addr: std::net::SocketAddr, path: &str, header: &str) -> HttpResponse {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{header}Connection: close\r\n\r\n");
    parse_responses(&raw(addr, req.as_bytes())).remove(0)
}

const ROUTES: &[&str] = &[
    "/",
    "/app.js",
    "/app.css",
    "/favicon.svg",
    "/api/system",
    "/api/topics",
    "/api/websocket/stats",
    "/api/websocket/admission",
    "/metrics",
];

#[test]
fn every_route_but_healthz_needs_the_token() {
    let srv = guarded();
    assert_eq!(
        get(srv.addr, "/healthz").status,
        200,
        "health checks need no token"
    );
    for path in ROUTES {
        let r = get(srv.addr, path);
        assert_eq!(r.status, 401, "{path} served without the token");
        assert!(
            r.json()["error"].as_str().unwrap().contains("token"),
            "{path}"
        );
        assert!(
            r.header("www-authenticate").unwrap().starts_with("Bearer"),
            "{path}"
        );
        assert!(!r.body.contains(TOKEN));
        let wrong = get_with(
            srv.addr,
            path,
            "Authorization: Bearer not-the-token-at-all\r\n",
        );
        assert_eq!(wrong.status, 401, "{path} with a wrong token");
        let right = get_with(
            srv.addr,
            path,
            &format!("Authorization: Bearer {TOKEN}\r\n"),
        );
        assert!(
            right.status == 200 || right.status == 503,
            "{path}: {}",
            right.status
        );
    }
    within(10, async {
        let refused = refused(srv.addr, "/ws/system").await;
        assert_eq!(refused.status(), 401);
        let mut req = format!("ws://{}/ws/system", srv.addr)
            .into_client_request()
            .unwrap();
        req.headers_mut()
            .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
        let tcp = smol::net::TcpStream::connect(srv.addr).await.unwrap();
        let (mut ws, _) = async_tungstenite::client_async(req, tcp).await.unwrap();
        assert_eq!(next_json(&mut ws).await["type"], "subscribed");
    });
}

#[test]
fn a_token_in_the_page_url_becomes_a_cookie_the_dashboard_then_uses() {
    let srv = guarded();
    let r = get(srv.addr, &format!("/?token={TOKEN}"));
    assert_eq!(r.status, 303);
    assert_eq!(
        r.header("location").as_deref(),
        Some("/"),
        "the token leaves the address bar"
    );
    let cookie = r.header("set-cookie").unwrap();
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    let pair = cookie.split(';').next().unwrap().to_string();
    assert_eq!(
        get_with(srv.addr, "/", &format!("Cookie: {pair}\r\n")).status,
        200
    );
    assert_eq!(
        get_with(
            srv.addr,
            "/api/topics",
            &format!("Cookie: other=1; {pair}\r\n")
        )
        .status,
        200
    );
    assert_eq!(get(srv.addr, "/?token=wrong-token-wrong-token").status, 401);
    within(10, async {
        let mut req = format!("ws://{}/ws", srv.addr)
            .into_client_request()
            .unwrap();
        req.headers_mut().insert("cookie", pair.parse().unwrap());
        let tcp = smol::net::TcpStream::connect(srv.addr).await.unwrap();
        let (mut ws, _) = async_tungstenite::client_async(req, tcp).await.unwrap();
        send(&mut ws, r#"{"op":"subscribe","topic":"system"}"#).await;
        assert_eq!(next_json(&mut ws).await["type"], "subscribed");
    });
}

#[test]
fn without_a_token_file_nothing_asks_for_one() {
    let srv = start(config());
    for path in ROUTES {
        assert_ne!(get(srv.addr, path).status, 401, "{path}");
    }
}
