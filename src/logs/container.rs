//! A container's log as a topic (`logs/container/NAME`): its last lines, then followed through
//! the engine's log stream for as long as the hub lives, across the container stopping,
//! starting and being replaced under the same name.
//!
//! Positions: the engine stamps every line (`timestamps=1`), Podman to the second, Docker to
//! the nanosecond; a line's `pos` is the container's ID, its stamp and its place among the
//! lines with the same stamp. Resuming asks the engine for the lines `since` that second and
//! drops those up to the position, so a resume is exact wherever the engine still has the
//! lines; another container under the name is `not_resumable`.

use std::sync::{Arc, Weak};
use std::time::Duration;

use async_channel::Sender;
use smol::future::FutureExt;

use super::{BACKLOG, Gap, Pos, RESUME_MAX_BYTES, RESUME_MAX_LINES, Ring};
use crate::engine::{Engine, Error, stream::Lines};
use crate::hub::Hub;
use crate::rate::READ_BATCH;

/// How long to wait before looking at a container again that is missing, stopped or failing.
pub const RETRY: Duration = Duration::from_secs(3);

/// A container log's source: its name and the engine.
#[derive(Clone, Debug)]
pub struct ContainerSource {
    /// The container's name.
    pub name: String,
    /// The engine it runs on.
    pub engine: Arc<Engine>,
}

/// Where a container log line sits: the container, the engine's stamp (unix ns) and the
/// line's index among the lines with that same stamp.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mark {
    /// The container's ID (12 hex digits).
    pub id: String,
    /// The line's stamp.
    pub ts_ns: u64,
    /// Its index among the lines stamped `ts_ns`.
    pub k: u32,
}

impl Mark {
    /// The mark of a line stamped `ts_ns` (`None`: as the line before) that follows `prev`.
    fn next(prev: Option<&Mark>, id: &str, ts_ns: Option<u64>) -> Mark {
        let ts_ns = ts_ns.or(prev.map(|p| p.ts_ns)).unwrap_or(0);
        let k = match prev {
            Some(p) if p.ts_ns == ts_ns && p.id == id => p.k + 1,
            _ => 0,
        };
        Mark {
            id: id.to_string(),
            ts_ns,
            k,
        }
    }

    /// Whether this mark comes after `other` in the same container's log.
    fn after(&self, other: &Mark) -> bool {
        (self.ts_ns, self.k) > (other.ts_ns, other.k)
    }

    /// The `since` second that replays this line and everything after it.
    fn since(&self) -> u64 {
        self.ts_ns / 1_000_000_000
    }
}

/// A container's log lines with their marks, counted along the stream as they were the first
/// time, and yielding to the other tasks every `READ_BATCH` lines.
struct Replay {
    lines: Lines,
    id: String,
    prev: Option<Mark>,
    count: u32,
    /// A line after `after` came: every later one is after it too, even if the engine's clock
    /// stepped back meanwhile.
    passed: bool,
}

impl Replay {
    fn new(lines: Lines, id: &str) -> Replay {
        Replay {
            lines,
            id: id.to_string(),
            prev: None,
            count: 0,
            passed: false,
        }
    }

    /// The next line that comes after `after` (every line without one), and its mark.
    async fn next_after(&mut self, after: Option<&Mark>) -> Result<Option<(String, Mark)>, Error> {
        loop {
            self.count += 1;
            if self.count % READ_BATCH == 0 {
                smol::future::yield_now().await;
            }
            let Some(l) = self.lines.next().await? else {
                return Ok(None);
            };
            let m = Mark::next(self.prev.as_ref(), &self.id, l.ts_ns);
            self.prev = Some(m.clone());
            if self.passed || after.is_none_or(|a| m.after(a)) {
                self.passed = true;
                return Ok(Some((l.text, m)));
            }
        }
    }
}

/// What a look at the container found.
enum Found {
    /// It exists: its ID, whether it has a TTY, whether it runs.
    Container {
        id: String,
        tty: bool,
        running: bool,
    },
    /// It cannot be followed now, and why.
    Not(String),
}

