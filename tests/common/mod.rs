//! Test helpers: an in-process daemon on 127.0.0.1:0, a real WebSocket client, raw HTTP, and the
//! real binary with its log lines as events. Every wait has a timeout.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream as StdTcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::Message;
use async_tungstenite::tungstenite::protocol::CloseFrame;
use edgemon::{Config, ServerHandle};
use serde_json::Value;
use smol::future::FutureExt;
use smol::net::TcpStream;
use smol::stream::StreamExt;

/// A WebSocket client over a smol TCP stream.
pub type Ws = WebSocketStream<TcpStream>;

/// Flags for daemons of a fleet in tests: peers answer pings within a second here, so offline
/// must follow within ping + pong; hubs linger a second.
pub const FAST: [&str; 6] = [
    "--ping-interval",
    "1s",
    "--pong-timeout",
    "1s",
    "--hub-linger",
    "1s",
];

/// A config for tests: loopback, port 0, short linger, no mDNS, everything else default.
pub fn config() -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        hub_linger: Duration::from_millis(200),
        mdns: false,
        ..Config::default()
    }
}

/// Starts an in-process daemon.
pub fn start(c: Config) -> ServerHandle {
    ServerHandle::start(c).expect("server starts")
}

/// Waits (bounded) for the daemon's first sample without subscribing to anything (a subscriber
/// would turn details on), for tests of what a quiet daemon samples.
pub fn first_quiet_sample(srv: &ServerHandle) {
    within(20, async {
        // The sampler has no event for "a sample exists" but its listener, which would count
        // as someone watching: poll instead, briefly.
        // Both: the sampler stores the data a moment before it adds the sample to the ring,
        // and /api/system answers 503 until it has both (a test here raced that once).
        while srv.app.sampler.latest_data().is_none() || srv.app.sampler.latest().is_none() {
            smol::Timer::after(Duration::from_millis(50)).await;
        }
    });
}

/// Runs `fut`, failing the test if it takes longer than `secs`.
pub fn within<T>(secs: u64, fut: impl std::future::Future<Output = T>) -> T {
    smol::block_on(fut.or(async {
        smol::Timer::after(Duration::from_secs(secs)).await;
        panic!("timed out after {secs}s");
    }))
}

/// A TCP connection to `addr` from the loopback address `src` (e.g. 127.0.0.7), so tests can be
/// many clients without tripping the per-address limits.
pub fn connect_from(src: std::net::IpAddr, addr: SocketAddr) -> StdTcpStream {
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )
    .unwrap();
    sock.bind(&SocketAddr::new(src, 0).into()).unwrap();
    sock.connect(&addr.into()).unwrap();
    sock.into()
}

/// Opens a WebSocket to `path`.
pub async fn ws(addr: SocketAddr, path: &str) -> Ws {
    try_ws(addr, path).await.expect("websocket handshake")
}

/// Opens a WebSocket to `path`, returning the handshake error if refused.
pub async fn try_ws(
    addr: SocketAddr,
    path: &str,
) -> Result<Ws, async_tungstenite::tungstenite::Error> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    ws_over(tcp, addr, path).await
}

/// The HTTP status of a refused upgrade (fails the test if the upgrade succeeds).
pub async fn refused(
    addr: SocketAddr,
    path: &str,
) -> async_tungstenite::tungstenite::http::Response<Option<Vec<u8>>> {
    match try_ws(addr, path).await {
        Err(async_tungstenite::tungstenite::Error::Http(resp)) => *resp,
        Err(e) => panic!("{path}: not an HTTP refusal: {e:?}"),
        Ok(_) => panic!("{path}: upgrade accepted"),
    }
}

/// Performs the client handshake on an already-connected stream.
pub async fn ws_over(
    tcp: TcpStream,
    addr: SocketAddr,
    path: &str,
) -> Result<Ws, async_tungstenite::tungstenite::Error> {
    let url = format!("ws://{addr}{path}");
    async_tungstenite::client_async(url, tcp)
        .await
        .map(|(ws, _)| ws)
}

