//! Notifications: each alert firing and resolve, POSTed to every `--notify` target.
//!
//! Targets by scheme (DESIGN.md): `http://…` gets the generic JSON body (Home Assistant webhooks,
//! n8n, Node-RED take it as is), `ntfy+http://HOST/TOPIC` an ntfy message with its `Title`,
//! `Priority` and `Tags` headers, and `file:/PATH` names a file of such URLs, one a line, refused
//! if world-readable (URLs hold secrets; `EDGEMON_ARGS` is visible to every local user).
//! `https://` and `ntfy+https://` go over TLS 1.2 or 1.3 (rustls on smol through futures-rustls),
//! the server's name checked and its certificate verified against the system's CA certificates
//! (`SSL_CERT_FILE`/`SSL_CERT_DIR`, else Debian's `ca-certificates`); no pinning, and no way to
//! skip verification. Whatever is shown or logged about a target is its scheme and host.
//!
//! Delivery runs on the executor, one task per target with a bounded queue: the sampler thread
//! only `try_send`s (a full queue drops the notice and counts it, sampling never waits). Each
//! attempt has a deadline; a failed one is retried with backoff up to `ATTEMPTS`; at most
//! `PER_MINUTE` notices go to a target in any minute, and what was held back is announced by one
//! "N suppressed" notice when the minute is over.

use std::collections::VecDeque;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use smol::io::{AsyncReadExt, AsyncWriteExt};

use crate::alerts::{Change, Severity};

/// Notices queued per target before new ones are dropped (and counted).
pub const QUEUE: usize = 64;
/// Notices a target gets in any 60 s at most.
pub const PER_MINUTE: usize = 10;
/// Tries per notice (the first and the retries).
pub const ATTEMPTS: u32 = 4;
/// The first retry's wait; it doubles after each failure.
pub const FIRST_RETRY: Duration = Duration::from_secs(1);
/// One attempt, connect to answer.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer head read (the body is not read).
const MAX_ANSWER: usize = 8 * 1024;
/// Target URLs in a `file:` at most.
const MAX_FILE_URLS: usize = 32;

/// How a target wants its notices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The generic JSON body.
    Json,
    /// An ntfy message: text body, headers for the rest.
    Ntfy,
}

/// One `--notify` target.
#[derive(Clone, PartialEq, Eq)]
pub struct Target {
    /// Body and headers.
    pub kind: Kind,
    /// Over TLS (`https://`, `ntfy+https://`).
    pub tls: bool,
    /// Host name or IP literal (without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
    /// `user:password` from the URL, sent as basic authentication.
    pub userinfo: Option<String>,
    /// What is shown and logged: scheme and host (and port), never the path or credentials.
    pub shown: String,
}

impl fmt::Debug for Target {
    /// Only what may be shown: a target's path is often its secret (a webhook id, a topic).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

/// Scheme and host of `url` for messages, or `a URL` when even that cannot be told.
fn shown_of(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
            let host = authority.rsplit('@').next().unwrap_or("");
            format!("{scheme}://{host}")
        }
        None => "a URL".into(),
    }
}

/// Parses one target URL; the error shows only its scheme and host.
pub fn parse_target(url: &str) -> Result<Target, String> {
    let shown = shown_of(url);
    let (scheme, rest) = url.split_once("://").ok_or_else(|| {
        format!("{shown}: not a URL (http://HOST/PATH, ntfy+http://HOST/TOPIC or file:/PATH)")
    })?;
    let (kind, tls) = match scheme {
        "http" => (Kind::Json, false),
        "https" => (Kind::Json, true),
        "ntfy+http" => (Kind::Ntfy, false),
        "ntfy+https" => (Kind::Ntfy, true),
        other => {
            return Err(format!(
                "{shown}: unknown scheme '{other}' (http://, https://, ntfy+http://, ntfy+https:// or file:/PATH)"
            ));
        }
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let path = path.split('#').next().unwrap_or("/");
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    if path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(format!(
            "{shown}: the path has spaces or control characters"
        ));
    }
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u.to_string()), h),
        None => (None, authority),
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("{shown}: unclosed [ in the host"))?;
        (h, after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'))
    {
        return Err(format!("{shown}: no valid host"));
    }
    let port = match port {
        None if tls => 443,
        None => 80,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("{shown}: '{p}' is not a port"))?,
    };
    if kind == Kind::Ntfy && path.trim_matches('/').is_empty() {
        return Err(format!(
            "{shown}: an ntfy target needs a topic (ntfy+http://HOST/TOPIC)"
        ));
    }
    Ok(Target {
        kind,
        tls,
        host: host.to_string(),
        port,
        path,
        userinfo,
        shown,
    })
}

