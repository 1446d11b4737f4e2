//! A connection's socket as the hubs see it. A hub that publishes writes the frame straight to
//! each subscriber's socket when nothing is in the way, as Node's `ws` does, instead of queueing
//! it and waking the connection's task: that wake-up, the task's poll and its re-registered waits
//! were a fifth of the daemon's CPU in a fan-out to 2,000 subscribers.
//!
//! The hub writes only when the write cannot reorder or tear anything: the connection's queue is
//! empty (nothing of any topic waits there or is being written by the task), no frame is half
//! written (the task's, tungstenite's or a hub's), the subscription's backfill has gone out, the
//! frame follows the subscription's numbering without a gap a `missed` marker would announce,
//! and the connection is not closing. Otherwise, and whenever the socket does not take the whole
//! frame at once, the frame goes to the queue as before, and the task's `--write-timeout`,
//! blocked-socket record and fairness apply to it. A hub that wrote part of a frame leaves the
//! rest here: every later write on the socket, whoever makes it, sends that rest first.
//!
//! One lock per connection covers every write to its socket and the state below, so a hub on
//! one executor thread and the connection's task on another cannot interleave bytes. Lock order:
//! a hub's state, then an outlet, then the connection's queue (inside `queue`); the outlet lock
//! is never held across an `.await`.

use std::io::{self, IoSlice, Write};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use async_tungstenite::tungstenite::protocol::frame::Utf8Bytes;
use smol::Async;

use crate::lock::lock;

/// The socket, shared by the connection's task and the hubs it subscribes to.
pub struct Outlet {
    sock: Arc<Async<std::net::TcpStream>>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The connection is closing: hubs write nothing more.
    shut: bool,
    /// Frames in the connection's queue or being handled by its task.
    queued: usize,
    /// The task's last frame went out only in part.
    ours_unfinished: bool,
    /// tungstenite's last write (a pong, a close) did not take all it offered.
    tungstenite_unflushed: bool,
    /// The rest of a frame a hub could write only in part.
    partial: Option<Partial>,
    /// One per subscription, by its id.
    lanes: Vec<Lane>,
}

/// What is left of a frame.
struct Partial {
    head: [u8; 10],
    head_len: usize,
    text: Utf8Bytes,
    written: usize,
}

/// A subscription's numbering, as far as this connection has sent or been covered.
struct Lane {
    id: u64,
    /// The last `seq` sent or covered by the backfill; older frames are skipped.
    last_seq: u64,
    /// A log topic: a jump in `seq` is announced with a `missed` marker.
    marks_gaps: bool,
    /// The backfill has gone out: live frames may be written by the hub.
    live: bool,
}

/// What became of a frame offered to a subscriber.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Written to the socket, all of it or (rarely) part with the rest left for the next write.
    Written,
    /// Covered by the subscription's backfill: nothing to send.
    Covered,
    /// In the connection's queue, for its task.
    Queued,
    /// The connection's queue is closed: the connection is gone.
    Gone,
}

/// What a connection's task should do with a frame from its queue.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// Send it, after a `missed` marker for this many lost frames if it is not 0.
    Send { missed: u64 },
    /// Already sent or covered, or its subscription is gone.
    Skip,
}

