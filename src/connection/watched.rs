//! The connection's socket with a record of blocked writes. tungstenite writes on its own too
//! (the pong for every ping, the close reply) from inside a read, where no `--write-timeout` of
//! ours surrounds the write: a client that floods pings and never reads blocked those writes and
//! so hung the read forever. Every write that cannot go out marks when the socket became blocked,
//! and the session ends a connection blocked longer than `--write-timeout`, whoever wrote.
//!
//! Text frames go past tungstenite (`write_frame`): one `writev` of head and payload, and no
//! write buffer that grows to the largest frame ever sent (a dashboard's 8 KiB history frames
//! kept every subscribed connection at 14 KiB).
//!
//! Reads are budgeted the same way: tungstenite keeps reading inside one poll for as long as
//! bytes are ready (empty continuation frames never make a message), so after `READ_BUDGET`
//! bytes a read says "not now" once and wakes its task, which lets every other task run first.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use smol::io::{AsyncRead, AsyncWrite};
use smol::net::TcpStream;

/// Bytes read before the connection's task yields once, whatever it is doing.
const READ_BUDGET: usize = 64 * 1024;

/// A `TcpStream` whose writes report when they block and whose reads yield after a budget.
pub(super) struct Watched {
    inner: TcpStream,
    blocked: Blocked,
    /// Bytes read since the last yield.
    read_since_yield: usize,
    /// tungstenite's last write did not take all it offered: part of a frame of its (a pong, a
    /// close) waits in its buffer, and nothing else may be written before it.
    tungstenite_unflushed: bool,
}

/// Since when writes to the socket have been blocked, shared with the session.
#[derive(Clone)]
pub(super) struct Blocked {
    /// The reference point for `since_us`.
    base: Instant,
    /// Microseconds after `base` plus one when writes became blocked; 0 while they flow.
    since_us: Arc<AtomicU64>,
}

impl Blocked {
    /// Since when writes have been blocked, if they are.
    pub(super) fn since(&self) -> Option<Instant> {
        match self.since_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(self.base + Duration::from_micros(us - 1)),
        }
    }

    fn mark(&self) {
        let us = self.base.elapsed().as_micros() as u64 + 1;
        // Only the first blocked write of a stretch sets the time.
        let _ = self
            .since_us
            .compare_exchange(0, us, Ordering::Relaxed, Ordering::Relaxed);
    }

    fn clear(&self) {
        self.since_us.store(0, Ordering::Relaxed);
    }
}

impl Watched {
    /// Wraps `inner`; the returned handle tells since when its writes are blocked.
    pub(super) fn new(inner: TcpStream) -> (Watched, Blocked) {
        let blocked = Blocked {
            base: Instant::now(),
            since_us: Arc::new(AtomicU64::new(0)),
        };
        (
            Watched {
                inner,
                blocked: blocked.clone(),
                read_since_yield: 0,
                tungstenite_unflushed: false,
            },
            blocked,
        )
    }
}

impl Watched {
    /// Whether tungstenite holds part of a frame it could not write yet.
    pub(super) fn tungstenite_unflushed(&self) -> bool {
        self.tungstenite_unflushed
    }

    /// Writes one server frame (`head` then `payload`) past tungstenite, with one `writev` when
    /// the socket takes it all: no copy into tungstenite's write buffer, which keeps the size of
    /// the largest frame it ever wrote for the connection's life. The caller must make sure
    /// tungstenite has nothing half-written (`tungstenite_unflushed`) and must not let tungstenite
    /// write until this returns.
    pub(super) async fn write_frame(&mut self, head: &[u8], payload: &[u8]) -> io::Result<()> {
        let mut done = 0;
        let total = head.len() + payload.len();
        while done < total {
            let n = std::future::poll_fn(|cx| {
                let (h, p) = if done < head.len() {
                    (&head[done..], payload)
                } else {
                    (&[][..], &payload[done - head.len()..])
                };
                let bufs = [io::IoSlice::new(h), io::IoSlice::new(p)];
                let r = Pin::new(&mut self.inner).poll_write_vectored(cx, &bufs);
                match &r {
                    Poll::Pending => self.blocked.mark(),
                    Poll::Ready(_) => self.blocked.clear(),
                }
                r
            })
            .await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            done += n;
        }
        Ok(())
    }
}

/// The head of an unmasked, final text frame of `len` bytes (RFC 6455 section 5.2): the bytes
/// and how many of them are used.
pub(super) fn text_frame_head(len: usize) -> ([u8; 10], usize) {
    let mut h = [0u8; 10];
    h[0] = 0x81;
    let used = if len < 126 {
        h[1] = len as u8;
        2
    } else if len <= 0xffff {
        h[1] = 126;
        h[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        h[1] = 127;
        h[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    (h, used)
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        if self.read_since_yield >= READ_BUDGET {
            self.read_since_yield = 0;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        match &r {
            Poll::Ready(Ok(n)) => self.read_since_yield += n,
            // Nothing ready: the task waits anyway, which is a yield.
            Poll::Pending => self.read_since_yield = 0,
            Poll::Ready(Err(_)) => {}
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        match &r {
            Poll::Pending => self.blocked.mark(),
            Poll::Ready(_) => self.blocked.clear(),
        }
        // tungstenite offers its whole remaining buffer on every write.
        self.tungstenite_unflushed = !matches!(&r, Poll::Ready(Ok(n)) if *n == buf.len());
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_tungstenite::tungstenite::protocol::frame::Frame;

    #[test]
    fn frame_heads_are_what_tungstenite_would_write() {
        for len in [0, 1, 125, 126, 1000, 65_535, 65_536, 200_000] {
            let payload = vec![b'x'; len];
            let mut ours = Vec::new();
            let (head, used) = text_frame_head(len);
            ours.extend_from_slice(&head[..used]);
            ours.extend_from_slice(&payload);
            let mut theirs = Vec::new();
            Frame::message(
                payload,
                async_tungstenite::tungstenite::protocol::frame::coding::OpCode::Data(
                    async_tungstenite::tungstenite::protocol::frame::coding::Data::Text,
                ),
                true,
            )
            .format(&mut theirs)
            .unwrap();
            assert_eq!(ours, theirs, "length {len}");
        }
    }
}
