//! systemd units, through `systemctl`: every failed unit (its JSON output), the state of the
//! units named with `--unit` (`systemctl show`), and the manager's failed-unit count
//! (`NFailedUnits`, one property, for the `units_failed` alert metric and `/metrics`).
//!
//! Each reading runs `systemctl` as a child with a deadline and bounded output, on the
//! executor without blocking it (the child is killed if the reading is dropped). Without
//! systemd (a container, another init) every reading is "unavailable" with systemctl's reason.

use std::process::Stdio;
use std::time::Duration;

use serde::Serialize;
use smol::future::FutureExt;
use smol::io::AsyncReadExt;

/// How long one `systemctl` call may take (a busy manager on a slow card answers in well under
/// a second).
pub const DEADLINE: Duration = Duration::from_secs(10);
/// The most output read from one call; more is cut off (and then fails to parse).
const MAX_OUTPUT: u64 = 1 << 20;
/// Failed units listed at most (the count says how many there are).
pub const MAX_FAILED: usize = 100;
/// `--unit` names accepted at most.
pub const MAX_UNITS: usize = 32;

/// A failed unit, as `systemctl list-units --output=json` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Failed {
    /// Unit name (`backup.service`).
    pub unit: String,
    /// Load state (`loaded`, `not-found`, ...).
    #[serde(default)]
    pub load: String,
    /// Active state (`failed`).
    #[serde(default)]
    pub active: String,
    /// Sub-state (`failed`).
    #[serde(default)]
    pub sub: String,
    /// Its description.
    #[serde(default)]
    pub description: String,
}

/// A unit named with `--unit`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Unit {
    /// Unit name as systemd resolved it (`ssh.service` for `--unit ssh`).
    pub unit: String,
    /// Its description.
    pub description: String,
    /// Load state: `loaded`, or `not-found` for a unit that does not exist.
    pub load: String,
    /// Active state (`active`, `inactive`, `failed`, `activating`, ...).
    pub active: String,
    /// Sub-state (`running`, `exited`, `dead`, `auto-restart`, ...).
    pub sub: String,
    /// Automatic restarts since the unit was last started by hand (services only).
    pub restarts: Option<u64>,
    /// Unix ms of its last state change; `null` if it never changed.
    pub since: Option<u64>,
}

/// What the `services` topic and `units_failed` know.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Reading {
    /// systemd answered.
    Available {
        /// Always true.
        available: bool,
        /// Failed units, at most `MAX_FAILED`.
        failed: Vec<Failed>,
        /// How many units failed (may be more than listed).
        failed_count: usize,
        /// The `--unit` units, in the order given.
        units: Vec<Unit>,
    },
    /// It could not be asked.
    Unavailable {
        /// Always false.
        available: bool,
        /// Why, in systemctl's words where it gave some.
        reason: String,
    },
}

impl Reading {
    /// A reading that failed for `reason`.
    pub fn unavailable(reason: impl Into<String>) -> Reading {
        Reading::Unavailable {
            available: false,
            reason: reason.into(),
        }
    }
}

/// The failed-unit count for alerts and `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Count {
    /// Not read yet (the first reading comes right after start).
    #[default]
    NotRead,
    /// systemd cannot be asked, and why (a fixed phrase: it ends up in alert reasons).
    Unavailable(&'static str),
    /// Units in the `failed` state.
    Failed(u64),
}

/// Why a call failed, as a fixed phrase for alerts.
fn phrase(reason: &str) -> &'static str {
    if reason.contains("not found") && reason.starts_with("cannot run") {
        "systemctl not found"
    } else if reason.contains("booted with systemd") || reason.contains("connect to bus") {
        "systemd is not running"
    } else if reason.contains("timed out") {
        "systemctl timed out"
    } else {
        "systemctl failed"
    }
}

/// Whether `name` is a unit name `--unit` accepts: 1-256 of `A-Z a-z 0-9 : _ . @ \ -`, not
/// starting with `-` (so it can never read as an option).
pub fn valid_unit(name: &str) -> bool {
    // SECURITY: the name reaches systemctl as one argument after `--`; the alphabet is systemd's
    // own for unit names, so nothing else can pass.
    !name.is_empty()
        && name.len() <= 256
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b":_.@\\-".contains(&b))
}

/// Runs `systemctl ARGS`: its standard output, or why not (the first line of its error).
/// Boxed, so that its state machine is compiled once for every caller (the binary's budget).
type Answer<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<String, String>> + Send + 'a>>;

