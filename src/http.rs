//! A small GET-only HTTP/1.1 layer: reads and parses request heads (httparse) under a size limit and a
//! time limit, and writes responses. Routing lives in `routes`; the upgrade in `upgrade`.
//!
//! This is the most exposed code in the daemon: anyone on the LAN can send it anything.

use std::borrow::Cow;
use std::io;
use std::time::Duration;

use smol::future::FutureExt;
use smol::io::{AsyncReadExt, AsyncWriteExt};

/// A response head as a client of ours reads it (the container engine, a peer board): its
/// status, headers (names lowercase, values trimmed), and the bytes read past it.
pub struct ResponseHead {
    /// The status code.
    pub status: u16,
    /// Every header, in order.
    pub headers: Vec<(String, String)>,
    /// Bytes after the head (the body's start, or the first WebSocket frames).
    pub rest: Vec<u8>,
}

impl ResponseHead {
    /// The first header called `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Why no response head could be read.
#[derive(Debug)]
pub enum ResponseHeadError {
    /// The connection failed or closed first.
    Io(String),
    /// What came is not an HTTP response head, or a larger one than allowed.
    NotHttp(String),
}

/// Reads a response head of at most `max` bytes from `stream`; one copy of this code for every
/// kind of stream (a trait object), since none of it is hot.
pub async fn read_response_head(
    stream: &mut (dyn smol::io::AsyncRead + Unpin + Send),
    max: usize,
) -> Result<ResponseHead, ResponseHeadError> {
    let mut buf = Vec::with_capacity(2048);
    loop {
        let mut chunk = [0u8; 2048];
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| ResponseHeadError::Io(e.to_string()))?;
        if n == 0 {
            return Err(ResponseHeadError::Io(
                "closed before the answer's head".into(),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut r = httparse::Response::new(&mut headers);
        match r.parse(&buf) {
            Ok(httparse::Status::Complete(end)) => {
                let headers = r
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8_lossy(h.value).trim().to_string(),
                        )
                    })
                    .collect();
                return Ok(ResponseHead {
                    status: r.code.unwrap_or(0),
                    headers,
                    rest: buf.split_off(end),
                });
            }
            Ok(httparse::Status::Partial) if buf.len() < max => {}
            Ok(httparse::Status::Partial) => {
                return Err(ResponseHeadError::NotHttp(format!(
                    "a head longer than {max} bytes"
                )));
            }
            Err(e) => {
                return Err(ResponseHeadError::NotHttp(format!(
                    "not an HTTP answer ({e})"
                )));
            }
        }
    }
}

/// Largest request head accepted (request line plus headers).
pub const MAX_HEAD: usize = 8 * 1024;
/// Most headers accepted in one request.
pub const MAX_HEADERS: usize = 48;

/// The parts of a request head edgemon uses, owned.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method (`GET`, ...).
    pub method: String,
    /// The path without the query.
    pub path: String,
    /// The query string without `?`, if any.
    pub query: Option<String>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    /// `Host`.
    pub host: Option<String>,
    /// `Origin`.
    pub origin: Option<String>,
    /// `Upgrade`.
    pub upgrade: Option<String>,
    /// `Connection`, every occurrence joined with commas.
    pub connection: String,
    /// `Sec-WebSocket-Key`.
    pub ws_key: Option<String>,
    /// `Sec-WebSocket-Version`.
    pub ws_version: Option<String>,
    /// `Authorization`.
    pub authorization: Option<String>,
    /// `Cookie`.
    pub cookie: Option<String>,
    /// `Accept` (a browser's page load asks for `text/html`).
    pub accept: Option<String>,
    /// `Accept-Encoding`, every occurrence joined with commas.
    pub accept_encoding: Option<String>,
    /// `If-None-Match`, every occurrence joined with commas.
    pub if_none_match: Option<String>,
    /// The request announces a body (`Content-Length` above zero or any `Transfer-Encoding`).
    pub has_body: bool,
}

impl Request {
    /// Whether the client asked to keep the connection open after this response.
    pub fn keep_alive(&self) -> bool {
        let conn = self.connection.to_ascii_lowercase();
        let has = |t: &str| conn.split(',').any(|x| x.trim() == t);
        if self.version == 0 {
            has("keep-alive")
        } else {
            !has("close")
        }
    }

    /// Whether `Connection` lists `upgrade`.
    pub fn connection_upgrade(&self) -> bool {
        self.connection
            .split(',')
            .any(|x| x.trim().eq_ignore_ascii_case("upgrade"))
    }
}

