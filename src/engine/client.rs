//! A small HTTP/1.1 client for a container engine's API on its Unix socket: one GET per
//! connection (`Connection: close`), the response head parsed by httparse under a size limit,
//! and the body decoded as it comes (`Content-Length`, chunked, or up to the end).
//!
//! The engine is trusted with root but not with well-formedness: every length is bounded, a
//! head must arrive within a deadline, and anything else is an error, never a panic or a stall.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use smol::future::FutureExt;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::unix::UnixStream;

/// Largest response head accepted.
pub const MAX_HEAD: usize = 16 * 1024;
/// How long connecting, sending the request and receiving the head may take together.
pub const HEAD_DEADLINE: Duration = Duration::from_secs(5);
/// Longest chunk-size or trailer line accepted.
const MAX_LINE: usize = 1024;
/// Trailer lines accepted after the last chunk.
const MAX_TRAILERS: usize = 32;
/// One socket read at most.
const READ_SIZE: usize = 8 * 1024;

/// Why a call to the engine failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// The socket could not be reached (missing, refused, permission denied).
    Connect(String),
    /// The engine answered with an error status; its message when it gave one.
    Status(u16, String),
    /// The answer is not HTTP, or not what the API documents.
    Garbage(String),
    /// No answer within the deadline.
    Timeout,
    /// The connection broke off.
    Io(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Connect(m) => write!(f, "cannot connect to the engine: {m}"),
            Error::Status(code, m) if m.is_empty() => write!(f, "the engine answered {code}"),
            Error::Status(code, m) => write!(f, "the engine answered {code}: {m}"),
            Error::Garbage(m) => write!(f, "the engine's answer makes no sense: {m}"),
            Error::Timeout => write!(
                f,
                "the engine did not answer within {} s",
                HEAD_DEADLINE.as_secs()
            ),
            Error::Io(m) => write!(f, "the engine's connection broke: {m}"),
        }
    }
}

/// How the body's end is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    /// `Content-Length`: this many bytes are left.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked(Chunk),
    /// Neither: the body ends with the connection.
    ToEof,
    /// Read to its end.
    Done,
}

/// Where the chunked decoder is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk, this many bytes left.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one (how many seen so far).
    Trailer(usize),
}

/// A response: status, content type, and its body to read.
pub struct Response {
    /// The status code.
    pub status: u16,
    /// `Content-Type`, lowercase, or empty.
    pub content_type: String,
    body: Body,
}

/// A response body, decoded as it is read.
pub struct Body {
    stream: UnixStream,
    /// Bytes read from the socket and not yet consumed, from `start`.
    buf: Vec<u8>,
    start: usize,
    framing: Framing,
}

impl Response {
    /// The body.
    pub fn into_body(self) -> Body {
        self.body
    }

    /// The whole body, at most `max` bytes (more is an error), within `deadline`.
    pub async fn read_all(self, max: usize, deadline: Duration) -> Result<Vec<u8>, Error> {
        let mut body = self.body;
        let all = async {
            let mut out = Vec::new();
            while let Some(part) = body.next().await? {
                if out.len() + part.len() > max {
                    return Err(Error::Garbage(format!("an answer longer than {max} bytes")));
                }
                out.extend_from_slice(&part);
            }
            Ok(out)
        };
        all.or(async {
            smol::Timer::after(deadline).await;
            Err(Error::Timeout)
        })
        .await
    }
}

/// `GET target` on the engine's socket: the response head, with its body still to read.
pub async fn get(socket: &Path, target: &str) -> Result<Response, Error> {
    let call = async {
        let mut stream = UnixStream::connect(socket)
            .await
            .map_err(|e| Error::Connect(format!("{}: {e}", socket.display())))?;
        // SECURITY: `target` is built by this crate from validated names only (engine::Engine).
        let request = format!(
            "GET {target} HTTP/1.1\r\nHost: docker\r\nUser-Agent: edgemon/{}\r\n\
             Accept: application/json\r\nConnection: close\r\n\r\n",
            env!("CARGO_PKG_VERSION")
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| Error::Io(e.to_string()))?;
        let head = crate::http::read_response_head(&mut stream, MAX_HEAD)
            .await
            .map_err(|e| match e {
                crate::http::ResponseHeadError::Io(m) => Error::Io(m),
                crate::http::ResponseHeadError::NotHttp(m) => Error::Garbage(m),
            })?;
        let framing = framing(&head)?;
        Ok(Response {
            status: head.status,
            content_type: head
                .header("content-type")
                .unwrap_or("")
                .to_ascii_lowercase(),
            body: Body {
                stream,
                buf: head.rest,
                start: 0,
                framing,
            },
        })
    };
    call.or(async {
        smol::Timer::after(HEAD_DEADLINE).await;
        Err(Error::Timeout)
    })
    .await
}

