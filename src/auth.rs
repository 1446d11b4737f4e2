//! The optional access token (`--token-file`): read and checked once at start, then required on
//! every route but `/healthz`, by `Authorization: Bearer`, by the cookie the dashboard gets, or by
//! `?token=` on a page load (which sets that cookie).

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::http::{Request, Response};

/// Name of the cookie that carries the token for the dashboard.
pub const COOKIE: &str = "edgemon_token";

/// The token. `Debug` never shows it, so it cannot end up in a log line by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Secret {
    /// Reads the token from `path`, refusing a file others can read and a token that is too short
    /// or has characters a cookie or header cannot carry. The error says what to do.
    pub fn from_file(path: &Path) -> Result<Secret, String> {
        let meta =
            std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        // SECURITY: a token others on the host can read protects nothing, and one they can
        // write they can set.
        let mode = meta.permissions().mode();
        if mode & 0o006 != 0 {
            let what = match (mode & 0o004 != 0, mode & 0o002 != 0) {
                (true, true) => "readable and writable",
                (true, false) => "readable",
                _ => "writable",
            };
            return Err(format!(
                "{} is {what} by every user on this host; run chmod o-rw {} (0600 or 0640 are fine)",
                path.display(),
                path.display()
            ));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Secret::new(text.trim())
    }

    /// Validates a token: 16 to 256 characters of `A-Z a-z 0-9 - . _ ~ + / =`.
    pub fn new(token: &str) -> Result<Secret, String> {
        let ok_chars = token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b));
        if !(16..=256).contains(&token.len()) || !ok_chars {
            return Err(
                "the token must be 16 to 256 characters of A-Z a-z 0-9 - . _ ~ + / = \
                 (e.g. the output of: openssl rand -base64 24)"
                    .into(),
            );
        }
        Ok(Secret(token.to_string()))
    }

    /// The token itself, for the `Authorization` header of a request to a `--peer` board (which
    /// shares the token file). Never for logs.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `candidate` is the token, in time that does not depend on where they differ.
    pub fn matches(&self, candidate: &str) -> bool {
        ct_eq(self.0.as_bytes(), candidate.as_bytes())
    }

    /// The `Set-Cookie` value that lets the dashboard keep working after a `?token=` load. `Lax`,
    /// not `Strict`: a link to the dashboard from another page (a start page, another board) must
    /// carry it, and every route is a GET that changes nothing, while the WebSocket checks
    /// `Origin` and every route `Host` (see `upgrade` and `host`).
    pub fn cookie(&self) -> String {
        format!(
            "{COOKIE}={}; HttpOnly; SameSite=Lax; Path=/; Max-Age=31536000",
            self.0
        )
    }
}

/// SECURITY: constant-time comparison; only the length can be learned from the timing.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// How a request presented the token, if it did.
#[derive(Debug, PartialEq, Eq)]
pub enum Presented {
    /// No token anywhere.
    None,
    /// A header or cookie token, right or wrong.
    Header(bool),
    /// A right `?token=` in the query: the response should set the cookie.
    Query,
    /// A wrong `?token=`.
    WrongQuery,
}

/// Finds the token in a request: `Authorization: Bearer`, the cookie, or `?token=`.
pub fn presented(secret: &Secret, req: &Request) -> Presented {
    if let Some(auth) = req.authorization.as_deref() {
        let bearer = auth
            .strip_prefix("Bearer ")
            .or_else(|| auth.strip_prefix("bearer "));
        return Presented::Header(bearer.is_some_and(|t| secret.matches(t.trim())));
    }
    if let Some(query) = req.query.as_deref()
        && let Some(t) = query.split('&').find_map(|kv| kv.strip_prefix("token="))
    {
        // `+` and `/` are token characters, and a link or a form may percent-encode them.
        let t = percent_decoded(t);
        return if t.as_deref().is_some_and(|t| secret.matches(t)) {
            Presented::Query
        } else {
            Presented::WrongQuery
        };
    }
    if let Some(cookies) = req.cookie.as_deref()
        && let Some(t) = cookies.split(';').find_map(|c| {
            c.trim()
                .strip_prefix(COOKIE)
                .and_then(|r| r.strip_prefix('='))
        })
    {
        return Presented::Header(secret.matches(t));
    }
    Presented::None
}