/// Why a request head could not be read.
#[derive(Debug)]
pub enum HeadError {
    /// The head is over `MAX_HEAD` bytes or has over `MAX_HEADERS` headers (431).
    TooLarge,
    /// Not valid HTTP/1.x (400), with what was wrong.
    Malformed(&'static str),
    /// The head did not arrive within the head timeout (the connection is just closed).
    Timeout,
    /// The peer closed or reset the connection part-way through a head.
    Io(io::Error),
}

/// Parses one request head at the start of `buf`.
///
/// `Ok(None)` means more bytes are needed; `Ok(Some((req, n)))` means the head is the first `n` bytes.
pub fn parse_head(buf: &[u8]) -> Result<Option<(Request, usize)>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let n = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() >= MAX_HEAD {
                Err(HeadError::TooLarge)
            } else {
                Ok(None)
            };
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(e) => return Err(HeadError::Malformed(malformed(e))),
    };
    if n > MAX_HEAD {
        return Err(HeadError::TooLarge);
    }
    let target = parsed.path.unwrap_or("/");
    if !target.starts_with('/') {
        return Err(HeadError::Malformed("request target must be a path"));
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q.to_string())),
        None => (target, None),
    };
    let mut req = Request {
        method: parsed.method.unwrap_or_default().to_string(),
        path: path.to_string(),
        query,
        version: parsed.version.unwrap_or(1),
        ..Request::default()
    };
    let mut content_length: Option<&[u8]> = None;
    for h in parsed.headers.iter() {
        let value = || -> Result<String, HeadError> {
            std::str::from_utf8(h.value)
                .map(|s| s.trim().to_string())
                .map_err(|_| HeadError::Malformed("header value is not UTF-8"))
        };
        // A repeated singleton header is ambiguous (request smuggling, confused proxies): refuse it.
        let once = |slot: &Option<String>| -> Result<String, HeadError> {
            if slot.is_some() {
                Err(HeadError::Malformed("repeated header"))
            } else {
                value()
            }
        };
        let name = h.name;
        if name.eq_ignore_ascii_case("host") {
            req.host = Some(once(&req.host)?);
        } else if name.eq_ignore_ascii_case("origin") {
            req.origin = Some(once(&req.origin)?);
        } else if name.eq_ignore_ascii_case("upgrade") {
            req.upgrade = Some(once(&req.upgrade)?);
        } else if name.eq_ignore_ascii_case("connection") {
            if !req.connection.is_empty() {
                req.connection.push(',');
            }
            req.connection.push_str(&value()?);
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            req.ws_key = Some(once(&req.ws_key)?);
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            req.ws_version = Some(once(&req.ws_version)?);
        } else if name.eq_ignore_ascii_case("authorization") {
            req.authorization = Some(once(&req.authorization)?);
        } else if name.eq_ignore_ascii_case("cookie") {
            req.cookie = Some(once(&req.cookie)?);
        } else if name.eq_ignore_ascii_case("accept") {
            // Several are allowed (RFC 9110 lists); only "does it ask for HTML" matters.
            join(&mut req.accept, value()?);
        } else if name.eq_ignore_ascii_case("accept-encoding") {
            join(&mut req.accept_encoding, value()?);
        } else if name.eq_ignore_ascii_case("if-none-match") {
            join(&mut req.if_none_match, value()?);
        } else if name.eq_ignore_ascii_case("content-length") {
            if content_length.is_some() {
                return Err(HeadError::Malformed("repeated Content-Length"));
            }
            content_length = Some(h.value);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            req.has_body = true;
        }
    }
    if let Some(cl) = content_length {
        let n: u64 = std::str::from_utf8(cl)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or(HeadError::Malformed("bad Content-Length"))?;
        req.has_body |= n > 0;
    }
    if req.version == 1 && req.host.is_none() {
        return Err(HeadError::Malformed("HTTP/1.1 request without Host"));
    }
    Ok(Some((req, n)))
}

/// Adds one occurrence of a list header to what came before (RFC 9110, section 5.3).
fn join(slot: &mut Option<String>, v: String) {
    match slot {
        Some(a) => {
            a.push(',');
            a.push_str(&v);
        }
        None => *slot = Some(v),
    }
}

fn malformed(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "bad header name",
        httparse::Error::HeaderValue => "bad header value",
        httparse::Error::NewLine | httparse::Error::Status => "bad line ending",
        httparse::Error::Token => "bad method",
        httparse::Error::Version => "unsupported HTTP version",
        httparse::Error::TooManyHeaders => "too many headers",
    }
}

