//! Alerts: rules over the figures the sampler already takes, evaluated on the sampler thread with
//! every sample (never on the executor), per instance (each sensor, each disk).
//!
//! A rule is `NAME: METRIC OP VALUE [for DUR] [info|warning|critical]` (DESIGN.md). It fires when
//! its condition has held for `for` (at once without one) and resolves when the condition has been
//! false for max(`for`, 30 s), so a value hovering at the threshold fires once instead of flapping.
//! A metric this host cannot read (no Pi, no sensor) makes the rule `unavailable`, not an error.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::collect::SystemData;
use crate::duration::parse_duration;

/// The shortest time a condition must be false before its alert resolves.
pub const MIN_RESOLVE: Duration = Duration::from_secs(30);
/// How far back `oom_kills` counts, and how long `reboot` and `daemon_restart` stay 1.
pub const EVENT_WINDOW_MS: u64 = 600_000;
/// Resolved alerts kept for `GET /api/alerts`.
pub const RESOLVED_KEPT: usize = 20;
/// Instances (sensors, disks) tracked per rule; more are ignored.
pub const MAX_TARGETS: usize = 32;
/// Rules at most (`--alert` and the defaults together).
pub const MAX_RULES: usize = 64;

/// The rules on out of the box (DESIGN.md); an `--alert` with the same name replaces one.
pub const DEFAULTS: [&str; 6] = [
    "under_voltage: pi_under_voltage == 1 critical",
    "throttled: pi_throttled == 1 warning",
    "hot: temp_max >= 80 for 1m warning",
    "disk_full: disk_used_pct >= 90 for 5m warning",
    "memory_low: memory_available_pct <= 5 for 2m critical",
    "failed_units: units_failed > 0 for 1m warning",
];

/// What a rule compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// CPU use of all cores, %.
    Cpu,
    /// Memory available, % of total.
    MemoryAvailablePct,
    /// Swap in use, % of total.
    SwapUsedPct,
    /// The 1 min load average divided by the cores.
    LoadPerCore,
    /// Each temperature sensor, °C.
    TempMax,
    /// Each mounted disk, % used.
    DiskUsedPct,
    /// The Pi's under-voltage flag now (0 or 1).
    PiUnderVoltage,
    /// The Pi's throttling flag now.
    PiThrottled,
    /// The Pi's frequency-capping flag now.
    PiFreqCapped,
    /// The Pi's soft temperature limit flag now.
    PiSoftTempLimit,
    /// Failed systemd units.
    UnitsFailed,
    /// OOM kills in the last 10 minutes.
    OomKills,
    /// 1 for 10 minutes after the host booted.
    Reboot,
    /// 1 for 10 minutes after a start whose previous run did not stop cleanly.
    DaemonRestart,
}

const METRICS: [(&str, Metric); 14] = [
    ("cpu", Metric::Cpu),
    ("memory_available_pct", Metric::MemoryAvailablePct),
    ("swap_used_pct", Metric::SwapUsedPct),
    ("load_per_core", Metric::LoadPerCore),
    ("temp_max", Metric::TempMax),
    ("disk_used_pct", Metric::DiskUsedPct),
    ("pi_under_voltage", Metric::PiUnderVoltage),
    ("pi_throttled", Metric::PiThrottled),
    ("pi_freq_capped", Metric::PiFreqCapped),
    ("pi_soft_temp_limit", Metric::PiSoftTempLimit),
    ("units_failed", Metric::UnitsFailed),
    ("oom_kills", Metric::OomKills),
    ("reboot", Metric::Reboot),
    ("daemon_restart", Metric::DaemonRestart),
];

impl Metric {
    /// Its name in rules.
    pub fn name(self) -> &'static str {
        METRICS
            .iter()
            .find(|(_, m)| *m == self)
            .map_or("", |(n, _)| n)
    }
}

/// A comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

const OPS: [(&str, Op); 6] = [
    (">=", Op::Ge),
    ("<=", Op::Le),
    ("==", Op::Eq),
    ("!=", Op::Ne),
    (">", Op::Gt),
    ("<", Op::Lt),
];

impl Op {
    /// As written in rules.
    pub fn symbol(self) -> &'static str {
        OPS.iter().find(|(_, o)| *o == self).map_or("", |(s, _)| s)
    }

    /// Whether `value OP threshold` holds.
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Op::Gt => value > threshold,
            Op::Ge => value >= threshold,
            Op::Lt => value < threshold,
            Op::Le => value <= threshold,
            Op::Eq => value == threshold,
            Op::Ne => value != threshold,
        }
    }
}

/// How bad a firing alert is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// For the record.
    Info,
    /// Look at it soon (the default).
    Warning,
    /// Act now.
    Critical,
}

impl Severity {
    /// As written in rules.
    pub fn name(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// One parsed rule.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    /// Its name (letters, digits, `_`, `-`).
    pub name: String,
    /// What it compares.
    pub metric: Metric,
    /// How.
    pub op: Op,
    /// With what.
    pub threshold: f64,
    /// How long the condition must hold before it fires (`for`).
    pub hold: Duration,
    /// How bad it is.
    pub severity: Severity,
}

impl fmt::Display for Rule {
    /// The rule as it would be written, without its name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {}",
            self.metric.name(),
            self.op.symbol(),
            self.threshold
        )?;
        if !self.hold.is_zero() {
            write!(f, " for {}", human(self.hold))?;
        }
        write!(f, " {}", self.severity.name())
    }
}

/// `90s` as `90s`, `120s` as `2m`, `3600s` as `1h`.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    if d.subsec_millis() != 0 {
        format!("{}ms", d.as_millis())
    } else if s % 3600 == 0 {
        format!("{}h", s / 3600)
    } else if s % 60 == 0 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// Parses one rule; the error says what is wrong (the caller names the rule and the flag).