/// A query value with its `%XX` escapes decoded (`+` stays `+`: a token may contain it, and
/// `openssl rand -base64` output is pasted as is); `None` for a broken escape or non-UTF-8.
fn percent_decoded(v: &str) -> Option<String> {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Whether the request is a browser loading a page (it asks for HTML), not a script or a fetch.
fn wants_html(req: &Request) -> bool {
    req.accept
        .as_deref()
        .is_some_and(|a| a.to_ascii_lowercase().contains("text/html"))
}

/// What a browser sees instead of the dashboard without the token: how to log in.
const LOGIN_PAGE: &str = "<!doctype html>
<html lang=\"en\"><head><meta charset=\"utf-8\">
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">
<title>edgemon: token needed</title></head>
<body style=\"font: 16px/1.5 system-ui, sans-serif; max-width: 36em; margin: 3em auto; padding: 0 1em\">
<h1>This board needs its token</h1>
<p>edgemon here was started with <code>--token-file</code>. Open this page once as
<code>/?token=&lt;token&gt;</code> (the token is the content of that file); the browser then keeps it
in a cookie and the address bar loses it.</p>
<p>Scripts send <code>Authorization: Bearer &lt;token&gt;</code> instead.</p>
</body></html>
";

/// SECURITY: with `--token-file`, every route but `/healthz` needs the token. Returns the answer
/// that replaces the route's (401, or the redirect that turns `?token=` into a cookie), or `None`
/// to serve the route.
pub fn check(secret: Option<&Secret>, req: &Request) -> Option<Response> {
    let secret = secret?;
    if req.path == "/healthz" {
        return None;
    }
    match presented(secret, req) {
        Presented::Header(true) => None,
        // The page was opened as /?token=...: keep the token in an HttpOnly cookie and load the
        // page again without it, so it stays out of the address bar and history.
        Presented::Query if req.path == "/" => Some(
            Response::json(303, "{}".into())
                .with("Location", "/")
                .with("Set-Cookie", secret.cookie()),
        ),
        Presented::Query => None,
        _ if wants_html(req) => Some(
            Response::new(
                401,
                "text/html; charset=utf-8",
                "no-store",
                LOGIN_PAGE.as_bytes(),
            )
            .with("WWW-Authenticate", "Bearer realm=\"edgemon\"")
            // SECURITY: a static page: no script, no framing, its one style attribute only.
            .with(
                "Content-Security-Policy",
                "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
            ),
        ),
        _ => Some(
            Response::error(
                401,
                "this daemon needs its token: send Authorization: Bearer <token>, or open /?token=<token> once in the browser",
            )
            .with("WWW-Authenticate", "Bearer realm=\"edgemon\""),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(auth: Option<&str>, query: Option<&str>, cookie: Option<&str>) -> Request {
        Request {
            authorization: auth.map(Into::into),
            query: query.map(Into::into),
            cookie: cookie.map(Into::into),
            ..Request::default()
        }
    }

    const T: &str = "s3cret-token-0123456789";

    #[test]
    fn every_way_of_presenting_the_token_is_recognised() {
        let s = Secret::new(T).unwrap();
        assert_eq!(presented(&s, &req(None, None, None)), Presented::None);
        assert_eq!(
            presented(&s, &req(Some(&format!("Bearer {T}")), None, None)),
            Presented::Header(true)
        );
        assert_eq!(
            presented(&s, &req(Some("Bearer nope"), None, None)),
            Presented::Header(false)
        );
        assert_eq!(
            presented(&s, &req(Some(&format!("Basic {T}")), None, None)),
            Presented::Header(false)
        );
        assert_eq!(
            presented(&s, &req(None, Some(&format!("a=1&token={T}")), None)),
            Presented::Query
        );
        assert_eq!(
            presented(&s, &req(None, Some("token=x"), None)),
            Presented::WrongQuery
        );
        let c = format!("theme=dark; {COOKIE}={T}");
        assert_eq!(
            presented(&s, &req(None, None, Some(&c))),
            Presented::Header(true)
        );
        assert_eq!(
            presented(&s, &req(None, None, Some("edgemon_token=zz"))),
            Presented::Header(false)
        );
    }

    #[test]
    fn comparison_is_exact() {
        let s = Secret::new(T).unwrap();
        assert!(s.matches(T));
        assert!(!s.matches(&T[1..]));
        assert!(!s.matches(&format!("{T}x")));
        assert!(!s.matches(""));
    }

    #[test]
    fn weak_or_unsafe_tokens_are_refused() {
        assert!(Secret::new("short").is_err());
        assert!(Secret::new("has space in the middle!!").is_err());
        assert!(Secret::new("semicolon;semicolon;semicolon").is_err());
        assert!(Secret::new(&"a".repeat(257)).is_err());
        assert!(format!("{:?}", Secret::new(T).unwrap()) == "Secret(***)");
    }

    #[test]
    fn a_percent_encoded_query_token_is_decoded() {
        let s = Secret::new("abc+def/ghi=jklmnop").unwrap();
        let q = |v: &str| presented(&s, &req(None, Some(&format!("token={v}")), None));
        assert_eq!(q("abc%2Bdef%2Fghi%3Djklmnop"), Presented::Query);
        assert_eq!(q("abc+def/ghi=jklmnop"), Presented::Query);
        assert_eq!(q("abc%2bdef%2fghi%3djklmnop"), Presented::Query);
        for broken in ["abc%2", "abc%zz", "%ff%fe"] {
            assert_eq!(q(broken), Presented::WrongQuery, "{broken}");
        }
    }

    #[test]
    fn a_browser_without_the_token_gets_a_page_saying_how_to_log_in() {
        let s = Secret::new(T).unwrap();
        let page = Request {
            path: "/".into(),
            accept: Some("text/html,application/xhtml+xml,*/*;q=0.8".into()),
            ..Request::default()
        };
        let r = check(Some(&s), &page).unwrap();
        assert_eq!(r.status, 401);
        assert!(r.content_type.starts_with("text/html"));
        assert!(String::from_utf8_lossy(&r.body).contains("/?token="));
        let script = Request {
            path: "/api/system".into(),
            ..Request::default()
        };
        let r = check(Some(&s), &script).unwrap();
        assert_eq!((r.status, r.content_type), (401, "application/json"));
    }

    #[test]
    fn a_world_readable_token_file_is_refused() {
        let p = std::env::temp_dir().join(format!("edgemon-token-{}", std::process::id()));
        std::fs::write(&p, format!("{T}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Secret::from_file(&p).unwrap_err();
        assert!(
            e.contains("readable by every user") && e.contains("chmod o-rw"),
            "{e}"
        );
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o602)).unwrap();
        let e = Secret::from_file(&p).unwrap_err();
        assert!(e.contains("writable by every user"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(Secret::from_file(&p).unwrap().matches(T));
        std::fs::remove_file(&p).unwrap();
    }
}
