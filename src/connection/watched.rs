//! The connection's socket with a record of blocked writes. tungstenite writes on its own too
//! (the pong for every ping, the close reply) from inside a read, where no `--write-timeout` of
//! ours surrounds the write: a client that floods pings and never reads blocked those writes and
//! so hung the read forever. Every write that cannot go out marks when the socket became blocked,
//! and the session ends a connection blocked longer than `--write-timeout`, whoever wrote.
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
            },
            blocked,
        )
    }
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
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}
