//! The HTTP layer over real sockets: routes, errors, keep-alive, limits.

mod common;
#[path = "../src/strip.rs"]
mod strip;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn routes_answer_with_the_contract_shapes() {
    let srv = start(config());
    let h = get(srv.addr, "/healthz");
    assert_eq!((h.status, h.body.as_str()), (200, "ok\n"));
    assert_eq!(
        h.header("x-content-type-options").as_deref(),
        Some("nosniff")
    );

    let i = get(srv.addr, "/");
    assert_eq!(i.status, 200);
    assert!(i.header("content-type").unwrap().starts_with("text/html"));

    let t = get(srv.addr, "/api/topics").json();
    assert_eq!(t["topics"][0], "system");

    let s = get(srv.addr, "/api/websocket/stats");
    assert_eq!(
        s.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(s.json()["status"], "healthy");

    // Before the first sample the answer says to retry; wait for one as an event, then ask.
    let r = get(srv.addr, "/api/system");
    if r.status != 200 {
        assert_eq!(r.status, 503);
        assert_eq!(r.header("retry-after").as_deref(), Some("1"));
        within(10, srv.app.sampler.listen().recv()).unwrap();
    }
    let sys = get(srv.addr, "/api/system").json();
    assert!(sys["memory"]["total"].as_u64().unwrap() > 0);
    assert!(sys["cpu"]["cores"].is_array());
}

#[test]
fn unknown_route_is_404_and_wrong_method_is_405_with_json_errors() {
    let srv = start(config());
    let r = get(srv.addr, "/nope");
    assert_eq!(r.status, 404);
    assert!(r.json()["error"].is_string());

    let text = raw(
        srv.addr,
        b"DELETE /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    );
    let r = &parse_responses(&text)[0];
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow").as_deref(), Some("GET, HEAD"));
    assert!(r.json()["error"].is_string());
}

#[test]
fn hostile_requests_get_clear_answers_and_the_daemon_keeps_serving() {
    let srv = start(config());
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(9000)
    );
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("bad request line", b"HELLO\r\n\r\n".to_vec(), 400),
        (
            "bad header",
            b"GET / HTTP/1.1\r\nHost x\r\n\r\n".to_vec(),
            400,
        ),
        ("huge header", huge.into_bytes(), 431),
        ("missing Host", b"GET / HTTP/1.1\r\n\r\n".to_vec(), 400),
        (
            "duplicate Content-Length",
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nab"
                .to_vec(),
            400,
        ),
        (
            "body",
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n\r\nab".to_vec(),
            400,
        ),
        (
            "chunked body",
            b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
            405,
        ),
        (
            "POST",
            b"POST /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".to_vec(),
            405,
        ),
        ("HTTP/1.0", b"GET /healthz HTTP/1.0\r\n\r\n".to_vec(), 200),
        (
            "chunked GET",
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
            400,
        ),
        (
            "upgrade without Upgrade header",
            b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".to_vec(),
            426,
        ),
        (
            "upgrade without Connection: Upgrade",
            b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
                .to_vec(),
            400,
        ),
        (
            "bad WebSocket key",
            b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: short\r\n\r\n"
                .to_vec(),
            400,
        ),
        (
            "bad WebSocket version",
            b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
                .to_vec(),
            426,
        ),
    ];
    for (name, req, want) in cases {
        let text = raw(srv.addr, &req);
        let r = parse_responses(&text);
        assert!(!r.is_empty(), "{name}: no response");
        assert_eq!(r[0].status, want, "{name}: {}", r[0].head);
        if want != 200 {
            assert!(
                r[0].json()["error"].is_string(),
                "{name}: body {}",
                r[0].body
            );
        }
    }
    assert_eq!(get(srv.addr, "/healthz").status, 200);
    within(10, async {
        let mut ws = ws(srv.addr, "/ws/system").await;
        assert_eq!(next_json(&mut ws).await["type"], "subscribed");
    });
}