/// The next text frame as JSON (pings are answered by the client library while reading).
pub async fn next_json(ws: &mut Ws) -> Value {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).expect("valid JSON"),
            Some(Ok(Message::Close(f))) => panic!("closed by server: {f:?}"),
            Some(Ok(_)) => continue,
            other => panic!("stream ended: {other:?}"),
        }
    }
}

/// The next frame of `type` (skipping others).
pub async fn next_of_type(ws: &mut Ws, kind: &str) -> Value {
    loop {
        let v = next_json(ws).await;
        if v["type"] == kind {
            return v;
        }
    }
}

/// Sends a text frame.
pub async fn send(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.expect("send");
}

/// Whether `/api/topics` lists `topic`.
pub fn topic_listed(addr: SocketAddr, topic: &str) -> bool {
    get(addr, "/api/topics").json()["topics"]
        .as_array()
        .is_some_and(|t| t.iter().any(|t| t == topic))
}

/// Reads until the server's Close frame arrives and returns it.
pub async fn close_frame(ws: &mut Ws) -> Option<CloseFrame> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Close(f))) => return f,
            Some(Ok(_)) => continue,
            other => panic!("no close frame: {other:?}"),
        }
    }
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("JSON body")
    }
}

/// Sends raw bytes and reads everything until the server closes (bounded by a 10 s read timeout).
pub fn raw(addr: SocketAddr, request: &[u8]) -> String {
    raw_on(StdTcpStream::connect(addr).unwrap(), request)
}

/// `raw` over a connection already made (from a chosen source address, say).
pub fn raw_on(mut s: StdTcpStream, request: &[u8]) -> String {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses every response in `text` (for pipelined requests).
pub fn parse_responses(text: &str) -> Vec<HttpResponse> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some((head, after)) = rest.split_once("\r\n\r\n") {
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let r = HttpResponse {
            status,
            head: head.to_string(),
            body: String::new(),
        };
        let len: usize = r
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let len = len.min(after.len());
        out.push(HttpResponse {
            body: after[..len].to_string(),
            ..r
        });
        rest = &after[len..];
    }
    out
}

/// `GET path` with `Connection: close`.
pub fn get(addr: SocketAddr, path: &str) -> HttpResponse {
    get_on(StdTcpStream::connect(addr).unwrap(), addr, path)
}

/// `get` over a connection already made (from a chosen source address, say).
pub fn get_on(s: StdTcpStream, addr: SocketAddr, path: &str) -> HttpResponse {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    parse_responses(&raw_on(s, req.as_bytes()))
        .into_iter()
        .next()
        .expect("a response")
}

/// Live stats over HTTP.
pub fn stats(addr: SocketAddr) -> Value {
    get(addr, "/api/websocket/stats").json()
}

/// The real binary, its stderr lines delivered as events.
pub struct Daemon {
    pub child: Child,
    pub addr: SocketAddr,
    /// Its own runtime directory (the history snapshot), unless the test gave one.
    runtime: Option<std::path::PathBuf>,
    lines: mpsc::Receiver<String>,
    /// Every line seen so far.
    pub log: Vec<String>,
}

impl Daemon {
    /// Starts `edgemon --listen 127.0.0.1:0 ARGS` and waits for its "listening" line.
    pub fn start(args: &[&str]) -> Daemon {
        Daemon::start_with_env(args, &[])
    }