/// How the body of a response with this head ends.
fn framing(head: &crate::http::ResponseHead) -> Result<Framing, Error> {
    let (mut length, mut chunked) = (None, false);
    for (name, value) in &head.headers {
        if name == "content-length" {
            let n = value
                .parse::<u64>()
                .map_err(|_| Error::Garbage("a Content-Length that is not a number".into()))?;
            if length.is_some_and(|l| l != n) {
                return Err(Error::Garbage("two different Content-Lengths".into()));
            }
            length = Some(n);
        } else if name == "transfer-encoding" {
            chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        }
    }
    // RFC 9112 6.3: chunked wins over a Content-Length; no body for 1xx, 204 and 304.
    Ok(if matches!(head.status, 100..=199 | 204 | 304) {
        Framing::Done
    } else if chunked {
        Framing::Chunked(Chunk::Size)
    } else {
        match length {
            Some(0) => Framing::Done,
            Some(n) => Framing::Length(n),
            None => Framing::ToEof,
        }
    })
}

impl Body {
    /// The next decoded bytes of the body, `None` at its end. Waits for the engine as long as it
    /// takes (a followed log is quiet for hours); callers bound it where an answer is due.
    pub async fn next(&mut self) -> Result<Option<Vec<u8>>, Error> {
        loop {
            match self.framing {
                Framing::Done => return Ok(None),
                Framing::Length(0) => {
                    self.framing = Framing::Done;
                    return Ok(None);
                }
                Framing::Length(left) => {
                    if self.available() == 0 && !self.fill().await? {
                        return Err(Error::Io("closed before the body's end".into()));
                    }
                    let n = (self.available() as u64).min(left) as usize;
                    self.framing = Framing::Length(left - n as u64);
                    return Ok(Some(self.take(n)));
                }
                Framing::ToEof => {
                    if self.available() == 0 && !self.fill().await? {
                        self.framing = Framing::Done;
                        return Ok(None);
                    }
                    let n = self.available();
                    return Ok(Some(self.take(n)));
                }
                Framing::Chunked(Chunk::Size) => {
                    let line = self.line().await?;
                    // Chunk extensions (`;name=value`) are allowed and ignored.
                    let size = line.split(|&b| b == b';').next().unwrap_or_default();
                    let size = std::str::from_utf8(size).unwrap_or("").trim();
                    let n = (!size.is_empty() && size.len() <= 15)
                        .then(|| u64::from_str_radix(size, 16).ok())
                        .flatten()
                        .ok_or_else(|| Error::Garbage("a chunk size that is not hex".into()))?;
                    self.framing = Framing::Chunked(if n == 0 {
                        Chunk::Trailer(0)
                    } else {
                        Chunk::Data(n)
                    });
                }
                Framing::Chunked(Chunk::Data(left)) => {
                    if self.available() == 0 && !self.fill().await? {
                        return Err(Error::Io("closed inside a chunk".into()));
                    }
                    let n = (self.available() as u64).min(left) as usize;
                    let rest = left - n as u64;
                    self.framing = Framing::Chunked(if rest == 0 {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(rest)
                    });
                    return Ok(Some(self.take(n)));
                }
                Framing::Chunked(Chunk::DataEnd) => {
                    if !self.line().await?.is_empty() {
                        return Err(Error::Garbage("a chunk longer than its size".into()));
                    }
                    self.framing = Framing::Chunked(Chunk::Size);
                }
                Framing::Chunked(Chunk::Trailer(seen)) => {
                    if self.line().await?.is_empty() {
                        self.framing = Framing::Done;
                    } else if seen + 1 > MAX_TRAILERS {
                        return Err(Error::Garbage("too many trailer lines".into()));
                    } else {
                        self.framing = Framing::Chunked(Chunk::Trailer(seen + 1));
                    }
                }
            }
        }
    }

    fn available(&self) -> usize {
        self.buf.len() - self.start
    }

    fn take(&mut self, n: usize) -> Vec<u8> {
        let out = self.buf[self.start..self.start + n].to_vec();
        self.start += n;
        out
    }