/// The targets of `--notify` values: URLs, and `file:/PATH` files of URLs (one a line, `#`
/// comments and blank lines skipped), refused when others may read them.
pub fn targets(given: &[String]) -> Result<Vec<Target>, String> {
    let mut out = Vec::new();
    for g in given {
        match g.strip_prefix("file:") {
            Some(path) => {
                for (n, line) in read_url_file(Path::new(path))? {
                    out.push(parse_target(&line).map_err(|e| format!("{path} line {n}: {e}"))?);
                }
            }
            None => out.push(parse_target(g)?),
        }
    }
    if out.len() > MAX_FILE_URLS {
        return Err(format!("at most {MAX_FILE_URLS} targets"));
    }
    Ok(out)
}

/// The URLs of a `file:` target with their line numbers.
fn read_url_file(path: &Path) -> Result<Vec<(usize, String)>, String> {
    use std::os::unix::fs::PermissionsExt;
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("file:{shown}: {e}"))?;
    if meta.permissions().mode() & 0o004 != 0 {
        return Err(format!(
            "file:{shown} is world-readable; the URLs in it are secrets: chmod o-r it (e.g. 0640, group edgemon's)"
        ));
    }
    if meta.len() > 64 * 1024 {
        return Err(format!("file:{shown} is over 64 KiB"));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("file:{shown}: {e}"))?;
    let urls: Vec<(usize, String)> = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim().to_string()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .collect();
    if urls.is_empty() {
        return Err(format!("file:{shown} holds no URL"));
    }
    Ok(urls)
}

/// Delivery counters, for `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    /// Notices a target accepted (2xx).
    pub sent: AtomicU64,
    /// Attempts that failed and were retried.
    pub retried: AtomicU64,
    /// Notices given up after `ATTEMPTS`.
    pub failed: AtomicU64,
    /// Notices held back by the per-minute limit.
    pub suppressed: AtomicU64,
    /// Notices dropped because a target's queue was full.
    pub dropped: AtomicU64,
    /// Notices given up at once because the server's certificate was refused (also `failed`).
    pub tls_refused: AtomicU64,
}

impl Counters {
    /// `(result, count)` for `edgemon_notifications_total{result}`.
    pub fn list(&self) -> [(&'static str, u64); 6] {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            ("sent", l(&self.sent)),
            ("retried", l(&self.retried)),
            ("failed", l(&self.failed)),
            ("suppressed", l(&self.suppressed)),
            ("dropped", l(&self.dropped)),
            ("tls_refused", l(&self.tls_refused)),
        ]
    }
}

/// What a notice is about: an alert's change, or how many were held back.
#[derive(Clone, Debug)]
pub enum Notice {
    /// An alert fired or resolved.
    Change(Change),
    /// This many notices were held back by the per-minute limit.
    Suppressed(u64),
}

/// Where notices are from: the board's name and page.
#[derive(Clone, Debug)]
pub struct Board {
    /// The host name.
    pub host: String,
    /// The board's page (`http://<hostname>.local:<port>/` unless an `--allow-host` names it).
    pub url: String,
}

/// The fields of the generic JSON body, sorted (DESIGN.md; the tests hold the bodies to it).
pub const JSON_FIELDS: [&str; 10] = [
    "alert",
    "host",
    "op",
    "severity",
    "since",
    "state",
    "target",
    "threshold",
    "url",
    "value",
];