/// Reads one request head from `stream` into `buf` (which may already hold bytes of it).
///
/// `Ok(None)` is a clean close before any byte of a new request. On success the head's bytes are
/// removed from `buf`; what follows them (a pipelined request, WebSocket frames) stays.
pub async fn read_head<S>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    timeout: Duration,
) -> Result<Option<Request>, HeadError>
where
    S: smol::io::AsyncRead + Unpin,
{
    let read = async {
        loop {
            if !buf.is_empty()
                && let Some((req, n)) = parse_head(buf)?
            {
                buf.drain(..n);
                return Ok(Some(req));
            }
            let mut chunk = [0u8; 1024];
            let room = (MAX_HEAD + 1 - buf.len()).min(chunk.len());
            let got = stream
                .read(&mut chunk[..room])
                .await
                .map_err(HeadError::Io)?;
            if got == 0 {
                return if buf.is_empty() {
                    Ok(None)
                } else {
                    Err(HeadError::Io(io::ErrorKind::UnexpectedEof.into()))
                };
            }
            buf.extend_from_slice(&chunk[..got]);
        }
    };
    read.or(async {
        smol::Timer::after(timeout).await;
        Err(HeadError::Timeout)
    })
    .await
}

/// Kernel send buffer of every client socket (HTTP, and the WebSockets it upgrades to). The
/// kernel's autotuning lets a client that stops reading pin megabytes of kernel memory before a
/// write ever blocks (a pipelining client that never read was dropped after about 20 s, not
/// `--write-timeout`); capped, its writes block within a few answers or frames and
/// `--write-timeout` ends it.
pub const SEND_BUFFER: usize = 64 * 1024;