/// The head of an unmasked, final text frame of `len` bytes (RFC 6455 section 5.2): the bytes
/// and how many of them are used.
pub fn text_frame_head(len: usize) -> ([u8; 10], usize) {
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

/// The frame carrying `text` as it goes on the wire: head, then payload, in one buffer.
pub fn wire_frame(text: &str) -> Vec<u8> {
    let (head, used) = text_frame_head(text.len());
    let mut wire = Vec::with_capacity(used + text.len());
    wire.extend_from_slice(&head[..used]);
    wire.extend_from_slice(text.as_bytes());
    wire
}

impl Outlet {
    /// The outlet of a connection's socket.
    pub fn new(sock: Arc<Async<std::net::TcpStream>>) -> Outlet {
        Outlet {
            sock,
            state: Mutex::new(State::default()),
        }
    }

    /// The socket, for reading.
    pub fn sock(&self) -> &Arc<Async<std::net::TcpStream>> {
        &self.sock
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// A hub offers subscription `lane` the frame `seq` (0: a notice outside the numbering),
    /// `wire` being its bytes on the wire (`wire_frame`): written now if nothing is in the way
    /// and the socket takes it, else handed to `queue`, which puts it in the connection's queue
    /// and says whether that added an entry (`Ok(true)`), replaced the oldest (`Ok(false)`) or
    /// found the queue closed (`Err`).
    pub fn deliver(
        &self,
        lane: u64,
        seq: u64,
        text: &Utf8Bytes,
        wire: &[u8],
        queue: impl FnOnce() -> Result<bool, ()>,
    ) -> Delivery {
        let mut st = self.lock();
        let clear = !st.shut
            && st.queued == 0
            && !st.ours_unfinished
            && !st.tungstenite_unflushed
            && st.partial.is_none();
        let live = clear && seq != 0;
        if let Some(i) = live
            .then(|| st.lanes.iter().position(|l| l.id == lane && l.live))
            .flatten()
        {
            let (last_seq, marks_gaps) = (st.lanes[i].last_seq, st.lanes[i].marks_gaps);
            if seq <= last_seq {
                return Delivery::Covered;
            }
            if !marks_gaps || seq == last_seq + 1 {
                // Never waits: a socket that takes nothing now leaves the frame to the task.
                // Full, interrupted or broken alike: the task writes it, or learns why not.
                // One contiguous buffer: `write` on a `TcpStream` is one `send(2)`, cheaper in
                // the kernel than the `writev(2)` of head and payload (no iovec import, no VFS
                // layer): about a tenth of a fan-out's CPU.
                if let Ok(n @ 1..) = {
                    let mut sock = self.sock.get_ref();
                    sock.write(wire)
                } {
                    st.lanes[i].last_seq = seq;
                    if n < wire.len() {
                        let head_len = wire.len() - text.len();
                        let mut head = [0u8; 10];
                        head[..head_len].copy_from_slice(&wire[..head_len]);
                        st.partial = Some(Partial {
                            head,
                            head_len,
                            text: text.clone(),
                            written: n,
                        });
                        // The task finishes it (within its write timeout) when it takes this
                        // frame, which it then skips by its `seq`.
                        return enqueue(&mut st, queue)
                            .map_or(Delivery::Gone, |_| Delivery::Written);
                    }
                    return Delivery::Written;
                }
            }
        }
        enqueue(&mut st, queue).map_or(Delivery::Gone, |_| Delivery::Queued)
    }

    /// The connection's task took a frame from its queue and is done with it.
    pub fn handled(&self) {
        let mut st = self.lock();
        st.queued = st.queued.saturating_sub(1);
    }

    /// Decides, for a frame `seq` of subscription `lane` taken from the queue, whether it goes
    /// out, and records it as sent.
    pub fn admit(&self, lane: u64, seq: u64) -> Admit {
        let mut st = self.lock();
        let Some(lane) = st.lanes.iter_mut().find(|l| l.id == lane) else {
            return Admit::Skip;
        };
        // seq 0 is a notice (an error frame), outside the numbering.
        if seq == 0 {
            return Admit::Send { missed: 0 };
        }
        if seq <= lane.last_seq {
            return Admit::Skip;
        }
        let missed = if lane.marks_gaps {
            seq - lane.last_seq - 1
        } else {
            0
        };
        lane.last_seq = seq;
        Admit::Send { missed }
    }

    /// A new subscription, its backfill covering frames up to `covers_seq`; hubs queue its
    /// frames until `go_live`.
    pub fn add_lane(&self, id: u64, covers_seq: u64, marks_gaps: bool) {
        self.lock().lanes.push(Lane {
            id,
            last_seq: covers_seq,
            marks_gaps,
            live: false,
        });
    }

    /// The subscription's backfill is out: hubs may write its frames.
    pub fn go_live(&self, id: u64) {
        if let Some(l) = self.lock().lanes.iter_mut().find(|l| l.id == id) {
            l.live = true;
        }
    }

    /// The subscription ended.
    pub fn remove_lane(&self, id: u64) {
        self.lock().lanes.retain(|l| l.id != id);
    }

    /// The connection is closing: hubs write nothing more (what is half written still goes
    /// out first, with the close frame's write).
    pub fn shut(&self) {
        self.lock().shut = true;
    }

    /// Whether tungstenite holds part of a frame it could not write yet.
    pub fn tungstenite_unflushed(&self) -> bool {
        self.lock().tungstenite_unflushed
    }

    /// Whether a hub left part of a frame to be written.
    pub fn has_partial(&self) -> bool {
        self.lock().partial.is_some()
    }

    /// The task's write of one frame (`head`, then `payload`), `done` bytes of it already out:
    /// what a hub left half written goes first. Ready once all of it is out.
    pub fn poll_write_frame(
        &self,
        cx: &mut Context<'_>,
        head: &[u8],
        payload: &[u8],
        done: &mut usize,
    ) -> Poll<io::Result<()>> {
        let total = head.len() + payload.len();
        self.poll_io(cx, |st, mut sock| {
            while *done < total {
                *done += written(sock.write_vectored(&rest(head, payload, *done)))?;
                st.ours_unfinished = *done < total;
            }
            Ok(())
        })
    }

    /// tungstenite's write of `buf` (it offers its whole remaining buffer each time): what a hub
    /// left half written goes first.
    pub fn poll_write_tungstenite(
        &self,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_io(cx, |st, mut sock| {
            let n = written(sock.write(buf))?;
            st.tungstenite_unflushed = n < buf.len();
            Ok(n)
        })
    }

    /// Runs `write` under the lock once the rest of a hub's partial frame is out, waiting for
    /// the socket to become writable whenever it says "would block".
    fn poll_io<T>(
        &self,
        cx: &mut Context<'_>,
        mut write: impl FnMut(&mut State, &std::net::TcpStream) -> io::Result<T>,
    ) -> Poll<io::Result<T>> {
        loop {
            let r = {
                let mut st = self.lock();
                let sock = self.sock.get_ref();
                flush_partial(&mut st, sock).and_then(|()| write(&mut st, sock))
            };
            match r {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return Poll::Ready(r),
            }
            // Registers for the next writability event; ready at once if it came meanwhile.
            match self.sock.poll_writable(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// Puts the frame in the queue, counting it if it added an entry.
fn enqueue(st: &mut State, queue: impl FnOnce() -> Result<bool, ()>) -> Result<(), ()> {
    if queue()? {
        st.queued += 1;
    }
    Ok(())
}

/// What is left of a frame (`head`, then `payload`) once `done` bytes of it are out, as the two
/// slices of one `writev`.
fn rest<'a>(head: &'a [u8], payload: &'a [u8], done: usize) -> [IoSlice<'a>; 2] {
    if done < head.len() {
        [IoSlice::new(&head[done..]), IoSlice::new(payload)]
    } else {
        [
            IoSlice::new(&[]),
            IoSlice::new(&payload[done - head.len()..]),
        ]
    }
}

/// A write's count, with "wrote nothing" as the error it is.
fn written(r: io::Result<usize>) -> io::Result<usize> {
    match r? {
        0 => Err(io::ErrorKind::WriteZero.into()),
        n => Ok(n),
    }
}

/// Writes what is left of a hub's partial frame; `WouldBlock` while some of it remains.
fn flush_partial(st: &mut State, mut sock: &std::net::TcpStream) -> io::Result<()> {
    while let Some(p) = &mut st.partial {
        let total = p.head_len + p.text.len();
        let bufs = rest(&p.head[..p.head_len], p.text.as_bytes(), p.written);
        p.written += written(sock.write_vectored(&bufs))?;
        if p.written >= total {
            st.partial = None;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_tungstenite::tungstenite::protocol::frame::Frame;
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

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
            let text = "x".repeat(len);
            assert_eq!(wire_frame(&text), theirs, "length {len}");
        }
    }

    /// An outlet on one end of a loopback connection, and the other end to read from.
    fn pair() -> (Outlet, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, _) = l.accept().unwrap();
        let server = Async::new(server).unwrap();
        (Outlet::new(Arc::new(server)), client)
    }

    /// Reads whole text frames (unmasked, as a server sends them) until `n` have arrived.
    fn read_frames(r: &mut TcpStream, n: usize) -> Vec<String> {
        r.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut out = Vec::new();
        while out.len() < n {
            let mut h = [0u8; 2];
            r.read_exact(&mut h).unwrap();
            assert_eq!(h[0], 0x81, "a final text frame");
            let len = match h[1] {
                126 => {
                    let mut b = [0u8; 2];
                    r.read_exact(&mut b).unwrap();
                    u16::from_be_bytes(b) as usize
                }
                127 => {
                    let mut b = [0u8; 8];
                    r.read_exact(&mut b).unwrap();
                    u64::from_be_bytes(b) as usize
                }
                n => n as usize,
            };
            let mut body = vec![0u8; len];
            r.read_exact(&mut body).unwrap();
            out.push(String::from_utf8(body).unwrap());
        }
        out
    }

    /// `deliver` with the frame's wire bytes made here, as a hub makes them.
    fn offer(
        o: &Outlet,
        lane: u64,
        seq: u64,
        text: &Utf8Bytes,
        queue: impl FnOnce() -> Result<bool, ()>,
    ) -> Delivery {
        o.deliver(lane, seq, text, &wire_frame(text.as_str()), queue)
    }

    fn never_queued() -> Result<bool, ()> {
        panic!("queued a frame that had a clear way")
    }

    #[test]
    fn a_live_lane_with_a_clear_way_is_written_directly_and_in_order() {
        let (o, mut r) = pair();
        o.add_lane(7, 2, false);
        let f = |s: &str| Utf8Bytes::from(s.to_string());
        // Not live yet: queued, for the task to send after the backfill.
        assert_eq!(offer(&o, 7, 3, &f("three"), || Ok(true)), Delivery::Queued);
        assert_eq!(o.admit(7, 3), Admit::Send { missed: 0 });
        o.handled();
        o.go_live(7);
        assert_eq!(offer(&o, 7, 2, &f("two"), never_queued), Delivery::Covered);
        assert_eq!(offer(&o, 7, 4, &f("four"), never_queued), Delivery::Written);
        assert_eq!(offer(&o, 7, 5, &f("five"), never_queued), Delivery::Written);
        assert_eq!(read_frames(&mut r, 2), ["four", "five"]);
        // The queue taken again: later frames wait behind it, whatever their lane.
        assert_eq!(offer(&o, 9, 1, &f("other"), || Ok(true)), Delivery::Queued);
        assert_eq!(offer(&o, 7, 6, &f("six"), || Ok(true)), Delivery::Queued);
        assert_eq!(offer(&o, 7, 7, &f("seven"), || Err(())), Delivery::Gone);
    }

    #[test]
    fn a_log_lane_with_a_gap_and_a_closing_connection_go_through_the_queue() {
        let (o, _r) = pair();
        o.add_lane(1, 10, true);
        o.go_live(1);
        let t = Utf8Bytes::from_static("line");
        assert_eq!(offer(&o, 1, 12, &t, || Ok(true)), Delivery::Queued);
        assert_eq!(o.admit(1, 12), Admit::Send { missed: 1 });
        o.handled();
        assert_eq!(offer(&o, 1, 13, &t, never_queued), Delivery::Written);
        o.shut();
        assert_eq!(offer(&o, 1, 14, &t, || Ok(true)), Delivery::Queued);
        // A notice is never written by the hub, and an ended lane admits nothing.
        o.remove_lane(1);
        assert_eq!(o.admit(1, 15), Admit::Skip);
    }

    #[test]
    fn a_frame_the_socket_takes_only_in_part_is_finished_before_any_later_write() {
        let (o, mut r) = pair();
        o.add_lane(1, 0, false);
        o.go_live(1);
        // Big frames until the socket takes one only in part (the reader reads nothing yet).
        let big = Utf8Bytes::from("y".repeat(256 * 1024));
        let mut written = 0;
        let mut seq = 0;
        while !o.has_partial() {
            seq += 1;
            assert!(seq < 1000, "the socket never filled");
            match offer(&o, 1, seq, &big, || Ok(true)) {
                Delivery::Written => written += 1,
                other => panic!("frame {seq}: {other:?} with nothing in the way"),
            }
        }
        // The task takes the queued frame; more frames now wait in the queue.
        let t = Utf8Bytes::from_static("after");
        assert_eq!(offer(&o, 1, seq + 1, &t, || Ok(true)), Delivery::Queued);
        let reader = std::thread::spawn(move || read_frames(&mut r, written + 1));
        // The task's next write (here: the next frame) sends the rest of the partial first.
        assert_eq!(o.admit(1, seq), Admit::Skip);
        o.handled();
        assert_eq!(o.admit(1, seq + 1), Admit::Send { missed: 0 });
        let (head, used) = text_frame_head(t.len());
        let mut done = 0;
        smol::block_on(std::future::poll_fn(|cx| {
            o.poll_write_frame(cx, &head[..used], t.as_bytes(), &mut done)
        }))
        .unwrap();
        o.handled();
        let frames = reader.join().unwrap();
        assert_eq!(frames.len(), written + 1);
        assert!(frames[..written].iter().all(|f| f.len() == big.len()));
        assert_eq!(frames.last().map(String::as_str), Some("after"));
        assert!(!o.has_partial());
    }
}
