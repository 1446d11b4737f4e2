//! The benchmark's lines: a printed table and a JSON file, each line checked against its budget.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

/// Whether a line's budget decides the exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    /// Correctness (leaks, delivery): gates in every mode.
    Always,
    /// Speed and footprint: gates in the full run; printed only in smoke mode, whose windows are
    /// too short and whose daemon may be a debug build.
    Full,
    /// The 10,000-connection stretch lines and the comparison peer's: printed, never gating.
    Never,
}

/// `value <= limit` or `value >= limit`.
#[derive(Clone, Copy, Debug)]
pub enum Budget {
    AtMost(f64),
    AtLeast(f64),
}

impl Budget {
    fn holds(self, v: f64) -> bool {
        match self {
            Budget::AtMost(l) => v <= l,
            Budget::AtLeast(l) => v >= l,
        }
    }

    fn text(self, unit: &str) -> String {
        match self {
            Budget::AtMost(l) => format!("≤ {} {unit}", num(l)),
            Budget::AtLeast(l) => format!("≥ {} {unit}", num(l)),
        }
    }
}

/// One measured figure.
#[derive(Clone, Debug)]
pub struct Line {
    pub scenario: String,
    pub name: String,
    pub value: f64,
    pub unit: &'static str,
    pub budget: Option<(Budget, Gate)>,
    pub note: String,
}

/// All lines of one run.
pub struct Report {
    pub smoke: bool,
    pub lines: Vec<Line>,
}

impl Report {
    pub fn new(smoke: bool) -> Report {
        Report {
            smoke,
            lines: Vec::new(),
        }
    }

    /// A figure with no budget.
    pub fn info(&mut self, scenario: &str, name: &str, value: f64, unit: &'static str, note: &str) {
        self.push(scenario, name, value, unit, None, note);
    }

    /// A figure checked against `budget`.
    // Each argument is a column of the table; a builder would only rename them.
    #[allow(clippy::too_many_arguments)]
    pub fn check(
        &mut self,
        scenario: &str,
        name: &str,
        value: f64,
        unit: &'static str,
        budget: Budget,
        gate: Gate,
        note: &str,
    ) {
        self.push(scenario, name, value, unit, Some((budget, gate)), note);
    }

    /// A count that must be zero (failures, leftovers), unitless.
    pub fn must_be_zero(&mut self, scenario: &str, name: &str, value: f64, gate: Gate, note: &str) {
        self.check(scenario, name, value, "", Budget::AtMost(0.0), gate, note);
    }

    fn push(
        &mut self,
        scenario: &str,
        name: &str,
        value: f64,
        unit: &'static str,
        budget: Option<(Budget, Gate)>,
        note: &str,
    ) {
        let line = Line {
            scenario: scenario.into(),
            name: name.into(),
            value,
            unit,
            budget,
            note: note.into(),
        };
        eprintln!(
            "  {:<12} {:<46} {:>12} {}",
            line.scenario,
            line.name,
            format!("{} {}", num(value), unit),
            self.verdict(&line)
        );
        self.lines.push(line);
    }

    /// Whether the line decides the exit status in this mode.
    fn gating(&self, l: &Line) -> bool {
        match l.budget {
            Some((_, Gate::Always)) => true,
            Some((_, Gate::Full)) => !self.smoke,
            _ => false,
        }
    }

    /// PASS/FAIL for gating lines, pass*/FAIL* for printed-only budgets, "-" without a budget.
    pub fn verdict(&self, l: &Line) -> &'static str {
        match l.budget {
            None => "-",
            Some((b, _)) => match (b.holds(l.value), self.gating(l)) {
                (true, true) => "PASS",
                (false, true) => "FAIL",
                (true, false) => "pass*",
                (false, false) => "FAIL*",
            },
        }
    }

    /// Every gating line holds.
    pub fn passed(&self) -> bool {
        self.lines
            .iter()
            .all(|l| !self.gating(l) || l.budget.is_some_and(|(b, _)| b.holds(l.value)))
    }

    /// The table, as Markdown (it goes into the README as it is).
    pub fn table(&self) -> String {
        let mut t = String::from(
            "| scenario | figure | value | budget | verdict |\n|---|---|---|---|---|\n",
        );
        for l in &self.lines {
            let budget = l.budget.map(|(b, _)| b.text(l.unit)).unwrap_or_default();
            let note = if l.note.is_empty() {
                String::new()
            } else {
                format!(" ({})", l.note)
            };
            let _ = writeln!(
                t,
                "| {} | {}{} | {} {} | {} | {} |",
                l.scenario,
                l.name,
                note,
                num(l.value),
                l.unit,
                budget,
                self.verdict(l)
            );
        }
        t
    }

    /// The JSON document: the run's context and every line.
    pub fn json(&self, context: serde_json::Value) -> serde_json::Value {
        let lines: Vec<serde_json::Value> = self
            .lines
            .iter()
            .map(|l| {
                let budget = l.budget.map(|(b, g)| {
                    let (op, limit) = match b {
                        Budget::AtMost(x) => ("<=", x),
                        Budget::AtLeast(x) => (">=", x),
                    };
                    serde_json::json!({"op": op, "limit": limit, "gate": format!("{g:?}").to_lowercase()})
                });
                serde_json::json!({
                    "scenario": l.scenario,
                    "name": l.name,
                    "value": l.value,
                    "unit": l.unit,
                    "budget": budget,
                    "verdict": self.verdict(l),
                    "note": l.note,
                })
            })
            .collect();
        serde_json::json!({
            "tool": "edgemon-bench",
            "version": env!("CARGO_PKG_VERSION"),
            "mode": if self.smoke { "smoke" } else { "full" },
            "date_utc": utc_now(),
            "context": context,
            "passed": self.passed(),
            "lines": lines,
        })
    }
}

/// A number with as many decimals as it needs to be read.
pub fn num(v: f64) -> String {
    if (v == v.trunc() && v.abs() < 1e15) || v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// `YYYY-MM-DD HH:MM UTC` without a date crate (civil-from-days, Howard Hinnant's algorithm).
pub fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// `q`-quantile (0..=1) of sorted values; 0 when empty.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_follow_mode_and_gate() {
        let mut full = Report::new(false);
        full.check("a", "x", 3.0, "MiB", Budget::AtMost(4.0), Gate::Full, "");
        full.check("a", "y", 5.0, "MiB", Budget::AtMost(4.0), Gate::Never, "");
        assert!(full.passed());
        assert_eq!(full.verdict(&full.lines[0]), "PASS");
        assert_eq!(full.verdict(&full.lines[1]), "FAIL*");
        full.check("a", "z", 5.0, "MiB", Budget::AtMost(4.0), Gate::Full, "");
        assert!(!full.passed());

        let mut smoke = Report::new(true);
        smoke.check("a", "z", 5.0, "MiB", Budget::AtMost(4.0), Gate::Full, "");
        assert!(smoke.passed());
        smoke.check("a", "leak", 1.0, "", Budget::AtMost(0.0), Gate::Always, "");
        assert!(!smoke.passed());
        let json = smoke.json(serde_json::json!({}));
        assert_eq!(json["passed"], false);
        assert_eq!(json["lines"][1]["verdict"], "FAIL");
        assert!(smoke.table().contains("| a | leak | 1  | ≤ 0  | FAIL |"));
    }

    #[test]
    fn quantiles_and_dates() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 51.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&v, 1.0), 100.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
        let d = utc_now();
        assert!(
            d.len() == 20 && d.ends_with(" UTC") && d.starts_with("20"),
            "{d}"
        );
    }
}
