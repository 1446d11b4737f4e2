//! A container's log stream as lines: the engine's 8-byte framing taken apart (stdout and
//! stderr multiplexed, non-TTY containers) or raw text (TTY containers), each line's
//! `timestamps=1` prefix parsed into nanoseconds.

use super::client::{Body, Error};

/// A multiplexed frame carries at most this much (the engine's own frames are a line or 32 KiB).
pub const MAX_FRAME: usize = 1 << 20;
/// A line is cut at this many bytes (like followed files).
pub use crate::collect::tail::MAX_LINE;

/// One log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    /// When the engine recorded it, unix ns (`None`: no timestamp could be read).
    pub ts_ns: Option<u64>,
    /// Its text, without the timestamp, `\r` or newline; invalid UTF-8 replaced.
    pub text: String,
}

/// Splits a log body into lines.
pub struct Lines {
    body: Body,
    demux: Demux,
    /// Body reads since the last line.
    reads: u32,
    /// The body has ended.
    ended: bool,
}

impl Lines {
    /// Lines of `body`; `mux` for a multiplexed stream (a container without a TTY).
    pub fn new(body: Body, mux: bool) -> Lines {
        Lines {
            body,
            demux: Demux::new(mux),
            reads: 0,
            ended: false,
        }
    }

    /// The next line, `None` at the end of the stream (a container that stopped).
    pub async fn next(&mut self) -> Result<Option<Line>, Error> {
        loop {
            if let Some(l) = self.demux.ready.pop_front() {
                self.reads = 0;
                return Ok(Some(l));
            }
            // Reads that give no line (a long line without its newline, empty frames) are
            // ready one after another: let the other tasks run now and then.
            self.reads += 1;
            if self.reads % 16 == 0 {
                smol::future::yield_now().await;
            }
            if self.ended {
                return Ok(self.demux.finish());
            }
            match self.body.next().await? {
                Some(bytes) => self.demux.feed(&bytes)?,
                None => {
                    if self.demux.mux && !self.demux.pending.is_empty() {
                        return Err(Error::Garbage("a log frame cut off".into()));
                    }
                    self.ended = true;
                }
            }
        }
    }
}

/// Takes a log body apart into lines, bytes in, lines out.
struct Demux {
    /// The body is multiplexed (8-byte frame headers) rather than raw TTY output.
    mux: bool,
    /// Bytes of the body not yet taken apart (at most one frame's worth).
    pending: Vec<u8>,
    /// Partial lines per stream (0: TTY/stdin, 1: stdout, 2: stderr), each bounded.
    partial: [Vec<u8>; 3],
    /// Bytes of each stream's partial line dropped beyond the bound.
    cut: [u64; 3],
    /// Lines ready to hand out.
    ready: std::collections::VecDeque<Line>,
}

impl Demux {
    fn new(mux: bool) -> Demux {
        Demux {
            mux,
            pending: Vec::new(),
            partial: Default::default(),
            cut: [0; 3],
            ready: Default::default(),
        }
    }

    /// A last line without its newline, at the end of the stream.
    fn finish(&mut self) -> Option<Line> {
        let s = self.partial.iter().position(|p| !p.is_empty())?;
        let bytes = std::mem::take(&mut self.partial[s]);
        Some(line_of(&bytes, std::mem::take(&mut self.cut[s])))
    }

    /// Takes in body bytes; complete lines go to `ready`.
    fn feed(&mut self, bytes: &[u8]) -> Result<(), Error> {
        if !self.mux {
            self.split(0, bytes);
            return Ok(());
        }
        self.pending.extend_from_slice(bytes);
        let mut at = 0;
        while self.pending.len() - at >= 8 {
            let h = &self.pending[at..at + 8];
            let stream = h[0];
            if stream > 2 || h[1..4] != [0, 0, 0] {
                return Err(Error::Garbage("not a multiplexed log frame".into()));
            }
            let size = u32::from_be_bytes([h[4], h[5], h[6], h[7]]) as usize;
            if size > MAX_FRAME {
                return Err(Error::Garbage(format!(
                    "a log frame of {size} bytes (at most {MAX_FRAME})"
                )));
            }
            if self.pending.len() - at - 8 < size {
                break;
            }
            let payload = self.pending[at + 8..at + 8 + size].to_vec();
            self.split(stream as usize, &payload);
            at += 8 + size;
        }
        self.pending.drain(..at);
        Ok(())
    }