/// Writes `r` as a connection's last answer, within `timeout`, and shuts the socket down. The
/// client may not read it; the connection ends either way.
pub async fn write_last(stream: &mut smol::net::TcpStream, r: &Response, timeout: Duration) {
    // Errors are the end of the connection, which this is anyway.
    let _ = write_all(stream, &r.to_bytes(false), timeout).await;
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

/// An HTTP response to write.
#[derive(Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// `Cache-Control`.
    pub cache: &'static str,
    /// Further headers.
    pub headers: Vec<(&'static str, String)>,
    /// The body.
    pub body: Cow<'static, [u8]>,
}

impl Response {
    /// A response with any body.
    pub fn new(
        status: u16,
        content_type: &'static str,
        cache: &'static str,
        body: impl Into<Cow<'static, [u8]>>,
    ) -> Response {
        Response {
            status,
            content_type,
            cache,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// A JSON response.
    pub fn json(status: u16, body: String) -> Response {
        Response::new(status, "application/json", "no-store", body.into_bytes())
    }

    /// `{"error": message}` with the given status.
    pub fn error(status: u16, message: &str) -> Response {
        Response::json(status, serde_json::json!({ "error": message }).to_string())
    }

    /// Adds a header.
    pub fn with(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    /// What a route that only speaks WebSocket answers anything else (426).
    pub fn needs_upgrade() -> Response {
        Response::error(426, "this route needs a WebSocket upgrade").with("Upgrade", "websocket")
    }

    /// The full response bytes; `keep_alive` chooses the `Connection` header.
    pub fn to_bytes(&self, keep_alive: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.body.len());
        self.write_head(keep_alive, &mut out);
        out.extend_from_slice(&self.body);
        out
    }

    /// The response to a `HEAD`: the same head (its `Content-Length` the body's), no body.
    pub fn head_bytes(&self, keep_alive: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        self.write_head(keep_alive, &mut out);
        out
    }

    /// The status line and headers, up to and with the blank line. A `304` has no body and
    /// says nothing of one: a `Content-Length` there would have to be the full body's (RFC 9110,
    /// section 8.6).
    fn write_head(&self, keep_alive: bool, out: &mut Vec<u8>) {
        let content = if self.status == 304 {
            String::new()
        } else {
            format!(
                "Content-Type: {}\r\nContent-Length: {}\r\n",
                self.content_type,
                self.body.len()
            )
        };
        let head = format!(
            "HTTP/1.1 {} {}\r\n{content}Cache-Control: {}\r\n\
             X-Content-Type-Options: nosniff\r\nConnection: {}\r\n",
            self.status,
            reason(self.status),
            self.cache,
            if keep_alive { "keep-alive" } else { "close" },
        );
        out.extend_from_slice(head.as_bytes());
        for (k, v) in &self.headers {
            out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// Writes `bytes` within `timeout`.
pub async fn write_all<S>(stream: &mut S, bytes: &[u8], timeout: Duration) -> io::Result<()>
where
    S: smol::io::AsyncWrite + Unpin,
{
    async {
        stream.write_all(bytes).await?;
        stream.flush().await
    }
    .or(async {
        smol::Timer::after(timeout).await;
        Err(io::ErrorKind::TimedOut.into())
    })
    .await
}

/// The reason phrase of the statuses edgemon sends.
pub fn reason(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        303 => "See Other",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Option<(Request, usize)>, HeadError> {
        parse_head(s.as_bytes())
    }

    fn ok(s: &str) -> Request {
        parse(s).unwrap().unwrap().0
    }

    #[test]
    fn parses_a_plain_get_with_query() {
        let r = ok("GET /api/system?x=1 HTTP/1.1\r\nHost: pi:9753\r\n\r\n");
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/api/system");
        assert_eq!(r.query.as_deref(), Some("x=1"));
        assert_eq!(r.host.as_deref(), Some("pi:9753"));
        assert!(r.keep_alive());
        assert!(!r.has_body);
    }

    #[test]
    fn partial_head_asks_for_more() {
        assert!(matches!(parse("GET / HTTP/1.1\r\nHost: a\r\n"), Ok(None)));
        assert!(matches!(parse("GE"), Ok(None)));
    }

    #[test]
    fn head_length_is_the_consumed_prefix() {
        let s = "GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /healthz HTTP/1.1\r\n";
        let (_, n) = parse(s).unwrap().unwrap();
        assert_eq!(&s[n..], "GET /healthz HTTP/1.1\r\n");
    }

    #[test]
    fn oversized_head_is_too_large() {
        let big = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n",
            "a".repeat(MAX_HEAD)
        );
        assert!(matches!(parse(&big), Err(HeadError::TooLarge)));
        let complete = format!("{big}\r\n");
        assert!(matches!(parse(&complete), Err(HeadError::TooLarge)));
        let many: String = (0..MAX_HEADERS + 1)
            .map(|i| format!("X{i}: 1\r\n"))
            .collect();
        let req = format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n");
        assert!(matches!(parse(&req), Err(HeadError::TooLarge)));
    }

    #[test]
    fn malformed_heads_are_refused() {
        for bad in [
            "GET\r\n\r\n",
            "GET / HTTP/2.0\r\nHost: a\r\n\r\n",
            "GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
            "GET http://x/ HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n",
        ] {
            assert!(
                matches!(parse(bad), Err(HeadError::Malformed(_))),
                "accepted {bad:?}"
            );
        }
        // A TLS ClientHello sent to the plain-HTTP port.
        let tls = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03";
        assert!(matches!(parse_head(tls), Err(HeadError::Malformed(_))));
    }

    #[test]
    fn bodies_are_detected() {
        assert!(ok("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n").has_body);
        assert!(ok("GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n").has_body);
        assert!(!ok("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n").has_body);
    }

    #[test]
    fn keep_alive_follows_version_and_connection() {
        assert!(!ok("GET / HTTP/1.0\r\n\r\n").keep_alive());
        assert!(ok("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive());
        assert!(!ok("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").keep_alive());
    }

    #[test]
    fn upgrade_headers_are_read() {
        let r = ok("GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\
                    Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                    Sec-WebSocket-Version: 13\r\n\r\n");
        assert!(r.connection_upgrade());
        assert_eq!(r.upgrade.as_deref(), Some("websocket"));
        assert_eq!(r.ws_key.as_deref(), Some("dGhlIHNhbXBsZSBub25jZQ=="));
    }

    #[test]
    fn responses_carry_length_and_safety_headers() {
        let b = Response::error(404, "not found").to_bytes(true);
        let s = String::from_utf8(b).unwrap();
        assert!(s.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(s.contains("Content-Length: 21\r\n"));
        assert!(s.contains("X-Content-Type-Options: nosniff\r\n"));
        assert!(s.ends_with("\r\n\r\n{\"error\":\"not found\"}"));
    }

    #[test]
    fn read_head_keeps_bytes_after_the_head() {
        let data = b"GET /ws HTTP/1.1\r\nHost: a\r\n\r\n\x81\x00rest".to_vec();
        let mut src = smol::io::Cursor::new(data);
        let mut buf = Vec::new();
        let r = smol::block_on(read_head(&mut src, &mut buf, Duration::from_secs(1)));
        assert_eq!(r.unwrap().unwrap().path, "/ws");
        assert_eq!(buf, b"\x81\x00rest");
        let r = smol::block_on(read_head(&mut src, &mut buf, Duration::from_secs(1)));
        assert!(matches!(r, Ok(None) | Err(_)));
    }
}