async fn look(src: &ContainerSource) -> Found {
    match src.engine.inspect(&src.name).await {
        Ok(v) => {
            let id: String = crate::engine::text(&v, "Id").chars().take(12).collect();
            if id.is_empty() {
                return Found::Not("the engine's details of the container have no Id".into());
            }
            let tty = v
                .pointer("/Config/Tty")
                .and_then(serde_json::Value::as_bool)
                == Some(true);
            let running = v
                .pointer("/State/Running")
                .and_then(serde_json::Value::as_bool)
                == Some(true);
            Found::Container { id, tty, running }
        }
        Err(Error::Status(404, _)) => {
            Found::Not(format!("no container named {} (waiting for one)", src.name))
        }
        Err(e) => Found::Not(format!("{} (retrying)", crate::engine::reason(&e))),
    }
}

/// How long a backlog read may take.
const BACKLOG_DEADLINE: Duration = Duration::from_secs(5);
/// An error clears once the followed stream proves itself: a line, or this long open.
const PROVEN: Duration = Duration::from_secs(2);

/// The last `BACKLOG` lines of container `id`, with marks counted as a resume counts them: from
/// the first line of their first second (Podman stamps to the second, so `tail` may start in
/// the middle of one). Two reads: `tail` to find that second, then `since` it.
async fn backlog(
    src: &ContainerSource,
    id: &str,
    tty: bool,
) -> Result<Vec<(String, Mark)>, String> {
    let read = async {
        let why = |e: Error| format!("{} (retrying)", crate::engine::reason(&e));
        let lines = src
            .engine
            .logs(id, false, None, Some(BACKLOG), tty)
            .await
            .map_err(why)?;
        let Some((_, first)) = Replay::new(lines, id).next_after(None).await.map_err(why)? else {
            return Ok(Vec::new());
        };
        let lines = src
            .engine
            .logs(id, false, Some(first.since()), None, tty)
            .await
            .map_err(why)?;
        let mut replay = Replay::new(lines, id);
        let mut kept = std::collections::VecDeque::with_capacity(BACKLOG);
        while let Some(line) = replay.next_after(None).await.map_err(why)? {
            if kept.len() == BACKLOG {
                kept.pop_front();
            }
            kept.push_back(line);
        }
        Ok(kept.into())
    };
    read.or(async {
        smol::Timer::after(BACKLOG_DEADLINE).await;
        Err(format!(
            "the engine did not give the container's log within {} s (retrying)",
            BACKLOG_DEADLINE.as_secs()
        ))
    })
    .await
}