pub fn parse(text: &str) -> Result<Rule, String> {
    const SHAPE: &str = "expected NAME: METRIC OP VALUE [for DUR] [info|warning|critical]";
    let (name, rest) = text.split_once(':').ok_or_else(|| SHAPE.to_string())?;
    let name = name.trim();
    if name.is_empty()
        || name.len() > 32
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(format!(
            "'{name}' is not a rule name (1 to 32 letters, digits, _ or -)"
        ));
    }
    let rest = rest.trim_start();
    // METRIC, then OP (spaces around it optional), then the rest in words.
    let m_end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    let (metric, rest) = rest.split_at(m_end);
    if metric.is_empty() {
        return Err(SHAPE.to_string());
    }
    let metric = METRICS
        .iter()
        .find(|(n, _)| *n == metric)
        .map(|(_, m)| *m)
        .ok_or_else(|| {
            let all: Vec<&str> = METRICS.iter().map(|(n, _)| *n).collect();
            format!("unknown metric '{metric}' (one of {})", all.join(", "))
        })?;
    let rest = rest.trim_start();
    let o_end = rest
        .find(|c: char| !matches!(c, '<' | '>' | '=' | '!'))
        .unwrap_or(rest.len());
    let (op, rest) = rest.split_at(o_end);
    let op = OPS
        .iter()
        .find(|(s, _)| *s == op)
        .map(|(_, o)| *o)
        .ok_or_else(|| {
            if op.is_empty() {
                format!(
                    "no operator after '{}' (one of > >= < <= == !=)",
                    metric.name()
                )
            } else {
                format!("'{op}' is not an operator (one of > >= < <= == !=)")
            }
        })?;
    let mut words = rest.split_whitespace();
    let value = words
        .next()
        .ok_or_else(|| format!("no value after '{}'", op.symbol()))?;
    let threshold: f64 = value
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite())
        .ok_or_else(|| format!("'{value}' is not a number"))?;
    let mut hold = Duration::ZERO;
    let mut severity = None;
    while let Some(w) = words.next() {
        match w {
            "for" if hold.is_zero() && severity.is_none() => {
                let d = words
                    .next()
                    .ok_or_else(|| "no duration after 'for'".to_string())?;
                hold = parse_duration(d)?;
                if hold > Duration::from_secs(24 * 3600) {
                    return Err(format!("'for {d}' is longer than 24h"));
                }
            }
            "info" | "warning" | "critical" if severity.is_none() => {
                severity = Some(match w {
                    "info" => Severity::Info,
                    "warning" => Severity::Warning,
                    _ => Severity::Critical,
                });
            }
            other if severity.is_none() && !other.contains(|c: char| c.is_ascii_digit()) => {
                return Err(format!(
                    "'{other}' is not a severity (info, warning or critical) nor 'for DUR'"
                ));
            }
            other => return Err(format!("unexpected '{other}' at the end ({SHAPE})")),
        }
    }
    Ok(Rule {
        name: name.to_string(),
        metric,
        op,
        threshold,
        hold,
        severity: severity.unwrap_or(Severity::Warning),
    })
}

/// The rules in force: the defaults (unless `defaults` is false), each replaced by a given rule of
/// the same name, then the other given rules in order. The error is `(rule text, what is wrong)`.
pub fn rule_set(given: &[String], defaults: bool) -> Result<Vec<Rule>, (String, String)> {
    let mut rules: Vec<Rule> = if defaults {
        DEFAULTS
            .iter()
            .map(|d| parse(d).expect("the defaults parse"))
            .collect()
    } else {
        Vec::new()
    };
    let mut seen: Vec<String> = Vec::new();
    for text in given {
        let rule = parse(text).map_err(|why| (text.clone(), why))?;
        if seen.contains(&rule.name) {
            return Err((
                text.clone(),
                format!("rule name '{}' is given twice", rule.name),
            ));
        }
        seen.push(rule.name.clone());
        match rules.iter_mut().find(|r| r.name == rule.name) {
            Some(r) => *r = rule,
            None => rules.push(rule),
        }
    }
    if rules.len() > MAX_RULES {
        return Err((
            given.last().cloned().unwrap_or_default(),
            format!("at most {MAX_RULES} rules"),
        ));
    }
    Ok(rules)
}

/// A rule's state for one instance, as shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// The condition does not hold (or not for long enough to be pending yet).
    Ok,
    /// The condition holds, not yet for `for`.
    Pending,
    /// Fired, not resolved.
    Firing,
    /// The metric cannot be read on this host.
    Unavailable,
}

/// One instance of one rule.
#[derive(Clone, Debug)]
struct Track {
    /// The sensor or mount; `None` for a host-wide metric.
    target: Option<String>,
    state: State,
    /// Pending or firing since (unix ms).
    since: u64,
    /// Firing, and the condition false since (unix ms).
    false_since: Option<u64>,
    /// The last value read.
    value: f64,
}

/// A firing alert instance as kept in the snapshot: (rule name, target, firing since).
pub type Firing = (String, Option<String>, u64);

/// What changed in a step: an alert fired or resolved.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Change {
    /// The rule's name.
    pub alert: String,
    /// `firing` or `resolved`.
    pub state: &'static str,
    /// The rule's severity.
    pub severity: Severity,
    /// The instance, if the metric has several.
    pub target: Option<String>,
    /// The value that made the change.
    pub value: f64,
    /// The rule's threshold.
    pub threshold: f64,
    /// The rule's operator.
    pub op: &'static str,
    /// Firing since (unix ms).
    pub since: u64,
    /// The rule without its name.
    pub rule: String,
}