fn systemctl<'a>(args: &'a [&'a str]) -> Answer<'a> {
    Box::pin(systemctl_inner(args))
}

async fn systemctl_inner(args: &[&str]) -> Result<String, String> {
    let run = async {
        let mut cmd = std::process::Command::new("systemctl");
        crate::notify::child_env(&mut cmd)
            .args(args)
            .env("SYSTEMD_COLORS", "0")
            .env("SYSTEMD_PAGER", "")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Killed (and reaped) if dropped: on the deadline below.
        let mut child = crate::child::spawn(&mut cmd).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => "cannot run systemctl: not found".to_string(),
            _ => format!("cannot run systemctl: {e}"),
        })?;
        let mut out = Vec::new();
        let mut err = Vec::new();
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let read_out = async {
            let _ = stdout.take(MAX_OUTPUT).read_to_end(&mut out).await;
        };
        let read_err = async {
            let _ = stderr.take(4096).read_to_end(&mut err).await;
        };
        smol::future::zip(read_out, read_err).await;
        let status = child
            .status()
            .await
            .map_err(|e| format!("systemctl: {e}"))?;
        if status.success() {
            return Ok(String::from_utf8_lossy(&out).into_owned());
        }
        let err = String::from_utf8_lossy(&err);
        let first = err.lines().map(str::trim).find(|l| !l.is_empty());
        Err(match first {
            Some(line) => line.to_string(),
            None => format!("systemctl exited with {status}"),
        })
    };
    run.or(async {
        smol::Timer::after(DEADLINE).await;
        Err(format!(
            "systemctl timed out after {} s",
            DEADLINE.as_secs()
        ))
    })
    .await
}

/// The failed units from `systemctl list-units --output=json`.
pub fn parse_failed(json: &str) -> Result<Vec<Failed>, String> {
    serde_json::from_str::<Vec<Failed>>(json)
        .map_err(|e| format!("systemctl list-units gave no unit list: {e}"))
}

/// The units of `systemctl show -p … UNIT…` (`Key=value` lines, a blank line between units;
/// timestamps as `@SECONDS` with `--timestamp=unix`).
pub fn parse_show(text: &str) -> Vec<Unit> {
    let mut units = Vec::new();
    for block in text.split("\n\n") {
        let mut u = Unit::default();
        let mut any = false;
        for line in block.lines() {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            any = true;
            match k {
                "Id" => u.unit = v.to_string(),
                "Description" => u.description = v.to_string(),
                "LoadState" => u.load = v.to_string(),
                "ActiveState" => u.active = v.to_string(),
                "SubState" => u.sub = v.to_string(),
                "NRestarts" => u.restarts = v.parse().ok(),
                "StateChangeTimestamp" => {
                    u.since = v
                        .strip_prefix('@')
                        .and_then(|s| s.parse::<u64>().ok())
                        .filter(|s| *s > 0)
                        .map(|s| s * 1000);
                }
                _ => {}
            }
        }
        if any {
            units.push(u);
        }
    }
    units
}

/// `NFailedUnits=N` from `systemctl show -p NFailedUnits`.
pub fn parse_count(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("NFailedUnits="))
        .and_then(|n| n.trim().parse().ok())
}

/// The `services` topic's data: every failed unit and the `--unit` units.
pub async fn read(units: &[String]) -> Reading {
    let failed = match systemctl(&[
        "list-units",
        "--state=failed",
        "--all",
        "--no-pager",
        "--output=json",
    ])
    .await
    .and_then(|out| parse_failed(&out))
    {
        Ok(f) => f,
        Err(why) => return Reading::unavailable(why),
    };
    let named = if units.is_empty() {
        Vec::new()
    } else {
        let mut args = vec![
            "show",
            "--no-pager",
            "--timestamp=unix",
            "-p",
            "Id,Description,LoadState,ActiveState,SubState,NRestarts,StateChangeTimestamp",
            "--",
        ];
        args.extend(units.iter().map(String::as_str));
        match systemctl(&args).await {
            Ok(out) => parse_show(&out),
            Err(why) => return Reading::unavailable(why),
        }
    };
    let failed_count = failed.len();
    let mut failed = failed;
    failed.truncate(MAX_FAILED);
    Reading::Available {
        available: true,
        failed,
        failed_count,
        units: named,
    }
}

/// The count of a reading (the topic's reading refreshes the alert metric too).
pub fn count_of(r: &Reading) -> Count {
    match r {
        Reading::Available { failed_count, .. } => Count::Failed(*failed_count as u64),
        Reading::Unavailable { reason, .. } => Count::Unavailable(phrase(reason)),
    }
}

/// What to do about `why`, for the log, where systemctl's own words do not say it.
pub fn hint(why: &str) -> &'static str {
    // dbus-daemon drops a client whose uid it cannot resolve, and systemd starts it unable to
    // resolve dynamic users (SYSTEMD_NSS_DYNAMIC_BYPASS=1): a `DynamicUser=yes` unit without a
    // static user of its name (packaging/edgemon.sysusers) reads this.
    if why.contains("Transport endpoint is not connected") {
        " (the system bus dropped the daemon's connection: under DynamicUser=yes it needs a \
         static user of the unit's name, as /usr/lib/sysusers.d/edgemon.conf makes)"
    } else {
        ""
    }
}

/// Where systemd marks a host it booted (sd_booted(3) checks the same): without it, systemctl
/// can only fail.
pub const BOOTED_MARK: &str = "/run/systemd/system";

