//! The real binary: flags and exit codes, logs, signals, file descriptors.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use common::*;
use smol::stream::StreamExt;

const WAIT: Duration = Duration::from_secs(10);

fn run(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_edgemon"))
        .args(args)
        .output()
        .expect("run edgemon")
}

/// A systemd notify socket for one daemon: the path to pass as `NOTIFY_SOCKET` and the socket.
/// Dropping it removes the path.
struct Notify {
    path: std::path::PathBuf,
    sock: std::os::unix::net::UnixDatagram,
}

impl Notify {
    fn new(tag: &str) -> Notify {
        let path =
            std::env::temp_dir().join(format!("edgemon-notify-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(WAIT)).unwrap();
        Notify { path, sock }
    }

    fn path(&self) -> &str {
        self.path.to_str().unwrap()
    }

    /// The next notification (fails the test after 10 s).
    fn recv(&self) -> String {
        let mut buf = [0u8; 256];
        let n = self
            .sock
            .recv(&mut buf)
            .expect("a notification within 10 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

impl Drop for Notify {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[test]
fn bad_flags_exit_2_naming_the_flag() {
    for (args, flag) in [
        (&["--max-per-ip", "zero"][..], "--max-per-ip"),
        (&["--ping-interval", "5parsecs"][..], "--ping-interval"),
        (&["--listen", "localhost"][..], "--listen"),
        (&["--log-level", "chatty"][..], "--log-level"),
        (&["--no-such-flag"][..], "--no-such-flag"),
        (&["--listen"][..], "--listen"),
        (&["--token-file", "/etc/edgemon.token"][..], "--token-file"),
        // A bad rule names the flag, the rule and what is wrong with it.
        (
            &["--alert", "busy: cpu >> 95"][..],
            "--alert: 'busy: cpu >> 95': '>>' is not an operator",
        ),
        (
            &["--alert", "hot: temp_max >= 80 for 1x"][..],
            "'1x' is not a duration",
        ),
        (&["--alert", "x: gpu > 1"][..], "unknown metric 'gpu'"),
        (
            &["--alert", "x: cpu > 1 urgent"][..],
            "'urgent' is not a severity",
        ),
        (
            &["--unit", "--all"][..],
            "--unit: '--all' is not a unit name",
        ),
        (&["--unit", "a;reboot"][..], "--unit: 'a;reboot'"),
        (
            &["--container-logs", "web"][..],
            "--container-logs: needs --docker-socket",
        ),
        (
            &[
                "--docker-socket",
                "/run/docker.sock",
                "--container-logs",
                "../etc",
            ][..],
            "--container-logs: '../etc' is not a container name",
        ),
        (&["--docker-socket", ""][..], "--docker-socket"),
        (
            &["--peer", "pi2.local"][..],
            "--peer: 'pi2.local' is not HOST:PORT",
        ),
        (&["--peer", "a b:9753"][..], "--peer"),
        (
            &["--peer", "10.0.0.2:9753", "--peer", "10.0.0.2:9753"][..],
            "--peer: '10.0.0.2:9753' is given twice",
        ),
    ] {
        let out = run(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(flag),
            "{args:?}: message does not name {flag}: {err}"
        );
    }
}

#[test]
fn help_lists_every_contract_flag_and_exits_0() {
    let out = run(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--max-connections",
        "--max-per-ip",
        "--ping-interval",
        "--pong-timeout",
        "--idle-timeout",
        "--write-timeout",
        "--send-queue",
        "--hub-linger",
        "--history",
        "--log",
        "--journal",
        "--token-file",
        "--allow-origin",
        "--allow-host",
        "--net-include",
        "--net-exclude",
        "--alert",
        "--no-default-alerts",
        "--notify",
        "--unit",
        "--docker-socket",
        "--container-logs",
        "--peer",
        "--log-level",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
}

#[test]
fn a_world_readable_token_file_refuses_to_start_and_the_token_is_never_logged() {
    use std::os::unix::fs::PermissionsExt;
    let token = "Zx81-never-log-me-Qw93";
    let path = std::env::temp_dir().join(format!("edgemon-bin-token-{}", std::process::id()));
    std::fs::write(&path, token).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = run(&["--token-file", path.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--token-file") && err.contains("readable by every user"),
        "{err}"
    );

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut d = Daemon::start(&[
        "--token-file",
        path.to_str().unwrap(),
        "--log-level",
        "trace",
    ]);
    assert_eq!(get(d.addr, "/api/topics").status, 401);
    assert_eq!(get(d.addr, &format!("/?token={token}")).status, 303);
    within(10, async {
        let refused = refused(d.addr, &format!("/ws/system?token=wrong{token}")).await;
        assert_eq!(refused.status(), 401);
        let mut ws = ws(d.addr, &format!("/ws/system?token={token}")).await;
        next_json(&mut ws).await;
    });
    d.wait_line(WAIT, |l| l.contains("ws open"));
    d.signal("TERM");
    d.wait_exit(Duration::from_secs(6)).expect("stops");
    assert!(
        !d.log.iter().any(|l| l.contains(token)),
        "the token was logged:\n{}",
        d.log.join("\n")
    );
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn under_systemd_it_notifies_ready_pings_the_watchdog_and_says_stopping() {
    let notify = Notify::new("bin");
    let mut d = Daemon::start_with_env(
        &[],
        &[
            ("NOTIFY_SOCKET", notify.path()),
            ("WATCHDOG_USEC", "200000"),
        ],
    );
    let ready = notify.recv();
    assert!(ready.starts_with("READY=1"), "{ready}");
    // Ready means listening: it answers at once.
    assert_eq!(get(d.addr, "/healthz").status, 200);
    for _ in 0..3 {
        assert_eq!(notify.recv(), "WATCHDOG=1");
    }
    d.signal("TERM");
    let mut last = notify.recv();
    while last == "WATCHDOG=1" {
        last = notify.recv();
    }
    assert_eq!(last, "STOPPING=1");
    assert_eq!(d.wait_exit(Duration::from_secs(6)).unwrap().code(), Some(0));
}

#[test]
fn a_ping_flood_stops_neither_the_watchdog_nor_sigterm() {
    let notify = Notify::new("flood");
    // A watchdog ping every 100 ms.
    let mut d = Daemon::start_with_env(
        &[],
        &[
            ("NOTIFY_SOCKET", notify.path()),
            ("WATCHDOG_USEC", "200000"),
        ],
    );
    assert!(notify.recv().starts_with("READY=1"));
    let pings4k = client_frame(0x9, b"").repeat(4096);
    let (flooder, _) = flood(raw_ws(d.addr), pings4k, Duration::from_secs(4));
    // From one second into the flood, for two: the executor still gets to the watchdog (20
    // pings are due).
    std::thread::sleep(Duration::from_secs(1));
    let t0 = Instant::now();
    let mut pings = 0;
    while t0.elapsed() < Duration::from_secs(2) {
        if notify.recv() == "WATCHDOG=1" {
            pings += 1;
        }
    }
    assert!(pings >= 5, "{pings} watchdog pings in 2 s of flood");
    // And SIGTERM is acted on, flood or not.
    d.signal("TERM");
    assert_eq!(d.wait_exit(Duration::from_secs(6)).unwrap().code(), Some(0));
    flooder.join().unwrap();
}

#[test]
fn a_closed_or_full_stderr_never_takes_the_daemon_down() {
    type MakeStderr = fn() -> std::process::Stdio;
    let cases: [(&str, MakeStderr); 2] = [
        // A pipe whose reader is gone: every write is EPIPE.
        ("closed pipe", std::process::Stdio::piped),
        // Every write is ENOSPC, like stderr on a full disk.
        ("full disk", || {
            std::fs::File::create("/dev/full").unwrap().into()
        }),
    ];
    for (name, stderr) in cases {
        let notify = Notify::new("stderr");
        // The port is chosen here: with no stderr to read, the log cannot say it.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_edgemon"))
            .args(["--listen", &addr.to_string(), "--log-level", "debug"])
            .env("NOTIFY_SOCKET", notify.path())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(stderr())
            .spawn()
            .unwrap();
        drop(child.stderr.take());
        assert!(notify.recv().starts_with("READY=1"), "{name}");
        // Every connection logs an open and a close line; each write fails.
        for _ in 0..3 {
            within(20, async {
                let mut ws = ws(addr, "/ws/system").await;
                assert_eq!(next_json(&mut ws).await["type"], "subscribed");
                ws.close(None).await.unwrap();
            });
        }
        assert_eq!(get(addr, "/healthz").status, 200, "{name}");
        assert!(
            child.try_wait().unwrap().is_none(),
            "{name}: the daemon died"
        );
        let pid = child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "{name}: no exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(status.code(), Some(0), "{name}");
    }
}

#[test]
fn out_of_descriptors_a_waiting_client_is_answered_not_left_hanging() {
    use std::io::Read;
    let mut d = Daemon::start(&[]);
    let open = d.settled_fds().len() as u64;
    // Room for a few connections only (the limit applies to new descriptors).
    let limit = rustix::process::Rlimit {
        current: Some(open + 6),
        maximum: Some(open + 6),
    };
    let pid = rustix::process::Pid::from_raw(d.child.id() as i32).unwrap();
    rustix::process::prlimit(Some(pid), rustix::process::Resource::Nofile, limit).unwrap();
    // Thirty clients from three addresses (under the per-address cap), none sending: the
    // daemon runs out of descriptors after a few.
    let mut waiting: Vec<std::net::TcpStream> = (0..30)
        .map(|i| {
            let src = std::net::Ipv4Addr::new(127, 0, 0, 2 + (i % 3) as u8);
            connect_from(src.into(), d.addr)
        })
        .collect();
    // The last one waits in the backlog: it is accepted with the reserve descriptor and told why.
    let last = waiting.last_mut().unwrap();
    last.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut answer = String::new();
    let _ = last.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");
    assert!(answer.contains("out of file descriptors"), "{answer}");
    drop(waiting);
    // Descriptors back, it serves again; the failing accepts were logged, not one line each.
    assert_eq!(get(d.addr, "/healthz").status, 200);
    let warned = d.wait_line(WAIT, |l| l.contains("accept failed"));
    assert!(warned.contains("Too many open files"), "{warned}");
    d.signal("TERM");
    assert_eq!(d.wait_exit(WAIT).unwrap().code(), Some(0));
    let accept_lines = d.log.iter().filter(|l| l.contains("accept failed")).count();
    assert!(accept_lines <= 2, "{accept_lines} accept-failed lines");
}

#[test]
fn with_threads_2_tasks_run_on_two_threads_and_it_still_stops_cleanly() {
    let mut d = Daemon::start(&["--threads", "2"]);
    let names = || -> Vec<String> {
        std::fs::read_dir(format!("/proc/{}/task", d.child.id()))
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .map(|n| n.trim().to_string())
            .collect()
    };
    // The helper starts with the serving loop, just after the "listening" line, and names
    // itself once running: there is no event to wait on, so look again briefly (bounded).
    let deadline = Instant::now() + WAIT;
    while !names().iter().any(|n| n == "edgemon-1") {
        assert!(
            Instant::now() < deadline,
            "no executor thread: {:?}",
            names()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    within(20, async {
        let mut socks = Vec::new();
        for _ in 0..4 {
            let mut ws = ws(d.addr, "/ws/system").await;
            assert_eq!(next_json(&mut ws).await["type"], "subscribed");
            socks.push(ws);
        }
        for ws in &mut socks {
            assert_eq!(next_of_type(ws, "data").await["topic"], "system");
        }
    });
    assert_eq!(get(d.addr, "/healthz").status, 200);
    d.signal("TERM");
    assert_eq!(d.wait_exit(WAIT).unwrap().code(), Some(0));
}

#[test]
fn without_systemd_nothing_is_sent_and_nothing_breaks() {
    let mut d = Daemon::start_with_env(&[], &[("WATCHDOG_USEC", "200000")]);
    assert_eq!(get(d.addr, "/healthz").status, 200);
    d.signal("TERM");
    assert_eq!(d.wait_exit(Duration::from_secs(6)).unwrap().code(), Some(0));
}

#[test]
fn address_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = run(&["--listen", &addr]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot listen on"));
}

#[test]
fn normal_disconnect_is_logged_with_reason_and_remaining_count() {
    let mut d = Daemon::start(&[]);
    within(10, async {
        let mut ws = ws(d.addr, "/ws/system").await;
        assert_eq!(next_json(&mut ws).await["type"], "subscribed");
        ws.close(None).await.unwrap();
        while let Some(Ok(_)) = ws.next().await {}
    });
    d.wait_line(WAIT, |l| l.contains("ws open 127.0.0.1:"));
    let line = d.wait_line(WAIT, |l| l.contains("ws close 127.0.0.1:"));
    assert!(
        line.contains("reason=client closed (1005)")
            || line.contains("reason=client closed (1000)"),
        "{line}"
    );
    assert!(line.contains("remaining=0"), "{line}");
    assert_eq!(stats(d.addr)["active_connections"], 0);
}

#[test]
fn hundred_clients_killed_leave_no_connection_hub_or_descriptor_behind() {
    let mut d = Daemon::start(&["--hub-linger", "300ms", "--log-level", "debug"]);
    // Warm up once so lazily opened descriptors (epoll, timers) are part of the baseline.
    within(10, async {
        let mut ws = ws(d.addr, "/ws/system").await;
        next_json(&mut ws).await;
    });
    d.wait_line(WAIT, |l| l.contains("remaining=0"));
    d.wait_line(WAIT, |l| l.contains("hub system removed"));
    let baseline = d.settled_fds();

    within(60, async {
        let mut clients = Vec::new();
        for i in 0..100 {
            let std = std::net::TcpStream::connect(d.addr).unwrap();
            if i % 2 == 0 {
                // Half die with a reset, half with a plain FIN and no Close frame.
                socket2::SockRef::from(&std)
                    .set_linger(Some(Duration::ZERO))
                    .unwrap();
            }
            let tcp = smol::net::TcpStream::try_from(std).unwrap();
            let path = if i % 3 == 0 { "/ws" } else { "/ws/system" };
            let mut ws = ws_over(tcp, d.addr, path).await.unwrap();
            if path != "/ws" {
                next_json(&mut ws).await;
            }
            clients.push(ws);
            // Keep within the default per-IP limit of 5 by killing as we go.
            if clients.len() == 5 {
                clients.clear();
                // Wait until the daemon has let go of them before opening more.
                while stats(d.addr)["active_connections"].as_u64().unwrap() > 0 {
                    smol::Timer::after(Duration::from_millis(10)).await;
                }
            }
        }
    });
    let s = stats(d.addr);
    assert_eq!(s["active_connections"], 0, "{s}");
    assert_eq!(s["connections_total"], 101, "{s}");
    d.next_line(WAIT, |l| l.contains("hub system removed"));
    let s = stats(d.addr);
    assert!(s["hubs"].as_array().unwrap().is_empty(), "{s}");
    assert_eq!(s["producers"], 0, "{s}");
    // The socket of the last stats request closes a moment after the client saw EOF: allow it to.
    let deadline = Instant::now() + WAIT;
    let mut after = d.fds();
    while after != baseline && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        after = d.fds();
    }
    assert_eq!(after, baseline, "descriptors before and after differ");
}

#[test]
fn sigterm_sends_1001_to_clients_and_exits_0_within_5_seconds() {
    let mut d = Daemon::start(&[]);
    let (mut a, mut b) = within(10, async {
        let mut a = ws(d.addr, "/ws/system").await;
        let b = ws(d.addr, "/ws").await;
        next_json(&mut a).await;
        (a, b)
    });
    let t0 = Instant::now();
    d.signal("TERM");
    within(10, async {
        for ws in [&mut a, &mut b] {
            let f = close_frame(ws).await.expect("close frame");
            assert_eq!(f.code, CloseCode::Away);
        }
    });
    let status = d
        .wait_exit(Duration::from_secs(6))
        .expect("still running after SIGTERM");
    assert_eq!(status.code(), Some(0));
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t0.elapsed()
    );
    d.wait_line(WAIT, |l| l.contains("stopped"));
}

#[test]
fn sigint_also_stops_cleanly() {
    let mut d = Daemon::start(&[]);
    d.signal("INT");
    let status = d
        .wait_exit(Duration::from_secs(6))
        .expect("still running after SIGINT");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn sighup_is_logged_and_the_daemon_keeps_serving_its_clients() {
    let mut d = Daemon::start(&[]);
    let mut client = within(10, async {
        let mut c = ws(d.addr, "/ws/system").await;
        next_json(&mut c).await;
        c
    });
    d.signal("HUP");
    d.wait_line(WAIT, |l| {
        l.contains("SIGHUP") && l.contains("still serving")
    });
    // The client keeps getting frames, and new requests are answered.
    within(10, async {
        next_of_type(&mut client, "data").await;
    });
    assert_eq!(get(d.addr, "/healthz").status, 200);
    d.signal("TERM");
    let status = d.wait_exit(Duration::from_secs(6)).expect("stops on TERM");
    assert_eq!(status.code(), Some(0));
}

/// `VALUE` as systemd reads `NAME="VALUE"` from an `EnvironmentFile` and then expands `$NAME`
/// on its own in `ExecStart`: split at whitespace, quotes respected when splitting and removed
/// afterwards (systemd.service(5), "Command lines"). Single and double quotes both group.
fn systemd_split(value: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut quote: Option<char> = None;
    for c in value.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.get_or_insert_with(String::new).push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                word.get_or_insert_with(String::new);
            }
            (None, c) if c.is_whitespace() => words.extend(word.take()),
            (None, c) => word.get_or_insert_with(String::new).push(c),
        }
    }
    assert!(quote.is_none(), "unclosed quote in {value}");
    words.extend(word);
    words
}

#[test]
fn the_readmes_default_file_line_with_rules_starts_the_daemon_with_those_rules() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let defaults = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/packaging/edgemon.default"
    ))
    .unwrap();
    let line = readme
        .lines()
        .find(|l| l.starts_with("EDGEMON_ARGS=\"--alert '"))
        .expect("the README's Alerts section shows an EDGEMON_ARGS line with a rule");
    assert!(
        defaults.contains(&format!("#   {line}")),
        "edgemon.default shows the README's line: {line}"
    );
    // The file's NAME="VALUE": the double quotes go, the single quotes inside stay.
    let value = line
        .strip_prefix("EDGEMON_ARGS=\"")
        .and_then(|v| v.strip_suffix('"'))
        .unwrap();
    let args = systemd_split(value);
    assert_eq!(args.len(), 4, "{args:?}");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let d = Daemon::start(&args);
    let alerts = get(d.addr, "/api/alerts").json();
    let rule = |name: &str| {
        alerts["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == name)
            .unwrap_or_else(|| panic!("{name} not among {alerts}"))["rule"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(rule("busy"), "cpu > 95 for 5m warning");
    assert_eq!(
        rule("hot"),
        "temp_max >= 75 for 1m critical",
        "the default 'hot' is replaced"
    );
    assert_eq!(
        rule("under_voltage"),
        "pi_under_voltage == 1 critical",
        "the other defaults stay"
    );
}

#[test]
fn version_prints_the_package_version_and_exits_0() {
    let out = run(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("edgemon {}\n", env!("CARGO_PKG_VERSION"))
    );
    // Also with other flags, as `edgemon --listen x --version` from a script would.
    let out = run(&["--listen", "127.0.0.1:0", "--version"]);
    assert_eq!(out.status.code(), Some(0));
}

/// Every option `--help` lists, with its default if it has one: `("--listen", Some("0.0.0.0:9753"))`.
fn help_options() -> Vec<(String, Option<String>)> {
    let help = String::from_utf8(run(&["--help"]).stdout).unwrap();
    let options = help.split("Options:").nth(1).expect("an Options section");
    // One entry per option: its first line starts with two spaces and the name; descriptions
    // wrap onto lines indented further.
    let mut entries: Vec<String> = Vec::new();
    for line in options.lines() {
        if line.starts_with("  --") {
            entries.push(line.trim().to_string());
        } else if let Some(e) = entries.last_mut() {
            e.push(' ');
            e.push_str(line.trim());
        }
    }
    entries
        .iter()
        .map(|e| {
            let name = e.split([' ', ',']).next().unwrap().to_string();
            let default = e
                .rsplit_once("(default ")
                .and_then(|(_, d)| d.strip_suffix(')'))
                .map(str::to_string);
            (name, default)
        })
        .collect()
}

#[test]
fn the_manual_page_lists_every_option_with_its_default_and_nothing_else() {
    let page = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/edgemon.8"))
        .unwrap();
    // roff writes a hyphen in an option as \-.
    let text = page.replace("\\-", "-");
    let options = help_options();
    assert!(options.len() > 15, "{options:?}");
    let mut listed = Vec::new();
    for chunk in text.split(".TP\n").skip(1) {
        let head = chunk.lines().next().unwrap();
        if let Some(name) = head
            .split_whitespace()
            .nth(1)
            .filter(|n| n.starts_with("--"))
        {
            listed.push((name.trim_matches('"').to_string(), chunk.to_string()));
        }
    }
    for (name, default) in &options {
        let Some((_, entry)) = listed.iter().find(|(n, _)| n == name) else {
            panic!("edgemon.8 does not describe {name}");
        };
        if let Some(d) = default {
            let entry = entry.split_whitespace().collect::<Vec<_>>().join(" ");
            assert!(
                entry.contains(&format!("(default {d})")),
                "edgemon.8 gives {name} another default than --help's {d}: {entry}"
            );
        }
    }
    for (name, _) in &listed {
        assert!(
            options.iter().any(|(n, _)| n == name),
            "edgemon.8 describes {name}, which --help does not list"
        );
    }
    // The commented list in /etc/default/edgemon names every option too.
    let defaults = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/packaging/edgemon.default"
    ))
    .unwrap();
    for (name, _) in options
        .iter()
        .filter(|(n, _)| !["--help", "--version"].contains(&n.as_str()))
    {
        assert!(
            defaults.contains(&format!("#   {name} ")),
            "edgemon.default lacks {name}"
        );
    }
}

/// A fresh directory for a daemon's runtime files, removed on drop.
struct RuntimeDir(std::path::PathBuf);
impl RuntimeDir {
    fn new(name: &str) -> RuntimeDir {
        let d = std::env::temp_dir().join(format!("edgemon-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        RuntimeDir(d)
    }
    fn env(&self) -> [(&str, &str); 1] {
        [("RUNTIME_DIRECTORY", self.0.to_str().unwrap())]
    }
}
impl Drop for RuntimeDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The `seq` of the first live `system` frame at least `min` (reading history and live frames).
async fn system_seq_at_least(addr: std::net::SocketAddr, min: u64) -> u64 {
    let mut ws = ws(addr, "/ws/system").await;
    loop {
        let v = next_of_type(&mut ws, "data").await;
        let seq = v["seq"].as_u64().unwrap();
        if seq >= min {
            return seq;
        }
    }
}

#[test]
fn history_events_and_seq_continue_across_a_restart() {
    let dir = RuntimeDir::new("restart");
    let mut d = Daemon::start_with_env(&[], &dir.env());
    let seq = within(20, system_seq_at_least(d.addr, 3));
    let before = get(d.addr, "/api/history?range=10m").json();
    let ts = before["ts"].as_array().unwrap().clone();
    let cpu = before["series"]["cpu.total"]["mean"]
        .as_array()
        .unwrap()
        .clone();
    let first = cpu.iter().position(|v| v.is_number()).expect("a point");
    let kept_ts = ts[first].as_u64().unwrap();
    d.signal("TERM");
    assert_eq!(d.wait_exit(WAIT).and_then(|s| s.code()), Some(0));
    assert!(dir.0.join("history.snap").exists(), "no snapshot at stop");

    let mut d = Daemon::start_with_env(&[], &dir.env());
    d.wait_line(WAIT, |l| l.contains("history: restored"));
    // The points from before the restart are still there.
    let after = get(d.addr, "/api/history?range=10m").json();
    let ts: Vec<u64> = after["ts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap())
        .collect();
    let i = ts
        .iter()
        .position(|t| *t == kept_ts)
        .expect("the old interval in range");
    assert!(
        after["series"]["cpu.total"]["mean"][i].is_number(),
        "{after}"
    );
    // seq goes on from where it stopped.
    let next = within(20, system_seq_at_least(d.addr, 0));
    assert!(next > seq, "seq {next} after a stop at {seq}");
    // The events say what happened, in order.
    let events = get(d.addr, "/api/events").json();
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .filter(|k| k.starts_with("daemon"))
        .collect();
    assert_eq!(
        kinds,
        ["daemon_start", "daemon_stop", "daemon_start"],
        "{events}"
    );
    let last = events["events"].as_array().unwrap().last().unwrap().clone();
    assert!(
        last["text"].as_str().unwrap().contains("stopped cleanly"),
        "{last}"
    );
}

#[test]
fn a_damaged_snapshot_is_a_warning_and_an_empty_history() {
    let dir = RuntimeDir::new("damaged");
    std::fs::write(dir.0.join("history.snap"), b"EDGEMONH\x01\0\0\0garbage").unwrap();
    let mut d = Daemon::start_with_env(&[], &dir.env());
    let line = d.wait_line(WAIT, |l| l.contains("history: not using"));
    assert!(
        line.contains("WARN") && line.contains("history.snap"),
        "{line}"
    );
    assert_eq!(get(d.addr, "/healthz").status, 200);
    let events = get(d.addr, "/api/events").json();
    let start = events["events"].as_array().unwrap().last().unwrap().clone();
    assert!(
        start["text"].as_str().unwrap().contains("no history kept"),
        "{start}"
    );
}

/// Gives the tree under `dir` to `uid`, as systemd does with a preserved `RuntimeDirectory=` when a
/// `DynamicUser=yes` unit starts again under a different uid.
fn chown_tree(dir: &std::path::Path, uid: u32) {
    let mut todo = vec![dir.to_path_buf()];
    while let Some(p) = todo.pop() {
        std::os::unix::fs::chown(&p, Some(uid), Some(uid)).unwrap();
        if p.is_dir() {
            todo.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
    }
}

#[test]
#[ignore = "needs root to run the daemon as two dynamic users: run bash tests/all.sh as root"]
fn a_restart_under_another_dynamic_user_still_reads_the_snapshot() {
    use std::os::unix::fs::MetadataExt;
    // Two uids no account uses, from the range systemd hands to dynamic users (61184-65519).
    let (first, second) = (61_201, 61_202);
    let dir = RuntimeDir::new("dynamic-user");
    // RuntimeDirectory= is created for the unit's user, with the unit's UMask=0077.
    std::fs::set_permissions(&dir.0, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    chown_tree(&dir.0, first);
    let mut d = Daemon::start_as(first, &[], &dir.env());
    let seq = within(20, system_seq_at_least(d.addr, 3));
    d.signal("TERM");
    assert_eq!(d.wait_exit(WAIT).and_then(|s| s.code()), Some(0));
    let snap = std::fs::metadata(dir.0.join("history.snap")).expect("a snapshot at stop");
    assert_eq!(snap.uid(), first, "written by the unit's user");
    assert_eq!(snap.mode() & 0o777, 0o600, "private to it");

    // The next start gets another uid; systemd gives it the preserved directory first.
    chown_tree(&dir.0, second);
    let mut d = Daemon::start_as(second, &[], &dir.env());
    d.wait_line(WAIT, |l| l.contains("history: restored"));
    assert!(
        !d.log.iter().any(|l| l.contains("WARN")),
        "warnings after a restart: {:?}",
        d.log
    );
    let next = within(20, system_seq_at_least(d.addr, 0));
    assert!(next > seq, "seq {next} after a stop at {seq}");
    let events = get(d.addr, "/api/events").json();
    let stops = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "daemon_stop")
        .count();
    assert_eq!(stops, 1, "{events}");
    // And it can write its own snapshot there at the next stop.
    d.signal("TERM");
    assert_eq!(d.wait_exit(WAIT).and_then(|s| s.code()), Some(0));
    let snap = std::fs::metadata(dir.0.join("history.snap")).unwrap();
    assert_eq!(snap.uid(), second);
}

#[test]
#[ignore = "needs root to run the daemon as a dynamic user: run bash tests/all.sh as root"]
fn as_a_dynamic_user_only_its_own_write_bytes_are_read() {
    let uid = 61_203;
    let dir = RuntimeDir::new("dynamic-io");
    chown_tree(&dir.0, uid);
    let mut d = Daemon::start_as(uid, &[], &dir.env());
    let f = within(30, async {
        let mut ws = ws(d.addr, "/ws/processes").await;
        next_of_type(&mut ws, "data").await
    });
    assert_eq!(f["data"]["io_readable"], "own", "{f}");
    let procs = f["data"]["processes"].as_array().unwrap();
    let mut others = 0;
    for p in procs {
        if p["user"].as_str() == Some(uid.to_string().as_str()) {
            assert!(p["written"].is_u64(), "its own io is readable: {p}");
        } else {
            others += 1;
            assert!(
                p["written"].is_null(),
                "another user's io is null, not 0: {p}"
            );
        }
    }
    assert!(others > 0, "no other user's process among {procs:?}");
    d.signal("TERM");
    assert_eq!(d.wait_exit(WAIT).and_then(|s| s.code()), Some(0));
}
