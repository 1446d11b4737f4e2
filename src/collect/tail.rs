//! Following a log file with `tail -F` semantics: the last lines first, then what is appended;
//! rotation by rename plus re-create and truncation in place are followed; a partial last line
//! waits for its newline; invalid UTF-8 is replaced, not dropped; an over-long line is cut with a
//! marker. Blocking file I/O: it runs on a blocking thread, never on the executor.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Longest line kept, in bytes; the rest is cut and replaced by a marker.
pub const MAX_LINE: usize = 8 * 1024;
/// Most bytes read in one poll, so a burst cannot pin memory; the rest comes next poll.
pub const MAX_READ: usize = 256 * 1024;
/// Further behind the file's end than this after a read, the tail skips ahead to the last
/// `MAX_READ` bytes: a burst of 50 MB would otherwise delay every later line by 50 s at one read
/// per poll. The skip is reported (`take_skip`) so subscribers get a `missed` marker.
pub const SKIP_BEHIND: u64 = 4 * 1024 * 1024;

/// A skip ahead: where it falls among the lines the poll returned, and how much it skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Skip {
    /// Lines returned before the skip (the rest came after it).
    pub after_lines: usize,
    /// Bytes not read.
    pub bytes: u64,
}

/// Where a line sits in its file: what a client sends back (`after`) to resume right after it.
/// `check` is FNV-1a (32 bits) of the line's last `check_len` bytes (its newline included), so a
/// file truncated and written again past the same offset is not taken for the same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct At {
    /// Device and inode of the file.
    pub id: (u64, u64),
    /// Offset of the line's first byte.
    pub start: u64,
    /// Offset just past its newline: where the next line starts.
    pub end: u64,
    /// How many bytes before `end` `check` covers (0: a line cut short, not checkable).
    pub check_len: u8,
    /// FNV-1a of those bytes.
    pub check: u32,
}

/// Bytes before a line's end covered by its check.
pub const CHECK_BYTES: usize = 64;

/// FNV-1a, 32 bits.
pub fn fnv32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

/// A followed file.
pub struct Tail {
    /// The configured path (what rotation re-creates).
    path: PathBuf,
    /// The open file, if any.
    file: Option<Open>,
    /// Bytes of a line whose newline has not come yet (at most `MAX_LINE`).
    partial: Vec<u8>,
    /// Bytes of the current line beyond `MAX_LINE`, discarded.
    cut: u64,
    /// After a skip, the bytes up to the next newline are the end of a line whose start was
    /// skipped: dropped, not taken for a line.
    resync: bool,
    /// The last skip ahead, until `take_skip`.
    skipped: Option<Skip>,
    /// Offset where the line in progress started.
    line_start: u64,
    /// Where each line returned by the last `open_at_end` or `poll` sits, one per line, in
    /// order (`take_positions`).
    positions: Vec<At>,
}

struct Open {
    file: File,
    /// Device and inode: a different pair at `path` means the file was rotated.
    id: (u64, u64),
    /// Bytes read so far.
    pos: u64,
    /// The last bytes read (up to `TAIL_CHECK`): if they change, the file was truncated and written
    /// again past our position before we looked, which its size alone cannot show.
    last: Vec<u8>,
}

/// How many of the last bytes read are checked on every poll.
const TAIL_CHECK: usize = 64;

impl Tail {
    /// A tail of `path`, not yet opened.
    pub fn new(path: impl Into<PathBuf>) -> Tail {
        Tail {
            path: path.into(),
            file: None,
            partial: Vec::new(),
            cut: 0,
            resync: false,
            skipped: None,
            line_start: 0,
            positions: Vec::new(),
        }
    }

    /// Where each line the last `open_at_end` or `poll` returned sits: as many as it returned
    /// lines, in the same order.
    pub fn take_positions(&mut self) -> Vec<At> {
        std::mem::take(&mut self.positions)
    }

    /// The skip ahead the last poll made, if it made one.
    pub fn take_skip(&mut self) -> Option<Skip> {
        self.skipped.take()
    }

