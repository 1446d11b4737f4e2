//! A container engine (Docker, or Podman's Docker-compatible API) on its Unix socket: the
//! calls the `containers` topic and the container log topics make, and nothing else.
//!
//! Paths are unversioned (`/containers/json`): the engine answers in its own current API
//! version, so a newer Docker that drops old versions keeps working, and Podman's compatibility
//! layer answers the same paths. Answers are read as JSON values (fields missing or `null`
//! in one engine or version are simply absent), which also keeps the binary small.

pub mod client;
pub mod stream;

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

pub use client::Error;

/// How long a whole JSON answer may take once its head arrived.
pub const BODY_DEADLINE: Duration = Duration::from_secs(5);
/// The largest container list read (about 1,000 containers).
const MAX_LIST: usize = 4 << 20;
/// The largest answer to one inspect or stats call.
const MAX_ONE: usize = 1 << 20;

/// The engine behind `--docker-socket`.
#[derive(Debug)]
pub struct Engine {
    socket: PathBuf,
}

/// Whether `s` can be a container's name or ID in a request path: `[A-Za-z0-9][A-Za-z0-9_.-]*`,
/// at most 128 bytes (Docker's own rule for names; IDs are hex).
pub fn valid_name(s: &str) -> bool {
    // SECURITY: the name goes into a request path; this alphabet has no `/`, `?`, `%` or space.
    !s.is_empty()
        && s.len() <= 128
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// A string field of a JSON object ("" when absent or not a string).
pub fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// A whole-number field of a JSON object.
pub fn number(v: &Value, key: &str) -> Option<u64> {
    v.get(key).and_then(Value::as_u64)
}

/// Why the engine cannot be asked, with what to do about it.
pub fn reason(e: &Error) -> String {
    match e {
        Error::Connect(m) if m.contains("ermission denied") => {
            format!("{e}; edgemon's user needs the socket's group (README: Containers)")
        }
        Error::Connect(m) if m.contains("No such file") || m.contains("refused") => {
            format!("{e}; is the engine running?")
        }
        _ => e.to_string(),
    }
}

/// An error status with the engine's `{"message"}` (at most 300 bytes of it).
fn status_error(status: u16, body: &[u8]) -> Error {
    let mut msg = serde_json::from_slice::<Value>(body)
        .ok()
        .map(|v| text(&v, "message").to_string())
        .unwrap_or_default();
    msg.truncate(crate::collect::floor_char_boundary(&msg, 300));
    Error::Status(status, msg)
}

impl Engine {
    /// The engine at `socket` (not contacted until the first call).
    pub fn new(socket: PathBuf) -> Engine {
        Engine { socket }
    }

    /// The socket's path.
    pub fn socket(&self) -> &std::path::Path {
        &self.socket
    }

    /// `GET target`, its JSON answer at most `max` bytes; an error status with the engine's own
    /// message. Boxed: one state machine for every caller (the binary's budget).
    fn json<'a>(
        &'a self,
        target: String,
        max: usize,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Value, Error>> + Send + 'a>>
    {
        Box::pin(async move {
            let r = client::get(&self.socket, &target).await?;
            let status = r.status;
            let body = r.read_all(max, BODY_DEADLINE).await?;
            if status != 200 {
                return Err(status_error(status, &body));
            }
            serde_json::from_slice(&body)
                .map_err(|e| Error::Garbage(format!("{target} did not answer JSON ({e})")))
        })
    }

    /// Every container, running or not (`/containers/json?all=1`).
    pub async fn list(&self) -> Result<Vec<Value>, Error> {
        match self.json("/containers/json?all=1".into(), MAX_LIST).await? {
            Value::Array(list) => Ok(list),
            _ => Err(Error::Garbage("the container list is not a list".into())),
        }
    }

    /// One container's details (`/containers/NAME/json`).
    pub async fn inspect(&self, name: &str) -> Result<Value, Error> {
        if !valid_name(name) {
            return Err(Error::Status(
                404,
                format!("no container can be named '{name}'"),
            ));
        }
        self.json(format!("/containers/{name}/json"), MAX_ONE).await
    }

    /// One reading of a running container's figures, without the engine waiting for a second
    /// one (`one-shot`; CPU rates come from the caller's previous reading).
    pub async fn stats(&self, id: &str) -> Result<Value, Error> {
        if !valid_name(id) {
            return Err(Error::Status(
                404,
                format!("no container can be named '{id}'"),
            ));
        }
        self.json(
            format!("/containers/{id}/stats?stream=false&one-shot=true"),
            MAX_ONE,
        )
        .await
    }

    /// A container's log, as lines with their timestamps: the last `tail` lines, or those since
    /// unix second `since`; `follow` keeps the stream open for new lines until the container
    /// stops. `tty`: the container has a terminal, so its log is raw text, not multiplexed.
    pub async fn logs(
        &self,
        id: &str,
        follow: bool,
        since: Option<u64>,
        tail: Option<usize>,
        tty: bool,
    ) -> Result<stream::Lines, Error> {
        if !valid_name(id) {
            return Err(Error::Status(
                404,
                format!("no container can be named '{id}'"),
            ));
        }
        let mut target = format!(
            "/containers/{id}/logs?stdout=1&stderr=1&timestamps=1&follow={}",
            u8::from(follow)
        );
        if let Some(s) = since {
            target.push_str(&format!("&since={s}"));
        }
        if let Some(n) = tail {
            target.push_str(&format!("&tail={n}"));
        }
        let r = client::get(&self.socket, &target).await?;
        if r.status != 200 {
            let status = r.status;
            let body = r
                .read_all(64 << 10, BODY_DEADLINE)
                .await
                .unwrap_or_default();
            return Err(status_error(status, &body));
        }
        // Docker 1.42+ names a multiplexed stream in the content type; older APIs say
        // `raw-stream` for both kinds, so otherwise the container's TTY setting decides.
        let mux = r.content_type.contains("multiplexed") || !tty;
        Ok(stream::Lines::new(r.into_body(), mux))
    }
}
