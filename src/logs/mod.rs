//! Log topics (`logs/NAME`): a file followed like `tail -F`, or a systemd unit's journal followed
//! through a `journalctl` child process. The file handle or child exists only while the hub does:
//! both belong to the producer future, which the hub cancels when its last subscriber has gone.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_channel::{Receiver, Sender};
use smol::future::FutureExt;
use smol::io::{AsyncBufReadExt, BufReader};
use smol::stream::StreamExt;

use crate::collect::tail::{At, CHECK_BYTES, SKIP_BEHIND, Skip, Tail, cap_line};
use crate::hub::Hub;
use crate::lock::lock;
use crate::protocol::{
    Backfill, data_frame, error_frame, history_frames, missed_at_source, unix_ms,
};
use crate::rate::READ_BATCH;
use async_tungstenite::tungstenite::protocol::frame::Utf8Bytes;

mod container;
pub use container::{ContainerSource, Mark, follow_container};

/// Lines a new subscriber receives first.
pub const BACKLOG: usize = 100;
/// How often a followed file is checked for new lines.
pub const POLL: Duration = Duration::from_millis(250);
/// How long to wait before restarting a journal follower that exited.
pub const JOURNAL_RETRY: Duration = Duration::from_secs(5);
/// How long a new subscriber waits for the first read of a log before getting what there is.
pub const READY_WAIT: Duration = Duration::from_secs(2);

/// A `pos` is at most this long (DESIGN.md).
pub const MAX_POS: usize = 256;
/// A resume reads at most this much of the source to reach the lines the ring holds.
pub const RESUME_MAX_BYTES: usize = 1024 * 1024;
/// ... and at most this many lines.
pub const RESUME_MAX_LINES: usize = 2000;
/// A journal resume gives up after this long (journalctl on a slow card).
pub const RESUME_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a log line sits: sent with every line as `pos`, and taken back from a client as
/// `after` to resume right after that line. Opaque to clients; validated when it comes back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pos {
    /// A followed file: device, inode, the line's offsets and a check of its last bytes.
    File(At),
    /// A journal entry's cursor.
    Journal(String),
    /// A container log line's place.
    Container(Mark),
}

impl Pos {
    /// The `pos` string: `f1:DEV:INO:START:END:LEN:CHECK` (hex) or `j1:CURSOR`.
    pub fn encode(&self) -> String {
        match self {
            Pos::File(a) => format!(
                "f1:{:x}:{:x}:{:x}:{:x}:{:x}:{:x}",
                a.id.0, a.id.1, a.start, a.end, a.check_len, a.check
            ),
            Pos::Journal(c) => format!("j1:{c}"),
            Pos::Container(m) => format!("c1:{}:{:x}:{:x}", m.id, m.ts_ns, m.k),
        }
    }