/// Follows the container's log; the engine connection lives in this future only.
pub async fn follow_container(
    src: ContainerSource,
    ring: Arc<Ring>,
    ready: Sender<()>,
    hub: Weak<Hub>,
) {
    let mut ready = Some(ready);
    // The last line seen (published or preloaded).
    let mut last: Option<Mark> = None;
    // The second the current container's log was first read at, when it had no line yet.
    let mut quiet_since: Option<(String, u64)> = None;
    loop {
        let (id, tty, running) = match look(&src).await {
            Found::Container { id, tty, running } => (id, tty, running),
            Found::Not(why) => {
                ring.set_error(hub.upgrade().as_deref(), Some(why));
                drop(ready.take());
                smol::Timer::after(RETRY).await;
                continue;
            }
        };
        // Where this container's log was read to: its last line, or when it had none.
        let known = last.as_ref().is_some_and(|m| m.id == id)
            || quiet_since.as_ref().is_some_and(|(q, _)| *q == id);
        if !known {
            // The start of this container's log (the first read, or another container under
            // the name): its last lines, into the ring only the first time, else published.
            let lines = match backlog(&src, &id, tty).await {
                Ok(lines) => lines,
                Err(why) => {
                    ring.set_error(hub.upgrade().as_deref(), Some(why));
                    drop(ready.take());
                    smol::Timer::after(RETRY).await;
                    continue;
                }
            };
            if last.is_some() {
                log::info!("{}: another container now has the name", ring.topic);
            }
            last = lines.last().map(|(_, m)| m.clone());
            quiet_since = last
                .is_none()
                .then(|| (id.clone(), crate::protocol::unix_ms() / 1000));
            let lines = lines.into_iter().map(|(t, m)| (t, Some(Pos::Container(m))));
            if ready.take().is_some() {
                ring.preload(lines.collect());
            } else {
                let Some(h) = hub.upgrade() else { return };
                for (text, pos) in lines {
                    ring.push(&h, &text, pos);
                }
            }
        }
        let since = match (&last, &quiet_since) {
            (Some(m), _) => m.since(),
            (None, Some((_, s))) => *s,
            (None, None) => 0,
        };
        let from = last.clone();
        let ended = match src.engine.logs(&id, running, Some(since), None, tty).await {
            Ok(lines) => {
                let mut replay = Replay::new(lines, &id);
                let mut proven = std::pin::pin!(smol::Timer::after(PROVEN));
                let mut cleared = !running;
                loop {
                    // Nothing in the way of a read is lost when the timer wins the race: the
                    // reader is cancel-safe (engine::client::Body::fill).
                    let next = async { Some(replay.next_after(from.as_ref()).await) }
                        .or(async {
                            if cleared {
                                std::future::pending::<()>().await;
                            }
                            (&mut proven).await;
                            None
                        })
                        .await;
                    let Some(next) = next else {
                        cleared = true;
                        let Some(h) = hub.upgrade() else { return };
                        ring.set_error(Some(&h), None);
                        continue;
                    };
                    let (text, m) = match next {
                        Ok(Some(line)) => line,
                        Ok(None) => break None,
                        Err(e) => break Some(format!("{e} (retrying)")),
                    };
                    let Some(h) = hub.upgrade() else { return };
                    if !cleared {
                        cleared = true;
                        ring.set_error(Some(&h), None);
                    }
                    last = Some(m.clone());
                    quiet_since = None;
                    ring.push(&h, &text, Some(Pos::Container(m)));
                }
            }
            Err(Error::Status(404, _)) => None,
            Err(e) => Some(format!("{} (retrying)", crate::engine::reason(&e))),
        };
        let Some(h) = hub.upgrade() else { return };
        match ended {
            Some(why) => ring.set_error(Some(&h), Some(why)),
            // The stream ended: the container stopped (or was never running).
            None => {
                if let Found::Container { running: false, .. } = look(&src).await {
                    ring.set_error(
                        Some(&h),
                        Some(format!(
                            "container {} is not running; following again when it starts",
                            src.name
                        )),
                    );
                }
            }
        }
        drop(h);
        smol::Timer::after(RETRY).await;
    }
}

/// The lines after `after` up to the ring's first (`upto`), asked from the engine again.
pub(super) async fn read_gap(src: &ContainerSource, after: &Mark, upto: Option<&Mark>) -> Gap {
    let Found::Container { id, tty, .. } = look(src).await else {
        return Err("unknown");
    };
    if id != after.id {
        return Err("not_resumable");
    }
    let lines = src
        .engine
        .logs(&id, false, Some(after.since()), None, tty)
        .await
        .map_err(|_| "unknown")?;
    let mut replay = Replay::new(lines, &id);
    let (mut got, mut bytes) = (Vec::new(), 0usize);
    loop {
        let (text, m) = match replay.next_after(Some(after)).await {
            Ok(Some(line)) => line,
            Ok(None) => return Ok((got, true)),
            Err(_) => return Ok((got, false)),
        };
        // The ring's first line: the rest is in the ring.
        if upto.is_some_and(|u| u.id == m.id && !u.after(&m)) {
            return Ok((got, true));
        }
        bytes += text.len() + 1;
        if got.len() >= RESUME_MAX_LINES || bytes > RESUME_MAX_BYTES {
            return Ok((got, false));
        }
        got.push((text, Pos::Container(m)));
    }
}