/// The request for one notice to `t`: extra headers and the body.
pub fn request(t: &Target, board: &Board, n: &Notice) -> (Vec<(&'static str, String)>, String) {
    if t.kind == Kind::Json {
        let headers = vec![("Content-Type", "application/json".into())];
        return (headers, json_body(board, n).to_string());
    }
    let (title, priority, tag, text) = match n {
        Notice::Change(c) => {
            let (priority, tag) = match (c.state == "firing", c.severity) {
                (false, _) => ("3", "white_check_mark"),
                (true, Severity::Critical) => ("5", "rotating_light"),
                (true, Severity::Warning) => ("4", "warning"),
                (true, Severity::Info) => ("3", "information_source"),
            };
            let title = format!("{}: {} {}", board.host, c.alert, c.state);
            (title, priority, tag, c.text())
        }
        Notice::Suppressed(k) => {
            let title = format!("{}: notifications suppressed", board.host);
            (title, "3", "mute", suppressed_text(*k))
        }
    };
    let headers = vec![
        ("Title", title),
        ("Priority", priority.into()),
        ("Tags", format!("{tag},edgemon")),
        ("Click", board.url.clone()),
        ("Content-Type", "text/plain; charset=utf-8".into()),
    ];
    (headers, text)
}

/// The generic JSON body of a notice (`JSON_FIELDS`; a held-back batch adds its `text`).
fn json_body(board: &Board, n: &Notice) -> serde_json::Value {
    match n {
        Notice::Change(c) => serde_json::json!({
            "alert": c.alert, "state": c.state, "severity": c.severity, "host": board.host,
            "target": c.target, "value": c.value, "threshold": c.threshold, "op": c.op,
            "since": c.since, "url": board.url,
        }),
        Notice::Suppressed(k) => serde_json::json!({
            "alert": "suppressed", "state": "suppressed", "severity": Severity::Warning,
            "host": board.host, "target": null, "value": k, "threshold": PER_MINUTE,
            "op": ">", "since": crate::protocol::unix_ms(), "url": board.url,
            "text": suppressed_text(*k),
        }),
    }
}

/// What a held-back batch says.
fn suppressed_text(k: u64) -> String {
    format!("{k} notification(s) suppressed: more than {PER_MINUTE} in a minute")
}

/// Header values come from host names and alert names (checked characters), but never let a
/// line break through whatever they hold.
fn header_safe(v: &str) -> String {
    v.chars().filter(|c| !c.is_control()).collect()
}

/// `user:password` as basic authentication.
fn basic(userinfo: &str) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = userinfo.as_bytes();
    let mut out = String::with_capacity(b.len().div_ceil(3) * 4);
    for chunk in b.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The TLS settings of https targets, built once at start: `Err` says why there are none.
pub type Tls = Result<Arc<rustls::ClientConfig>, String>;

/// TLS 1.2 and 1.3 with ring, trusting the system's CA certificates: `SSL_CERT_FILE` and
/// `SSL_CERT_DIR` when set, else the usual places (`/etc/ssl/certs`, from `ca-certificates`).
pub fn tls_config() -> Tls {
    let found = rustls_native_certs::load_native_certs();
    for e in found.errors.iter().take(3) {
        log::warn!("notify: reading CA certificates: {e}");
    }
    let mut roots = rustls::RootCertStore::empty();
    let (added, _unparsable) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err("no CA certificates on this host (install the ca-certificates package, or set SSL_CERT_FILE)".into());
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    log::info!("notify: TLS trusts {added} CA certificate(s)");
    Ok(Arc::new(config))
}

/// ring's provider, built from its parts without ChaCha20-Poly1305 and without the key loading
/// a server or client certificate needs: every TLS 1.3 server has AES-128-GCM (RFC 8446 makes it
/// mandatory) and TLS 1.2 servers offer ECDHE with AES-GCM, and what is left out keeps the binary
/// within its 2.5 MiB budget (about 60 KiB on amd64; rustls' `default_provider()` links every
/// suite). AES-GCM in software on a Pi without the crypto extensions is slower, which a few
/// notifications a day do not notice. Certificates are verified with every algorithm rustls'
/// ring provider accepts (ECDSA P-256/P-384, Ed25519, RSA PKCS#1 and PSS).
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    use rustls::crypto::ring::{cipher_suite as cs, kx_group as kx};
    Arc::new(rustls::crypto::CryptoProvider {
        cipher_suites: vec![
            cs::TLS13_AES_128_GCM_SHA256,
            cs::TLS13_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        ],
        kx_groups: vec![kx::X25519, kx::SECP256R1, kx::SECP384R1],
        signature_verification_algorithms: SIG_ALGS,
        secure_random: &RingRandom,
        key_provider: &NoKeys,
    })
}