    /// `start` with extra environment variables. Each daemon gets a runtime directory of its own
    /// (`RUNTIME_DIRECTORY`, where its history snapshot goes) unless `env` names one.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Daemon {
        Daemon::spawn(Command::new(env!("CARGO_BIN_EXE_edgemon")), args, env)
    }

    /// `start_with_env` as a systemd `DynamicUser=yes` unit runs it: as uid and gid `uid` (root
    /// only), with the unit's `UMask=0077` (set by `sh` before it execs the daemon, same pid).
    pub fn start_as(uid: u32, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "umask 0077 && exec \"$0\" \"$@\"",
            env!("CARGO_BIN_EXE_edgemon"),
        ])
        .uid(uid)
        .gid(uid);
        Daemon::spawn(cmd, args, env)
    }

    /// `start`, listening on `listen` (e.g. `127.0.0.3:PORT`) instead of 127.0.0.1:0.
    pub fn start_on(listen: &str, args: &[&str]) -> Daemon {
        let mut all = vec!["--listen", listen];
        all.extend_from_slice(args);
        Daemon::spawn_on(
            Command::new(env!("CARGO_BIN_EXE_edgemon")),
            &all,
            &[],
            false,
        )
    }

    /// `start_on`, inside the network namespace `ns` (`ip netns exec`, which execs the daemon:
    /// the child is the daemon).
    pub fn start_in_netns(ns: &str, listen: &str, args: &[&str]) -> Daemon {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_edgemon")]);
        let mut all = vec!["--listen", listen];
        all.extend_from_slice(args);
        Daemon::spawn_on(cmd, &all, &[], false)
    }

    fn spawn(cmd: Command, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        Daemon::spawn_on(cmd, args, env, true)
    }

    fn spawn_on(mut cmd: Command, args: &[&str], env: &[(&str, &str)], loopback: bool) -> Daemon {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let runtime = (!env.iter().any(|(k, _)| *k == "RUNTIME_DIRECTORY")).then(|| {
            let n = NEXT.fetch_add(1, Ordering::SeqCst);
            let d = std::env::temp_dir().join(format!("edgemon-rt-{}-{n}", std::process::id()));
            std::fs::create_dir_all(&d).unwrap();
            d
        });
        if loopback {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        let mut child = cmd
            .args(args)
            .envs(runtime.iter().map(|d| ("RUNTIME_DIRECTORY", d.as_os_str())))
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn edgemon");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut d = Daemon {
            child,
            addr: "127.0.0.1:1".parse().unwrap(),
            runtime,
            lines,
            log: Vec::new(),
        };
        let line = d.wait_line(Duration::from_secs(10), |l| {
            l.contains("listening on http://")
        });
        let addr = line.rsplit("http://").next().unwrap().trim();
        d.addr = addr.parse().expect("address in the listening line");
        d
    }

    /// Waits for a log line matching `pred` (checking lines already seen first).
    pub fn wait_line(&mut self, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        if let Some(l) = self.log.iter().find(|l| pred(l)) {
            return l.clone();
        }
        self.next_line(timeout, pred)
    }

    /// Waits for a new log line matching `pred`.
    pub fn next_line(&mut self, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.log.push(l.clone());
                    if pred(&l) {
                        return l;
                    }
                }
                Err(_) => panic!(
                    "no matching log line within {timeout:?}; log:\n{}",
                    self.log.join("\n")
                ),
            }
        }
    }

    /// Open file descriptors of the daemon, each as "fd -> target". The sampler thread's momentary
    /// reads under /proc and /sys (opened and closed within a tick) are left out.
    pub fn fds(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .unwrap()
            .filter_map(Result::ok)
            // A descriptor closed between listing and reading its link was momentary: skip it.
            .filter_map(|e| {
                let target = std::fs::read_link(e.path()).ok()?;
                Some(format!(
                    "{} -> {}",
                    e.file_name().to_string_lossy(),
                    target.display()
                ))
            })
            .filter(|l| !l.contains(" -> /sys/") && !l.contains(" -> /proc/"))
            .collect();
        v.sort();
        v
    }

    /// The descriptors once they have stayed the same for 500 ms (at most 10 s): sockets of
    /// connections that just ended close a moment after their last log line.
    pub fn settled_fds(&self) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last = self.fds();
        let mut since = Instant::now();
        while Instant::now() < deadline && since.elapsed() < Duration::from_millis(500) {
            std::thread::sleep(Duration::from_millis(50));
            let now = self.fds();
            if now != last {
                last = now;
                since = Instant::now();
            }
        }
        last
    }

    /// Sends a signal with kill(1).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            // Drain log lines meanwhile; this doubles as the short wait between checks.
            if let Ok(l) = self.lines.recv_timeout(Duration::from_millis(20)) {
                self.log.push(l);
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(d) = &self.runtime {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// A raw WebSocket connection to `/ws`: the handshake done by hand, so the test can write frames
/// as fast as the socket takes them without ever reading.
pub fn raw_ws(addr: SocketAddr) -> StdTcpStream {
    let mut s = StdTcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s
}

/// A client frame with a zero mask (so the payload goes as it is).
pub fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mut f = vec![0x80 | opcode, 0x80 | payload.len() as u8, 0, 0, 0, 0];
    f.extend_from_slice(payload);
    f
}

/// Writes `chunk` over and over on `s` until a write fails (the daemon closed it) or `limit`
/// passes; returns the thread and a flag that is set once writing failed.
pub fn flood(
    mut s: StdTcpStream,
    chunk: Vec<u8>,
    limit: Duration,
) -> (JoinHandle<()>, Arc<AtomicBool>) {
    let cut_off = Arc::new(AtomicBool::new(false));
    let flag = cut_off.clone();
    s.set_write_timeout(Some(Duration::from_secs(1))).unwrap();
    let t = std::thread::spawn(move || {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            match s.write_all(&chunk) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => {
                    flag.store(true, Ordering::SeqCst);
                    return;
                }
            }
        }
    });
    (t, cut_off)
}