/// The manager's failed-unit count: one property, cheap enough to ask every 30 s. On a host
/// systemd did not boot, no `systemctl` is run at all (a stat instead of a process every 30 s).
pub async fn failed_count() -> (Count, Option<String>) {
    if !std::path::Path::new(BOOTED_MARK).is_dir() {
        return (
            Count::Unavailable("systemd is not running"),
            Some(format!("systemd is not running (no {BOOTED_MARK})")),
        );
    }
    match systemctl(&["show", "--no-pager", "-p", "NFailedUnits"]).await {
        Ok(out) => match parse_count(&out) {
            Some(n) => (Count::Failed(n), None),
            None => (
                Count::Unavailable("systemctl failed"),
                Some("systemctl show gave no NFailedUnits".into()),
            ),
        },
        Err(why) => (Count::Unavailable(phrase(&why)), Some(why)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_names_keep_to_systemds_alphabet() {
        for ok in [
            "ssh",
            "ssh.service",
            "getty@tty1.service",
            "dev-disk-by\\x2duuid.swap",
            "a:b_c",
        ] {
            assert!(valid_unit(ok), "{ok}");
        }
        for bad in [
            "",
            "-H",
            "--all",
            "a b",
            "a;b",
            "a/b",
            "ä",
            &"x".repeat(257),
        ] {
            assert!(!valid_unit(bad), "{bad}");
        }
    }

    #[test]
    fn show_output_is_read_unit_by_unit() {
        // tests/fixtures/boards/systemd: the first lines of a real `systemctl show` (Debian,
        // systemd 241, ssh.service restarting), which carries NRestarts.
        let real =
            include_str!("../tests/fixtures/boards/systemd/show-ssh-service-nrestarts.partial");
        let u = parse_show(real);
        assert_eq!(u.len(), 1);
        assert_eq!(u[0].restarts, Some(5));
        let two = "Id=ssh.service\nDescription=OpenBSD Secure Shell server\nLoadState=loaded\n\
                   ActiveState=active\nSubState=running\nNRestarts=0\nStateChangeTimestamp=@1764770000\n\n\
                   Id=nope.service\nDescription=nope.service\nLoadState=not-found\nActiveState=inactive\n\
                   SubState=dead\nNRestarts=0\nStateChangeTimestamp=\n";
        let u = parse_show(two);
        assert_eq!(u.len(), 2);
        assert_eq!(
            u[0],
            Unit {
                unit: "ssh.service".into(),
                description: "OpenBSD Secure Shell server".into(),
                load: "loaded".into(),
                active: "active".into(),
                sub: "running".into(),
                restarts: Some(0),
                since: Some(1_764_770_000_000),
            }
        );
        assert_eq!((u[1].load.as_str(), u[1].since), ("not-found", None));
    }

    #[test]
    fn what_systemd_252_printed_is_read() {
        // tests/fixtures/systemd-252/SOURCES.md: recorded from a booted systemd 252.
        let units = parse_show(include_str!("../tests/fixtures/systemd-252/show.txt"));
        let got: Vec<_> = units
            .iter()
            .map(|u| (u.unit.as_str(), u.active.as_str(), u.restarts, u.since))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "systemd-journald.service",
                    "active",
                    Some(0),
                    Some(1_796_592_976_000)
                ),
                (
                    "uploader.service",
                    "active",
                    Some(4),
                    Some(1_796_593_003_000)
                ),
                ("nope.service", "inactive", Some(0), None),
            ]
        );
        let failed = parse_failed(include_str!("../tests/fixtures/systemd-252/failed.json"));
        assert_eq!(failed.map(|f| f.len()), Ok(2));
        assert_eq!(
            parse_count(include_str!("../tests/fixtures/systemd-252/count.txt")),
            Some(2)
        );
        assert_eq!(parse_failed("[]\n").map(|f| f.len()), Ok(0));
    }

    #[test]
    fn a_refused_bus_gets_a_hint_and_nothing_else_does() {
        assert!(
            hint("Failed to get properties: Transport endpoint is not connected")
                .contains("sysusers.d")
        );
        assert_eq!(hint("systemd is not running (no /run/systemd/system)"), "");
    }

    #[test]
    fn failed_lists_and_counts_parse_and_garbage_is_an_error() {
        let f = parse_failed(
            r#"[{"unit":"backup.service","load":"loaded","active":"failed","sub":"failed","description":"Nightly backup"}]"#,
        )
        .unwrap();
        assert_eq!(f[0].unit, "backup.service");
        assert_eq!(parse_failed("[]").unwrap(), []);
        assert!(parse_failed("UNIT LOAD ACTIVE SUB\n").is_err());
        assert_eq!(parse_count("NFailedUnits=3\n"), Some(3));
        assert_eq!(parse_count("Version=252\n"), None);
    }

    #[test]
    fn reasons_become_fixed_phrases_for_alerts() {
        let r = Reading::unavailable(
            "System has not been booted with systemd as init system (PID 1). Can't operate.",
        );
        assert_eq!(count_of(&r), Count::Unavailable("systemd is not running"));
        assert_eq!(
            phrase("cannot run systemctl: not found"),
            "systemctl not found"
        );
        assert_eq!(phrase("Access denied"), "systemctl failed");
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(j["available"], false);
        assert!(
            j["reason"]
                .as_str()
                .unwrap()
                .contains("booted with systemd")
        );
    }
}
