//! Events: what changed on the host and when, in a ring of `CAPACITY` (`GET /api/events`).
//!
//! Kinds (DESIGN.md): `under_voltage throttled freq_capped soft_temp_limit` (a Pi flag turning on
//! or off), `reboot`, `daemon_start`, `daemon_stop`, `oom_kill`; `alert` comes with the alerts.

use std::collections::VecDeque;

use serde::Serialize;

use crate::collect::pi::PiHealth;

/// Events kept.
pub const CAPACITY: usize = 1000;
/// The longest text kept (bytes).
pub const MAX_TEXT: usize = 256;

/// One event.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Event {
    /// Unix ms.
    pub ts: u64,
    /// What happened (see the module docs).
    pub kind: String,
    /// `on` or `off` for a condition, `once` for a single happening.
    pub state: String,
    /// For a person.
    pub text: String,
}

/// The ring, and what the next sample is compared with.
#[derive(Default)]
pub struct Events {
    ring: VecDeque<Event>,
    /// The Pi flags of the previous sample that had them.
    pi: Option<[bool; 4]>,
    /// The kernel's `oom_kill` count at the previous reading.
    oom_kills: Option<u64>,
}

const PI_KINDS: [(&str, &str); 4] = [
    ("under_voltage", "under-voltage"),
    ("throttled", "throttling"),
    ("freq_capped", "frequency capping"),
    ("soft_temp_limit", "soft temperature limit"),
];

impl Events {
    /// Adds an event, dropping the oldest beyond `CAPACITY`.
    pub fn push(&mut self, ts: u64, kind: &str, state: &str, text: &str) {
        if self.ring.len() == CAPACITY {
            self.ring.pop_front();
        }
        let cut = crate::collect::floor_char_boundary(text, MAX_TEXT);
        self.ring.push_back(Event {
            ts,
            kind: kind.to_string(),
            state: state.to_string(),
            text: text[..cut].to_string(),
        });
    }

    /// Compares a sample's Pi flags with the previous ones: an event for each that changed (the
    /// first reading only sets what is compared, except flags already on, which are news).
    pub fn pi_flags(&mut self, ts: u64, pi: &PiHealth) {
        let now = [
            pi.under_voltage.now,
            pi.throttled.now,
            pi.freq_capped.now,
            pi.soft_temp_limit.now,
        ];
        let before = self.pi.unwrap_or_default();
        let mut next = before;
        for (i, (kind, what)) in PI_KINDS.iter().enumerate() {
            // A flag the source cannot read changes nothing.
            let Some(now) = now[i] else { continue };
            if now != before[i] {
                let (state, text) = if now {
                    ("on", format!("{what} started"))
                } else {
                    ("off", format!("{what} ended"))
                };
                self.push(ts, kind, state, &text);
            }
            next[i] = now;
        }
        self.pi = Some(next);
    }

    /// The kernel's OOM kill counter (`/proc/vmstat` `oom_kill`): an event if it rose.
    pub fn oom_kills(&mut self, ts: u64, count: u64) {
        if let Some(before) = self.oom_kills
            && count > before
        {
            let n = count - before;
            let text = format!("the kernel's OOM killer ended {n} process(es)");
            self.push(ts, "oom_kill", "once", &text);
        }
        self.oom_kills = Some(count);
    }

    /// The events, oldest first.
    pub fn list(&self) -> impl Iterator<Item = &Event> {
        self.ring.iter()
    }

    /// `{"events":[…]}`.
    pub fn to_json(&self) -> String {
        serde_json::json!({ "events": self.ring }).to_string()
    }
}

/// The kernel's OOM kill count, where it says (Linux 4.13 on).
pub fn read_oom_kills() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/vmstat").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|v| v.trim().parse().ok())
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`), empty if unreadable.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::pi::Flag;

    fn pi(under_voltage: bool, throttled: bool) -> PiHealth {
        let f = |now| Flag {
            now: Some(now),
            since_boot: Some(now),
        };
        PiHealth {
            under_voltage: f(under_voltage),
            freq_capped: f(false),
            throttled: f(throttled),
            soft_temp_limit: f(false),
            ..PiHealth::default()
        }
    }

    #[test]
    fn flag_changes_and_oom_kills_become_events_and_the_ring_is_bounded() {
        let mut e = Events::default();
        e.pi_flags(1, &pi(false, false));
        assert_eq!(e.list().count(), 0, "a quiet first reading is no news");
        e.pi_flags(2, &pi(true, false));
        e.pi_flags(3, &pi(true, false));
        e.pi_flags(4, &pi(false, true));
        let kinds: Vec<_> = e
            .list()
            .map(|v| (v.ts, v.kind.as_str(), v.state.as_str()))
            .collect();
        assert_eq!(
            kinds,
            [
                (2, "under_voltage", "on"),
                (4, "under_voltage", "off"),
                (4, "throttled", "on")
            ]
        );
        e.oom_kills(5, 3);
        e.oom_kills(6, 3);
        e.oom_kills(7, 5);
        let last = e.list().last().unwrap();
        assert_eq!((last.ts, last.kind.as_str()), (7, "oom_kill"));
        assert!(last.text.contains('2'), "{}", last.text);
        for i in 0..2 * CAPACITY as u64 {
            e.push(100 + i, "daemon_start", "once", &"x".repeat(1000));
        }
        assert_eq!(e.list().count(), CAPACITY);
        assert_eq!(e.list().next().unwrap().ts, 100 + CAPACITY as u64);
        assert!(e.list().all(|v| v.text.len() <= MAX_TEXT));
        let v: serde_json::Value = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(v["events"].as_array().unwrap().len(), CAPACITY);
    }
}