    /// Adds `bytes` of stream `s`, cutting lines at newlines; a line's bytes beyond
    /// `MAX_LINE` (and its timestamp) are dropped as they come.
    fn split(&mut self, s: usize, mut bytes: &[u8]) {
        const KEEP: usize = MAX_LINE + 64;
        loop {
            let partial = &mut self.partial[s];
            let end = bytes.iter().position(|&b| b == b'\n');
            let part = &bytes[..end.unwrap_or(bytes.len())];
            let room = KEEP.saturating_sub(partial.len());
            let keep = part.len().min(room);
            partial.extend_from_slice(&part[..keep]);
            self.cut[s] += (part.len() - keep) as u64;
            let Some(i) = end else { return };
            let line = std::mem::take(partial);
            let cut = std::mem::take(&mut self.cut[s]);
            self.ready.push_back(line_of(&line, cut));
            bytes = &bytes[i + 1..];
        }
    }
}

/// A line's bytes as a `Line`: the timestamp split off, `\r` dropped, the text capped at
/// `MAX_LINE` with the marker of followed files (counting the `dropped` bytes too).
fn line_of(bytes: &[u8], dropped: u64) -> Line {
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    let (ts_ns, rest) = match bytes.iter().position(|&b| b == b' ') {
        Some(i) => match parse_rfc3339(&bytes[..i]) {
            Some(ts) => (Some(ts), &bytes[i + 1..]),
            None => (None, bytes),
        },
        None => match parse_rfc3339(bytes) {
            Some(ts) => (Some(ts), &b""[..]),
            None => (None, bytes),
        },
    };
    let text = String::from_utf8_lossy(rest);
    let mut text = text.strip_suffix('\r').unwrap_or(&text).to_string();
    let end = crate::collect::floor_char_boundary(&text, MAX_LINE);
    let cut = dropped + (text.len() - end) as u64;
    if cut > 0 {
        text.truncate(end);
        text.push_str(&crate::collect::tail::cut_marker(cut));
    }
    Line { ts_ns, text }
}

