//! The connection's socket with a record of blocked writes. tungstenite writes on its own too
//! (the pong for every ping, the close reply) from inside a read, where no `--write-timeout` of
//! ours surrounds the write: a client that floods pings and never reads blocked those writes and
//! so hung the read forever. Every write that cannot go out marks when the socket became blocked,
//! and the session ends a connection blocked longer than `--write-timeout`, whoever wrote.
//!
//! Text frames go past tungstenite (`write_frame`): one `writev` of head and payload, and no
//! write buffer that grows to the largest frame ever sent (a dashboard's 8 KiB history frames
//! kept every subscribed connection at 14 KiB). Every write goes through the connection's
//! `Outlet`, which hubs write to directly as well, so no two writers' bytes interleave.
//!
//! Reads are budgeted the same way: tungstenite keeps reading inside one poll for as long as
//! bytes are ready (empty continuation frames never make a message), so after `READ_BUDGET`
//! bytes a read says "not now" once and wakes its task, which lets every other task run first.

use std::io::{self, Read};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use smol::io::{AsyncRead, AsyncWrite};
use smol::net::TcpStream;

use crate::outlet::Outlet;

/// Bytes read before the connection's task yields once, whatever it is doing.
const READ_BUDGET: usize = 64 * 1024;

/// A `TcpStream` whose writes report when they block and whose reads yield after a budget.
///
/// Reads ask the socket only once the reactor has reported it readable since the last read
/// that found nothing: the task wakes for every frame it forwards and polls the client each
/// time, and a `recv` that returns `EAGAIN` per forwarded frame was a system call in vain.
pub(super) struct Watched {
    /// The socket (`outlet.sock()`, read here) and every write to it: ours, tungstenite's and
    /// the hubs'.
    outlet: Arc<Outlet>,
    /// Since when writes have been blocked (ours, or tungstenite's own); `None` while they flow.
    blocked_since: Option<Instant>,
    /// Bytes read since the last yield.
    read_since_yield: usize,
    /// Whether a read may find bytes: false once one found none, until the reactor reports
    /// the socket readable again.
    readable: bool,
}

impl Watched {
    /// Wraps `inner`.
    pub(super) fn new(inner: TcpStream) -> Watched {
        Watched {
            outlet: Arc::new(Outlet::new(inner.into())),
            blocked_since: None,
            read_since_yield: 0,
            readable: true,
        }
    }

    /// The socket's outlet, for the hubs this connection subscribes to.
    pub(super) fn outlet(&self) -> &Arc<Outlet> {
        &self.outlet
    }

    /// Since when writes to the socket have been blocked, if they are.
    pub(super) fn blocked_since(&self) -> Option<Instant> {
        self.blocked_since
    }

    /// Records how a write went: only the first blocked write of a stretch sets the time.
    fn note_write<T>(&mut self, r: &Poll<T>) {
        match r {
            Poll::Pending => {
                self.blocked_since.get_or_insert_with(Instant::now);
            }
            Poll::Ready(_) => self.blocked_since = None,
        }
    }

    /// Whether tungstenite holds part of a frame it could not write yet: nothing else may be
    /// written before it.
    pub(super) fn tungstenite_unflushed(&self) -> bool {
        self.outlet.tungstenite_unflushed()
    }

    /// Writes one server frame (`head` then `payload`) past tungstenite, with one `writev` when
    /// the socket takes it all: no copy into tungstenite's write buffer, which keeps the size of
    /// the largest frame it ever wrote for the connection's life. The caller must make sure
    /// tungstenite has nothing half-written (`tungstenite_unflushed`) and must not let tungstenite
    /// write until this returns. What a hub left half written goes out first.
    pub(super) async fn write_frame(&mut self, head: &[u8], payload: &[u8]) -> io::Result<()> {
        let mut done = 0;
        std::future::poll_fn(|cx| {
            let r = self.outlet.poll_write_frame(cx, head, payload, &mut done);
            self.note_write(&r);
            r
        })
        .await
    }

    /// Finishes a frame a hub could write only in part.
    pub(super) async fn finish_partial(&mut self) -> io::Result<()> {
        self.write_frame(&[], &[]).await
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.read_since_yield >= READ_BUDGET {
            this.read_since_yield = 0;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        loop {
            if !this.readable {
                match this.outlet.sock().poll_readable(cx) {
                    Poll::Ready(Ok(())) => this.readable = true,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        // Nothing ready: the task waits anyway, which is a yield.
                        this.read_since_yield = 0;
                        return Poll::Pending;
                    }
                }
            }
            match this.outlet.sock().get_ref().read(buf) {
                Ok(n) => {
                    this.read_since_yield += n;
                    return Poll::Ready(Ok(n));
                }
                // Registers for the next readiness event on the next turn of the loop.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => this.readable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = self.outlet.poll_write_tungstenite(cx, buf);
        self.note_write(&r);
        r
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut &**self.outlet.sock()).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut &**self.outlet.sock()).poll_close(cx)
    }
}