/// The signature algorithms of rustls' ring provider (its table is private).
static SIG_ALGS: rustls::crypto::WebPkiSupportedAlgorithms = {
    use rustls::SignatureScheme as S;
    use webpki::ring as a;
    rustls::crypto::WebPkiSupportedAlgorithms {
        all: &[
            a::ECDSA_P256_SHA256,
            a::ECDSA_P256_SHA384,
            a::ECDSA_P384_SHA256,
            a::ECDSA_P384_SHA384,
            a::ED25519,
            a::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
            a::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
            a::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
            a::RSA_PKCS1_2048_8192_SHA256,
            a::RSA_PKCS1_2048_8192_SHA384,
            a::RSA_PKCS1_2048_8192_SHA512,
            a::RSA_PKCS1_2048_8192_SHA256_ABSENT_PARAMS,
            a::RSA_PKCS1_2048_8192_SHA384_ABSENT_PARAMS,
            a::RSA_PKCS1_2048_8192_SHA512_ABSENT_PARAMS,
        ],
        mapping: &[
            (
                S::ECDSA_NISTP384_SHA384,
                &[a::ECDSA_P384_SHA384, a::ECDSA_P256_SHA384],
            ),
            (
                S::ECDSA_NISTP256_SHA256,
                &[a::ECDSA_P256_SHA256, a::ECDSA_P384_SHA256],
            ),
            (S::ED25519, &[a::ED25519]),
            (S::RSA_PSS_SHA512, &[a::RSA_PSS_2048_8192_SHA512_LEGACY_KEY]),
            (S::RSA_PSS_SHA384, &[a::RSA_PSS_2048_8192_SHA384_LEGACY_KEY]),
            (S::RSA_PSS_SHA256, &[a::RSA_PSS_2048_8192_SHA256_LEGACY_KEY]),
            (S::RSA_PKCS1_SHA512, &[a::RSA_PKCS1_2048_8192_SHA512]),
            (S::RSA_PKCS1_SHA384, &[a::RSA_PKCS1_2048_8192_SHA384]),
            (S::RSA_PKCS1_SHA256, &[a::RSA_PKCS1_2048_8192_SHA256]),
        ],
    }
};

/// Randomness from the system, through ring (as rustls' ring provider does).
#[derive(Debug)]
struct RingRandom;

impl rustls::crypto::SecureRandom for RingRandom {
    fn fill(&self, buf: &mut [u8]) -> Result<(), rustls::crypto::GetRandomFailed> {
        use ring::rand::SecureRandom;
        ring::rand::SystemRandom::new()
            .fill(buf)
            .map_err(|_| rustls::crypto::GetRandomFailed)
    }
}

/// A client without a certificate of its own loads no private keys.
#[derive(Debug)]
struct NoKeys;

impl rustls::crypto::KeyProvider for NoKeys {
    fn load_private_key(
        &self,
        _key: rustls::pki_types::PrivateKeyDer<'static>,
    ) -> Result<Arc<dyn rustls::sign::SigningKey>, rustls::Error> {
        Err(rustls::Error::General(
            "edgemon's TLS client has no certificate of its own".into(),
        ))
    }
}

/// Why an attempt failed.
#[derive(Debug, PartialEq, Eq)]
pub enum Failure {
    /// Worth another try (no answer, refused connection, a 5xx).
    Retry(String),
    /// The server's certificate was refused: trying again would not change it.
    Refused(String),
}

/// The rustls error inside an I/O error from the handshake, if it is one.
fn tls_error(e: &std::io::Error) -> Option<&rustls::Error> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
}