    /// The followed path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the file and returns its last `n` complete lines; later polls return what follows.
    pub fn open_at_end(&mut self, n: usize) -> io::Result<Vec<String>> {
        self.positions.clear();
        let (mut file, meta) = open_regular(&self.path)?;
        let start = start_of_last_lines(&mut file, meta.len(), n)?;
        self.attach(file, &meta, start);
        let (mut lines, _) = self.read_new_or_forget()?;
        // Nothing was missed by anyone yet: a skip while opening is not news.
        self.skipped = None;
        // A file bigger than one read: keep the newest `n`; the rest arrives with the next polls.
        if lines.len() > n {
            lines.drain(..lines.len() - n);
            self.positions.drain(..self.positions.len() - n);
        }
        Ok(lines)
    }

    /// New complete lines since the last call. Follows rotation and truncation. A missing or
    /// unreadable file is an error and is retried by the next call; lines already read are never
    /// lost to an error (the error waits for the next call instead).
    pub fn poll(&mut self) -> io::Result<Vec<String>> {
        self.positions.clear();
        if self.file.is_none() {
            // First open, or the file went away: a file that (re)appears is read from its start.
            self.open_from_start()?;
        }
        let (mut lines, drained) = self.read_new_or_forget()?;
        if !drained {
            // More is waiting in this file: read it all before looking for a rotated successor.
            return Ok(lines);
        }
        let current = self.file.as_ref().map(|f| f.id);
        match std::fs::symlink_metadata(&self.path) {
            Ok(meta) if Some((meta.dev(), meta.ino())) != current => {
                // Rotated: the old file is drained; a line left without its newline ends here.
                lines.extend(self.flush_partial());
                self.file = None;
                // The successor's first lines, if it can be read now; if not, the next poll says why.
                if self.open_from_start().is_ok()
                    && let Ok((more, _)) = self.read_new_or_forget()
                {
                    lines.extend(more);
                }
            }
            // Same file, or renamed away and not re-created yet (keep draining the old handle), or
            // unreadable for a moment: the next poll looks again.
            _ => {}
        }
        Ok(lines)
    }

    /// Opens the path from its start.
    fn open_from_start(&mut self) -> io::Result<()> {
        let (file, meta) = open_regular(&self.path)?;
        self.attach(file, &meta, 0);
        Ok(())
    }

    /// Follows `file` from `pos` on, forgetting any line in progress of the previous one.
    fn attach(&mut self, file: File, meta: &std::fs::Metadata, pos: u64) {
        self.file = Some(Open {
            file,
            id: (meta.dev(), meta.ino()),
            pos,
            last: Vec::new(),
        });
        self.partial.clear();
        self.cut = 0;
        self.resync = false;
        self.line_start = pos;
    }

    /// Opens the path at `at.end` if it is still the file `at` was read from and still holds
    /// that line there: afterwards `poll` returns the lines that followed it. `Err` says why
    /// not, as a `missed` reason (`rotated`, `truncated`, `unknown`) or the I/O error's text.
    pub fn open_after(&mut self, at: &At) -> Result<(), (&'static str, String)> {
        let (mut file, meta) =
            open_regular(&self.path).map_err(|e| ("unknown", format!("cannot open: {e}")))?;
        if (meta.dev(), meta.ino()) != at.id {
            return Err(("rotated", "another file is at the path now".into()));
        }
        if meta.len() < at.end {
            return Err(("truncated", "the file is shorter than the position".into()));
        }
        if at.check_len == 0 || u64::from(at.check_len) > at.end {
            return Err((
                "unknown",
                "the line at that position cannot be checked".into(),
            ));
        }
        let mut tail = vec![0u8; usize::from(at.check_len)];
        file.seek(SeekFrom::Start(at.end - u64::from(at.check_len)))
            .and_then(|_| file.read_exact(&mut tail))
            .map_err(|e| ("unknown", format!("cannot read: {e}")))?;
        if fnv32(&tail) != at.check {
            return Err(("truncated", "the file holds other bytes there now".into()));
        }
        self.attach(file, &meta, at.end);
        if let Some(open) = self.file.as_mut() {
            // The bytes just read are what a later truncation check compares against.
            open.last = tail[tail.len().saturating_sub(TAIL_CHECK)..].to_vec();
        }
        Ok(())
    }