    /// Parses a client's `after`; the error says what is wrong with it.
    pub fn parse(s: &str) -> Result<Pos, String> {
        if s.len() > MAX_POS {
            return Err(format!("longer than {MAX_POS} bytes"));
        }
        if let Some(rest) = s.strip_prefix("f1:") {
            let hex = |f: &str| {
                // from_str_radix alone would take a sign.
                if f.is_empty() || f.len() > 16 || !f.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err("a file position has 6 hex fields".to_string());
                }
                u64::from_str_radix(f, 16).map_err(|e| e.to_string())
            };
            let f: Vec<&str> = rest.split(':').collect();
            let [dev, ino, start, end, len, check] = f.as_slice() else {
                return Err("a file position has 6 hex fields".into());
            };
            let (start, end, len) = (hex(start)?, hex(end)?, hex(len)?);
            if start > end || len > CHECK_BYTES as u64 || len > end - start {
                return Err("not a position a line can have".into());
            }
            let check = u32::try_from(hex(check)?).map_err(|_| "check out of range".to_string())?;
            return Ok(Pos::File(At {
                id: (hex(dev)?, hex(ino)?),
                start,
                end,
                check_len: len as u8,
                check,
            }));
        }
        if let Some(cursor) = s.strip_prefix("j1:") {
            // SECURITY: the cursor reaches journalctl only as one argument
            // (`--after-cursor=...`), never through a shell; this charset (what journald's
            // cursors use) also keeps it from reading as another option.
            if cursor.is_empty()
                || !cursor
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"=;_-".contains(&b))
            {
                return Err("a journal cursor has letters, digits and = ; _ - only".into());
            }
            return Ok(Pos::Journal(cursor.to_string()));
        }
        if let Some(rest) = s.strip_prefix("c1:") {
            let bad = || "a container position is c1:ID:STAMP:INDEX".to_string();
            let [id, ts, k] = rest.split(':').collect::<Vec<_>>()[..] else {
                return Err(bad());
            };
            let hex = |f: &str, max: usize| {
                !f.is_empty() && f.len() <= max && f.bytes().all(|b| b.is_ascii_hexdigit())
            };
            if !(hex(id, 64) && hex(ts, 16) && hex(k, 8)) {
                return Err(bad());
            }
            return Ok(Pos::Container(Mark {
                id: id.to_string(),
                ts_ns: u64::from_str_radix(ts, 16).map_err(|_| bad())?,
                k: u32::from_str_radix(k, 16).map_err(|_| bad())?,
            }));
        }
        Err("unknown kind of position".into())
    }
}

/// Where a log topic's lines come from.
#[derive(Clone, Debug)]
pub enum Source {
    /// A file, followed like `tail -F`.
    File(FileSource),
    /// A systemd unit's journal; `dir` reads journal files from a directory instead of the system
    /// journal (tests).
    Journal {
        /// The unit (`ssh.service`).
        unit: String,
        /// A journal directory (`journalctl -D`), or `None` for the system journal.
        dir: Option<PathBuf>,
    },
    /// A container's log, through the engine.
    Container(ContainerSource),
}

/// A followed file: its path, resolved once at start, and whether an operation on it is running.
#[derive(Clone, Debug)]
pub struct FileSource {
    /// The path as resolved at start (symlinks in the configured path followed once, then never).
    pub path: PathBuf,
    /// Set while a blocking operation on the file runs, shared by every hub of the topic.
    pub busy: Arc<AtomicBool>,
}

impl FileSource {
    /// The file configured as `configured`: resolved now, so a configuration that points through
    /// a symlink keeps working while the file is later opened without following any.
    pub fn new(configured: &Path) -> FileSource {
        FileSource {
            path: crate::collect::tail::resolve(configured),
            busy: Arc::new(AtomicBool::new(false)),
        }
    }
}

/// The last lines of a live log topic and its current error, shared by producer and subscribers.
pub struct Ring {
    /// The topic (`logs/NAME`).
    topic: Arc<str>,
    /// Lines, oldest first, at most `BACKLOG`.
    lines: Mutex<VecDeque<Line>>,
    /// Why the source cannot be read right now, if it cannot.
    error: Mutex<Option<String>>,
    /// Closed once the first read is done (lines or error known); subscribers wait on it.
    ready: Receiver<()>,
    /// Line numbers, starting at 1: the topic's `seq`.
    seq: AtomicU64,
}

struct Line {
    seq: u64,
    ts: u64,
    /// Where it sits in its source.
    pos: Option<Pos>,
    /// `{"line": ..., "pos": ...}`, serialized once.
    data: Box<str>,
}

/// `{"line": ..., "pos": ...}` (no `pos` when the source gives none).
fn line_json(line: &str, pos: Option<&Pos>) -> String {
    match pos {
        Some(p) => serde_json::json!({ "line": line, "pos": p.encode() }).to_string(),
        None => serde_json::json!({ "line": line }).to_string(),
    }
}

impl Ring {
    /// A ring for `topic` and the sender whose drop marks it ready.
    pub fn new(topic: &str) -> (Arc<Ring>, Sender<()>) {
        let (tx, ready) = async_channel::bounded(1);
        let ring = Arc::new(Ring {
            topic: Arc::from(topic),
            lines: Mutex::new(VecDeque::with_capacity(BACKLOG)),
            error: Mutex::new(None),
            ready,
            seq: AtomicU64::new(0),
        });
        (ring, tx)
    }