/// One POST to `t`; the answer's status, or what went wrong.
pub async fn post(
    t: &Target,
    tls: Option<&Tls>,
    headers: &[(&'static str, String)],
    body: &str,
) -> Result<u16, Failure> {
    let attempt = async {
        let tcp = smol::net::TcpStream::connect((t.host.as_str(), t.port))
            .await
            .map_err(|e| Failure::Retry(format!("cannot connect: {e}")))?;
        let req = request_bytes(t, headers, body);
        if !t.tls {
            return exchange(tcp, &req).await.map_err(Failure::Retry);
        }
        let config = match tls {
            Some(Ok(c)) => c.clone(),
            Some(Err(why)) => return Err(Failure::Refused(why.clone())),
            None => return Err(Failure::Refused("TLS is not set up".into())),
        };
        let name = rustls::pki_types::ServerName::try_from(t.host.clone())
            .map_err(|e| Failure::Refused(format!("'{}' is not a TLS server name: {e}", t.host)))?;
        let stream = futures_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| match tls_error(&e) {
                Some(
                    err @ (rustls::Error::InvalidCertificate(_)
                    | rustls::Error::NoCertificatesPresented
                    | rustls::Error::UnsupportedNameType),
                ) => Failure::Refused(format!("TLS: the server's certificate is refused: {err}")),
                Some(err) => Failure::Retry(format!("TLS: {err}")),
                None => Failure::Retry(format!("TLS handshake: {e}")),
            })?;
        exchange(stream, &req).await.map_err(Failure::Retry)
    };
    smol::future::or(attempt, async {
        smol::Timer::after(ATTEMPT_TIMEOUT).await;
        Err(Failure::Retry(format!(
            "no answer within {} s",
            ATTEMPT_TIMEOUT.as_secs()
        )))
    })
    .await
}

/// The request's bytes: head and body.
fn request_bytes(t: &Target, headers: &[(&'static str, String)], body: &str) -> Vec<u8> {
    let host = if t.host.contains(':') {
        format!("[{}]", t.host)
    } else {
        t.host.clone()
    };
    let default_port = if t.tls { 443 } else { 80 };
    let host = if t.port == default_port {
        host
    } else {
        format!("{host}:{}", t.port)
    };
    let mut req = format!(
        "POST {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: edgemon/{}\r\nContent-Length: {}\r\nConnection: close\r\n",
        t.path,
        env!("CARGO_PKG_VERSION"),
        body.len()
    );
    if let Some(u) = &t.userinfo {
        req.push_str(&format!("Authorization: Basic {}\r\n", basic(u)));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {}\r\n", header_safe(v)));
    }
    req.push_str("\r\n");
    req.push_str(body);
    req.into_bytes()
}

/// Writes `req` and reads the answer's head (at most `MAX_ANSWER`): its status.
async fn exchange<S>(mut s: S, req: &[u8]) -> Result<u16, String>
where
    S: smol::io::AsyncRead + smol::io::AsyncWrite + Unpin,
{
    s.write_all(req)
        .await
        .map_err(|e| format!("cannot send: {e}"))?;
    s.flush().await.map_err(|e| format!("cannot send: {e}"))?;
    let mut buf = vec![0u8; MAX_ANSWER];
    let mut len = 0;
    loop {
        let n = s
            .read(&mut buf[len..])
            .await
            .map_err(|e| format!("cannot read the answer: {e}"))?;
        if n == 0 {
            return Err("the receiver closed without an answer".to_string());
        }
        len += n;
        let mut hs = [httparse::EMPTY_HEADER; 32];
        let mut r = httparse::Response::new(&mut hs);
        match r.parse(&buf[..len]) {
            Ok(httparse::Status::Complete(_)) => {
                return r
                    .code
                    .ok_or_else(|| "an answer without a status".to_string());
            }
            Ok(httparse::Status::Partial) if len < buf.len() => continue,
            Ok(httparse::Status::Partial) => return Err("an answer head over 8 KiB".into()),
            Err(e) => return Err(format!("a malformed answer: {e}")),
        }
    }
}

/// The per-minute limit of one target: when the last sends were.
#[derive(Debug, Default)]
pub struct Limiter {
    sent: VecDeque<Instant>,
    /// Held back since the last summary.
    pub held: u64,
}

impl Limiter {
    /// Whether a notice may go at `now` (and counts it if so).
    pub fn admit(&mut self, now: Instant) -> bool {
        while self
            .sent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
        {
            self.sent.pop_front();
        }
        if self.sent.len() < PER_MINUTE {
            self.sent.push_back(now);
            true
        } else {
            self.held += 1;
            false
        }
    }

    /// When the next notice may go (`None`: now).
    pub fn free_at(&self) -> Option<Instant> {
        (self.sent.len() >= PER_MINUTE)
            .then(|| self.sent.front().map(|t| *t + Duration::from_secs(60)))
            .flatten()
    }
}

/// Delivers every notice `rx` gets to `t`, in order, until `rx` closes.
pub async fn run_target(
    t: Target,
    tls: Option<Tls>,
    board: Board,
    rx: async_channel::Receiver<Notice>,
    counters: Arc<Counters>,
) {
    let tls = tls.as_ref();
    let mut limit = Limiter::default();
    loop {
        // With notices held back, wake when the minute is over to say how many.
        let next = match limit.free_at().filter(|_| limit.held > 0) {
            Some(at) => {
                smol::future::or(async { rx.recv().await.ok() }, async {
                    smol::Timer::at(at).await;
                    None
                })
                .await
            }
            None => match rx.recv().await {
                Ok(n) => Some(n),
                Err(_) => return,
            },
        };
        let now = Instant::now();
        if limit.held > 0 && limit.free_at().is_none_or(|at| now >= at) {
            let k = std::mem::take(&mut limit.held);
            limit.admit(now);
            send(&t, tls, &board, &Notice::Suppressed(k), &counters).await;
        }
        let Some(n) = next else {
            if rx.is_closed() && rx.is_empty() {
                return;
            }
            continue;
        };
        if limit.admit(Instant::now()) {
            send(&t, tls, &board, &n, &counters).await;
        } else {
            counters.suppressed.fetch_add(1, Ordering::Relaxed);
            if limit.held == 1 {
                log::warn!(
                    "notify {t}: more than {PER_MINUTE} notifications in a minute; holding the rest back"
                );
            }
        }
    }
}

/// One notice to `t`, retried with backoff up to `ATTEMPTS` (a refused certificate is not
/// retried: it would be refused again).
async fn send(t: &Target, tls: Option<&Tls>, board: &Board, n: &Notice, counters: &Counters) {
    let (headers, body) = request(t, board, n);
    let mut wait = FIRST_RETRY;
    for attempt in 1..=ATTEMPTS {
        let why = match post(t, tls, &headers, &body).await {
            Ok(code) if (200..300).contains(&code) => {
                counters.sent.fetch_add(1, Ordering::Relaxed);
                log::debug!("notify {t}: delivered ({code})");
                return;
            }
            Ok(code) => format!("answered {code}"),
            Err(Failure::Retry(e)) => e,
            Err(Failure::Refused(e)) => {
                counters.tls_refused.fetch_add(1, Ordering::Relaxed);
                counters.failed.fetch_add(1, Ordering::Relaxed);
                log::warn!("notify {t}: not sent: {e}");
                return;
            }
        };
        if attempt == ATTEMPTS {
            counters.failed.fetch_add(1, Ordering::Relaxed);
            log::warn!("notify {t}: giving up after {ATTEMPTS} attempts: {why}");
            return;
        }
        counters.retried.fetch_add(1, Ordering::Relaxed);
        log::warn!(
            "notify {t}: attempt {attempt} of {ATTEMPTS} failed: {why}; retrying in {} s",
            wait.as_secs()
        );
        smol::Timer::after(wait).await;
        wait *= 2;
    }
}

/// Hands notices to every target's queue; never waits (a full queue drops and counts).
#[derive(Clone, Debug)]
pub struct Outbox {
    queues: Vec<(String, async_channel::Sender<Notice>)>,
    counters: Arc<Counters>,
}

impl Outbox {
    /// The outbox over target queues.
    pub fn new(
        queues: Vec<(String, async_channel::Sender<Notice>)>,
        counters: Arc<Counters>,
    ) -> Outbox {
        Outbox { queues, counters }
    }

    /// Queues `c` for every target.
    pub fn post(&self, c: &Change) {
        for (shown, q) in &self.queues {
            if q.try_send(Notice::Change(c.clone())).is_err() {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                log::warn!("notify {shown}: queue full ({QUEUE}); a notification is dropped");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_show_only_scheme_and_host() {
        let t = parse_target("http://192.168.1.5:8123/api/webhook/s3cr3t-id").unwrap();
        assert_eq!(
            (t.kind, t.host.as_str(), t.port, t.path.as_str()),
            (Kind::Json, "192.168.1.5", 8123, "/api/webhook/s3cr3t-id")
        );
        assert_eq!(t.to_string(), "http://192.168.1.5:8123");
        assert_eq!(
            format!("{t:?}"),
            "http://192.168.1.5:8123",
            "Debug shows no secret either"
        );
        let n = parse_target("ntfy+http://alice:pw@ntfy.lan/pi-alerts").unwrap();
        assert_eq!(
            (n.kind, n.port, n.path.as_str(), n.userinfo.as_deref()),
            (Kind::Ntfy, 80, "/pi-alerts", Some("alice:pw"))
        );
        assert_eq!(n.to_string(), "ntfy+http://ntfy.lan");
        let tls = parse_target("ntfy+https://ntfy.sh/pi-alerts").unwrap();
        assert_eq!(
            (tls.kind, tls.tls, tls.port, tls.to_string().as_str()),
            (Kind::Ntfy, true, 443, "ntfy+https://ntfy.sh")
        );
        let v6 = parse_target("http://[::1]:9000").unwrap();
        assert_eq!(
            (v6.host.as_str(), v6.port, v6.path.as_str()),
            ("::1", 9000, "/")
        );
        for (url, want) in [
            ("ftp://host/x", "ftp://host: unknown scheme 'ftp'"),
            ("ntfy+http://ntfy.lan/", "an ntfy target needs a topic"),
            ("http://host:99999/x", "'99999' is not a port"),
            ("http:///x", "no valid host"),
            ("webhook", "a URL: not a URL"),
            (
                "http://u:secret@host:1/a b",
                "http://host:1: the path has spaces",
            ),
        ] {
            let e = parse_target(url).unwrap_err();
            assert!(e.contains(want), "{url}: {e}");
            assert!(!e.contains("secret"), "{url}: {e}");
        }
        assert_eq!(basic("alice:pw"), "YWxpY2U6cHc=");
        assert_eq!(basic("ab"), "YWI=");
    }

    #[test]
    fn a_url_file_must_not_be_world_readable() {
        use std::os::unix::fs::PermissionsExt;
        let p = std::env::temp_dir().join(format!("edgemon-notify-urls-{}", std::process::id()));
        std::fs::write(
            &p,
            "# the phone\nntfy+http://ntfy.lan/pi\n\nhttp://ha.lan:8123/api/webhook/x\n",
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let arg = format!("file:{}", p.display());
        let e = targets(std::slice::from_ref(&arg)).unwrap_err();
        assert!(e.contains("world-readable"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        let t = targets(&[arg.clone(), "http://127.0.0.1:1/x".into()]).unwrap();
        let shown: Vec<String> = t.iter().map(|t| t.to_string()).collect();
        assert_eq!(
            shown,
            [
                "ntfy+http://ntfy.lan",
                "http://ha.lan:8123",
                "http://127.0.0.1:1"
            ]
        );
        std::fs::write(&p, "http://ok.lan/x\nnot a url\n").unwrap();
        let e = targets(&[arg]).unwrap_err();
        assert!(e.contains("line 2"), "{e}");
        let _ = std::fs::remove_file(&p);
    }

    #[test]
    fn at_most_ten_a_minute_then_one_summary() {
        let mut l = Limiter::default();
        let t0 = Instant::now();
        for i in 0..10 {
            assert!(l.admit(t0 + Duration::from_secs(i)), "{i}");
        }
        assert!(!l.admit(t0 + Duration::from_secs(20)));
        assert!(!l.admit(t0 + Duration::from_secs(30)));
        assert_eq!(l.held, 2);
        assert_eq!(l.free_at(), Some(t0 + Duration::from_secs(60)));
        assert!(
            l.admit(t0 + Duration::from_secs(60)),
            "the first send is a minute old"
        );
    }

    #[test]
    fn bodies_carry_the_documented_fields_and_ntfy_its_headers() {
        let c = Change {
            alert: "disk_full".into(),
            state: "firing",
            severity: Severity::Warning,
            target: Some("/data".into()),
            value: 91.25,
            threshold: 90.0,
            op: ">=",
            since: 1_795_330_000_000,
            rule: "disk_used_pct >= 90 for 5m warning".into(),
        };
        let board = Board {
            host: "pi4".into(),
            url: "http://pi4.local:9753/".into(),
        };
        let json = parse_target("http://h/x").unwrap();
        let (h, body) = request(&json, &board, &Notice::Change(c.clone()));
        assert_eq!(h, [("Content-Type", "application/json".to_string())]);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, JSON_FIELDS);
        assert_eq!(
            (
                v["alert"].as_str(),
                v["state"].as_str(),
                v["target"].as_str(),
                v["value"].as_f64()
            ),
            (
                Some("disk_full"),
                Some("firing"),
                Some("/data"),
                Some(91.25)
            )
        );
        let ntfy = parse_target("ntfy+http://h/t").unwrap();
        let (h, body) = request(&ntfy, &board, &Notice::Change(c));
        let get = |k: &str| h.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("Title"), Some("pi4: disk_full firing"));
        assert_eq!(get("Priority"), Some("4"));
        assert_eq!(get("Tags"), Some("warning,edgemon"));
        assert_eq!(get("Click"), Some("http://pi4.local:9753/"));
        assert!(
            body.starts_with("alert disk_full (warning) firing on /data: 91.25"),
            "{body}"
        );
    }
}