impl Change {
    /// A line for a person (events, logs).
    pub fn text(&self) -> String {
        let on = self
            .target
            .as_deref()
            .map(|t| format!(" on {t}"))
            .unwrap_or_default();
        let v = round(self.value);
        match self.state {
            "firing" => format!(
                "alert {} ({}) firing{on}: {v} ({})",
                self.alert,
                self.severity.name(),
                self.rule
            ),
            _ => format!(
                "alert {} ({}) resolved{on}: {v} ({})",
                self.alert,
                self.severity.name(),
                self.rule
            ),
        }
    }
}

/// Two decimals at most, for people and JSON.
fn round(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// A resolved alert, kept for a while.
#[derive(Clone, Debug, Serialize)]
struct Resolved {
    name: String,
    severity: Severity,
    target: Option<String>,
    since: u64,
    resolved: u64,
    value: f64,
}

/// A rule and its instances.
struct Watch {
    rule: Rule,
    tracks: Vec<Track>,
    /// Why the metric cannot be read, when it cannot.
    unavailable: Option<&'static str>,
}

/// What one sample gives a metric.
enum Reading {
    /// Not measured in this sample (details are read every 10 s while nobody watches): keep the
    /// state as it is.
    Skip,
    /// This host cannot read it.
    Unavailable(&'static str),
    /// Its instances and values.
    Values(Vec<(Option<String>, f64)>),
}

/// What the evaluator needs besides the sample.
#[derive(Clone, Copy, Debug, Default)]
pub struct Context {
    /// Unix ms of the sample.
    pub ts: u64,
    /// The kernel's OOM kill count (`None`: the kernel does not count them).
    pub oom_total: Option<u64>,
    /// Failed systemd units, as last counted.
    pub units_failed: crate::services::Count,
}

/// Every rule's state; fed one sample at a time.
pub struct Alerts {
    watches: Vec<Watch>,
    resolved: VecDeque<Resolved>,
    /// OOM kills seen (unix ms, count) in the last `EVENT_WINDOW_MS`.
    oom_window: VecDeque<(u64, u64)>,
    oom_last: Option<u64>,
    /// Until when `daemon_restart` is 1 (unix ms); 0 if the previous run stopped cleanly.
    restart_until: u64,
    /// Rises whenever a state (not only a value) changes, for the `alerts` topic.
    version: u64,
    /// How long a condition must be false before a firing alert resolves, at least (the rule's
    /// `for` if longer); `MIN_RESOLVE` but in tests.
    min_resolve: Duration,
}

impl Alerts {
    /// The evaluator for `rules`; `unclean_start_ms` is when the daemon started if its previous
    /// run did not stop cleanly; `min_resolve` is `MIN_RESOLVE` but in tests.
    pub fn new(rules: Vec<Rule>, unclean_start_ms: Option<u64>, min_resolve: Duration) -> Alerts {
        Alerts {
            watches: rules
                .into_iter()
                .map(|rule| Watch {
                    rule,
                    tracks: Vec::new(),
                    unavailable: None,
                })
                .collect(),
            resolved: VecDeque::new(),
            oom_window: VecDeque::new(),
            oom_last: None,
            restart_until: unclean_start_ms.map_or(0, |t| t + EVENT_WINDOW_MS),
            version: 0,
            min_resolve,
        }
    }

    /// Rises whenever a rule's state changes.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Evaluates every rule on one sample; what fired or resolved.
    pub fn step(&mut self, d: &SystemData, cx: &Context) -> Vec<Change> {
        self.count_ooms(cx);
        let mut changes = Vec::new();
        let oom_recent: u64 = self.oom_window.iter().map(|(_, n)| n).sum();
        let restart = cx.ts < self.restart_until;
        for w in &mut self.watches {
            let reading = read(w.rule.metric, d, cx, oom_recent, restart);
            let before: Vec<State> = w.tracks.iter().map(|t| t.state).collect();
            let was_unavailable = w.unavailable.is_some();
            match reading {
                Reading::Skip => continue,
                Reading::Unavailable(why) => {
                    w.unavailable = Some(why);
                    for t in w.tracks.drain(..) {
                        if t.state == State::Firing {
                            changes.push(change(&w.rule, &t, "resolved"));
                            remember(&mut self.resolved, &w.rule, &t, cx.ts);
                        }
                    }
                }
                Reading::Values(values) => {
                    w.unavailable = None;
                    // An instance gone (a disk unmounted): resolved if it was firing, forgotten.
                    let mut kept = Vec::with_capacity(values.len());
                    for (target, value) in values.into_iter().take(MAX_TARGETS) {
                        let mut t = match w.tracks.iter().position(|t| t.target == target) {
                            Some(i) => w.tracks.swap_remove(i),
                            None => Track {
                                target,
                                state: State::Ok,
                                since: cx.ts,
                                false_since: None,
                                value,
                            },
                        };
                        t.value = value;
                        if let Some(s) = advance(&w.rule, &mut t, cx.ts, self.min_resolve) {
                            changes.push(change(&w.rule, &t, s));
                            if s == "resolved" {
                                remember(&mut self.resolved, &w.rule, &t, cx.ts);
                            }
                        }
                        kept.push(t);
                    }
                    for t in w.tracks.drain(..) {
                        if t.state == State::Firing {
                            changes.push(change(&w.rule, &t, "resolved"));
                            remember(&mut self.resolved, &w.rule, &t, cx.ts);
                        }
                    }
                    w.tracks = kept;
                }
            }
            let after: Vec<State> = w.tracks.iter().map(|t| t.state).collect();
            if before != after || was_unavailable != w.unavailable.is_some() {
                self.version += 1;
            }
        }
        changes
    }

    fn count_ooms(&mut self, cx: &Context) {
        if let Some(n) = cx.oom_total {
            if let Some(before) = self.oom_last
                && n > before
            {
                self.oom_window.push_back((cx.ts, n - before));
            }
            self.oom_last = Some(n);
        }
        while self
            .oom_window
            .front()
            .is_some_and(|(t, _)| cx.ts.saturating_sub(*t) > EVENT_WINDOW_MS)
        {
            self.oom_window.pop_front();
        }
    }

    /// `{"alerts":[…],"resolved":[…]}`: every rule and instance with its state (a rule not
    /// read yet, or with no instance now, is one entry without a target), and the recently
    /// resolved, newest first.
    pub fn to_json(&self) -> serde_json::Value {
        let mut list = Vec::new();
        for w in &self.watches {
            let r = &w.rule;
            let base =
                |state: State, target: Option<&str>, value: Option<f64>, since: Option<u64>| {
                    serde_json::json!({
                        "name": r.name, "metric": r.metric.name(), "op": r.op.symbol(),
                        "threshold": r.threshold, "for_s": r.hold.as_secs(), "severity": r.severity,
                        "rule": r.to_string(), "state": state, "target": target,
                        "value": value.map(round), "since": since,
                        "reason": w.unavailable,
                    })
                };
            if w.unavailable.is_some() {
                list.push(base(State::Unavailable, None, None, None));
            } else if w.tracks.is_empty() {
                list.push(base(State::Ok, None, None, None));
            } else {
                for t in &w.tracks {
                    let since = (t.state != State::Ok).then_some(t.since);
                    list.push(base(t.state, t.target.as_deref(), Some(t.value), since));
                }
            }
        }
        let resolved: Vec<&Resolved> = self.resolved.iter().rev().collect();
        serde_json::json!({ "alerts": list, "resolved": resolved })
    }

    /// The instances firing now, for the snapshot: a restart restores them as firing (and
    /// notified), so it neither notifies them again nor forgets to notify their resolve.
    pub fn firing_now(&self) -> Vec<Firing> {
        self.watches
            .iter()
            .flat_map(|w| {
                w.tracks
                    .iter()
                    .filter(|t| t.state == State::Firing)
                    .map(|t| (w.rule.name.clone(), t.target.clone(), t.since))
            })
            .collect()
    }

    /// Marks what a snapshot says was firing as firing again (rules still configured only).
    pub fn restore(&mut self, firing: &[Firing]) {
        for (name, target, since) in firing {
            let Some(w) = self.watches.iter_mut().find(|w| &w.rule.name == name) else {
                continue;
            };
            if w.tracks.len() < MAX_TARGETS && !w.tracks.iter().any(|t| &t.target == target) {
                w.tracks.push(Track {
                    target: target.clone(),
                    state: State::Firing,
                    since: *since,
                    false_since: None,
                    value: w.rule.threshold,
                });
                self.version += 1;
            }
        }
    }

    /// `(name, severity, target, firing)` of every instance, for `/metrics`.
    pub fn firing(&self) -> Vec<(String, &'static str, String, bool)> {
        self.watches
            .iter()
            .flat_map(|w| {
                w.tracks.iter().map(|t| {
                    (
                        w.rule.name.clone(),
                        w.rule.severity.name(),
                        t.target.clone().unwrap_or_default(),
                        t.state == State::Firing,
                    )
                })
            })
            .collect()
    }
}

/// Moves one instance on; `Some("firing")` or `Some("resolved")` when that happened.
fn advance(rule: &Rule, t: &mut Track, now: u64, min_resolve: Duration) -> Option<&'static str> {
    let holds = rule.op.holds(t.value, rule.threshold);
    let hold_ms = rule.hold.as_millis() as u64;
    let resolve_ms = rule.hold.max(min_resolve).as_millis() as u64;
    match t.state {
        State::Ok | State::Unavailable if holds => {
            t.since = now;
            if hold_ms == 0 {
                t.state = State::Firing;
                t.false_since = None;
                return Some("firing");
            }
            t.state = State::Pending;
        }
        State::Ok | State::Unavailable => t.state = State::Ok,
        State::Pending if holds => {
            if now.saturating_sub(t.since) >= hold_ms {
                t.state = State::Firing;
                t.since = now;
                t.false_since = None;
                return Some("firing");
            }
        }
        State::Pending => t.state = State::Ok,
        State::Firing if holds => t.false_since = None,
        State::Firing => {
            let since = *t.false_since.get_or_insert(now);
            if now.saturating_sub(since) >= resolve_ms {
                t.state = State::Ok;
                t.false_since = None;
                return Some("resolved");
            }
        }
    }
    None
}

fn change(rule: &Rule, t: &Track, state: &'static str) -> Change {
    Change {
        alert: rule.name.clone(),
        state,
        severity: rule.severity,
        target: t.target.clone(),
        value: round(t.value),
        threshold: rule.threshold,
        op: rule.op.symbol(),
        since: t.since,
        rule: rule.to_string(),
    }
}

fn remember(resolved: &mut VecDeque<Resolved>, rule: &Rule, t: &Track, now: u64) {
    if resolved.len() == RESOLVED_KEPT {
        resolved.pop_front();
    }
    resolved.push_back(Resolved {
        name: rule.name.clone(),
        severity: rule.severity,
        target: t.target.clone(),
        since: t.since,
        resolved: now,
        value: round(t.value),
    });
}

/// A metric's values in one sample.
fn read(m: Metric, d: &SystemData, cx: &Context, oom_recent: u64, restart: bool) -> Reading {
    let one = |v: f64| Reading::Values(vec![(None, v)]);
    let flag = |f: fn(&crate::collect::pi::PiHealth) -> Option<bool>| {
        if !d.has_details() {
            Reading::Skip
        } else {
            match d.pi.as_ref().map(f) {
                Some(Some(v)) => one(f64::from(u8::from(v))),
                Some(None) => Reading::Unavailable(
                    "this Pi's throttle source (hwmon) reads only under-voltage; see the README's Raspberry Pi",
                ),
                None => Reading::Unavailable("no Raspberry Pi throttle source on this host"),
            }
        }
    };
    match m {
        Metric::Cpu => one(f64::from(d.cpu.total)),
        Metric::MemoryAvailablePct if d.memory.total > 0 => {
            one(100.0 * d.memory.available as f64 / d.memory.total as f64)
        }
        Metric::MemoryAvailablePct => Reading::Unavailable("memory size unknown"),
        Metric::SwapUsedPct if d.swap.total > 0 => {
            one(100.0 * d.swap.used as f64 / d.swap.total as f64)
        }
        Metric::SwapUsedPct => Reading::Unavailable("no swap"),
        Metric::LoadPerCore => match &d.load {
            Some(l) if !d.cpu.cores.is_empty() => one(l.one / d.cpu.cores.len() as f64),
            _ => Reading::Unavailable("no load average"),
        },
        Metric::TempMax => match &d.temperatures {
            None => Reading::Skip,
            Some(t) if t.is_empty() => Reading::Unavailable("no temperature sensors"),
            Some(t) => Reading::Values(
                crate::collect::unique(t.iter().map(|s| s.label.as_str()))
                    .into_iter()
                    .zip(t)
                    .map(|(label, s)| (Some(label), f64::from(s.celsius)))
                    .collect(),
            ),
        },
        Metric::DiskUsedPct => match &d.disks {
            None if !d.has_details() => Reading::Skip,
            None => Reading::Unavailable("no disks"),
            Some(v) if v.is_empty() => Reading::Unavailable("no disks"),
            Some(v) => Reading::Values(
                v.iter()
                    .filter(|x| x.total > 0)
                    .map(|x| {
                        let used = x.total.saturating_sub(x.available);
                        (Some(x.mount.clone()), 100.0 * used as f64 / x.total as f64)
                    })
                    .collect(),
            ),
        },
        Metric::PiUnderVoltage => flag(|p| p.under_voltage.now),
        Metric::PiThrottled => flag(|p| p.throttled.now),
        Metric::PiFreqCapped => flag(|p| p.freq_capped.now),
        Metric::PiSoftTempLimit => flag(|p| p.soft_temp_limit.now),
        Metric::UnitsFailed => match cx.units_failed {
            crate::services::Count::Failed(n) => one(n as f64),
            crate::services::Count::Unavailable(why) => Reading::Unavailable(why),
            crate::services::Count::NotRead => Reading::Skip,
        },
        Metric::OomKills if cx.oom_total.is_none() => {
            Reading::Unavailable("the kernel does not count OOM kills")
        }
        Metric::OomKills => one(oom_recent as f64),
        Metric::Reboot => match d.uptime {
            Some(u) => one(f64::from(u8::from(u * 1000 < EVENT_WINDOW_MS))),
            None => Reading::Unavailable("uptime unknown"),
        },
        Metric::DaemonRestart => one(f64::from(u8::from(restart))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::disk::Disk;
    use crate::collect::{pi, thermal};
    use std::path::{Path, PathBuf};

    #[test]
    fn rules_parse_or_say_what_is_wrong() {
        let w = Severity::Warning;
        let good: [(&str, &str, Metric, Op, f64, u64, Severity); 9] = [
            (
                "hot: temp_max >= 80 for 1m warning",
                "hot",
                Metric::TempMax,
                Op::Ge,
                80.0,
                60,
                w,
            ),
            ("x:cpu>90", "x", Metric::Cpu, Op::Gt, 90.0, 0, w),
            (
                "disk-2: disk_used_pct>=95.5 for 90s critical",
                "disk-2",
                Metric::DiskUsedPct,
                Op::Ge,
                95.5,
                90,
                Severity::Critical,
            ),
            (
                "uv: pi_under_voltage == 1 critical",
                "uv",
                Metric::PiUnderVoltage,
                Op::Eq,
                1.0,
                0,
                Severity::Critical,
            ),
            (
                "l: load_per_core != 0.5",
                "l",
                Metric::LoadPerCore,
                Op::Ne,
                0.5,
                0,
                w,
            ),
            (
                "m: memory_available_pct <= 5 for 2m",
                "m",
                Metric::MemoryAvailablePct,
                Op::Le,
                5.0,
                120,
                w,
            ),
            (
                "s: swap_used_pct < 1 info",
                "s",
                Metric::SwapUsedPct,
                Op::Lt,
                1.0,
                0,
                Severity::Info,
            ),
            (
                "o: oom_kills > 0 for 1h",
                "o",
                Metric::OomKills,
                Op::Gt,
                0.0,
                3600,
                w,
            ),
            (
                "  r :  reboot == 1  info ",
                "r",
                Metric::Reboot,
                Op::Eq,
                1.0,
                0,
                Severity::Info,
            ),
        ];
        for (text, name, metric, op, threshold, hold, severity) in good {
            let r = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(
                (
                    r.name.as_str(),
                    r.metric,
                    r.op,
                    r.threshold,
                    r.hold.as_secs(),
                    r.severity
                ),
                (name, metric, op, threshold, hold, severity),
                "{text}"
            );
            // What the daemon shows reads back as the same rule.
            assert_eq!(
                parse(&format!("{name}: {r}")).unwrap(),
                r,
                "{text} shown as {r}"
            );
        }
        let bad = [
            (
                "cpu > 90",
                "expected NAME: METRIC OP VALUE [for DUR] [info|warning|critical]",
            ),
            (
                ": cpu > 90",
                "'' is not a rule name (1 to 32 letters, digits, _ or -)",
            ),
            ("a b: cpu > 90", "'a b' is not a rule name"),
            (
                "x: gpu > 90",
                "unknown metric 'gpu' (one of cpu, memory_available_pct,",
            ),
            (
                "x: cpu 90",
                "no operator after 'cpu' (one of > >= < <= == !=)",
            ),
            (
                "x: cpu => 90",
                "'=>' is not an operator (one of > >= < <= == !=)",
            ),
            ("x: cpu >", "no value after '>'"),
            ("x: cpu > ninety", "'ninety' is not a number"),
            ("x: cpu > inf", "'inf' is not a number"),
            ("x: cpu > 90 for", "no duration after 'for'"),
            (
                "x: cpu > 90 for soon",
                "'soon' is not a duration like 500ms, 30s, 5m, 1h or 30",
            ),
            ("x: cpu > 90 for 25h", "'for 25h' is longer than 24h"),
            (
                "x: cpu > 90 urgent",
                "'urgent' is not a severity (info, warning or critical) nor 'for DUR'",
            ),
            (
                "x: cpu > 90 warning critical",
                "unexpected 'critical' at the end",
            ),
            ("x: cpu > 90 critical for 1m", "unexpected 'for' at the end"),
            ("x: cpu > 90 5m", "unexpected '5m' at the end"),
        ];
        for (text, message) in bad {
            let e = parse(text).expect_err(text);
            assert!(
                e.starts_with(message),
                "{text}: got {e:?}, want {message:?}"
            );
        }
    }

    #[test]
    fn defaults_are_replaced_by_name_or_dropped_and_errors_name_the_rule() {
        let names = |r: &[Rule]| r.iter().map(|r| r.name.clone()).collect::<Vec<_>>();
        let d = rule_set(&[], true).unwrap();
        assert_eq!(
            names(&d),
            [
                "under_voltage",
                "throttled",
                "hot",
                "disk_full",
                "memory_low",
                "failed_units"
            ]
        );
        let given = [
            "hot: temp_max >= 70 for 30s critical".to_string(),
            "busy: cpu > 95 for 5m".to_string(),
        ];
        let r = rule_set(&given, true).unwrap();
        assert_eq!(
            names(&r),
            [
                "under_voltage",
                "throttled",
                "hot",
                "disk_full",
                "memory_low",
                "failed_units",
                "busy"
            ]
        );
        assert_eq!((r[2].threshold, r[2].severity), (70.0, Severity::Critical));
        assert_eq!(names(&rule_set(&given, false).unwrap()), ["hot", "busy"]);
        let twice = ["a: cpu > 1".to_string(), "a: cpu > 2".to_string()];
        assert_eq!(
            rule_set(&twice, true).unwrap_err(),
            (
                "a: cpu > 2".to_string(),
                "rule name 'a' is given twice".to_string()
            )
        );
        let wrong = ["ok: cpu > 1".to_string(), "bad: cpu >> 1".to_string()];
        let (rule, why) = rule_set(&wrong, true).unwrap_err();
        assert_eq!(rule, "bad: cpu >> 1");
        assert!(why.contains("'>>' is not an operator"), "{why}");
        let many: Vec<String> = (0..MAX_RULES).map(|i| format!("r{i}: cpu > {i}")).collect();
        assert!(rule_set(&many, false).is_ok());
        assert!(
            rule_set(&many, true)
                .unwrap_err()
                .1
                .contains("at most 64 rules")
        );
    }

    /// A sysfs tree with a Pi throttle mask and thermal zones, as the readers find them.
    struct Sysfs(PathBuf);

    impl Sysfs {
        fn new(name: &str) -> Sysfs {
            let root =
                std::env::temp_dir().join(format!("edgemon-alerts-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&root);
            std::fs::create_dir_all(root.join("devices/platform/soc/soc:firmware")).unwrap();
            Sysfs(root)
        }
        fn throttled(&self, mask: &str) -> &Self {
            std::fs::write(
                self.0
                    .join("devices/platform/soc/soc:firmware/get_throttled"),
                mask,
            )
            .unwrap();
            self
        }
        fn zone(&self, n: usize, kind: &str, milli_c: i64) -> &Self {
            let z = self.0.join(format!("class/thermal/thermal_zone{n}"));
            std::fs::create_dir_all(&z).unwrap();
            std::fs::write(z.join("type"), kind).unwrap();
            std::fs::write(z.join("temp"), milli_c.to_string()).unwrap();
            self
        }
        /// A sample with details, read from the tree as the collector reads it.
        fn sample(&self, disks: &[(&str, u64)]) -> SystemData {
            sample_from(&self.0, disks)
        }
    }

    impl Drop for Sysfs {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn sample_from(root: &Path, disks: &[(&str, u64)]) -> SystemData {
        SystemData {
            memory: crate::collect::Memory {
                total: 1000,
                used: 500,
                available: 500,
            },
            uptime: Some(86_400),
            temperatures: Some(thermal::thermal_zones(root)),
            pi: pi::read(root, None, None),
            network: Some(Vec::new()),
            disks: Some(
                disks
                    .iter()
                    .map(|(mount, used_pct)| Disk {
                        mount: mount.to_string(),
                        fs: "ext4".into(),
                        total: 100,
                        available: 100 - used_pct,
                    })
                    .collect(),
            ),
            ..SystemData::default()
        }
    }

    fn rules(text: &[&str]) -> Vec<Rule> {
        text.iter().map(|t| parse(t).unwrap()).collect()
    }

    fn at(ts: u64) -> Context {
        Context {
            ts,
            oom_total: Some(0),
            ..Default::default()
        }
    }

    fn states(a: &Alerts) -> Vec<(String, String, Option<String>)> {
        a.to_json()["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| {
                (
                    x["name"].as_str().unwrap().to_string(),
                    x["state"].as_str().unwrap().to_string(),
                    x["target"].as_str().map(String::from),
                )
            })
            .collect()
    }

    fn brief(c: &[Change]) -> Vec<(&str, &str, Option<&str>)> {
        c.iter()
            .map(|c| (c.alert.as_str(), c.state, c.target.as_deref()))
            .collect()
    }

    #[test]
    fn under_voltage_fires_when_it_appears_and_resolves_after_the_hold() {
        let fs = Sysfs::new("uv");
        fs.throttled("0x0\n");
        let mut a = Alerts::new(rules(&[DEFAULTS[0]]), None, MIN_RESOLVE);
        assert!(a.step(&fs.sample(&[]), &at(1_000)).is_empty());
        assert_eq!(states(&a), [("under_voltage".into(), "ok".into(), None)]);
        let v = a.version();
        // A weak supply: under-voltage now (bit 0) and since boot (bit 16).
        fs.throttled("0x50005\n");
        let c = a.step(&fs.sample(&[]), &at(2_000));
        assert_eq!(brief(&c), [("under_voltage", "firing", None)]);
        assert_eq!(
            c[0].text(),
            "alert under_voltage (critical) firing: 1 (pi_under_voltage == 1 critical)"
        );
        assert!(a.version() > v, "a state change raises the version");
        assert_eq!(
            a.firing(),
            [("under_voltage".into(), "critical", String::new(), true)]
        );
        // Still on: no repeat.
        assert!(a.step(&fs.sample(&[]), &at(3_000)).is_empty());
        // Cleared (only the since-boot bit left): firing until it has been clear for 30 s.
        fs.throttled("0x50000\n");
        assert!(a.step(&fs.sample(&[]), &at(4_000)).is_empty());
        assert!(a.step(&fs.sample(&[]), &at(33_000)).is_empty());
        assert_eq!(states(&a)[0].1, "firing");
        let c = a.step(&fs.sample(&[]), &at(34_000));
        assert_eq!(brief(&c), [("under_voltage", "resolved", None)]);
        assert_eq!(states(&a)[0].1, "ok");
        let j = a.to_json();
        assert_eq!(j["resolved"][0]["name"], "under_voltage");
        assert_eq!(
            (
                j["resolved"][0]["since"].as_u64(),
                j["resolved"][0]["resolved"].as_u64()
            ),
            (Some(2_000), Some(34_000))
        );
    }

    #[test]
    fn a_value_hovering_at_the_threshold_fires_once() {
        let fs = Sysfs::new("hover");
        fs.zone(0, "cpu-thermal", 79_000);
        let mut a = Alerts::new(
            rules(&["hot: temp_max >= 80 for 10s warning"]),
            None,
            MIN_RESOLVE,
        );
        let mut changes = Vec::new();
        // 80.5, 79.5, 80.5 … every second for 20 s: pending and back, never 10 s in a row.
        let mut t = 0;
        for i in 0..20 {
            fs.zone(0, "cpu-thermal", if i % 2 == 0 { 80_500 } else { 79_500 });
            changes.extend(a.step(&fs.sample(&[]), &at(t)));
            t += 1000;
        }
        assert!(changes.is_empty(), "never held for 10 s: {changes:?}");
        // Holds for 12 s: fires once.
        for _ in 0..12 {
            fs.zone(0, "cpu-thermal", 80_500);
            changes.extend(a.step(&fs.sample(&[]), &at(t)));
            t += 1000;
        }
        assert_eq!(brief(&changes), [("hot", "firing", Some("cpu-thermal"))]);
        // Then hovers around 80 for two minutes: dips never last 30 s, so no resolve, no refire.
        for i in 0..120 {
            fs.zone(0, "cpu-thermal", if i % 3 == 0 { 80_100 } else { 79_900 });
            changes.extend(a.step(&fs.sample(&[]), &at(t)));
            t += 1000;
        }
        assert_eq!(changes.len(), 1, "{changes:?}");
        // Cool for 30 s: resolved once.
        for _ in 0..31 {
            fs.zone(0, "cpu-thermal", 60_000);
            changes.extend(a.step(&fs.sample(&[]), &at(t)));
            t += 1000;
        }
        assert_eq!(
            brief(&changes),
            [
                ("hot", "firing", Some("cpu-thermal")),
                ("hot", "resolved", Some("cpu-thermal"))
            ]
        );
    }

    #[test]
    fn a_disk_rule_fires_per_mount_and_sensors_are_told_apart() {
        let fs = Sysfs::new("disks");
        fs.zone(0, "acpitz", 85_000).zone(1, "acpitz", 40_000);
        let mut a = Alerts::new(
            rules(&["full: disk_used_pct >= 90 critical", "hot: temp_max >= 80"]),
            None,
            Duration::from_secs(1),
        );
        let c = a.step(
            &fs.sample(&[("/", 50), ("/data", 95), ("/boot", 91)]),
            &at(1_000),
        );
        assert_eq!(
            brief(&c),
            [
                ("full", "firing", Some("/data")),
                ("full", "firing", Some("/boot")),
                ("hot", "firing", Some("acpitz"))
            ]
        );
        let s = states(&a);
        assert!(
            s.contains(&("full".into(), "ok".into(), Some("/".into()))),
            "{s:?}"
        );
        assert!(
            s.contains(&("hot".into(), "ok".into(), Some("acpitz#2".into()))),
            "{s:?}"
        );
        // /data freed; /boot unmounted: both resolve (the gone one at once), / stays quiet.
        let c = a.step(&fs.sample(&[("/", 50), ("/data", 40)]), &at(2_000));
        assert_eq!(brief(&c), [("full", "resolved", Some("/boot"))]);
        let c = a.step(&fs.sample(&[("/", 50), ("/data", 40)]), &at(3_100));
        assert_eq!(brief(&c), [("full", "resolved", Some("/data"))]);
        let firing: Vec<_> = a
            .firing()
            .into_iter()
            .filter(|f| f.3)
            .map(|f| f.2)
            .collect();
        assert_eq!(firing, ["acpitz"]);
    }

    #[test]
    fn what_the_host_cannot_read_is_unavailable_and_a_sample_without_details_changes_nothing() {
        let fs = Sysfs::new("plain");
        std::fs::remove_dir_all(fs.0.join("devices")).unwrap();
        let mut a = Alerts::new(rule_set(&[], true).unwrap(), None, MIN_RESOLVE);
        a.step(&fs.sample(&[("/", 10)]), &at(1_000));
        let s = states(&a);
        let state = |n: &str| s.iter().find(|x| x.0 == n).unwrap().1.clone();
        assert_eq!(state("under_voltage"), "unavailable");
        assert_eq!(state("throttled"), "unavailable");
        assert_eq!(state("hot"), "unavailable", "no thermal zones in this tree");
        assert_eq!(state("disk_full"), "ok");
        assert_eq!(state("memory_low"), "ok");
        let j = a.to_json();
        assert_eq!(
            j["alerts"][0]["reason"],
            "no Raspberry Pi throttle source on this host"
        );
        // A basic sample (details not read this second) leaves the detail rules as they were.
        let v = a.version();
        let basic = SystemData {
            memory: crate::collect::Memory {
                total: 1000,
                used: 500,
                available: 500,
            },
            ..SystemData::default()
        };
        a.step(&basic, &at(2_000));
        assert_eq!(a.version(), v);
        assert_eq!(states(&a), s);
    }

    #[test]
    fn restored_firing_alerts_do_not_fire_again_and_still_resolve() {
        let fs = Sysfs::new("restore");
        fs.throttled("0x50005");
        let mut a = Alerts::new(rules(&[DEFAULTS[0]]), None, Duration::from_secs(1));
        assert_eq!(
            brief(&a.step(&fs.sample(&[]), &at(1_000))),
            [("under_voltage", "firing", None)]
        );
        let kept = a.firing_now();
        assert_eq!(kept, [("under_voltage".to_string(), None, 1_000)]);
        // The next run, from the snapshot: still on, so nothing new.
        let mut b = Alerts::new(
            rules(&[DEFAULTS[0], "gone: cpu > 1"]),
            None,
            Duration::from_secs(1),
        );
        b.restore(&kept);
        b.restore(&[("no_such_rule".into(), None, 5)]);
        assert!(b.step(&fs.sample(&[]), &at(60_000)).is_empty());
        assert_eq!(states(&b)[0].1, "firing");
        fs.throttled("0x50000");
        b.step(&fs.sample(&[]), &at(61_000));
        let c = b.step(&fs.sample(&[]), &at(62_500));
        assert_eq!(brief(&c), [("under_voltage", "resolved", None)]);
        assert_eq!(c[0].since, 1_000, "firing since the first run");
    }

    #[test]
    fn event_metrics_count_the_last_ten_minutes() {
        let d = SystemData {
            uptime: Some(30),
            ..SystemData::default()
        };
        let mut a = Alerts::new(
            rules(&[
                "oom: oom_kills > 0",
                "boot: reboot == 1 info",
                "crash: daemon_restart == 1",
            ]),
            Some(1_000),
            Duration::from_secs(1),
        );
        let cx = |ts, n| Context {
            ts,
            oom_total: Some(n),
            ..Default::default()
        };
        let c = a.step(&d, &cx(1_000, 7));
        assert_eq!(
            brief(&c),
            [("boot", "firing", None), ("crash", "firing", None)]
        );
        let c = a.step(&d, &cx(2_000, 9));
        assert_eq!(brief(&c), [("oom", "firing", None)]);
        assert_eq!(a.to_json()["alerts"][0]["value"], 2.0);
        // Ten minutes on: the kills and the restart age out; the host has been up long enough.
        let later = SystemData {
            uptime: Some(700),
            ..SystemData::default()
        };
        a.step(&later, &cx(603_000, 9));
        let c = a.step(&later, &cx(604_500, 9));
        assert_eq!(
            brief(&c),
            [
                ("oom", "resolved", None),
                ("boot", "resolved", None),
                ("crash", "resolved", None)
            ]
        );
        // A kernel that does not count OOM kills.
        let mut b = Alerts::new(rules(&["oom: oom_kills > 0"]), None, MIN_RESOLVE);
        b.step(
            &d,
            &Context {
                ts: 1,
                oom_total: None,
                ..Default::default()
            },
        );
        assert_eq!(states(&b)[0].1, "unavailable");
    }

    #[test]
    fn failed_units_fire_from_the_count_and_are_unavailable_without_systemd() {
        use crate::services::Count;
        let d = sample_from(Path::new("/nonexistent"), &[]);
        let mut a = Alerts::new(
            rules(&["failed_units: units_failed > 0 warning"]),
            None,
            Duration::from_secs(1),
        );
        let cx = |ts, units_failed| Context {
            ts,
            oom_total: Some(0),
            units_failed,
        };
        // Not counted yet: nothing is decided.
        a.step(&d, &cx(1_000, Count::NotRead));
        assert_eq!(states(&a)[0].1, "ok");
        a.step(&d, &cx(2_000, Count::Unavailable("systemd is not running")));
        assert_eq!(
            states(&a)[0],
            ("failed_units".into(), "unavailable".into(), None)
        );
        assert_eq!(a.to_json()["alerts"][0]["reason"], "systemd is not running");
        let c = a.step(&d, &cx(3_000, Count::Failed(2)));
        assert_eq!(brief(&c), [("failed_units", "firing", None)]);
        assert_eq!(a.to_json()["alerts"][0]["value"], 2.0);
    }
}