    /// What a new subscriber receives first: the last lines as history, and the current error.
    /// Waits (bounded) for the producer's first read so the history is not empty by accident.
    pub async fn backfill(&self) -> Backfill {
        self.wait_ready().await;
        self.backfill_now()
    }

    /// What a subscriber that had the line at `after` receives first: the lines after it.
    /// From the ring when it holds that line; else read again from the source (at most
    /// `RESUME_MAX_BYTES` or `RESUME_MAX_LINES`, only if `may_read`), up to where the ring
    /// starts, then the ring. What cannot be resumed is one `missed` frame with its reason,
    /// then the ring's lines, so nothing is shown twice and no gap is silent.
    pub async fn resume(&self, after: &Pos, source: &Source, may_read: bool) -> Backfill {
        self.wait_ready().await;
        let first = {
            let lines = lock(&self.lines);
            if let Some(i) = lines.iter().position(|l| l.pos.as_ref() == Some(after)) {
                let items: Vec<(u64, u64, &str)> = lines
                    .iter()
                    .skip(i + 1)
                    .map(|l| (l.seq, l.ts, &*l.data))
                    .collect();
                let mut b = history_frames(&self.topic, "", &items);
                // Everything up to the newest line is covered, even with no line after `after`.
                b.covers_seq = lines.back().map_or(0, |l| l.seq);
                drop(lines);
                self.push_error(&mut b.frames);
                return b;
            }
            lines.front().and_then(|l| l.pos.clone())
        };
        let gap = if !may_read {
            Err("unknown")
        } else {
            read_gap(source, after, first).await
        };
        let mut frames: Vec<Utf8Bytes> = Vec::new();
        match gap {
            Ok((gap, complete)) => {
                let data: Vec<String> = gap.iter().map(|(l, p)| line_json(l, Some(p))).collect();
                let ts = unix_ms();
                // Lines from before the hub's numbering: seq 0, like notices.
                let items: Vec<(u64, u64, &str)> = data.iter().map(|d| (0, ts, &**d)).collect();
                if !items.is_empty() {
                    frames.extend(history_frames(&self.topic, "", &items).frames);
                }
                if !complete {
                    frames.push(missed_at_source(&self.topic, "too_far"));
                }
            }
            Err(reason) => frames.push(missed_at_source(&self.topic, reason)),
        }
        let mut b = self.backfill_now();
        frames.append(&mut b.frames);
        b.frames = frames;
        b
    }

    /// Waits (bounded) for the producer's first read.
    async fn wait_ready(&self) {
        let _ = smol::future::FutureExt::or(
            async {
                let _ = self.ready.recv().await;
            },
            async {
                smol::Timer::after(READY_WAIT).await;
            },
        )
        .await;
    }

    /// The ring as history, and the current error.
    fn backfill_now(&self) -> Backfill {
        let lines = lock(&self.lines);
        let items: Vec<(u64, u64, &str)> = lines.iter().map(|l| (l.seq, l.ts, &*l.data)).collect();
        let mut b = history_frames(&self.topic, "", &items);
        drop(lines);
        self.push_error(&mut b.frames);
        b
    }

    fn push_error(&self, frames: &mut Vec<Utf8Bytes>) {
        if let Some(e) = lock(&self.error).as_deref() {
            frames.push(error_frame(e, Some(&self.topic)));
        }
    }

