//! The `hostile` lines: one client floods the daemon at full speed while a dashboard-like
//! neighbour watches `system` and polls `/healthz`. Two floods, each for one window: WebSocket
//! pings whose pongs are never read, and pipelined HTTP requests (reconnecting whenever the
//! daemon cuts the flooder off, as an attacker would). Checks the neighbour's worst gap between
//! `system` frames (≤ `GAP_S`, the frames come once a second) and its slowest `/healthz`
//! (≤ `HEALTHZ_MS`), the budgets of issue 12.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::client::{Client, source_ip, within};
use crate::daemon::{Proc, get};
use crate::report::{Budget, Gate, Report};

use super::Plan;

/// The neighbour's worst gap between two `system` frames, in seconds.
const GAP_S: f64 = 1.5;
/// The neighbour's slowest `/healthz`, in milliseconds.
const HEALTHZ_MS: f64 = 500.0;

/// What the flooder sends.
#[derive(Clone, Copy)]
enum Flood {
    /// Empty WebSocket pings, never reading the pongs.
    Pings,
    /// `GET /healthz` pipelined, answers read and thrown away.
    Requests,
}

/// Both floods, each with the neighbour watching.
pub(super) async fn hostile_neighbour(r: &mut Report, plan: &Plan, d: &Proc) -> io::Result<()> {
    let window = if plan.smoke {
        Duration::from_secs(3)
    } else {
        Duration::from_secs(20)
    };
    for (flood, what) in [
        (Flood::Pings, "ping flood"),
        (Flood::Requests, "pipelined requests"),
    ] {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let conns = Arc::new(AtomicU64::new(0));
        let flooder = {
            let (addr, stop, sent, conns) = (d.addr, stop.clone(), sent.clone(), conns.clone());
            std::thread::spawn(move || flood_until(addr, flood, &stop, &sent, &conns))
        };
        let (gap, healthz) = neighbour(d.addr, window).await?;
        stop.store(true, Ordering::SeqCst);
        let _ = flooder.join();
        r.check(
            "hostile",
            &format!("{what}: neighbour's worst gap between system frames"),
            gap.as_secs_f64(),
            "s",
            Budget::AtMost(GAP_S),
            Gate::Full,
            &format!("frames come once a second; {} s window", window.as_secs()),
        );
        r.check(
            "hostile",
            &format!("{what}: neighbour's slowest /healthz"),
            healthz.as_secs_f64() * 1000.0,
            "ms",
            Budget::AtMost(HEALTHZ_MS),
            Gate::Full,
            "asked every 100 ms",
        );
        r.info(
            "hostile",
            &format!("{what}: bytes the flooder's writes took"),
            sent.load(Ordering::Relaxed) as f64 / 1024.0 / 1024.0,
            "MiB",
            "into kernel buffers, not what the daemon read",
        );
        r.info(
            "hostile",
            &format!("{what}: connections the flooder opened"),
            conns.load(Ordering::Relaxed) as f64,
            "",
            "it reconnects whenever it is cut off or refused",
        );
    }
    Ok(())
}

/// Watches `system` and polls `/healthz` every 100 ms for `window`: the worst frame gap and the
/// slowest answer. A daemon that does not answer at all is measured too: a handshake or a GET
/// that times out (10 s) counts as a gap or an answer that long.
async fn neighbour(addr: SocketAddr, window: Duration) -> io::Result<(Duration, Duration)> {
    let limit = Duration::from_secs(10);
    let t0 = Instant::now();
    let connected = within(
        limit,
        "the neighbour's handshake",
        Client::connect(source_ip(1), addr, "/ws/system", None),
    )
    .await;
    let mut c = match connected {
        Ok(c) => c,
        Err(e) if e.kind() == io::ErrorKind::TimedOut => return Ok((t0.elapsed(), t0.elapsed())),
        Err(e) => return Err(e),
    };
    let end = Instant::now() + window;
    let frames = smol::spawn(async move {
        let mut last = Instant::now();
        let mut worst = Duration::ZERO;
        while Instant::now() < end
            && let Ok(f) = c.next().await
        {
            if f.opcode != 0x1 || !f.payload.starts_with(br#"{"type":"data""#) {
                continue;
            }
            let now = Instant::now();
            worst = worst.max(now - last);
            last = now;
        }
        // Cut off early (the connection failed), the silence lasts to the end of the window.
        worst.max(Instant::now().min(end).saturating_duration_since(last))
    });
    let mut slowest = Duration::ZERO;
    while Instant::now() < end {
        let t0 = Instant::now();
        match get(addr, "/healthz").await {
            Ok((200, _)) => {}
            Ok((status, _)) => return Err(io::Error::other(format!("/healthz answered {status}"))),
            // Timed out: that is the answer's time.
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {}
            Err(e) => return Err(e),
        }
        slowest = slowest.max(t0.elapsed());
        smol::Timer::after(Duration::from_millis(100)).await;
    }
    // The reader stops at its first frame after the window; no frame within `limit` of its end
    // is itself a gap at least that long.
    let gap = smol::future::or(frames, async {
        smol::Timer::after(limit).await;
        limit
    })
    .await;
    Ok((gap, slowest))
}

/// Floods from a thread of its own, at full speed, reconnecting whenever the daemon cuts the
/// flooder off, until `stop`.
fn flood_until(
    addr: SocketAddr,
    flood: Flood,
    stop: &AtomicBool,
    sent: &AtomicU64,
    conns: &AtomicU64,
) {
    let chunk: Vec<u8> = match flood {
        // An empty masked ping, with a zero mask.
        Flood::Pings => [0x89u8, 0x80, 0, 0, 0, 0].repeat(4096),
        Flood::Requests => format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n")
            .repeat(256)
            .into_bytes(),
    };
    while !stop.load(Ordering::SeqCst) {
        let Ok(mut s) = TcpStream::connect(addr) else {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        conns.fetch_add(1, Ordering::Relaxed);
        let _ = s.set_write_timeout(Some(Duration::from_millis(200)));
        match flood {
            Flood::Pings => {
                let head = format!(
                    "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                     Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
                );
                if s.write_all(head.as_bytes()).is_err() {
                    continue;
                }
            }
            Flood::Requests => {
                // Answers are read and dropped, so the daemon keeps working for this client.
                if let Ok(mut reader) = s.try_clone() {
                    std::thread::spawn(move || {
                        let mut buf = vec![0u8; 64 * 1024];
                        while let Ok(1..) = reader.read(&mut buf) {}
                    });
                }
            }
        }
        while !stop.load(Ordering::SeqCst) {
            match s.write(&chunk) {
                Ok(n) => {
                    sent.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                // Cut off by the daemon: come back.
                Err(_) => break,
            }
        }
        let _ = s.shutdown(std::net::Shutdown::Both);
    }
}