    /// `read_new`, forgetting the handle on error so the next poll reopens the path instead of
    /// failing on a dead handle forever (a stale NFS handle, a path replaced by something else).
    fn read_new_or_forget(&mut self) -> io::Result<(Vec<String>, bool)> {
        self.read_new().inspect_err(|_| self.file = None)
    }

    /// Reads what the open file has past `pos` (up to `MAX_READ`), following truncation. Also
    /// says whether it reached the end of the file.
    fn read_new(&mut self) -> io::Result<(Vec<String>, bool)> {
        let Some(open) = self.file.as_mut() else {
            return Ok((Vec::new(), true));
        };
        let len = open.file.metadata()?.len();
        if len < open.pos || !open.last_bytes_unchanged()? {
            // Truncated in place (`> file`, logrotate copytruncate): start over at the top.
            open.pos = 0;
            open.last.clear();
            self.partial.clear();
            self.cut = 0;
            self.resync = false;
            self.line_start = 0;
        }
        let base = open.pos;
        let buf = open.read_chunk()?;
        let drained = buf.len() < MAX_READ;
        if drained || len.saturating_sub(open.pos) <= SKIP_BEHIND {
            return Ok((self.split(&buf, base), drained));
        }
        // Too far behind: the line in progress goes out cut, as an over-long line would; then
        // the last MAX_READ bytes, from their first complete line.
        let to = len - MAX_READ as u64;
        let bytes = to - open.pos;
        open.pos = to;
        open.last.clear();
        let end = open.read_chunk()?;
        let mut lines = self.split(&buf, base);
        lines.extend(self.flush_partial());
        self.skipped = Some(Skip {
            after_lines: lines.len(),
            bytes,
        });
        self.resync = true;
        lines.extend(self.split(&end, to));
        Ok((lines, end.len() < MAX_READ))
    }

    /// Splits new bytes (read at offset `base`) into complete lines, keeping an unfinished one
    /// for later; records where each line sits.
    fn split(&mut self, bytes: &[u8], base: u64) -> Vec<String> {
        let mut lines = Vec::new();
        let mut rest = bytes;
        let mut at = base;
        if self.resync {
            match rest.iter().position(|b| *b == b'\n') {
                Some(nl) => {
                    rest = &rest[nl + 1..];
                    at += nl as u64 + 1;
                    self.line_start = at;
                    self.resync = false;
                }
                None => return lines,
            }
        }
        let id = self.file.as_ref().map_or((0, 0), |f| f.id);
        while let Some(nl) = rest.iter().position(|b| *b == b'\n') {
            let seg = &rest[..=nl];
            // The check covers the line's last bytes: from this read, and from what is kept
            // of its start when it began in an earlier one (unless that was cut).
            let mut window = Vec::with_capacity(CHECK_BYTES);
            if seg.len() < CHECK_BYTES && self.cut == 0 {
                let more = (CHECK_BYTES - seg.len()).min(self.partial.len());
                window.extend_from_slice(&self.partial[self.partial.len() - more..]);
            }
            window.extend_from_slice(&seg[seg.len().saturating_sub(CHECK_BYTES)..]);
            let end = at + nl as u64 + 1;
            self.positions.push(At {
                id,
                start: self.line_start,
                end,
                check_len: window.len() as u8,
                check: fnv32(&window),
            });
            self.push_partial(&rest[..nl]);
            lines.push(self.take_line());
            rest = &rest[nl + 1..];
            at = end;
            self.line_start = end;
        }
        self.push_partial(rest);
        lines
    }

    fn push_partial(&mut self, bytes: &[u8]) {
        let room = MAX_LINE.saturating_sub(self.partial.len());
        let keep = bytes.len().min(room);
        self.partial.extend_from_slice(&bytes[..keep]);
        self.cut += (bytes.len() - keep) as u64;
    }

    /// The buffered line as text: invalid UTF-8 replaced, `\r` dropped, a cut marked.
    fn take_line(&mut self) -> String {
        let mut bytes = std::mem::take(&mut self.partial);
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        let mut line = String::from_utf8_lossy(&bytes).into_owned();
        if self.cut > 0 {
            line.push_str(&cut_marker(self.cut));
            self.cut = 0;
        }
        line
    }