/// A sysfs tree holding a Raspberry Pi's throttle mask (`get_throttled`), for the Pi readers and
/// alerts; removed on drop.
pub struct PiSysfs(pub std::path::PathBuf);

impl PiSysfs {
    /// A tree under the temp directory, its mask 0 (healthy).
    pub fn new(name: &str) -> PiSysfs {
        let root = std::env::temp_dir().join(format!("edgemon-pi-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("devices/platform/soc/soc:firmware")).unwrap();
        let pi = PiSysfs(root);
        pi.mask("0x0");
        pi
    }

    /// What the firmware reports (`vcgencmd get_throttled`'s bits), written whole and renamed
    /// so the sampler never reads half a file.
    pub fn mask(&self, m: &str) {
        let path = self
            .0
            .join("devices/platform/soc/soc:firmware/get_throttled");
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, format!("{m}\n")).unwrap();
        std::fs::rename(tmp, path).unwrap();
    }

    /// A tree with the `raspberrypi-hwmon` device only (`rpi_volt`, no `get_throttled`), its
    /// under-voltage alarm `alarm`.
    pub fn hwmon_only(name: &str, alarm: bool) -> PiSysfs {
        let root = std::env::temp_dir().join(format!("edgemon-pi-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let dir = root.join("class/hwmon/hwmon1");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("name"), "rpi_volt\n").unwrap();
        std::fs::write(
            dir.join("in0_lcrit_alarm"),
            format!("{}\n", u8::from(alarm)),
        )
        .unwrap();
        PiSysfs(root)
    }
}

impl Drop for PiSysfs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The keys of a JSON object, sorted (what a notification body must carry).
pub fn sorted_keys(v: &Value) -> Vec<String> {
    let mut keys: Vec<String> = v.as_object().expect("an object").keys().cloned().collect();
    keys.sort_unstable();
    keys
}

/// Stops the daemon with SIGTERM, expects exit 0, and checks its log never held `secret`.
pub fn stop_and_check_log(d: &mut Daemon, secret: &str) {
    d.signal("TERM");
    assert_eq!(
        d.wait_exit(Duration::from_secs(6)).and_then(|s| s.code()),
        Some(0)
    );
    assert!(
        !d.log.join("\n").contains(secret),
        "the log shows '{secret}'"
    );
}

/// Rule `name` in an `alerts` document (`GET /api/alerts`, the `alerts` topic's data).
pub fn rule_of<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["alerts"]
        .as_array()
        .expect("an alerts list")
        .iter()
        .find(|a| a["name"] == name)
        .unwrap_or_else(|| panic!("{name} not listed: {doc}"))
}

/// The state of rule `name` in an `alerts` document.
pub fn state_of(doc: &Value, name: &str) -> String {
    rule_of(doc, name)["state"].as_str().unwrap().to_string()
}

/// The data of the next `alerts` frame in which rule `name` is `state` (subscribe first).
pub async fn alerts_frame_with(ws: &mut Ws, name: &str, state: &str) -> Value {
    loop {
        let f = next_of_type(ws, "data").await;
        if f["topic"] == "alerts" && state_of(&f["data"], name) == state {
            return f["data"].clone();
        }
    }
}