#[test]
fn keep_alive_and_pipelined_requests_are_answered_in_order() {
    let srv = start(config());
    let text = raw(
        srv.addr,
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET /api/topics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n\
          GET /nope HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    );
    let r = parse_responses(&text);
    assert_eq!(
        r.iter().map(|r| r.status).collect::<Vec<_>>(),
        [200, 200, 404]
    );
    assert_eq!(r[0].header("connection").as_deref(), Some("keep-alive"));
    assert_eq!(r[2].header("connection").as_deref(), Some("close"));

    // Two requests, one at a time, on one kept-alive connection.
    let mut s = TcpStream::connect(srv.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for _ in 0..2 {
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    }
}

#[test]
fn an_incomplete_head_is_closed_at_the_head_timeout() {
    let mut c = config();
    c.head_timeout = Duration::from_millis(300);
    let srv = start(c);
    let mut s = TcpStream::connect(srv.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHo").unwrap();
    let t0 = Instant::now();
    let mut buf = Vec::new();
    // The server closes without answering: read_to_end returns at EOF.
    s.read_to_end(&mut buf).unwrap();
    assert!(
        buf.is_empty(),
        "unexpected answer: {}",
        String::from_utf8_lossy(&buf)
    );
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert_eq!(get(srv.addr, "/healthz").status, 200);
}

#[test]
fn the_dashboard_and_its_parts_are_served_with_a_strict_policy() {
    let srv = start(config());
    let page = get(srv.addr, "/");
    assert!(page.body.contains("<script src=\"/app.js\""));
    let csp = page
        .header("content-security-policy")
        .expect("a CSP on the page");
    assert!(
        csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    for (path, kind) in [
        ("/app.js", "text/javascript"),
        ("/app.css", "text/css"),
        ("/favicon.svg", "image/svg+xml"),
        ("/favicon.ico", "image/svg+xml"),
    ] {
        let r = get(srv.addr, path);
        assert_eq!(r.status, 200, "{path}");
        assert!(
            r.header("content-type").unwrap().starts_with(kind),
            "{path}"
        );
        assert!(!r.body.is_empty(), "{path}");
    }
    // The page refers to nothing outside the daemon.
    for part in ["/", "/app.js", "/app.css"] {
        let body = get(srv.addr, part).body;
        assert!(
            !body.contains("http://") && !body.contains("https://"),
            "{part} names another host"
        );
    }
}

#[test]
fn admission_tells_a_client_how_many_of_its_slots_are_used() {
    let mut c = config();
    c.max_per_ip = 2;
    let srv = start(c);
    let a = get(srv.addr, "/api/websocket/admission").json();
    assert_eq!(a["ip"], "127.0.0.1");
    assert_eq!(a["per_ip"]["used"], 0);
    assert_eq!(a["per_ip"]["limit"], 2);
    let _held = within(10, async {
        let x = ws(srv.addr, "/ws").await;
        let y = ws(srv.addr, "/ws").await;
        (x, y)
    });
    assert!(srv.wait_until(Duration::from_secs(10), |s| s["active_connections"] == 2));
    let a = get(srv.addr, "/api/websocket/admission").json();
    assert_eq!(a["per_ip"]["used"], 2);
    assert_eq!(a["total"]["used"], 2);
    assert_eq!(a["total"]["limit"], 256);
}

#[test]
fn slowloris_connections_neither_block_a_good_client_nor_outlive_the_head_timeout() {
    let mut c = config();
    c.head_timeout = Duration::from_secs(2);
    let srv = start(c);
    let head =
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    // 200 clients on 10 addresses: under the per-address cap of plain-HTTP connections.
    let mut slow: Vec<TcpStream> = (0..200)
        .map(|i| {
            let src = std::net::Ipv4Addr::new(127, 0, 0, 2 + (i % 10) as u8);
            let mut s = connect_from(src.into(), srv.addr);
            s.write_all(&head[..1]).unwrap();
            s
        })
        .collect();
    // One more header byte per second on every connection, for at most 5 s.
    let feeder = {
        let mut conns: Vec<TcpStream> = slow.iter().map(|s| s.try_clone().unwrap()).collect();
        std::thread::spawn(move || {
            for i in 1..=5 {
                std::thread::sleep(Duration::from_secs(1));
                for s in &mut conns {
                    // Closed by the daemon by now, some of them: that is the point.
                    let _ = s.write_all(&head[i..i + 1]);
                }
            }
        })
    };
    // A good client is served meanwhile.
    let t0 = Instant::now();
    assert_eq!(get(srv.addr, "/healthz").status, 200);
    within(10, async {
        let mut ws = ws(srv.addr, "/ws/system").await;
        assert_eq!(next_json(&mut ws).await["type"], "subscribed");
    });
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "the good client waited {:?}",
        t0.elapsed()
    );
    // Every slow connection is closed by the daemon at the head timeout, without an answer.
    for s in &mut slow {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 64];
        match s.read(&mut buf) {
            Ok(0) => {}
            Ok(n) => panic!(
                "answered a slow head: {:?}",
                String::from_utf8_lossy(&buf[..n])
            ),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        }
    }
    assert!(
        t0.elapsed() < Duration::from_secs(8),
        "slow heads lived {:?}",
        t0.elapsed()
    );
    feeder.join().unwrap();
}

/// `GET path` with extra header lines (each ending in CRLF): the head and the body's bytes.
fn get_with(addr: std::net::SocketAddr, path: &str, headers: &str) -> (HttpResponse, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let end = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head");
    let head = String::from_utf8(out[..end].to_vec()).unwrap();
    let r = HttpResponse {
        status: head.split(' ').nth(1).unwrap().parse().unwrap(),
        head,
        body: String::new(),
    };
    (r, out[end + 4..].to_vec())
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("a gzip body");
    out
}

#[test]
fn the_page_is_gzipped_when_accepted_and_revalidated_by_its_etag() {
    let srv = start(config());
    let addr = srv.addr;
    for (path, file) in [
        ("/", "index.html"),
        ("/app.js", "app.js"),
        ("/app.css", "app.css"),
        ("/favicon.svg", "favicon.svg"),
        ("/favicon.ico", "favicon.svg"),
    ] {
        let source = std::fs::read(format!("src/dashboard/{file}")).unwrap();
        // The script and style sheet are served without their comment lines and indentation.
        let source = match file {
            "app.js" | "app.css" => {
                strip::strip(std::str::from_utf8(&source).unwrap(), file == "app.js").into_bytes()
            }
            _ => source,
        };
        // As it is, to a client that names no encoding.
        let (plain, body) = get_with(addr, path, "");
        assert_eq!(plain.status, 200, "{path}");
        // Not assert_eq: a mismatch would print both files byte by byte.
        assert!(
            body == source,
            "{path}: served {} bytes, not the {} of src/dashboard/{file} as stripped (edited \
             since the build?)",
            body.len(),
            source.len()
        );
        assert_eq!(plain.header("content-encoding"), None, "{path}");
        assert_eq!(plain.header("vary").as_deref(), Some("Accept-Encoding"));
        let tag = plain.header("etag").expect("an ETag");
        assert!(tag.starts_with('"') && tag.ends_with('"'), "strong: {tag}");
        // Compressed, to a browser.
        let (zipped, zbody) = get_with(addr, path, "Accept-Encoding: gzip, deflate, br\r\n");
        assert_eq!(zipped.header("content-encoding").as_deref(), Some("gzip"));
        assert!(
            gunzip(&zbody) == source,
            "{path}: the gzip copy is not the file"
        );
        if file != "favicon.svg" {
            assert!(
                zbody.len() * 2 < source.len(),
                "{path}: {} of {}",
                zbody.len(),
                source.len()
            );
        }
        let ztag = zipped.header("etag").expect("an ETag");
        assert_ne!(ztag, tag, "{path}: one tag per representation");
        assert_eq!(zipped.header("vary").as_deref(), Some("Accept-Encoding"));
        assert_eq!(
            zipped.header("content-type"),
            plain.header("content-type"),
            "{path}"
        );
        // Refused or wildcard codings.
        for (accept, gzip) in [
            ("gzip;q=0, identity", false),
            ("GZIP;Q=0.5", true),
            ("*", true),
            ("br", false),
            ("*;q=0", false),
        ] {
            let (r, _) = get_with(addr, path, &format!("Accept-Encoding: {accept}\r\n"));
            assert_eq!(
                r.header("content-encoding").is_some(),
                gzip,
                "{path}, Accept-Encoding: {accept}"
            );
        }
        // Revalidation: the client's copy is current.
        let gz = "Accept-Encoding: gzip\r\n";
        for inm in [
            ztag.clone(),
            format!("W/{ztag}"),
            format!("\"x\", {ztag}"),
            "*".into(),
        ] {
            let (r, b) = get_with(addr, path, &format!("{gz}If-None-Match: {inm}\r\n"));
            assert_eq!(r.status, 304, "{path}, If-None-Match: {inm}");
            assert!(b.is_empty(), "{path}: a 304 has no body");
            assert_eq!(r.header("content-length"), None, "{path}");
            assert_eq!(r.header("etag").as_deref(), Some(ztag.as_str()));
            assert_eq!(r.header("vary").as_deref(), Some("Accept-Encoding"));
        }
        // Another representation's tag, or another tag: the whole body again.
        for (headers, want) in [
            (format!("{gz}If-None-Match: {tag}\r\n"), &zbody),
            (format!("If-None-Match: {ztag}\r\n"), &body),
            (format!("{gz}If-None-Match: \"0\"\r\n"), &zbody),
        ] {
            let (r, b) = get_with(addr, path, &headers);
            assert_eq!(r.status, 200, "{path}, {headers}");
            assert_eq!(&b, want, "{path}, {headers}");
        }
    }
    // A 304 on a kept-alive connection: the next answer follows its head directly.
    let tag = get_with(addr, "/app.css", "").0.header("etag").unwrap();
    let text = raw(
        addr,
        format!(
            "GET /app.css HTTP/1.1\r\nHost: {addr}\r\nIf-None-Match: {tag}\r\n\r\n\
             GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    );
    let answers = parse_responses(&text);
    assert_eq!(
        answers.iter().map(|r| r.status).collect::<Vec<_>>(),
        [304, 200],
        "{text}"
    );
    assert_eq!(answers[1].body, "ok\n");
}

#[test]
fn head_is_answered_wherever_get_is_with_the_same_head_and_no_body() {
    let srv = start(config());
    let addr = srv.addr;
    let routes = [
        "/",
        "/app.js",
        "/app.css",
        "/favicon.svg",
        "/favicon.ico",
        "/healthz",
        "/metrics",
        "/api/system",
        "/api/topics",
        "/api/websocket/stats",
        "/api/websocket/admission",
        "/ws",
        "/ws/system",
        "/ws/nope",
        "/nope",
    ];
    for path in routes {
        let g = get(addr, path);
        let text = raw(
            addr,
            format!("HEAD {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        let (head, body) = text.split_once("\r\n\r\n").expect("a head");
        assert_eq!(body, "", "HEAD {path} sent a body");
        let h = HttpResponse {
            status: head.split(' ').nth(1).unwrap().parse().unwrap(),
            head: head.to_string(),
            body: String::new(),
        };
        assert_eq!(h.status, g.status, "HEAD {path}");
        assert_eq!(h.header("content-type"), g.header("content-type"), "{path}");
        let len: usize = h.header("content-length").unwrap().parse().unwrap();
        // Live figures change between the two requests; the rest must be byte for byte.
        if !path.starts_with("/api/") && path != "/metrics" {
            assert_eq!(len, g.body.len(), "HEAD {path}: Content-Length");
        }
    }
    // On a kept-alive connection the next request's answer follows the head directly.
    let text = raw(
        addr,
        format!(
            "HEAD /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n\
             GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2, "{text}");
    assert!(text.ends_with("\r\n\r\nok\n"), "{text}");
}

#[test]
fn history_answers_every_range_ending_now_and_refuses_others() {
    let srv = start(config());
    first_quiet_sample(&srv);
    let before = edgemon::protocol::unix_ms();
    for (range, step) in [
        ("10m", 1_000u64),
        ("1h", 10_000),
        ("6h", 10_000),
        ("24h", 60_000),
        ("7d", 300_000),
    ] {
        let r = get(srv.addr, &format!("/api/history?range={range}"));
        assert_eq!(r.status, 200, "{range}: {}", r.body);
        let v = r.json();
        assert_eq!(v["range"], range);
        assert_eq!(v["step_ms"], step);
        let ts = v["ts"].as_array().unwrap();
        assert!(!ts.is_empty(), "{range}: no points");
        // The open interval is the last point: it contains the newest sample.
        let last = ts.last().unwrap().as_u64().unwrap();
        assert!(
            last <= before && before < last + step + 2_000,
            "{range}: ends at {last}"
        );
        let cpu = &v["series"]["cpu.total"];
        for field in ["min", "mean", "max"] {
            let a = cpu[field].as_array().unwrap();
            assert_eq!(a.len(), ts.len(), "{range} {field}");
            assert!(
                a.last().unwrap().is_number(),
                "{range} {field}: the newest sample"
            );
        }
        assert!(v["series"]["memory.used"]["max"].is_array(), "{range}");
    }
    for bad in [
        "/api/history?range=2d",
        "/api/history",
        "/api/history?range=",
    ] {
        let r = get(srv.addr, bad);
        assert_eq!(r.status, 400, "{bad}");
        assert!(r.json()["error"].as_str().unwrap().contains("10m"), "{bad}");
    }
}

#[test]
fn the_dashboard_loses_comment_lines_and_indentation_but_no_code() {
    let js = "/** A doc\n * comment */\nfunction f(a) {\n  // a note\n  const t = `line one\n  // kept: inside a template\n  two`;\n  /* short */ return a * 2; // trailing stays\n}\n\n";
    assert_eq!(
        strip::strip(js, true),
        "function f(a) {\nconst t = `line one\n  // kept: inside a template\n  two`;\n/* short */ return a * 2; // trailing stays\n}\n"
    );
    let css = "/* theme */\n:root {\n  --bg: #fff; /* light */\n}\n";
    assert_eq!(
        strip::strip(css, false),
        ":root {\n--bg: #fff; /* light */\n}\n"
    );
}