    /// A pending unfinished line, as a line (when its file is rotated away, or the tail skips
    /// ahead): its position cannot be checked (`check_len` 0), so no one resumes after it.
    fn flush_partial(&mut self) -> Option<String> {
        if self.partial.is_empty() && self.cut == 0 {
            return None;
        }
        let (id, end) = self.file.as_ref().map_or(((0, 0), 0), |f| (f.id, f.pos));
        self.positions.push(At {
            id,
            start: self.line_start,
            end,
            check_len: 0,
            check: 0,
        });
        self.line_start = end;
        Some(self.take_line())
    }
}

impl Open {
    /// Reads up to `MAX_READ` bytes at `pos`, moving `pos` past them and keeping their last
    /// bytes for the truncation check.
    fn read_chunk(&mut self) -> io::Result<Vec<u8>> {
        self.file.seek(SeekFrom::Start(self.pos))?;
        let mut buf = Vec::new();
        (&mut self.file)
            .take(MAX_READ as u64)
            .read_to_end(&mut buf)?;
        self.pos += buf.len() as u64;
        let keep = buf.len().min(TAIL_CHECK);
        if keep == TAIL_CHECK {
            self.last.clear();
        } else {
            let excess = (self.last.len() + keep).saturating_sub(TAIL_CHECK);
            self.last.drain(..excess);
        }
        self.last.extend_from_slice(&buf[buf.len() - keep..]);
        Ok(buf)
    }

    /// Whether the bytes just before `pos` are still the ones read there.
    fn last_bytes_unchanged(&mut self) -> io::Result<bool> {
        if self.last.is_empty() {
            return Ok(true);
        }
        let mut now = vec![0u8; self.last.len()];
        self.file
            .seek(SeekFrom::Start(self.pos - self.last.len() as u64))?;
        self.file.read_exact(&mut now)?;
        Ok(now == self.last)
    }
}

/// What replaces the bytes cut from an over-long line.
pub fn cut_marker(bytes: u64) -> String {
    format!(" …[{bytes} more bytes cut]")
}

/// Cuts a whole line (from a source that is not read byte by byte, like the journal) to
/// `MAX_LINE` bytes on a character boundary, with the same marker as followed files.
pub fn cap_line(mut line: String) -> String {
    if line.len() > MAX_LINE {
        let end = super::floor_char_boundary(&line, MAX_LINE);
        let cut = (line.len() - end) as u64;
        line.truncate(end);
        line.push_str(&cut_marker(cut));
    }
    line
}

/// What a log path that became a symbolic link answers.
pub const SYMLINK_REFUSED: &str =
    "is a symbolic link now, which is not followed; restart edgemon to follow it";

/// SECURITY: a daemon run as root streamed /etc/shadow after the configured log path was replaced
/// by a symlink to it. The path (resolved once at start, see [`resolve`]) is opened without
/// following a symlink in any component (`RESOLVE_NO_SYMLINKS`; `O_NOFOLLOW` for the last one
/// where the kernel lacks `openat2`), without blocking (`O_NONBLOCK`: a FIFO would otherwise hold
/// a blocking thread until someone writes to it), and is read only if it is a regular file (a
/// directory opens fine on Linux, then fails every read).
fn open_regular(path: &Path) -> io::Result<(File, std::fs::Metadata)> {
    use rustix::fs::{CWD, Mode, OFlags, ResolveFlags};
    use rustix::io::Errno;
    let flags =
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NOCTTY;
    let fd = match rustix::fs::openat2(CWD, path, flags, Mode::empty(), ResolveFlags::NO_SYMLINKS) {
        // Kernels before 5.6, or a seccomp filter without openat2: the last component at least.
        Err(Errno::NOSYS | Errno::PERM) => rustix::fs::open(path, flags, Mode::empty()),
        r => r,
    };
    let fd = fd.map_err(|e| match e {
        Errno::LOOP => io::Error::other(SYMLINK_REFUSED),
        e => io::Error::from(e),
    })?;
    let file = File::from(fd);
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other(format!(
            "not a regular file (a {}); only files are followed",
            kind(&meta.file_type())
        )));
    }
    Ok((file, meta))
}

