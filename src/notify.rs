//! systemd's notify protocol (`Type=notify`): `READY=1` once listening, `WATCHDOG=1` from the
//! executor (so a wedged event loop stops pinging and systemd restarts the daemon), `STOPPING=1` on
//! shutdown. Plain datagrams to `$NOTIFY_SOCKET`; without it (not under systemd) nothing is sent.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Where systemd listens for our notifications.
pub struct Notifier {
    /// An unbound datagram socket to send from.
    sock: UnixDatagram,
    /// `$NOTIFY_SOCKET`: a path, or an abstract name (`@...`).
    addr: SocketAddr,
}

impl Notifier {
    /// The notifier of `$NOTIFY_SOCKET`, if set and usable.
    pub fn from_env() -> Option<Notifier> {
        let target = std::env::var_os("NOTIFY_SOCKET")?;
        let target = target.to_str()?;
        let addr = if let Some(name) = target.strip_prefix('@') {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes()).ok()?
        } else {
            SocketAddr::from_pathname(target).ok()?
        };
        let sock = UnixDatagram::unbound().ok()?;
        Some(Notifier { sock, addr })
    }

    /// Sends one notification; a failure is logged, never fatal (systemd may be restarting).
    pub fn send(&self, message: &str) {
        if let Err(e) = self.sock.send_to_addr(message.as_bytes(), &self.addr) {
            log::debug!("cannot notify systemd ({message}): {e}");
        }
    }
}

/// How often to ping the watchdog: half of `$WATCHDOG_USEC`, when it is meant for this process.
pub fn watchdog_interval() -> Option<Duration> {
    if let Some(pid) = std::env::var_os("WATCHDOG_PID")
        && pid.to_str()?.parse::<u32>().ok()? != std::process::id()
    {
        return None;
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// The variables through which systemd talks to the daemon, removed from a child's environment
/// (`journalctl`, `systemctl`): systemd's tools report their own exit on `$NOTIFY_SOCKET`
/// (`ERRNO=112` from a failed systemctl), which would reach systemd as if the daemon said it.
pub const SERVICE_ENV: [&str; 6] = [
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
];

/// Removes `SERVICE_ENV` from `cmd`'s environment.
pub fn child_env(cmd: &mut std::process::Command) -> &mut std::process::Command {
    for k in SERVICE_ENV {
        cmd.env_remove(k);
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_reach_a_path_socket() {
        let path = std::env::temp_dir().join(format!("edgemon-notify-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).unwrap();
        let n = Notifier {
            sock: UnixDatagram::unbound().unwrap(),
            addr: SocketAddr::from_pathname(&path).unwrap(),
        };
        n.send("READY=1");
        let mut buf = [0u8; 64];
        let got = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..got], b"READY=1");
        std::fs::remove_file(&path).unwrap();
    }
}
