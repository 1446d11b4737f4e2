//! Durations as people type them on the command line and in alert rules.

use std::time::Duration;

/// Parses `500ms`, `30s`, `5m`, `1h` or bare seconds (`30`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let err = || format!("'{s}' is not a duration like 500ms, 30s, 5m, 1h or 30");
    let n: u64 = num.parse().map_err(|_| err())?;
    let d = match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n.checked_mul(60).ok_or_else(err)?),
        "h" => Duration::from_secs(n.checked_mul(3600).ok_or_else(err)?),
        _ => return Err(err()),
    };
    if d > Duration::from_secs(365 * 24 * 3600) {
        return Err(format!("'{s}' is longer than a year"));
    }
    Ok(d)
}