/// `2026-12-03T17:32:09.123456789Z` (or with an offset, or no fraction) as unix ns.
pub fn parse_rfc3339(b: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(b).ok()?;
    if s.len() < 20 || !s.is_char_boundary(19) {
        return None;
    }
    let (date, rest) = s.split_at(19);
    let d = date.as_bytes();
    if d[4] != b'-' || d[7] != b'-' || !matches!(d[10], b'T' | b't' | b' ') || d[13] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = date.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())
            .flatten()
    };
    let (y, mo, da) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&da) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let (frac, zone) = match rest.strip_prefix('.') {
        Some(f) => {
            let digits = f.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return None;
            }
            let mut ns: u64 = 0;
            for (i, c) in f[..digits].bytes().enumerate() {
                if i < 9 {
                    ns = ns * 10 + u64::from(c - b'0');
                }
            }
            for _ in digits..9 {
                ns *= 10;
            }
            (ns, &f[digits..])
        }
        None => (0, rest),
    };
    let offset = match zone {
        "Z" | "z" => 0,
        z if z.len() == 6 && z.is_ascii() && matches!(&z[..1], "+" | "-") && &z[3..4] == ":" => {
            let digits = |r: std::ops::Range<usize>| {
                let f = &z[r];
                f.bytes()
                    .all(|c| c.is_ascii_digit())
                    .then(|| f.parse::<i64>().ok())?
            };
            let (hh, mm) = (digits(1..3)?, digits(4..6)?);
            let off = hh * 3600 + mm * 60;
            if z.starts_with('-') { -off } else { off }
        }
        _ => return None,
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = if mo > 2 { mo - 3 } else { mo + 9 };
    let doy = (153 * m + 2) / 5 + da - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + se - offset;
    u64::try_from(secs)
        .ok()?
        .checked_mul(1_000_000_000)?
        .checked_add(frac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_to_unix_ns() {
        assert_eq!(parse_rfc3339(b"1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339(b"2026-12-03T17:32:09Z"),
            Some(1_796_319_129 * 1_000_000_000)
        );
        assert_eq!(
            parse_rfc3339(b"2026-12-03T17:32:09.5Z"),
            Some(1_796_319_129_500_000_000)
        );
        assert_eq!(
            parse_rfc3339(b"2026-12-03T18:32:09.000000001+01:00"),
            Some(1_796_319_129_000_000_001)
        );
        assert_eq!(
            parse_rfc3339(b"2000-02-29T00:00:00Z"),
            Some(951_782_400 * 1_000_000_000)
        );
        for bad in [
            &b"2026-13-03T17:32:09Z"[..],
            b"2026-12-03 17:32:09",
            b"2026-12-03T17:32:09.Z",
            b"line 5",
            b"",
            b"2026-12-03T17:32:09+0100",
            "2026-12-03T17:32:09+1é:0".as_bytes(),
            b"2026-12-03T17:32:09+-1:00",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn lines_lose_their_prefix_and_carriage_return() {
        assert_eq!(
            line_of(b"2026-12-03T17:32:09Z tty 4\r", 0),
            Line {
                ts_ns: Some(1_796_319_129_000_000_000),
                text: "tty 4".into()
            }
        );
        assert_eq!(
            line_of(b"no stamp here", 0),
            Line {
                ts_ns: None,
                text: "no stamp here".into()
            }
        );
        assert_eq!(line_of(b"\xff", 0).text, "\u{fffd}");
    }

    fn frame(stream: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![stream, 0, 0, 0];
        f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn texts(d: &mut Demux) -> Vec<String> {
        d.ready.drain(..).map(|l| l.text).collect()
    }

    #[test]
    fn multiplexed_frames_come_apart_in_any_pieces() {
        let mut body = frame(1, b"2026-12-03T17:32:09Z out 1\nout 2\n");
        body.extend(frame(2, b"err "));
        body.extend(frame(1, b"out 3\n"));
        body.extend(frame(2, b"half\n"));
        for piece in [1, 5, 8, 9, body.len()] {
            let mut d = Demux::new(true);
            for p in body.chunks(piece) {
                d.feed(p).unwrap();
            }
            assert_eq!(texts(&mut d), ["out 1", "out 2", "out 3", "err half"]);
            assert!(d.pending.is_empty() && d.finish().is_none());
        }
        let mut d = Demux::new(true);
        assert!(d.feed(b"HTTP/1.1 200 OK\r\n").is_err(), "not framed");
        let mut d = Demux::new(true);
        assert!(
            d.feed(&[1, 0, 0, 0, 0x7f, 0, 0, 0]).is_err(),
            "a 2 GiB frame"
        );
    }

    #[test]
    fn raw_tty_output_is_split_at_newlines_and_capped() {
        let mut d = Demux::new(false);
        d.feed(b"2026-12-03T17:32:09Z tty 4\r\n2026-12-03T17:32:10Z tt")
            .unwrap();
        d.feed(b"y 5\r\nno newline").unwrap();
        assert_eq!(texts(&mut d), ["tty 4", "tty 5"]);
        assert_eq!(d.finish().unwrap().text, "no newline");
        let mut d = Demux::new(false);
        for _ in 0..100 {
            d.feed(&[b'x'; 1000]).unwrap();
        }
        d.feed(b"\n").unwrap();
        let l = d.ready.pop_front().unwrap();
        let cut = 100_000 - MAX_LINE;
        assert!(
            l.text.ends_with(&format!(" …[{cut} more bytes cut]")),
            "{}",
            l.text.len()
        );
        assert!(d.partial.iter().all(Vec::is_empty));
    }
}
