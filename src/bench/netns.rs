//! A network namespace joined to this one by a veth pair, for the fan-out as a LAN would see it:
//! the daemon inside, pinned to CPU 0; the benchmark's clients outside, pinned to CPU 1; and
//! receive packet steering so each side's kernel receive work runs on its own core. On the
//! loopback the sender's system call also runs the receiver's TCP input, so the clients' kernel
//! work is charged to the daemon; across the pair it is not.
//!
//! Needs root, `ip` (iproute2) and `taskset` (util-linux), and at least two CPUs; `create`
//! says which is missing. Addresses come from 198.18.0.0/15 (RFC 2544, benchmarking), so they
//! cannot collide with a real network; the namespace (and with it the pair) is deleted on drop.

use std::io;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

/// The daemon's CPU and the clients' CPU.
pub const DAEMON_CPU: usize = 0;
pub const CLIENT_CPU: usize = 1;

/// The namespace, its veth pair, and the addresses on each end.
pub struct Veth {
    ns: String,
    /// The pair's end outside (deleting it deletes the pair at once).
    out_if: String,
    /// The address outside (the clients').
    pub outside: Ipv4Addr,
    /// The address inside (the daemon's).
    pub inside: Ipv4Addr,
}

/// Runs a command to completion; its stderr becomes the error.
fn run(args: &[&str]) -> io::Result<()> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", args[0])))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

impl Veth {
    /// Why the namespace cannot be made here, if it cannot.
    pub fn unavailable() -> Option<String> {
        if !rustix::process::geteuid().is_root() {
            return Some("needs root".into());
        }
        if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
            return Some("needs two CPUs".into());
        }
        for tool in ["ip", "taskset"] {
            if run(&[tool, "-V"]).is_err() {
                return Some(format!("needs {tool}"));
            }
        }
        None
    }

    /// Creates the namespace and the pair, up, addressed, with receive steering set.
    pub fn create() -> io::Result<Veth> {
        // A name of its own for each pair of this run: a namespace is torn down by the kernel
        // after `ip netns del` returns, so the next scenario's pair must not need its names.
        static MADE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 100;
        let id = std::process::id() % 100_000;
        let (out_if, in_if) = (format!("ebo{id}n{n}"), format!("ebi{id}n{n}"));
        let net = Veth {
            ns: format!("edgemon-bench-{id}-{n}"),
            out_if: out_if.clone(),
            outside: Ipv4Addr::new(198, 18, 213, 1),
            inside: Ipv4Addr::new(198, 18, 213, 2),
        };
        run(&["ip", "netns", "add", &net.ns])?;
        // From here on, drop deletes what was made.
        let ns = net.ns.as_str();
        let outside = format!("{}/30", net.outside);
        let inside = format!("{}/30", net.inside);
        run(&[
            "ip", "link", "add", &out_if, "type", "veth", "peer", "name", &in_if, "netns", ns,
        ])?;
        run(&["ip", "addr", "add", &outside, "dev", &out_if])?;
        run(&["ip", "link", "set", &out_if, "up"])?;
        run(&["ip", "-n", ns, "addr", "add", &inside, "dev", &in_if])?;
        run(&["ip", "-n", ns, "link", "set", &in_if, "up"])?;
        run(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        // What arrives outside (the daemon's frames) is received on the clients' CPU, what
        // arrives inside (the clients' ACKs and messages) on the daemon's.
        let mask = |cpu: usize| format!("{:x}", 1u64 << cpu);
        std::fs::write(
            format!("/sys/class/net/{out_if}/queues/rx-0/rps_cpus"),
            mask(CLIENT_CPU),
        )?;
        // The namespace's interfaces show in sysfs only from inside it.
        let inside_rps = format!(
            "echo {} > /sys/class/net/{in_if}/queues/rx-0/rps_cpus",
            mask(DAEMON_CPU)
        );
        run(&["ip", "netns", "exec", ns, "sh", "-c", &inside_rps])?;
        Ok(net)
    }

    /// A command that runs what is appended to it inside the namespace, pinned to the
    /// daemon's CPU (`ip netns exec` and `taskset` exec, so the child's pid is the server's).
    pub fn prefix(&self) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns, "taskset", "-c"])
            .arg(DAEMON_CPU.to_string());
        cmd
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        // The outer end first: that deletes the pair (and its route to 198.18.213.0/30) before
        // this returns; the namespace itself goes in the background.
        let _ = run(&["ip", "link", "del", &self.out_if]);
        if let Err(e) = run(&["ip", "netns", "del", &self.ns]) {
            eprintln!("edgemon-bench: {e}");
        }
    }
}

/// Pins every thread of this process to `cpu`, or back to every online CPU with `None`.
pub fn pin_self(cpu: Option<usize>) -> io::Result<()> {
    let cpus = match cpu {
        Some(c) => c.to_string(),
        // Not from available_parallelism, which counts only the CPUs this process may use.
        None => std::fs::read_to_string("/sys/devices/system/cpu/online")?
            .trim()
            .to_string(),
    };
    let pid = std::process::id().to_string();
    Command::new("taskset")
        .args(["-a", "-p", "-c", &cpus, &pid])
        .stdout(Stdio::null())
        .status()
        .and_then(|st| {
            st.success()
                .then_some(())
                .ok_or_else(|| io::Error::other(format!("taskset -a -p -c {cpus}: {st}")))
        })
}