    /// Numbers one line and keeps it in the ring; returns it for publishing.
    fn record(&self, line: &str, pos: Option<Pos>) -> (u64, u64, String) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let ts = unix_ms();
        let data = line_json(line, pos.as_ref());
        let mut lines = lock(&self.lines);
        if lines.len() == BACKLOG {
            lines.pop_front();
        }
        lines.push_back(Line {
            seq,
            ts,
            pos,
            data: data.clone().into_boxed_str(),
        });
        (seq, ts, data)
    }

    /// Records and publishes one line.
    fn push(&self, hub: &Hub, line: &str, pos: Option<Pos>) {
        let (seq, ts, data) = self.record(line, pos);
        hub.publish(seq, data_frame(&self.topic, seq, ts, &data));
    }

    /// Tells subscribers the tail skipped ahead (lines lost, how many unknown): a notice, like
    /// an error, outside the numbering.
    fn skipped(&self, hub: &Hub, skip: Skip) {
        log::warn!(
            "{}: more than {SKIP_BEHIND} bytes behind the file's end, skipped {} bytes",
            self.topic,
            skip.bytes
        );
        hub.publish(0, missed_at_source(&self.topic, "too_far"));
    }

    /// Records lines read before anyone could see them (the first read): no frames, just the ring.
    fn preload(&self, new: Vec<(String, Option<Pos>)>) {
        let skip = new.len().saturating_sub(BACKLOG);
        for (line, pos) in new.into_iter().skip(skip) {
            self.record(&line, pos);
        }
    }

    /// Sets or clears the error; tells subscribers and the log when it changes.
    fn set_error(&self, hub: Option<&Hub>, error: Option<String>) {
        let mut cur = lock(&self.error);
        if *cur == error {
            return;
        }
        match &error {
            Some(e) => {
                log::warn!("{}: {e}", self.topic);
                if let Some(hub) = hub {
                    // seq 0: a notice, not a line; never skipped and never counted as a gap.
                    hub.publish(0, error_frame(e, Some(&self.topic)));
                }
            }
            None => log::info!("{}: source readable again", self.topic),
        }
        *cur = error;
    }
}

/// Follows a file; the tail (and its file handle) lives in this future only.
///
/// Every file operation runs on a blocking thread, and at most one at a time per file across
/// the topic's hubs (`busy`): a read stuck on a hung mount costs one thread, however often the
/// hub restarts meanwhile, and the pool never fills with them.
pub async fn follow_file(file: FileSource, ring: Arc<Ring>, ready: Sender<()>, hub: Weak<Hub>) {
    let FileSource { path, busy } = file;
    let mut tail = Some(Tail::new(path.clone()));
    // Subscribers wait on this until the first read (or the reason there is none) is known.
    let mut ready = Some(ready);
    // Until one read is done the file is opened at its end (the backlog), not read from its start.
    let mut opened = false;
    loop {
        if ready.is_none() {
            smol::Timer::after(POLL).await;
        }
        let hub_now = hub.upgrade();
        if ready.is_none() && hub_now.is_none() {
            return;
        }
        let Some(guard) = Busy::take(&busy) else {
            let why = format!(
                "an earlier read of {} has not returned (a hung mount?); waiting for it",
                path.display()
            );
            ring.set_error(hub_now.as_deref(), Some(why));
            drop(ready.take());
            continue;
        };
        drop(hub_now);
        let mut t = tail.take().expect("the tail comes back from every read");
        let first = !opened;
        let (t, read, skip) = smol::unblock(move || {
            // Dropped when the read returns, or with the job if it never ran.
            let _busy = guard;
            let r = if first {
                t.open_at_end(BACKLOG)
            } else {
                t.poll()
            };
            let skip = t.take_skip();
            // Each line with where it sits.
            let r = r.map(|lines| {
                let at = t.take_positions();
                debug_assert_eq!(at.len(), lines.len());
                let pos = at
                    .into_iter()
                    .map(|a| Some(Pos::File(a)))
                    .chain(std::iter::repeat(None));
                lines.into_iter().zip(pos).collect::<Vec<_>>()
            });
            (t, r, skip)
        })
        .await;
        opened = true;
        if ready.is_some() {
            match read {
                Ok(lines) => ring.preload(lines),
                Err(e) => ring.set_error(None, Some(describe(t.path(), &e))),
            }
            drop(ready.take());
            tail = Some(t);
            continue;
        }
        let Some(hub) = hub.upgrade() else { return };
        match read {
            Ok(lines) => {
                ring.set_error(Some(&hub), None);
                let at = skip.map_or(lines.len(), |s| s.after_lines);
                let mut lines = lines.into_iter();
                for (line, pos) in lines.by_ref().take(at) {
                    ring.push(&hub, &line, pos);
                }
                if let Some(s) = skip {
                    ring.skipped(&hub, s);
                }
                for (line, pos) in lines {
                    ring.push(&hub, &line, pos);
                }
            }
            Err(e) => ring.set_error(Some(&hub), Some(describe(t.path(), &e))),
        }
        tail = Some(t);
    }
}

