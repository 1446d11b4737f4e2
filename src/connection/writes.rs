//! How a connection writes: text frames past tungstenite (one `writev`), pings through it, the
//! close handshake, each bounded by `--write-timeout` and cut short by shutdown, and the
//! shutdown wait kept for the connection's life.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use async_channel::Receiver;
use async_tungstenite::tungstenite::Message;
use async_tungstenite::tungstenite::error::Error as WsError;
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::protocol::frame::{CloseFrame, Utf8Bytes};
use smol::Timer;
use smol::future::FutureExt;
use smol::stream::StreamExt;

use super::{CLOSE_GRACE, Ending, Session, Step};
use crate::app::App;
use crate::outlet::text_frame_head;
use crate::rate::READ_BATCH;

/// The daemon's shutdown signal as one wait kept for the connection's life: waiting on the
/// shared channel anew at every wake-up put every connection's listener on it, under its lock,
/// once per frame. The wait is polled only to register a new waker; otherwise a wake-up costs
/// one look at whether the channel is closed.
pub(super) struct ShutdownSignal {
    /// The daemon's shutdown channel: closed means shutting down.
    channel: Receiver<()>,
    /// Set once the wait completed (an async block must not be polled after it finished).
    fired: bool,
    /// The waker the wait last registered.
    registered: Option<Waker>,
    /// The wait itself.
    wait: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl ShutdownSignal {
    pub(super) fn new(shutdown: &Receiver<()>) -> ShutdownSignal {
        let channel = shutdown.clone();
        let shutdown = shutdown.clone();
        ShutdownSignal {
            channel,
            fired: false,
            registered: None,
            wait: Box::pin(async move {
                // Errs at once when the shutdown channel is closed: that is the signal.
                let _ = shutdown.recv().await;
            }),
        }
    }

    /// Ready once the daemon shuts down.
    pub(super) fn poll_fired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.fired || self.channel.is_closed() {
            return Poll::Ready(());
        }
        if self
            .registered
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            // The wait holds this waker already and wakes it when the channel closes.
            return Poll::Pending;
        }
        if self.wait.as_mut().poll(cx).is_ready() {
            self.fired = true;
            return Poll::Ready(());
        }
        self.registered = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Completes once the daemon shuts down.
    pub(super) async fn fired(&mut self) {
        std::future::poll_fn(|cx| self.poll_fired(cx)).await
    }
}

/// `write`, ended by `--write-timeout` or at once by shutdown (a blocked write would otherwise
/// hold up the shutdown drain).
async fn within_write_timeout(
    app: &App,
    shutdown: &mut ShutdownSignal,
    write: impl Future<Output = Step>,
) -> Step {
    let timeout = app.config.write_timeout;
    write
        .or(async {
            Timer::after(timeout).await;
            Err(Ending::WriteTimeout)
        })
        .or(async {
            shutdown.fired().await;
            Err(Ending::ShutdownDuringWrite)
        })
        .await
}

impl Session {
    /// Sends each frame; the first failure ends the connection.
    pub(super) async fn send_all(&mut self, frames: Vec<Utf8Bytes>) -> Step {
        for f in frames {
            self.send_text(&f).await?;
        }
        Ok(())
    }

    /// Sends one message through tungstenite (a ping) within `--write-timeout`.
    pub(super) async fn send(&mut self, msg: Message) -> Step {
        let ws = &mut self.ws;
        let write = async {
            ws.send(msg)
                .await
                .map_err(|e| Ending::WriteFailed(e.to_string()))
        };
        within_write_timeout(&self.app, &mut self.shutdown, write).await
    }

    /// Finishes, within `--write-timeout`, a frame a hub could write only in part.
    pub(super) async fn finish_partial(&mut self) -> Step {
        let ws = &mut self.ws;
        let write = async {
            ws.get_mut()
                .finish_partial()
                .await
                .map_err(|e| Ending::WriteFailed(e.to_string()))
        };
        within_write_timeout(&self.app, &mut self.shutdown, write).await
    }

    /// Sends one text frame within `--write-timeout`: head and payload in one `writev`, past
    /// tungstenite (see `watched`). A frame tungstenite left half-written (a pong, when the
    /// socket was full) goes out first: an unsolicited pong flushes it, which RFC 6455 allows
    /// and clients ignore.
    pub(super) async fn send_text(&mut self, text: &Utf8Bytes) -> Step {
        let ws = &mut self.ws;
        let write = async {
            if ws.get_ref().tungstenite_unflushed() {
                ws.send(Message::Pong(Default::default()))
                    .await
                    .map_err(|e| Ending::WriteFailed(e.to_string()))?;
            }
            let (head, used) = text_frame_head(text.len());
            ws.get_mut()
                .write_frame(&head[..used], text.as_bytes())
                .await
                .map_err(|e| Ending::WriteFailed(e.to_string()))
        };
        within_write_timeout(&self.app, &mut self.shutdown, write).await
    }

    /// Sends a Close frame and waits (bounded) for the client's reply.
    pub(super) async fn close(&mut self, code: CloseCode, reason: &'static str) {
        let frame = CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        };
        let sent = self
            .ws
            .close(Some(frame))
            .or(async {
                Timer::after(CLOSE_GRACE).await;
                Err(WsError::Io(std::io::ErrorKind::TimedOut.into()))
            })
            .await;
        if sent.is_ok() {
            self.finish_close().await;
        }
    }

    /// Reads until the close handshake completes or the grace period ends; data read is discarded.
    /// A client that keeps sending is not read past the grace period: the deadline is judged
    /// after every message, and the task yields between batches.
    pub(super) async fn finish_close(&mut self) {
        let deadline = Instant::now() + CLOSE_GRACE;
        let ws = &mut self.ws;
        let _ = async {
            let mut read = 0u32;
            while let Some(Ok(_)) = ws.next().await {
                read += 1;
                if Instant::now() >= deadline {
                    return;
                }
                if read % READ_BATCH == 0 {
                    smol::future::yield_now().await;
                }
            }
        }
        .or(async {
            Timer::at(deadline).await;
        })
        .await;
    }
}
