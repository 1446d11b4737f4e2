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
        // SECURITY: a token others on the host can read protects nothing.
        if meta.permissions().mode() & 0o004 != 0 {
            return Err(format!(
                "{} is readable by every user on this host; run chmod o-r {} (0600 or 0640 are fine)",
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

    /// Whether `candidate` is the token, in time that does not depend on where they differ.
    pub fn matches(&self, candidate: &str) -> bool {
        ct_eq(self.0.as_bytes(), candidate.as_bytes())
    }

    /// The `Set-Cookie` value that lets the dashboard keep working after a `?token=` load.
    pub fn cookie(&self) -> String {
        format!(
            "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/; Max-Age=31536000",
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
        return if secret.matches(t) {
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
    fn a_world_readable_token_file_is_refused() {
        let p = std::env::temp_dir().join(format!("edgemon-token-{}", std::process::id()));
        std::fs::write(&p, format!("{T}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Secret::from_file(&p).unwrap_err();
        assert!(
            e.contains("readable by every user") && e.contains("chmod o-r"),
            "{e}"
        );
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(Secret::from_file(&p).unwrap().matches(T));
        std::fs::remove_file(&p).unwrap();
    }
}
