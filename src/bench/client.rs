//! A lean WebSocket client for load: raw frames on a non-blocking socket bound to a chosen
//! loopback source address, the kernel's receive timestamp on every read (`SO_TIMESTAMPNS`), and
//! pongs for the server's pings. Thousands of these fit in one process, and latency is measured
//! at kernel arrival, so the bench's own scheduling on a 2-core machine does not count against
//! the daemon.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::net::{AddressFamily, SocketFlags, SocketType};
use smol::Async;
use smol::io::AsyncWriteExt;

/// One received frame.
pub struct Frame {
    /// Opcode: 1 text, 2 binary, 8 close, 9 ping, 10 pong.
    pub opcode: u8,
    /// Payload (unmasked; servers do not mask).
    pub payload: Vec<u8>,
    /// Kernel arrival of the read that completed this frame, ns since the epoch (0 if unknown).
    pub kernel_ns: u64,
    /// When user space parsed it, ns since the epoch.
    pub user_ns: u64,
}

/// An upgraded connection.
pub struct Client {
    io: Async<TcpStream>,
    /// Bytes read and not yet parsed.
    buf: Vec<u8>,
    /// Kernel timestamp of the latest read.
    kernel_ns: u64,
    /// Masking keys (any value is valid; servers only unmask).
    mask_state: u32,
    /// A close frame was sent.
    closing: bool,
}

/// Now, ns since the epoch.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// `fut`, or a `TimedOut` error naming `what` after `limit`.
pub async fn within<T>(
    limit: Duration,
    what: &str,
    fut: impl std::future::Future<Output = io::Result<T>>,
) -> io::Result<T> {
    smol::future::or(fut, async {
        smol::Timer::after(limit).await;
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("{what} timed out after {limit:?}"),
        ))
    })
    .await
}

/// Source address number `n` in 127.1.0.0/16 and up: clients spread over many loopback
/// addresses, as on a LAN, so the daemon's per-IP cap applies as it would in the field.
pub fn source_ip(n: usize) -> Ipv4Addr {
    let n = n as u32;
    Ipv4Addr::new(
        127,
        (1 + n / 62_500) as u8,
        ((n / 250) % 250) as u8,
        (n % 250 + 1) as u8,
    )
}

impl Client {
    /// Connects from `src`, upgrades at `path`, and optionally caps the receive buffer (slow
    /// consumers fill sooner).
    pub async fn connect(
        src: Ipv4Addr,
        server: SocketAddr,
        path: &str,
        rcvbuf: Option<usize>,
    ) -> io::Result<Client> {
        let fd: OwnedFd = rustix::net::socket_with(
            AddressFamily::INET,
            SocketType::STREAM,
            SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
            None,
        )?;
        if let Some(n) = rcvbuf {
            rustix::net::sockopt::set_socket_recv_buffer_size(&fd, n)?;
        }
        enable_timestamps(&fd)?;
        rustix::net::bind(&fd, &SocketAddrV4::new(src, 0))?;
        match rustix::net::connect(&fd, &server) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::INPROGRESS => {}
            Err(e) => return Err(e.into()),
        }
        let io = Async::new(TcpStream::from(fd))?;
        io.writable().await?;
        if let Err(e) = rustix::net::sockopt::socket_error(io.get_ref())? {
            return Err(e.into());
        }
        let mut c = Client {
            io,
            buf: Vec::with_capacity(2048),
            kernel_ns: 0,
            mask_state: 0x9e37_79b9 ^ src.to_bits(),
            closing: false,
        };
        let head = format!(
            "GET {path} HTTP/1.1\r\nHost: {server}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        c.io.write_all(head.as_bytes()).await?;
        let end = loop {
            if let Some(i) = c.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if c.buf.len() > 8192 {
                return Err(io::Error::other("response head too large"));
            }
            if c.fill().await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed during the handshake",
                ));
            }
        };
        let status = String::from_utf8_lossy(&c.buf[..end])
            .lines()
            .next()
            .unwrap_or("")
            .to_string();
        if !status.starts_with("HTTP/1.1 101") {
            return Err(io::Error::other(format!("upgrade refused: {status}")));
        }
        c.buf.drain(..end);
        Ok(c)
    }

    /// Sends a text frame (masked, as a client must).
    pub async fn send_text(&mut self, text: &str) -> io::Result<()> {
        let frame = self.masked(0x1, text.as_bytes());
        self.io.write_all(&frame).await
    }

    /// Sends `{"op":"subscribe","topic":..}`.
    pub async fn subscribe(&mut self, topic: &str) -> io::Result<()> {
        self.send_text(&format!("{{\"op\":\"subscribe\",\"topic\":\"{topic}\"}}"))
            .await
    }

    /// The next data-bearing frame; pings are answered and not returned. A close frame is
    /// answered and returned; after it, the connection is done.
    pub async fn next(&mut self) -> io::Result<Frame> {
        loop {
            if let Some(f) = self.parse()? {
                match f.opcode {
                    0x9 => {
                        let pong = self.masked(0xA, &f.payload);
                        self.io.write_all(&pong).await?;
                    }
                    0x8 => {
                        if !self.closing {
                            self.closing = true;
                            let code = f.payload.get(..2).unwrap_or(&[]).to_vec();
                            let reply = self.masked(0x8, &code);
                            let _ = self.io.write_all(&reply).await;
                        }
                        return Ok(f);
                    }
                    _ => return Ok(f),
                }
                continue;
            }
            if self.fill().await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "server closed the socket",
                ));
            }
        }
    }

    /// Clean close: a 1000 close frame, then wait (at most `grace`) for the server's close.
    pub async fn close(mut self, grace: Duration) {
        let frame = self.masked(0x8, &1000u16.to_be_bytes());
        self.closing = true;
        if self.io.write_all(&frame).await.is_err() {
            return;
        }
        let wait = async {
            loop {
                match self.next().await {
                    Ok(f) if f.opcode == 0x8 => return,
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        };
        let _ = smol::future::or(wait, async {
            smol::Timer::after(grace).await;
        })
        .await;
    }

    /// Abrupt close: the socket is reset (RST, no close frame, no FIN).
    pub fn reset(self) {
        let _ = rustix::net::sockopt::set_socket_linger(self.io.get_ref(), Some(Duration::ZERO));
    }

    /// Reads once into the buffer; 0 at end of stream.
    async fn fill(&mut self) -> io::Result<usize> {
        let mut tmp = [0u8; 4096];
        let (n, ts) = self.io.read_with(|s| recv_stamped(s, &mut tmp)).await?;
        self.buf.extend_from_slice(&tmp[..n]);
        if let Some(ts) = ts {
            self.kernel_ns = ts;
        }
        Ok(n)
    }

    /// One complete frame off the front of the buffer, if there is one.
    fn parse(&mut self) -> io::Result<Option<Frame>> {
        let b = &self.buf;
        if b.len() < 2 {
            return Ok(None);
        }
        if b[1] & 0x80 != 0 {
            return Err(io::Error::other("server sent a masked frame"));
        }
        let (len, at) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
            127 if b.len() >= 10 => {
                let mut l = [0u8; 8];
                l.copy_from_slice(&b[2..10]);
                (u64::from_be_bytes(l) as usize, 10)
            }
            126 | 127 => return Ok(None),
            n => (n as usize, 2),
        };
        if len > 16 << 20 {
            return Err(io::Error::other("frame larger than 16 MiB"));
        }
        if b.len() < at + len {
            return Ok(None);
        }
        let opcode = b[0] & 0x0f;
        let payload = b[at..at + len].to_vec();
        self.buf.drain(..at + len);
        Ok(Some(Frame {
            opcode,
            payload,
            kernel_ns: self.kernel_ns,
            user_ns: now_ns(),
        }))
    }

    /// A masked frame with FIN set.
    fn masked(&mut self, opcode: u8, payload: &[u8]) -> Vec<u8> {
        // xorshift32: masks need not be secret here, only present.
        self.mask_state ^= self.mask_state << 13;
        self.mask_state ^= self.mask_state >> 17;
        self.mask_state ^= self.mask_state << 5;
        let key = self.mask_state.to_be_bytes();
        let mut f = Vec::with_capacity(payload.len() + 14);
        f.push(0x80 | opcode);
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n <= 0xffff => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        f
    }
}