/// What kind of file this is, in words.
fn kind(t: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_dir() {
        "directory"
    } else if t.is_fifo() {
        "FIFO"
    } else if t.is_socket() {
        "socket"
    } else if t.is_char_device() {
        "character device"
    } else if t.is_block_device() {
        "block device"
    } else {
        "special file"
    }
}

/// The configured log path with its symlinks resolved, once, at start: a configuration that
/// points through a symlink keeps working, and later opens follow none. A file that does not
/// exist yet is resolved through its directory.
pub fn resolve(path: &Path) -> PathBuf {
    if let Ok(p) = std::fs::canonicalize(path) {
        return p;
    }
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) if !dir.as_os_str().is_empty() => std::fs::canonicalize(dir)
            .map(|d| d.join(name))
            .unwrap_or_else(|_| path.to_path_buf()),
        _ => path.to_path_buf(),
    }
}

/// Offset where the last `n` lines of the first `len` bytes start (reading backwards in blocks).
/// Scans back at most `n` full-length lines, so a file without newlines costs one bounded read.
fn start_of_last_lines(file: &mut File, len: u64, n: usize) -> io::Result<u64> {
    if n == 0 {
        return Ok(len);
    }
    let floor = len.saturating_sub((n as u64 + 1) * MAX_LINE as u64);
    let mut newlines = 0;
    let mut end = len;
    // A final newline ends the last line rather than starting an empty one.
    let mut skip_last = true;
    let mut block = vec![0u8; 8192];
    while end > floor {
        let start = end.saturating_sub(block.len() as u64).max(floor);
        let chunk = &mut block[..(end - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(chunk)?;
        for (i, b) in chunk.iter().enumerate().rev() {
            if *b == b'\n' {
                if skip_last && start + i as u64 == len - 1 {
                    skip_last = false;
                    continue;
                }
                newlines += 1;
                if newlines == n {
                    return Ok(start + i as u64 + 1);
                }
            }
            skip_last = false;
        }
        end = start;
    }
    Ok(floor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    fn dir(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("edgemon-tail-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
    fn append(path: &Path, bytes: &[u8]) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(bytes).unwrap();
    }

    #[test]
    fn starts_with_the_last_lines_then_follows_appends() {
        let d = dir("basic");
        let p = d.0.join("app.log");
        let all: String = (1..=250).map(|i| format!("line {i}\n")).collect();
        append(&p, all.as_bytes());
        let mut t = Tail::new(&p);
        let first = t.open_at_end(100).unwrap();
        assert_eq!(first.len(), 100);
        assert_eq!(first[0], "line 151");
        assert_eq!(first[99], "line 250");
        assert!(t.poll().unwrap().is_empty());
        append(&p, b"line 251\nline 252\n");
        assert_eq!(t.poll().unwrap(), ["line 251", "line 252"]);
    }

    #[test]
    fn short_files_and_files_without_final_newline() {
        let d = dir("short");
        let p = d.0.join("a.log");
        append(&p, b"one\ntwo\nthree");
        let mut t = Tail::new(&p);
        assert_eq!(t.open_at_end(100).unwrap(), ["one", "two"]);
        // The partial last line waits for its newline.
        assert!(t.poll().unwrap().is_empty());
        append(&p, b" and more\n");
        assert_eq!(t.poll().unwrap(), ["three and more"]);
    }

    #[test]
    fn rotation_by_rename_and_recreate_is_followed() {
        let d = dir("rotate");
        let p = d.0.join("syslog");
        append(&p, b"old 1\n");
        let mut t = Tail::new(&p);
        t.open_at_end(10).unwrap();
        append(&p, b"old 2\nold partial");
        std::fs::rename(&p, d.0.join("syslog.1")).unwrap();
        // Renamed away, not re-created yet: the old file is still drained.
        assert_eq!(t.poll().unwrap(), ["old 2"]);
        append(&p, b"new 1\nnew 2\n");
        assert_eq!(t.poll().unwrap(), ["old partial", "new 1", "new 2"]);
        append(&p, b"new 3\n");
        assert_eq!(t.poll().unwrap(), ["new 3"]);
    }

    #[test]
    fn truncation_in_place_starts_over() {
        let d = dir("trunc");
        let p = d.0.join("a.log");
        append(&p, b"aaaaaaaaaaaaaaaaaaaa\nbbbbbbbbbbbbbbbbbbbbbbbbbb\n");
        let mut t = Tail::new(&p);
        t.open_at_end(10).unwrap();
        std::fs::File::create(&p).unwrap(); // truncate
        append(&p, b"fresh\n");
        assert_eq!(t.poll().unwrap(), ["fresh"]);
    }

    #[test]
    fn truncation_then_regrowth_before_a_poll_is_noticed() {
        let d = dir("regrow");
        let p = d.0.join("a.log");
        append(
            &p, b"short
",
        );
        let mut t = Tail::new(&p);
        t.open_at_end(10).unwrap();
        std::fs::File::create(&p).unwrap();
        append(
            &p,
            b"a longer line than before
",
        );
        assert_eq!(t.poll().unwrap(), ["a longer line than before"]);
        append(
            &p, b"next
",
        );
        assert_eq!(t.poll().unwrap(), ["next"]);
    }

    #[test]
    fn invalid_utf8_is_replaced_and_long_lines_are_cut() {
        let d = dir("bytes");
        let p = d.0.join("a.log");
        append(&p, b"");
        let mut t = Tail::new(&p);
        t.open_at_end(10).unwrap();
        append(&p, b"caf\xe9 ok\r\n");
        let long = vec![b'x'; MAX_LINE + 500];
        append(&p, &long);
        append(&p, b"\nafter\n");
        let lines = t.poll().unwrap();
        assert_eq!(lines[0], "caf\u{fffd} ok");
        assert!(lines[1].starts_with(&"x".repeat(100)));
        assert!(
            lines[1].ends_with(" …[500 more bytes cut]"),
            "{}",
            &lines[1][MAX_LINE - 10..]
        );
        assert!(lines[1].len() < MAX_LINE + 40);
        assert_eq!(lines[2], "after");
    }

    #[test]
    fn far_behind_the_line_in_progress_is_cut_and_the_tail_skips_to_the_end() {
        let d = dir("skip");
        let p = d.0.join("a.log");
        append(&p, b"");
        let mut t = Tail::new(&p);
        t.open_at_end(10).unwrap();
        assert_eq!(t.take_skip(), None);
        let big = vec![b'y'; 3 * SKIP_BEHIND as usize];
        append(&p, &big);
        append(&p, b"\nnext\n");
        let got = t.poll().unwrap();
        assert_eq!(got.len(), 2, "the cut line and the one after the skip");
        assert!(got[0].starts_with(&"y".repeat(MAX_LINE)));
        let cut = (MAX_READ - MAX_LINE) as u64;
        assert!(
            got[0].ends_with(&cut_marker(cut)),
            "{}",
            &got[0][MAX_LINE..]
        );
        assert_eq!(got[1], "next");
        let skip = t.take_skip().expect("a skip");
        assert_eq!(skip.after_lines, 1);
        let len = big.len() as u64 + 6;
        assert_eq!(skip.bytes, len - MAX_READ as u64 - MAX_READ as u64);
        assert_eq!(t.take_skip(), None);
        // Back to line by line.
        append(&p, b"then\n");
        assert_eq!(t.poll().unwrap(), ["then"]);
    }

    #[test]
    fn a_burst_is_drained_before_a_rotation_is_followed() {
        let d = dir("burst");
        let p = d.0.join("a.log");
        append(&p, b"");
        let mut t = Tail::new(&p);
        t.open_at_end(10).unwrap();
        let line = format!("{}\n", "z".repeat(99));
        let burst = line.repeat(MAX_READ / 100 * 3);
        append(&p, burst.as_bytes());
        std::fs::rename(&p, d.0.join("a.log.1")).unwrap();
        append(&p, b"successor\n");
        let mut got = Vec::new();
        for _ in 0..10 {
            got.extend(t.poll().unwrap());
        }
        assert_eq!(
            got.len(),
            MAX_READ / 100 * 3 + 1,
            "every line of the burst, then the new file"
        );
        assert!(got[..got.len() - 1].iter().all(|l| l.len() == 99));
        assert_eq!(got.last().unwrap(), "successor");
    }

    #[test]
    fn a_directory_in_place_of_the_file_is_an_error_and_recovers() {
        let d = dir("isdir");
        let p = d.0.join("a.log");
        std::fs::create_dir(&p).unwrap();
        let mut t = Tail::new(&p);
        assert!(t.open_at_end(10).is_err());
        assert!(t.poll().is_err());
        std::fs::remove_dir(&p).unwrap();
        append(&p, b"a file again\n");
        assert_eq!(t.poll().unwrap(), ["a file again"]);
    }

    #[test]
    fn whole_lines_are_capped_on_a_char_boundary_with_the_same_marker() {
        assert_eq!(cap_line("short".into()), "short");
        let long = format!("{}é tail", "x".repeat(MAX_LINE - 1));
        let capped = cap_line(long.clone());
        assert!(capped.starts_with(&"x".repeat(MAX_LINE - 1)));
        let cut = long.len() - (MAX_LINE - 1);
        assert!(
            capped.ends_with(&format!(" …[{cut} more bytes cut]")),
            "{}",
            &capped[MAX_LINE - 5..]
        );
    }

    #[test]
    fn a_missing_file_is_an_error_until_it_appears() {
        let d = dir("missing");
        let p = d.0.join("later.log");
        let mut t = Tail::new(&p);
        assert_eq!(
            t.open_at_end(100).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        assert_eq!(t.poll().unwrap_err().kind(), io::ErrorKind::NotFound);
        append(&p, b"hello\n");
        assert_eq!(t.poll().unwrap(), ["hello"]);
    }

    #[test]
    fn positions_point_at_each_line_and_resume_right_after_it() {
        let d = dir("positions");
        let p = d.0.join("app.log");
        let long = "x".repeat(100);
        append(&p, format!("one\ntwo\n{long}\nthr").as_bytes());
        let mut t = Tail::new(&p);
        assert_eq!(t.open_at_end(10).unwrap(), ["one", "two", long.as_str()]);
        let at = t.take_positions();
        assert_eq!(at.len(), 3);
        let bytes = std::fs::read(&p).unwrap();
        for (line, a) in ["one", "two", long.as_str()].iter().zip(&at) {
            assert_eq!(
                &bytes[a.start as usize..a.end as usize],
                format!("{line}\n").as_bytes()
            );
        }
        assert_eq!(at[2].check_len as usize, CHECK_BYTES);
        // A line that began in an earlier read keeps its start.
        append(&p, b"ee\nfour\n");
        assert_eq!(t.poll().unwrap(), ["three", "four"]);
        let more = t.take_positions();
        assert_eq!(more[0].start, at[2].end);
        assert_eq!(more[0].check_len, 6, "'three' and its newline");

        // Resuming after "two" returns what followed it, once.
        let mut r = Tail::new(&p);
        r.open_after(&at[1]).unwrap();
        assert_eq!(r.poll().unwrap(), [long.as_str(), "three", "four"]);
        assert_eq!(r.take_positions()[2], more[1]);

        // The same offset with other bytes: truncated and written again.
        std::fs::write(&p, format!("ONE\nTWO\n{long}\nthree\nfour\n")).unwrap();
        let mut r = Tail::new(&p);
        assert_eq!(r.open_after(&at[1]).unwrap_err().0, "truncated");
        std::fs::write(&p, "o\n").unwrap();
        assert_eq!(Tail::new(&p).open_after(&at[1]).unwrap_err().0, "truncated");
        // Another file at the path: rotated.
        std::fs::rename(&p, d.0.join("app.log.1")).unwrap();
        append(&p, format!("one\ntwo\n{long}\n").as_bytes());
        assert_eq!(Tail::new(&p).open_after(&at[1]).unwrap_err().0, "rotated");
    }
}
