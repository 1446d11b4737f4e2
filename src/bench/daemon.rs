//! Starting, asking and stopping a monitored process: the edgemon daemon or a peer.

use std::fs;
use std::io::{self, BufRead};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use edgemon::config::BENCH_FLOOD_ENV;
use edgemon::topics::FLOOD;
use smol::Async;

use crate::client::within;
use smol::io::{AsyncReadExt, AsyncWriteExt};

/// A child process under measurement; killed on drop if still running.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub addr: SocketAddr,
    /// Where its stdout and stderr go.
    pub log: PathBuf,
    /// The one address the benchmark's clients connect from, where the loopback's many are not
    /// at hand (across a veth pair); `None`: spread over 127.0.0.0/8, four per address.
    pub client_source: Option<Ipv4Addr>,
    /// The daemon's runtime directory (its history snapshot), on a tmpfs as under systemd;
    /// removed on drop.
    pub runtime: Option<PathBuf>,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts the edgemon daemon on 127.0.0.1:0 with `args`, the benchmark topic set to `flood`
    /// (`PERIOD,BYTES`), and waits for its "listening on" line.
    pub fn edgemon(
        bin: &Path,
        flood: Option<&str>,
        args: &[String],
        tag: &str,
    ) -> io::Result<Proc> {
        Proc::edgemon_with(bin, flood, args, tag, |_| Ok(()))
    }

    /// `edgemon`, listening on `listen` (a loopback address and port of the caller's choosing).
    pub fn edgemon_on(bin: &Path, listen: &str, args: &[String], tag: &str) -> io::Result<Proc> {
        let runtime = runtime_dir(tag)?;
        let mut cmd = Command::new(bin);
        cmd.args(["--listen", listen])
            .args(args)
            .env("RUNTIME_DIRECTORY", &runtime);
        let mut p = Proc::listening(cmd, None, tag)?;
        p.runtime = Some(runtime);
        Ok(p)
    }

    /// `edgemon`, with `prepare` filling its runtime directory first (a snapshot to restore).
    pub fn edgemon_with(
        bin: &Path,
        flood: Option<&str>,
        args: &[String],
        tag: &str,
        prepare: impl FnOnce(&Path) -> io::Result<()>,
    ) -> io::Result<Proc> {
        let runtime = runtime_dir(tag)?;
        prepare(&runtime)?;
        let mut cmd = Command::new(bin);
        cmd.args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUNTIME_DIRECTORY", &runtime);
        let mut p = Proc::listening(cmd, flood, tag)?;
        p.runtime = Some(runtime);
        Ok(p)
    }

    /// Starts `cmd` (an edgemon daemon, or a stand-in that prints the same "listening on
    /// http://ADDR" line) with the benchmark topic set to `flood`, and waits for that line.
    pub fn listening(mut cmd: Command, flood: Option<&str>, tag: &str) -> io::Result<Proc> {
        let log = log_path(tag);
        let out = fs::File::create(&log)?;
        match flood {
            Some(f) => cmd.env(BENCH_FLOOD_ENV, f),
            None => cmd.env_remove(BENCH_FLOOD_ENV),
        };
        let program = cmd.get_program().to_string_lossy().into_owned();
        // Its output through a pipe, copied to the log by a thread of ours, as journald takes a
        // unit's: the log's disk writes are not the daemon's (`/proc/PID/io` counts its own).
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("{program}: {e}")))?;
        if let Some(mut stderr) = child.stderr.take() {
            let mut out = out;
            std::thread::spawn(move || {
                let _ = io::copy(&mut stderr, &mut out);
            });
        }
        let mut p = Proc {
            name: tag.into(),
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
            client_source: None,
            runtime: None,
        };
        p.addr = p.wait_for_listen_line(Duration::from_secs(10))?;
        Ok(p)
    }

    /// Starts any command that will serve HTTP on `addr`, and waits until it answers `probe`.
    pub fn peer(name: &str, cmd: &[String], addr: SocketAddr, probe: &str) -> io::Result<Proc> {
        let log = log_path(name);
        let out = fs::File::create(&log)?;
        let child = Command::new(&cmd[0])
            .args(&cmd[1..])
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", cmd[0])))?;
        let mut p = Proc {
            name: name.into(),
            child,
            addr,
            log,
            client_source: None,
            runtime: None,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok((200, _)) = smol::block_on(get(addr, probe)) {
                return Ok(p);
            }
            if let Ok(Some(st)) = p.child.try_wait() {
                return Err(io::Error::other(format!(
                    "{name} exited ({st}) before serving; see {}",
                    p.log.display()
                )));
            }
            if Instant::now() > deadline {
                return Err(io::Error::other(format!(
                    "{name} did not answer {probe} on {addr} within 60 s; see {}",
                    p.log.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn wait_for_listen_line(&mut self, limit: Duration) -> io::Result<SocketAddr> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(f) = fs::File::open(&self.log) {
                for line in io::BufReader::new(f).lines().map_while(Result::ok) {
                    if let Some(rest) = line.split("listening on http://").nth(1)
                        && let Ok(a) = rest.trim().parse()
                    {
                        return Ok(a);
                    }
                }
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                return Err(io::Error::other(format!(
                    "the daemon exited ({st}): {}",
                    fs::read_to_string(&self.log).unwrap_or_default().trim()
                )));
            }
            if Instant::now() > deadline {
                return Err(io::Error::other("the daemon did not report its address"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `/api/websocket/stats` of an edgemon daemon.
    pub async fn stats(&self) -> io::Result<Stats> {
        let (status, body) = get(self.addr, "/api/websocket/stats").await?;
        if status != 200 {
            return Err(io::Error::other(format!("stats answered {status}")));
        }
        let v: serde_json::Value = serde_json::from_slice(&body).map_err(io::Error::other)?;
        let hubs = v["hubs"].as_array().cloned().unwrap_or_default();
        Ok(Stats {
            active: v["active_connections"].as_u64().unwrap_or(u64::MAX),
            hubs: hubs.len(),
            dropped_frames: hubs
                .iter()
                .filter_map(|h| h["dropped_frames"].as_u64())
                .sum(),
            rejected: v["rejected_total"].as_u64().unwrap_or(0),
        })
    }

    /// SIGTERM, then wait (at most `limit`) for the exit status; kills after that.
    pub fn stop(mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let pid = rustix::process::Pid::from_raw(self.pid() as i32)?;
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Log lines at WARN or ERROR, but for the expected benchmark-topic notice.
    pub fn complaints(&self) -> Vec<String> {
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| (l.contains(" WARN ") || l.contains(" ERROR ")) && !l.contains(FLOOD))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if let Some(d) = &self.runtime {
            let _ = fs::remove_dir_all(d);
        }
    }
}

/// What `/api/websocket/stats` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stats {
    pub active: u64,
    pub hubs: usize,
    pub dropped_frames: u64,
    pub rejected: u64,
}

/// A fresh runtime directory for the daemon tagged `tag`: on /dev/shm (a tmpfs, like systemd's
/// /run), else the temp directory.
fn runtime_dir(tag: &str) -> io::Result<PathBuf> {
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let d = base.join(format!("edgemon-bench-{}-{tag}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d)?;
    Ok(d)
}

fn log_path(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("edgemon-bench-{}-{tag}.log", std::process::id()))
}

/// A one-shot `GET` (Connection: close): status and body bytes (chunked bodies are not decoded).
pub async fn get(addr: SocketAddr, path: &str) -> io::Result<(u16, Vec<u8>)> {
    let work = async {
        let mut s = Async::<std::net::TcpStream>::connect(addr).await?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut all = Vec::new();
        s.read_to_end(&mut all).await?;
        let end = all
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| io::Error::other("no HTTP head"))?;
        let status = std::str::from_utf8(&all[..end])
            .ok()
            .and_then(|h| h.split_whitespace().nth(1))
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| io::Error::other("bad status line"))?;
        Ok((status, all[end + 4..].to_vec()))
    };
    within(Duration::from_secs(10), &format!("GET {path}"), work).await
}