    /// One CRLF-terminated line (without it), at most `MAX_LINE` bytes.
    async fn line(&mut self) -> Result<Vec<u8>, Error> {
        loop {
            let avail = &self.buf[self.start..];
            if let Some(i) = avail.windows(2).position(|w| w == b"\r\n") {
                let line = avail[..i].to_vec();
                self.start += i + 2;
                return Ok(line);
            }
            if avail.len() > MAX_LINE {
                return Err(Error::Garbage("a chunk line without an end".into()));
            }
            if !self.fill().await? {
                return Err(Error::Io("closed inside the chunk framing".into()));
            }
        }
    }

    /// Reads more from the socket; false at its end. Cancel-safe: nothing changes before the
    /// read returns, so a caller may race it with a timer.
    async fn fill(&mut self) -> Result<bool, Error> {
        let mut chunk = [0u8; READ_SIZE];
        let r = self.stream.read(&mut chunk).await;
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let n = *r.as_ref().unwrap_or(&0);
        self.buf.extend_from_slice(&chunk[..n]);
        // A buffer grown for one burst does not stay that large while a log is quiet.
        if self.buf.capacity() > 4 * READ_SIZE && self.buf.len() < READ_SIZE {
            self.buf.shrink_to(2 * READ_SIZE);
        }
        r.map(|n| n > 0).map_err(|e| Error::Io(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smol::io::AsyncWriteExt;

    /// Serves `answer` (in pieces of `piece` bytes) to one client on a socket in a temp dir.
    fn serve(answer: &'static [u8], piece: usize) -> (std::path::PathBuf, smol::Task<()>) {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("edgemon-client-{}-{n}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("s.sock");
        let _ = std::fs::remove_file(&path);
        let listener = smol::net::unix::UnixListener::bind(&path).unwrap();
        let task = smol::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut head = [0u8; 1024];
            let _ = s.read(&mut head).await;
            for p in answer.chunks(piece) {
                let _ = s.write_all(p).await;
                let _ = s.flush().await;
                smol::Timer::after(Duration::from_millis(1)).await;
            }
        });
        (path, task)
    }

    fn fetch(answer: &'static [u8], piece: usize) -> Result<(u16, String, Vec<u8>), Error> {
        smol::block_on(async {
            let (path, _task) = serve(answer, piece);
            let r = get(&path, "/x").await?;
            let (status, ct) = (r.status, r.content_type.clone());
            let body = r.read_all(1 << 20, Duration::from_secs(5)).await?;
            Ok((status, ct, body))
        })
    }

    #[test]
    fn bodies_by_length_chunks_and_end_of_connection() {
        for piece in [1, 3, 1000] {
            let (s, ct, b) = fetch(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/JSON\r\nContent-Length: 5\r\n\r\nhello",
                piece,
            )
            .unwrap();
            assert_eq!(
                (s, ct.as_str(), b.as_slice()),
                (200, "application/json", &b"hello"[..])
            );
            let (_, _, b) = fetch(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n\
                  1\r\n \r\nA\r\n0123456789\r\n0\r\nX-Trailer: 1\r\n\r\n",
                piece,
            )
            .unwrap();
            assert_eq!(b, b"hello 0123456789");
            let (_, _, b) = fetch(b"HTTP/1.0 200 OK\r\n\r\nuntil the end", piece).unwrap();
            assert_eq!(b, b"until the end");
        }
        let (s, _, b) = fetch(b"HTTP/1.1 204 No Content\r\n\r\n", 100).unwrap();
        assert_eq!((s, b.len()), (204, 0));
    }

    #[test]
    fn garbage_and_broken_answers_are_errors() {
        for bad in [
            &b"SSH-2.0-OpenSSH\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhello\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        ] {
            assert!(
                matches!(fetch(bad, 7), Err(Error::Garbage(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(matches!(
            fetch(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", 7),
            Err(Error::Io(_))
        ));
        let endless: &'static [u8] = Box::leak(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: 3000000\r\n\r\n{}",
                "x".repeat(3_000_000)
            )
            .into_bytes()
            .into_boxed_slice(),
        );
        assert!(matches!(fetch(endless, 65536), Err(Error::Garbage(m)) if m.contains("longer")));
        let missing = std::env::temp_dir().join("edgemon-no-such-engine.sock");
        let e = smol::block_on(get(&missing, "/x")).err().unwrap();
        assert!(
            matches!(&e, Error::Connect(m) if m.contains("No such file")),
            "{e}"
        );
    }
}