/// Turns on `SO_TIMESTAMPNS`: every read then carries the time its first byte reached the socket.
fn enable_timestamps(fd: &impl AsFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: rustix has no wrapper for SO_TIMESTAMPNS. `on` outlives the call and the length
    // passed is its size; the fd is valid for the call (borrowed).
    let r = unsafe {
        libc::setsockopt(
            fd.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `recvmsg` that also returns the `SCM_TIMESTAMPNS` control message, in ns since the epoch.
fn recv_stamped(s: &TcpStream, buf: &mut [u8]) -> io::Result<(usize, Option<u64>)> {
    // u64 elements keep the control buffer aligned for cmsghdr.
    let mut control = [0u64; 16];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: rustix's recvmsg does not decode SCM_TIMESTAMPNS. msghdr is plain old data (zero is
    // a valid value for every field, including private padding); the iovec and control buffers it
    // points to live until the end of this function and their lengths are the ones given.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: as above; the fd is borrowed from a live socket.
    let n = unsafe { libc::recvmsg(s.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut stamp = None;
    // SAFETY: CMSG_* walk the control buffer the kernel filled, bounded by msg_controllen; a
    // timespec is read unaligned from a cmsg of the right level and type.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let t: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                stamp = Some(t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64);
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok((n as usize, stamp))
}

/// The `sent_us` stamp of a `test/flood` data frame, if this is one.
pub fn flood_stamp_us(payload: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"sent_us\":";
    let at = payload.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let digits = payload[at..].iter().take_while(|b| b.is_ascii_digit());
    let mut v: u64 = 0;
    let mut any = false;
    for d in digits {
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
        any = true;
    }
    any.then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_addresses_are_distinct_loopback_hosts() {
        let ips: std::collections::HashSet<_> = (0..70_000).map(source_ip).collect();
        assert_eq!(ips.len(), 70_000);
        assert!(ips.iter().all(|ip| ip.is_loopback() && ip.octets()[3] != 0));
    }

    #[test]
    fn flood_stamp_is_found_or_not() {
        let f = br#"{"type":"data","topic":"test/flood","seq":3,"ts":1,"data":{"sent_us":1700000000123456,"pad":"xx"}}"#;
        assert_eq!(flood_stamp_us(f), Some(1_700_000_000_123_456));
        assert_eq!(flood_stamp_us(br#"{"type":"subscribed"}"#), None);
        assert_eq!(flood_stamp_us(br#"{"sent_us":}"#), None);
    }
}