/// A file operation in flight; dropping it lets the next one start.
struct Busy(Arc<AtomicBool>);

impl Busy {
    /// The flag, if no other operation on the file is in flight.
    fn take(flag: &Arc<AtomicBool>) -> Option<Busy> {
        (!flag.swap(true, Ordering::SeqCst)).then(|| Busy(flag.clone()))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// A readable explanation of why a log file cannot be followed.
fn describe(path: &std::path::Path, e: &std::io::Error) -> String {
    format!("cannot read {}: {e} (retrying)", path.display())
}

/// Follows a unit's journal: the last lines once, then `journalctl -f` from the last cursor. The
/// child is killed when this future is dropped, and reaped (`crate::child`).
pub async fn follow_journal(
    unit: String,
    dir: Option<PathBuf>,
    ring: Arc<Ring>,
    ready: Sender<()>,
    hub: Weak<Hub>,
) {
    let base = |cmd: &mut std::process::Command| {
        crate::notify::child_env(cmd);
        // --all: without it, fields over 4 KiB come out as null and long messages would be lost.
        cmd.args(["-o", "json", "--all", "--no-pager", "-q", "-u", &unit]);
        if let Some(d) = &dir {
            cmd.arg("-D").arg(d);
        }
        cmd.stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
    };
    // The backlog: `journalctl -n 100` runs to completion.
    let mut cmd = std::process::Command::new("journalctl");
    base(&mut cmd);
    cmd.args(["-n", &BACKLOG.to_string()]);
    let mut cursor = None;
    // Kept until the unit's first entry (not cleared by a healthy journalctl): why a journal
    // with no entries at all may be a mistyped name rather than a quiet service.
    let mut no_entries = None;
    match crate::child::output(&mut cmd).await {
        Ok(out) if out.status.success() => {
            let mut lines = Vec::new();
            for l in String::from_utf8_lossy(&out.stdout).lines() {
                if let Some((msg, cur)) = parse_entry(l) {
                    lines.push((msg, Some(Pos::Journal(cur.clone()))));
                    cursor = Some(cur);
                }
            }
            if lines.is_empty() {
                no_entries = why_no_entries(&unit, dir.is_some()).await;
                ring.set_error(None, no_entries.clone());
            }
            ring.preload(lines);
        }
        Ok(out) => ring.set_error(None, Some(journal_error(&unit, &out.stderr))),
        Err(e) => ring.set_error(None, Some(format!("cannot run journalctl: {e} (retrying)"))),
    }
    drop(ready);
    loop {
        let mut cmd = std::process::Command::new("journalctl");
        base(&mut cmd);
        cmd.arg("-f").stdout(std::process::Stdio::piped());
        match &cursor {
            Some(c) => cmd.arg(format!("--after-cursor={c}")),
            None => cmd.args(["-n", "0"]),
        };
        let ended = match crate::child::spawn(&mut cmd) {
            Ok(mut child) => {
                let out = child.stdout.take().expect("stdout is piped");
                let err = child.stderr.take().expect("stderr is piped");
                // stderr is read all along (keeping its last 4 KiB): a child whose stderr pipe
                // filled up would block and go silent.
                let stderr_tail = async {
                    let mut kept = Vec::new();
                    let mut err = err;
                    let mut chunk = [0u8; 1024];
                    while let Ok(n @ 1..) = smol::io::AsyncReadExt::read(&mut err, &mut chunk).await
                    {
                        kept.extend_from_slice(&chunk[..n]);
                        let excess = kept.len().saturating_sub(4096);
                        kept.drain(..excess);
                    }
                    kept
                };
                let entries = async {
                    let mut lines = BufReader::new(out).lines();
                    // The error clears once the child proves itself: a first entry, or 2 s alive.
                    let mut proven = std::pin::pin!(smol::Timer::after(Duration::from_secs(2)));
                    let mut cleared = false;
                    let mut read = 0u32;
                    loop {
                        read += 1;
                        if read % READ_BATCH == 0 {
                            // A chatty journal is ready line after line: let the others run too.
                            smol::future::yield_now().await;
                        }
                        let next = async { Some(lines.next().await) }
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
                            if let Some(hub) = hub.upgrade() {
                                ring.set_error(Some(&hub), no_entries.clone());
                            }
                            continue;
                        };
                        let Some(Ok(l)) = next else { return true };
                        let Some((msg, cur)) = parse_entry(&l) else {
                            continue;
                        };
                        let pos = Some(Pos::Journal(cur.clone()));
                        cursor = Some(cur);
                        let Some(hub) = hub.upgrade() else {
                            return false;
                        };
                        if !cleared || no_entries.is_some() {
                            cleared = true;
                            no_entries = None;
                            ring.set_error(Some(&hub), None);
                        }
                        ring.push(&hub, &msg, pos);
                    }
                };
                let (hub_alive, err) = smol::future::zip(entries, stderr_tail).await;
                // Reap it now; dropping the child covers cancellation.
                let _ = child.kill();
                let _ = child.status().await;
                if !hub_alive {
                    return;
                }
                journal_error(&unit, &err)
            }
            Err(e) => format!("cannot run journalctl: {e} (retrying)"),
        };
        let Some(hub) = hub.upgrade() else { return };
        ring.set_error(Some(&hub), Some(ended));
        drop(hub);
        smol::Timer::after(JOURNAL_RETRY).await;
    }
}

/// Lines read again from a source with their positions, and whether the read reached its end
/// (false: a bound stopped it); `Err` is the `missed` reason when the source no longer holds
/// the position.
type Gap = Result<(Vec<(String, Pos)>, bool), &'static str>;

/// The lines after `after` up to where the ring starts (`upto`, its first line), read from the
/// source again: `(lines, complete)`, `complete` false when a bound stopped the read first.
/// `Err` is the `missed` reason when the source no longer holds `after`.
async fn read_gap(source: &Source, after: &Pos, upto: Option<Pos>) -> Gap {
    match (source, after) {
        (Source::File(file), Pos::File(at)) => {
            let Some(guard) = Busy::take(&file.busy) else {
                // A read of this file hangs (a dead mount): not another one.
                return Err("unknown");
            };
            let (path, at) = (file.path.clone(), *at);
            let upto = match upto {
                Some(Pos::File(u)) if u.id == at.id => Some(u.start),
                _ => None,
            };
            smol::unblock(move || {
                let _busy = guard;
                read_file_gap(&path, &at, upto)
            })
            .await
        }
        (Source::Journal { unit, dir }, Pos::Journal(cursor)) => {
            let upto = match upto {
                Some(Pos::Journal(c)) => Some(c),
                _ => None,
            };
            read_journal_gap(unit, dir.as_deref(), cursor, upto.as_deref())
                .or(async {
                    smol::Timer::after(RESUME_TIMEOUT).await;
                    Err("unknown")
                })
                .await
        }
        (Source::Container(src), Pos::Container(after)) => {
            let upto = match &upto {
                Some(Pos::Container(m)) => Some(m),
                _ => None,
            };
            container::read_gap(src, after, upto)
                .or(async {
                    smol::Timer::after(RESUME_TIMEOUT).await;
                    Err("unknown")
                })
                .await
        }
        // A file's position for a journal or the other way round: another source now.
        _ => Err("not_resumable"),
    }
}

/// `read_gap` for a file (blocking): from right after `at` to offset `upto`.
fn read_file_gap(path: &Path, at: &At, upto: Option<u64>) -> Gap {
    let mut t = Tail::new(path);
    t.open_after(at).map_err(|(reason, _)| reason)?;
    let (mut out, mut bytes) = (Vec::new(), 0usize);
    loop {
        let lines = t.poll().map_err(|_| "unknown")?;
        let positions = t.take_positions();
        let skipped = t.take_skip();
        if lines.is_empty() {
            return Ok((out, true));
        }
        let keep = skipped.map_or(lines.len(), |s| s.after_lines);
        for (line, p) in lines.into_iter().zip(positions).take(keep) {
            // The ring's first line, or a line of the successor file: the rest is in the ring.
            if upto.is_some_and(|u| p.start >= u) || p.id != at.id {
                return Ok((out, true));
            }
            bytes += line.len() + 1;
            if out.len() >= RESUME_MAX_LINES || bytes > RESUME_MAX_BYTES {
                return Ok((out, false));
            }
            out.push((line, Pos::File(p)));
        }
        if skipped.is_some() {
            return Ok((out, false));
        }
    }
}

/// `read_gap` for a journal: `journalctl --after-cursor=CURSOR` up to the ring's first entry.
async fn read_journal_gap(unit: &str, dir: Option<&Path>, cursor: &str, upto: Option<&str>) -> Gap {
    let mut cmd = std::process::Command::new("journalctl");
    crate::notify::child_env(&mut cmd);
    cmd.args(["-o", "json", "--all", "--no-pager", "-q", "-u", unit]);
    if let Some(d) = dir {
        cmd.arg("-D").arg(d);
    }
    // One argument: the cursor was checked by `Pos::parse`.
    cmd.arg(format!("--after-cursor={cursor}"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let mut child = crate::child::spawn(&mut cmd).map_err(|_| "unknown")?;
    let out = child.stdout.take().ok_or("unknown")?;
    let mut lines = BufReader::new(out).lines();
    let (mut got, mut bytes, mut read) = (Vec::new(), 0usize, 0u32);
    let complete = loop {
        read += 1;
        if read % READ_BATCH == 0 {
            smol::future::yield_now().await;
        }
        let Some(Ok(l)) = lines.next().await else {
            break true;
        };
        let Some((msg, cur)) = parse_entry(&l) else {
            continue;
        };
        if upto == Some(cur.as_str()) {
            break true;
        }
        bytes += msg.len() + 1;
        if got.len() >= RESUME_MAX_LINES || bytes > RESUME_MAX_BYTES {
            break false;
        }
        got.push((msg, Pos::Journal(cur)));
    };
    let _ = child.kill();
    let status = child.status().await;
    // A cursor journalctl cannot seek to (another machine's, or a journal vacuumed since).
    if got.is_empty() && complete && !status.is_ok_and(|s| s.success()) && upto.is_some() {
        return Err("not_resumable");
    }
    Ok((got, complete))
}

/// Why a unit's journal has no entries at all, when that looks like a mistake: systemd knows no
/// such unit, or (where systemd cannot be asked: a journal directory, no systemctl) the journal
/// holds nothing for that name. `None` for a loaded unit that simply has not logged yet.
async fn why_no_entries(unit: &str, from_dir: bool) -> Option<String> {
    if !from_dir {
        let out = crate::child::output(
            std::process::Command::new("systemctl")
                .args(["show", "--property=LoadState", "--value", unit])
                .stdin(std::process::Stdio::null()),
        )
        .await;
        if let Ok(out) = out
            && out.status.success()
        {
            return match String::from_utf8_lossy(&out.stdout).trim() {
                "not-found" => Some(format!(
                    "journal of {unit}: systemd knows no unit of that name (a typo? \
                     systemctl list-units lists them); waiting for entries"
                )),
                _ => None,
            };
        }
    }
    Some(format!(
        "journal of {unit}: no entries for this unit in the journal (is the name right? \
         systemctl status {unit}); waiting for entries"
    ))
}

fn journal_error(unit: &str, stderr: &[u8]) -> String {
    let msg = String::from_utf8_lossy(stderr);
    let msg = msg.trim();
    if msg.is_empty() {
        format!("journal of {unit}: journalctl stopped (retrying)")
    } else {
        format!("journal of {unit}: {msg} (retrying)")
    }
}

/// The message and cursor of one `journalctl -o json` line. `MESSAGE` may be a string, an array of
/// bytes (non-UTF-8 messages) or absent.
pub fn parse_entry(line: &str) -> Option<(String, String)> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let cursor = v.get("__CURSOR")?.as_str()?.to_string();
    let msg = match v.get("MESSAGE") {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Array(bytes)) => {
            let b: Vec<u8> = bytes
                .iter()
                .filter_map(|x| x.as_u64().and_then(|n| u8::try_from(n).ok()))
                .collect();
            String::from_utf8_lossy(&b).into_owned()
        }
        _ => String::new(),
    };
    Some((cap_line(msg), cursor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_entries_parse_text_and_byte_messages() {
        let (m, c) = parse_entry(r#"{"MESSAGE":"hello","__CURSOR":"s=1"}"#).unwrap();
        assert_eq!((m.as_str(), c.as_str()), ("hello", "s=1"));
        let (m, _) = parse_entry(r#"{"MESSAGE":[104,105,255],"__CURSOR":"s=2"}"#).unwrap();
        assert_eq!(m, "hi\u{fffd}");
        let (m, _) = parse_entry(r#"{"__CURSOR":"s=3"}"#).unwrap();
        assert_eq!(m, "");
        assert!(parse_entry("not json").is_none());
        assert!(parse_entry(r#"{"MESSAGE":"no cursor"}"#).is_none());
        let long = format!(r#"{{"MESSAGE":"{}","__CURSOR":"s"}}"#, "y".repeat(9000));
        assert!(parse_entry(&long).unwrap().0.ends_with("more bytes cut]"));
    }

    #[test]
    fn positions_encode_and_parse_back() {
        let at = At {
            id: (0x803, 1_234_567),
            start: 10,
            end: 74,
            check_len: 64,
            check: 0xdead_beef,
        };
        for p in [
            Pos::File(at),
            Pos::Journal("s=0a;i=1f;b=9c;m=2a;t=5f;x=77".into()),
            Pos::Container(Mark {
                id: "73cf6779b5b3".into(),
                ts_ns: 1_796_319_129_000_000_000,
                k: 3,
            }),
        ] {
            let s = p.encode();
            assert!(s.len() <= MAX_POS, "{s}");
            assert_eq!(Pos::parse(&s), Ok(p));
        }
        assert!(
            Pos::parse("f1:803:12d687:a:4a:41:deadbeef").is_err(),
            "check_len > 64"
        );
        assert!(
            Pos::parse("f1:803:12d687:a:4a:40:1deadbeef").is_err(),
            "check > u32"
        );
        assert!(Pos::parse("j1:").is_err());
        for bad in [
            "c1:",
            "c1:xyz:1:0",
            "c1:ab:1",
            "c1:ab:1:0:0",
            "c1:ab:11111111111111111:0",
        ] {
            assert!(Pos::parse(bad).is_err(), "{bad}");
        }
        assert!(
            Pos::parse("j1:-n").is_ok(),
            "a dash is a cursor character, and one argument"
        );
    }

    #[test]
    fn preload_keeps_the_last_lines_with_rising_seq() {
        let (ring, ready) = Ring::new("logs/x");
        ring.preload((1..=150).map(|i| (format!("l{i}"), None)).collect());
        drop(ready);
        let b = smol::block_on(ring.backfill());
        assert_eq!(b.covers_seq, 100, "seq counts the lines kept");
        let v: serde_json::Value = serde_json::from_str(&b.frames[0]).unwrap();
        assert_eq!(v["type"], "history");
        assert_eq!(v["topic"], "logs/x");
        assert_eq!(v["data"][0]["data"]["line"], "l51");
        assert_eq!(v["data"][0]["seq"], 1);
    }
}
