//! History in RAM: every series of the `system` sample in four tiers of fixed-size numeric rings,
//! 1 s, 10 s, 1 min and 5 min, each point of a coarser tier keeping the min, mean and max of the
//! samples in its interval. No JSON values are kept: a 1 s point is one `f32`, a coarser point
//! three, a gap is NaN.
//!
//! Each tier rolls up the raw samples itself (an accumulator per series for its open interval),
//! so a 5 min mean is the mean of the samples, not of means, and the open interval of every tier
//! is current: an answer ends at "now" with that interval as its last point.
//!
//! Bounds: at most `MAX_INSTANCES` interfaces, mounts, sensors and cores are kept (more are
//! logged once and skipped); a series with no value for its whole retention is freed. A clock
//! that jumps forward past a tier's span empties that tier at once instead of writing gaps point
//! by point; a clock that goes back leaves the tiers alone and samples are dropped until it
//! catches up, unless it stays behind for `BEHIND_RESET` samples in a row (an RTC-less board
//! that never got NTP, or history from a clock that was wrong): then the tiers start again.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use crate::codec::{Bad, Reader, Writer};
use crate::collect::SystemData;

/// A point's figures, in the order of `[f32; 3]` points.
const FIELDS: [&str; 3] = ["min", "mean", "max"];
/// The tiers' steps in milliseconds, finest first.
pub const STEPS_MS: [u64; 4] = [1_000, 10_000, 60_000, 300_000];
/// The shortest span the 1 s tier keeps.
pub const MIN_FINE_SPAN: Duration = Duration::from_secs(600);
/// The 10 s tier's span.
pub const TIER1_SPAN: Duration = Duration::from_secs(6 * 3600);
/// The 1 min tier's span.
pub const TIER2_SPAN: Duration = Duration::from_secs(24 * 3600);
/// Interfaces, mounts, sensors and cores kept, each.
pub const MAX_INSTANCES: usize = 16;
/// Samples in a row behind the newest point after which the tiers start again.
pub const BEHIND_RESET: u32 = 600;
/// The most points a tier can keep (`--history 1h`, 6 h, 24 h, `--history-days 31`): what a
/// snapshot may claim.
const MAX_CAPACITY: [usize; 4] = [3600, 2160, 1440, 31 * 288];
/// Series names that are not per instance.
const FIXED_SERIES: [&str; 11] = [
    "cpu.total",
    "cpu.iowait",
    "memory.used",
    "swap.used",
    "load.one",
    "load.five",
    "load.fifteen",
    "pi.under_voltage",
    "pi.throttled",
    "pi.freq_capped",
    "pi.soft_temp_limit",
];

/// The series of the budget's host (31): a 4-core Pi with 2 interfaces (one Wi-Fi), 3 sensors,
/// 2 mounts on one SD card, and no fan.
pub fn budget_host_series() -> Vec<String> {
    let mut names = vec![FIXED_SERIES[0].to_string()];
    names.extend((0..4).map(|c| format!("cpu.core.{c}")));
    names.extend(FIXED_SERIES[1..].iter().map(|n| n.to_string()));
    names.extend(["temp.cpu_thermal", "temp.rp1_adc", "temp.nvme"].map(String::from));
    for i in ["eth0", "wlan0"] {
        for field in ["rx_per_s", "tx_per_s", "errors_per_s", "drops_per_s"] {
            names.push(format!("net.{i}.{field}"));
        }
    }
    names.push("net.wlan0.signal_dbm".into());
    names.extend(["disk./.used_pct", "disk./boot/firmware.used_pct"].map(String::from));
    names.extend(["disk_io.mmcblk0.read_per_s", "disk_io.mmcblk0.write_per_s"].map(String::from));
    names
}

/// The ranges an answer can cover: name, span, and the tier it comes from.
pub const RANGES: [(&str, Duration, usize); 5] = [
    ("10m", Duration::from_secs(600), 0),
    ("1h", Duration::from_secs(3600), 1),
    ("6h", Duration::from_secs(6 * 3600), 1),
    ("24h", Duration::from_secs(24 * 3600), 2),
    ("7d", Duration::from_secs(7 * 24 * 3600), 3),
];

/// The open interval's figures of one series.
#[derive(Clone, Copy, Debug)]
struct Acc {
    min: f32,
    max: f32,
    sum: f64,
    n: u32,
}

impl Acc {
    const EMPTY: Acc = Acc {
        min: f32::INFINITY,
        max: f32::NEG_INFINITY,
        sum: 0.0,
        n: 0,
    };

    fn add(&mut self, v: f32) {
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.sum += f64::from(v);
        self.n += 1;
    }

    /// min, mean, max; NaN for an interval without a value.
    fn point(&self) -> [f32; 3] {
        if self.n == 0 {
            return [f32::NAN; 3];
        }
        [self.min, (self.sum / f64::from(self.n)) as f32, self.max]
    }
}

/// One tier: a ring of closed points per series and the open interval's accumulators.
struct Tier {
    step_ms: u64,
    /// Points kept per series.
    capacity: usize,
    /// `f32`s per point: 1 in the 1 s tier (one sample per point), else min, mean, max.
    width: usize,
    /// The open interval's slot (`ts / step_ms`); closed points are the `capacity` slots before it.
    open: Option<u64>,
    /// Per series (by index): the open interval's figures.
    acc: Vec<Acc>,
    /// Per series (by index): `capacity * width` values at `slot % capacity`, or `None` for a
    /// series that has had no value in this tier's retention.
    rings: Vec<Option<Box<[f32]>>>,
    /// Per series: the last slot that had a value (to free series that have none any more).
    last_valued: Vec<Option<u64>>,
}

impl Tier {
    fn new(step_ms: u64, capacity: usize, width: usize) -> Tier {
        Tier {
            step_ms,
            capacity,
            width,
            open: None,
            acc: Vec::new(),
            rings: Vec::new(),
            last_valued: Vec::new(),
        }
    }

    fn grow(&mut self, series: usize) {
        if self.acc.len() < series {
            self.acc.resize(series, Acc::EMPTY);
            self.rings.resize_with(series, || None);
            self.last_valued.resize(series, None);
        }
    }

    /// Moves the open interval to `slot`, closing the one before into the rings (with gaps for
    /// the slots in between; past the whole span, the rings are simply emptied).
    fn advance(&mut self, slot: u64) {
        let Some(open) = self.open else {
            self.open = Some(slot);
            return;
        };
        if slot <= open || self.capacity == 0 {
            self.open = Some(slot.max(open));
            return;
        }
        let skipped = slot - open - 1;
        let (cap, width) = (self.capacity, self.width);
        for i in 0..self.acc.len() {
            let point = self.acc[i].point();
            self.acc[i] = Acc::EMPTY;
            let valued = !point[0].is_nan();
            if valued {
                self.last_valued[i] = Some(open);
            }
            if self.rings[i].is_none() && valued {
                self.rings[i] = Some(vec![f32::NAN; cap * width].into_boxed_slice());
            }
            let Some(ring) = self.rings[i].as_mut() else {
                continue;
            };
            let at = (open % cap as u64) as usize * width;
            if width == 1 {
                ring[at] = point[1];
            } else {
                ring[at..at + 3].copy_from_slice(&point);
            }
            if skipped as usize >= cap {
                ring.fill(f32::NAN);
            } else {
                for s in open + 1..slot {
                    let at = (s % cap as u64) as usize * width;
                    ring[at..at + width].fill(f32::NAN);
                }
            }
            // No value for the whole retention: free the ring.
            if self.last_valued[i].is_none_or(|v| slot.saturating_sub(v) > cap as u64) {
                self.rings[i] = None;
            }
        }
        self.open = Some(slot);
    }

    /// The open interval's slot, if this tier keeps points and has had a sample.
    fn holding_open(&self) -> Option<u64> {
        self.open.filter(|_| self.capacity > 0)
    }

    /// The point at `slot` of series `i`: closed from the ring, the open one from its accumulator.
    fn point(&self, i: usize, slot: u64) -> [f32; 3] {
        let Some(open) = self.open else {
            return [f32::NAN; 3];
        };
        if slot == open {
            return self.acc.get(i).map_or([f32::NAN; 3], Acc::point);
        }
        if slot > open || open - slot > self.capacity as u64 {
            return [f32::NAN; 3];
        }
        let Some(Some(ring)) = self.rings.get(i) else {
            return [f32::NAN; 3];
        };
        let at = (slot % self.capacity as u64) as usize * self.width;
        if self.width == 1 {
            [ring[at]; 3]
        } else {
            [ring[at], ring[at + 1], ring[at + 2]]
        }
    }

    /// Whether series `i` has any value kept or open in this tier.
    fn holds(&self, i: usize) -> bool {
        self.rings.get(i).is_some_and(Option::is_some) || self.acc.get(i).is_some_and(|a| a.n > 0)
    }

    /// Takes series `i`'s figures from a snapshot whose tier kept `old_cap` points (`ring`
    /// empty: none); the newest points that fit this tier are kept.
    fn adopt(
        &mut self,
        i: usize,
        acc: Acc,
        last_valued: Option<u64>,
        ring: &[f32],
        old_cap: usize,
    ) {
        let (Some(open), cap) = (self.open, self.capacity) else {
            return;
        };
        self.acc[i] = acc;
        self.last_valued[i] = last_valued;
        if ring.is_empty() || old_cap == 0 {
            return;
        }
        let w = self.width;
        let mut mine = vec![f32::NAN; cap * w].into_boxed_slice();
        for slot in open.saturating_sub(cap.min(old_cap) as u64)..open {
            let from = (slot % old_cap as u64) as usize * w;
            let to = (slot % cap as u64) as usize * w;
            mine[to..to + w].copy_from_slice(&ring[from..from + w]);
        }
        self.rings[i] = Some(mine);
    }

    fn clear(&mut self) {
        self.open = None;
        self.acc.fill(Acc::EMPTY);
        self.rings.fill_with(|| None);
        self.last_valued.fill(None);
    }

    #[cfg(test)]
    fn bytes(&self) -> usize {
        let ring = self.capacity * self.width * std::mem::size_of::<f32>();
        self.rings.iter().flatten().count() * ring
            + self.acc.capacity() * std::mem::size_of::<Acc>()
            + self.rings.capacity() * std::mem::size_of::<Option<Box<[f32]>>>()
            + self.last_valued.capacity() * std::mem::size_of::<Option<u64>>()
    }
}

/// The whole history.
pub struct History {
    tiers: [Tier; 4],
    /// Series names by index; an empty name is a freed index, reused by the next new series.
    names: Vec<Box<str>>,
    index: BTreeMap<Box<str>, usize>,
    /// Instances admitted per kind (`net`, `disk`, `temp`, `cpu.core`).
    instances: BTreeMap<String, Vec<String>>,
    /// Kinds whose refusals were logged (once each).
    refused_logged: Vec<String>,
    /// Samples in a row that came before the newest point.
    behind: u32,
    /// Samples dropped because the clock was behind, since start.
    pub dropped_behind: u64,
    /// Bumped whenever the set of series changes or the tiers start again: a cached closed part
    /// of another generation is stale.
    generation: u64,
    /// Per range (as in `RANGES`): the closed part of its answer, built at most once per tier
    /// step and shared by every answer until the tier's open interval moves on.
    closed: RefCell<[Option<Arc<Closed>>; RANGES.len()]>,
}

/// The closed points of one range's answer, rendered: everything but the open interval.
struct Closed {
    /// The tier's open slot and the history's generation it was built for.
    open: u64,
    generation: u64,
    /// `[t1,…,tn` (no closing bracket): the closed slots' times.
    ts: String,
    /// Closed slots (0 when the tier has none yet).
    len: usize,
    /// Every series kept when it was built, by name order.
    series: Vec<ClosedSeries>,
}

struct ClosedSeries {
    index: usize,
    /// `"name":{`.
    name: String,
    /// `"min":[v,…` and the same for mean and max, without the open point and the bracket.
    fields: [String; 3],
    /// Whether any closed point has a value (else the series is listed only while its open
    /// interval has one).
    valued: bool,
}

/// How many points each tier keeps for `--history` and `--history-days`.
pub fn capacities(history: Duration, days: u32) -> [usize; 4] {
    let span = |d: Duration, step_ms: u64| (d.as_millis() as u64 / step_ms) as usize;
    [
        span(history.max(MIN_FINE_SPAN), STEPS_MS[0]),
        span(TIER1_SPAN, STEPS_MS[1]),
        span(TIER2_SPAN, STEPS_MS[2]),
        span(Duration::from_secs(u64::from(days) * 86_400), STEPS_MS[3]),
    ]
}

/// The kind and instance of a series name with a bounded instance count (`net.eth0.rx_per_s`:
/// `net`, `eth0`), if it has one. Instances may contain dots; the kind and field never do.
fn instance_of(name: &str) -> Option<(&str, &str)> {
    for kind in ["net", "disk", "disk_io", "fan", "temp", "cpu.core"] {
        if let Some(rest) = name.strip_prefix(kind).and_then(|r| r.strip_prefix('.')) {
            let instance = match kind {
                "net" | "disk" | "disk_io" | "fan" => {
                    rest.rsplit_once('.').map_or(rest, |(i, _)| i)
                }
                _ => rest,
            };
            return Some((kind, instance));
        }
    }
    None
}

impl History {
    /// An empty history keeping `capacities` points per tier (see `capacities`).
    pub fn new(capacities: [usize; 4]) -> History {
        History {
            tiers: [
                Tier::new(STEPS_MS[0], capacities[0], 1),
                Tier::new(STEPS_MS[1], capacities[1], 3),
                Tier::new(STEPS_MS[2], capacities[2], 3),
                Tier::new(STEPS_MS[3], capacities[3], 3),
            ],
            names: Vec::new(),
            index: BTreeMap::new(),
            instances: BTreeMap::new(),
            refused_logged: Vec::new(),
            behind: 0,
            dropped_behind: 0,
            generation: 0,
            closed: RefCell::new(Default::default()),
        }
    }

    /// The index of series `name`, created if the bounds allow.
    fn series(&mut self, name: &str) -> Option<usize> {
        if let Some(&i) = self.index.get(name) {
            return Some(i);
        }
        if let Some((kind, instance)) = instance_of(name) {
            let admitted = self.instances.entry(kind.to_string()).or_default();
            if !admitted.iter().any(|a| a == instance) {
                if admitted.len() >= MAX_INSTANCES {
                    if !self.refused_logged.iter().any(|k| k == kind) {
                        log::info!(
                            "history: more than {MAX_INSTANCES} of {kind}; '{instance}' and later ones are not kept"
                        );
                        self.refused_logged.push(kind.to_string());
                    }
                    return None;
                }
                admitted.push(instance.to_string());
            }
        }
        let i = match self.names.iter().position(|n| n.is_empty()) {
            Some(free) => free,
            None => {
                self.names.push(Box::from(""));
                self.names.len() - 1
            }
        };
        self.names[i] = Box::from(name);
        self.index.insert(Box::from(name), i);
        self.generation += 1;
        for t in &mut self.tiers {
            t.grow(self.names.len());
            t.last_valued[i] = None;
        }
        Some(i)
    }

    /// Records one sample taken at `ts_ms` (unix ms): each `(name, value)`; NaN is no value.
    pub fn record(&mut self, ts_ms: u64, values: &[(String, f32)]) {
        let slot0 = ts_ms / STEPS_MS[0];
        if self.tiers[0].open.is_some_and(|open| slot0 < open) {
            self.behind += 1;
            if self.behind < BEHIND_RESET {
                self.dropped_behind += 1;
                return;
            }
            log::warn!(
                "history: the clock stayed behind the newest point for {BEHIND_RESET} samples; history starts again"
            );
            for t in &mut self.tiers {
                t.clear();
            }
            self.generation += 1;
        }
        self.behind = 0;
        // A tier that keeps nothing (`--history-days 0`) takes nothing.
        for t in self.tiers.iter_mut().filter(|t| t.capacity > 0) {
            t.advance(ts_ms / t.step_ms);
        }
        for (name, v) in values {
            if v.is_nan() {
                continue;
            }
            let Some(i) = self.series(name) else { continue };
            for t in self.tiers.iter_mut().filter(|t| t.capacity > 0) {
                t.acc[i].add(*v);
            }
        }
        self.free_empty();
        // A closed part the tiers have moved past is rebuilt on the next request, not kept.
        let mut closed = self.closed.borrow_mut();
        for (c, &(_, _, tier)) in closed.iter_mut().zip(RANGES.iter()) {
            if c.as_ref().is_some_and(|c| !self.fresh(c, tier)) {
                *c = None;
            }
        }
    }

    /// Whether `c` is still the closed part of a range on `tier`.
    fn fresh(&self, c: &Closed, tier: usize) -> bool {
        c.generation == self.generation && self.tiers[tier].open == Some(c.open)
    }

    /// Forgets series that no tier holds a value of.
    fn free_empty(&mut self) {
        for i in 0..self.names.len() {
            if self.names[i].is_empty() || self.tiers.iter().any(|t| t.holds(i)) {
                continue;
            }
            let name = std::mem::replace(&mut self.names[i], Box::from(""));
            self.index.remove(&name);
            self.generation += 1;
            if let Some((kind, instance)) = instance_of(&name) {
                let still = self
                    .index
                    .keys()
                    .any(|n| instance_of(n) == Some((kind, instance)));
                if !still && let Some(list) = self.instances.get_mut(kind) {
                    list.retain(|a| a != instance);
                }
            }
        }
    }

    /// Series kept now.
    pub fn series_count(&self) -> usize {
        self.index.len()
    }

    /// Bytes held by the rings and their bookkeeping (not counting the allocator's own): what the
    /// budget test checks.
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.tiers.iter().map(Tier::bytes).sum::<usize>()
            + self.names.iter().map(|n| n.len() * 2 + 48).sum::<usize>()
    }

    /// Writes the tiers for a snapshot.
    pub fn encode(&self, w: &mut Writer) {
        w.u32(self.tiers.len() as u32);
        for t in &self.tiers {
            w.u64(t.step_ms);
            w.u32(t.capacity as u32);
            w.u8(t.width as u8);
            w.opt_u64(t.open);
        }
        w.u32(self.index.len() as u32);
        for (name, &i) in &self.index {
            w.str(name);
            for t in &self.tiers {
                let a = t.acc[i];
                w.f32(a.min);
                w.f32(a.max);
                w.f64(a.sum);
                w.u32(a.n);
                w.opt_u64(t.last_valued[i]);
                match &t.rings[i] {
                    Some(ring) => {
                        w.u8(1);
                        ring.iter().for_each(|v| w.f32(*v));
                    }
                    None => w.u8(0),
                }
            }
        }
    }

    /// Reads the tiers of a snapshot into a history keeping `capacities` (the flags may have
    /// changed since: each tier keeps the newest points that fit). Only names this release
    /// records are taken, within the same bounds.
    pub fn decode(r: &mut Reader, capacities: [usize; 4]) -> Result<History, Bad> {
        if r.count(4, "tiers")? != 4 {
            return Err("not 4 tiers".into());
        }
        let mut h = History::new(capacities);
        let mut old = [(0usize, 0usize); 4];
        for k in 0..4 {
            let (step, cap, width, open) = (r.u64()?, r.u32()? as usize, r.u8()?, r.opt_u64()?);
            let want_width = if k == 0 { 1 } else { 3 };
            if step != STEPS_MS[k] || usize::from(width) != want_width || cap > MAX_CAPACITY[k] {
                return Err(format!(
                    "tier {k}: step {step} ms, {cap} points of {width} (expected {} ms, at most {}, of {want_width})",
                    STEPS_MS[k], MAX_CAPACITY[k]
                ));
            }
            old[k] = (cap, want_width);
            if h.tiers[k].capacity > 0 {
                h.tiers[k].open = open;
            }
        }
        let n = r.count(256, "series")?;
        let mut values = Vec::new();
        for _ in 0..n {
            let name = r.str(300)?;
            let known = FIXED_SERIES.contains(&name.as_str()) || instance_of(&name).is_some();
            let i = if known { h.series(&name) } else { None };
            for (k, &(cap, width)) in old.iter().enumerate() {
                let acc = Acc {
                    min: r.f32()?,
                    max: r.f32()?,
                    sum: r.f64()?,
                    n: r.u32()?,
                };
                let last_valued = r.opt_u64()?;
                values.clear();
                if r.u8()? == 1 {
                    for _ in 0..cap * width {
                        values.push(r.f32()?);
                    }
                }
                let Some(i) = i else { continue };
                h.tiers[k].adopt(i, acc, last_valued, &values, cap);
            }
        }
        h.free_empty();
        Ok(h)
    }

    /// The answer for `range` (one of `RANGES`) as JSON, ending with the open interval; `None`
    /// for an unknown range (the route uses `pieces` through the sampler's cache).
    #[cfg(test)]
    pub fn answer(&self, range: &str) -> Option<String> {
        self.pieces(range).map(|p| p.whole())
    }

    /// The answer for `range` in pieces, to send whole or in parts: the closed points come
    /// from a part built once per tier step, the open interval from the tier's accumulators.
    pub fn pieces(&self, range: &str) -> Option<Pieces> {
        let r = RANGES.iter().position(|(n, _, _)| *n == range)?;
        let (name, _, tier) = RANGES[r];
        let t = &self.tiers[tier];
        let cached = self.closed.borrow()[r].clone();
        let closed = match cached {
            Some(c) if self.fresh(&c, tier) => c,
            _ => {
                let c = Arc::new(self.build_closed(r));
                self.closed.borrow_mut()[r] = Some(c.clone());
                c
            }
        };
        let open = t.holding_open();
        let points = match open {
            Some(_) => closed
                .series
                .iter()
                .map(|s| t.acc.get(s.index).map_or([f32::NAN; 3], Acc::point))
                .collect(),
            None => Vec::new(),
        };
        Some(Pieces {
            head: format!("\"range\":\"{name}\",\"step_ms\":{}", t.step_ms),
            open_ts: open.map(|o| o * t.step_ms),
            closed,
            points,
        })
    }

    /// The closed part of range `r`'s answer as the tiers stand.
    fn build_closed(&self, r: usize) -> Closed {
        let (_, span, tier) = RANGES[r];
        let t = &self.tiers[tier];
        // The whole span of closed points (the open one comes on top).
        let n = (span.as_millis() as u64 / t.step_ms).min(t.capacity as u64);
        let open = t.holding_open();
        let slots: Vec<u64> = open.map_or(Vec::new(), |o| (o.saturating_sub(n)..o).collect());
        let mut ts = String::from("[");
        for (k, s) in slots.iter().enumerate() {
            if k > 0 {
                ts.push(',');
            }
            let _ = write!(ts, "{}", s * t.step_ms);
        }
        let series = self
            .index
            .iter()
            .map(|(name, &i)| {
                let points: Vec<[f32; 3]> = slots.iter().map(|&s| t.point(i, s)).collect();
                let fields = [0, 1, 2].map(|k| {
                    let mut out = format!("\"{}\":[", FIELDS[k]);
                    for (j, p) in points.iter().enumerate() {
                        if j > 0 {
                            out.push(',');
                        }
                        tidy(&mut out, p[k]);
                    }
                    out
                });
                ClosedSeries {
                    index: i,
                    name: format!(
                        "{}:{{",
                        serde_json::to_string(&**name).expect("a string serializes")
                    ),
                    fields,
                    valued: points.iter().any(|p| !p[0].is_nan()),
                }
            })
            .collect();
        Closed {
            // No open slot: never fresh (`fresh` compares with `Some`), rebuilt on each request.
            open: open.unwrap_or(0),
            generation: self.generation,
            ts,
            len: slots.len(),
            series,
        }
    }
}

/// A history answer in pieces: its head (`"range":…,"step_ms":…`), the shared closed part, and
/// the open interval (its time and each series' point).
pub struct Pieces {
    head: String,
    closed: Arc<Closed>,
    /// `None`: the tier holds nothing yet (no slots at all).
    open_ts: Option<u64>,
    /// Per series of `closed`: its open point.
    points: Vec<[f32; 3]>,
}

impl Pieces {
    /// The `ts` array.
    fn ts(&self) -> String {
        let mut ts = self.closed.ts.clone();
        if let Some(open) = self.open_ts {
            if self.closed.len > 0 {
                ts.push(',');
            }
            let _ = write!(ts, "{open}");
        }
        ts.push(']');
        ts
    }

    /// One `"name":{"min":[…],"mean":[…],"max":[…]}` member per series with a value in range.
    fn series(&self) -> Vec<String> {
        let c = &self.closed;
        c.series
            .iter()
            .zip(&self.points)
            .filter(|(s, p)| s.valued || !p[0].is_nan())
            .map(|(s, p)| {
                let mut out = String::with_capacity(
                    s.name.len() + s.fields.iter().map(String::len).sum::<usize>() + 48,
                );
                out.push_str(&s.name);
                for (k, (field, v)) in s.fields.iter().zip(p).enumerate() {
                    if k > 0 {
                        out.push(',');
                    }
                    out.push_str(field);
                    if c.len > 0 {
                        out.push(',');
                    }
                    tidy(&mut out, *v);
                    out.push(']');
                }
                out.push('}');
                out
            })
            .collect()
    }

    /// The whole answer, as `GET /api/history` sends it.
    pub fn whole(&self) -> String {
        format!(
            "{{{},\"ts\":{},\"series\":{{{}}}}}",
            self.head,
            self.ts(),
            self.series().join(",")
        )
    }

    /// The answer as WebSocket `history` frames of about `max` bytes at most (a single series
    /// longer than that is a frame of its own): `ts` in the first, the series spread over all,
    /// each with `part` (from 1) and `parts`.
    pub fn frames(&self, topic: &str, max: usize) -> Vec<String> {
        let ts = self.ts();
        let series = self.series();
        let mut groups: Vec<Vec<&str>> = vec![Vec::new()];
        let mut size = ts.len();
        for s in &series {
            let last = groups.last_mut().expect("one group at least");
            if !last.is_empty() && size + s.len() > max {
                groups.push(Vec::new());
                size = 0;
            }
            size += s.len() + 1;
            groups.last_mut().expect("one group at least").push(s);
        }
        let parts = groups.len();
        let topic = serde_json::to_string(topic).expect("a string serializes");
        groups
            .iter()
            .enumerate()
            .map(|(k, g)| {
                let ts = if k == 0 { ts.as_str() } else { "null" };
                format!(
                    "{{\"type\":\"history\",\"topic\":{topic},{},\"part\":{},\"parts\":{parts},\"ts\":{ts},\"series\":{{{}}}}}",
                    self.head,
                    k + 1,
                    g.join(",")
                )
            })
            .collect()
    }
}

/// The history series of one sample, named as in `/api/history`; a value the sample does not
/// have (details not read this second, a sensor gone) is simply absent.
pub fn series_of(d: &SystemData) -> Vec<(String, f32)> {
    let mut v = Vec::with_capacity(32);
    v.push(("cpu.total".to_string(), d.cpu.total));
    if let Some(b) = &d.cpu.breakdown {
        // What an SD card that cannot keep up looks like over days; the other shares stay in
        // the live sample and /metrics (each series costs 70 KiB over a week).
        v.push(("cpu.iowait".to_string(), b.iowait));
    }
    for (i, c) in d.cpu.cores.iter().enumerate() {
        v.push((format!("cpu.core.{i}"), *c));
    }
    v.push(("memory.used".to_string(), d.memory.used as f32));
    v.push(("swap.used".to_string(), d.swap.used as f32));
    if let Some(l) = &d.load {
        v.push(("load.one".to_string(), l.one as f32));
        v.push(("load.five".to_string(), l.five as f32));
        v.push(("load.fifteen".to_string(), l.fifteen as f32));
    }
    for t in d.temperatures.iter().flatten() {
        v.push((format!("temp.{}", t.label), t.celsius));
    }
    if let Some(pi) = &d.pi {
        // A flag the source cannot read is a gap, not a 0.
        for (name, f) in [
            ("pi.under_voltage", pi.under_voltage),
            ("pi.throttled", pi.throttled),
            ("pi.freq_capped", pi.freq_capped),
            ("pi.soft_temp_limit", pi.soft_temp_limit),
        ] {
            if let Some(now) = f.now {
                v.push((name.to_string(), f32::from(u8::from(now))));
            }
        }
    }
    for n in d.network.iter().flatten() {
        // Virtual interfaces are not in the sample at all (`collect::net::Filter`).
        let name = n.name.as_str();
        if let Some(r) = n.rx_per_s {
            v.push((format!("net.{name}.rx_per_s"), r as f32));
        }
        if let Some(t) = n.tx_per_s {
            v.push((format!("net.{name}.tx_per_s"), t as f32));
        }
        if let Some(e) = n.errors_per_s {
            v.push((format!("net.{name}.errors_per_s"), e));
        }
        if let Some(e) = n.drops_per_s {
            v.push((format!("net.{name}.drops_per_s"), e));
        }
        if let Some(dbm) = n.wifi.and_then(|w| w.signal_dbm) {
            v.push((format!("net.{name}.signal_dbm"), f32::from(dbm)));
        }
    }
    for disk in d.disks.iter().flatten() {
        if disk.total > 0 {
            let used = disk.total.saturating_sub(disk.available) as f64 / disk.total as f64;
            v.push((
                format!("disk.{}.used_pct", disk.mount),
                (used * 100.0) as f32,
            ));
        }
    }
    for io in d.disk_io.iter().flatten() {
        let dev = io.device.as_str();
        if let Some(r) = io.read_per_s {
            v.push((format!("disk_io.{dev}.read_per_s"), r as f32));
        }
        if let Some(w) = io.write_per_s {
            v.push((format!("disk_io.{dev}.write_per_s"), w as f32));
        }
    }
    for f in d.fans.iter().flatten() {
        v.push((format!("fan.{}.rpm", f.label), f.rpm as f32));
    }
    v
}

/// A value as JSON, as short as it stays useful: whole numbers from 100 up (bytes, rates), one
/// decimal below (percentages, degrees, load); `null` for a gap.
fn tidy(out: &mut String, v: f32) {
    if !v.is_finite() {
        out.push_str("null");
    } else if v.abs() >= 100.0 {
        let _ = write!(out, "{}", f64::from(v).round() as i64);
    } else {
        let _ = write!(out, "{}", (f64::from(v) * 10.0).round() / 10.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    const WEEK_S: u64 = 7 * 86_400;

    fn week() -> History {
        History::new(capacities(Duration::from_secs(300), 7))
    }

    fn values(pairs: &[(&str, f32)]) -> Vec<(String, f32)> {
        pairs.iter().map(|(n, v)| (n.to_string(), *v)).collect()
    }

    fn answer(h: &History, range: &str) -> Value {
        serde_json::from_str(&h.answer(range).unwrap()).unwrap()
    }

    fn nums(v: &Value) -> Vec<Option<f64>> {
        v.as_array().unwrap().iter().map(Value::as_f64).collect()
    }

    #[test]
    fn capacities_follow_the_flags() {
        assert_eq!(
            capacities(Duration::from_secs(300), 7),
            [600, 2160, 1440, 2016]
        );
        assert_eq!(
            capacities(Duration::from_secs(3600), 0),
            [3600, 2160, 1440, 0]
        );
    }

    #[test]
    fn a_week_of_seconds_rolls_up_exactly_with_no_gaps_or_duplicates() {
        let mut h = week();
        // A sawtooth: second s of the week has the value s % 600, so every interval's figures
        // are known exactly.
        let start = 1_700_000_000u64 / 300 * 300;
        for s in 0..WEEK_S {
            let v = (s % 600) as f32;
            h.record((start + s) * 1000, &values(&[("cpu.total", v)]));
        }
        let i = h.index["cpu.total"];
        for (tier, step_s) in [(1usize, 10u64), (2, 60), (3, 300)] {
            let t = &h.tiers[tier];
            let open = t.open.unwrap();
            assert_eq!(open, (start + WEEK_S - 1) / step_s);
            // The week's first 5 min point is before the samples began: start there.
            for slot in (open - t.capacity as u64).max(start / step_s)..open {
                let low = (slot * step_s - start) % 600;
                let want = [
                    low as f32,
                    low as f32 + (step_s - 1) as f32 / 2.0,
                    (low + step_s - 1) as f32,
                ];
                assert_eq!(t.point(i, slot), want, "tier {tier} slot {slot}");
            }
        }
        let week = answer(&h, "7d");
        assert_eq!(week["step_ms"], 300_000);
        let ts = nums(&week["ts"]);
        assert_eq!(
            ts.len(),
            2016 + 1,
            "7 days of 5 min points and the open one"
        );
        for w in ts.windows(2) {
            assert_eq!(
                w[1].unwrap() - w[0].unwrap(),
                300_000.0,
                "no gap, no duplicate"
            );
        }
        let mean = nums(&week["series"]["cpu.total"]["mean"]);
        // The first interval began before the samples did; every later one has its values.
        assert_eq!(mean[0], None);
        assert!(
            mean[1..].iter().all(Option::is_some),
            "a gap in a full week"
        );
        assert_eq!(nums(&answer(&h, "24h")["ts"]).len(), 1441);
        assert_eq!(nums(&answer(&h, "6h")["ts"]).len(), 2161);
        assert_eq!(nums(&answer(&h, "1h")["ts"]).len(), 361);
        // The 1 s tier: its last 10 minutes, one sample a point, the newest last.
        let fine = answer(&h, "10m");
        let f = nums(&fine["series"]["cpu.total"]["max"]);
        assert_eq!(f.len(), 601);
        assert!(f.iter().all(Option::is_some), "a second without a sample");
        assert_eq!(f.last().unwrap().unwrap(), ((WEEK_S - 1) % 600) as f64);
    }

    #[test]
    fn gaps_are_null_and_a_series_without_values_for_its_retention_is_freed() {
        let mut h = week();
        let t0 = 1_700_000_000_000u64;
        for s in 0..120 {
            let mut v = values(&[("cpu.total", 1.0)]);
            if s < 60 {
                v.push(("temp.soc".into(), 50.0));
            }
            h.record(t0 + s * 1000, &v);
        }
        assert_eq!(h.series_count(), 2);
        let fine = answer(&h, "10m");
        let temp = nums(&fine["series"]["temp.soc"]["mean"]);
        assert_eq!(temp.iter().filter(|v| v.is_some()).count(), 60);
        assert!(
            temp.last().unwrap().is_none(),
            "the open second has no temperature"
        );
        // A day and a half later only the week tier holds it; past the week, nothing.
        h.record(t0 + 36 * 3600 * 1000, &values(&[("cpu.total", 1.0)]));
        assert_eq!(h.series_count(), 2);
        h.record(t0 + (WEEK_S + 600) * 1000, &values(&[("cpu.total", 1.0)]));
        assert_eq!(h.series_count(), 1, "temp.soc had no value for a week");
        assert!(answer(&h, "7d")["series"].get("temp.soc").is_none());
    }

    #[test]
    fn at_most_sixteen_of_each_kind_are_kept() {
        let mut h = week();
        let v: Vec<(String, f32)> = (0..40)
            .flat_map(|i| {
                [
                    (format!("net.veth{i}.rx_per_s"), 1.0),
                    (format!("net.veth{i}.tx_per_s"), 1.0),
                    (format!("temp.sensor {i}"), 40.0),
                ]
            })
            .collect();
        h.record(1_000, &v);
        assert_eq!(h.series_count(), 16 * 2 + 16);
        // Interface names with dots (VLANs) are one instance.
        let mut h = week();
        h.record(
            1_000,
            &values(&[
                ("net.eth0.100.rx_per_s", 5.0),
                ("net.eth0.100.tx_per_s", 5.0),
            ]),
        );
        assert_eq!(h.instances["net"], ["eth0.100"]);
    }

    #[test]
    fn the_week_fits_the_budget() {
        // A 4-core Pi with 2 interfaces, 3 sensors and 2 disks, a full week.
        let names = budget_host_series();
        assert_eq!(names.len(), 31);
        let v: Vec<(String, f32)> = names.iter().map(|n| (n.clone(), 1.0)).collect();
        let mut h = week();
        let start = 1_700_000_000u64;
        for s in (0..WEEK_S).step_by(10) {
            h.record((start + s) * 1000, &v);
        }
        let bytes = h.bytes();
        assert!(
            // 70 KiB a series; the bench checks the daemon's RSS against the 6 MiB budget.
            bytes <= 9 * 1024 * 1024 / 4,
            "a week of {} series: {bytes} bytes",
            names.len()
        );
    }

    #[test]
    fn a_clock_jump_forward_empties_only_what_it_passed_and_one_back_waits_or_restarts() {
        let mut h = week();
        let t0 = 1_000_000u64 * 1000;
        for s in 0..100 {
            h.record(t0 + s * 1000, &values(&[("cpu.total", 2.0)]));
        }
        // Forward by two hours: the 10 min of seconds are gone, the 10 s tier keeps its points.
        let t1 = t0 + 2 * 3600 * 1000;
        h.record(t1, &values(&[("cpu.total", 3.0)]));
        let fine = nums(&answer(&h, "10m")["series"]["cpu.total"]["mean"]);
        assert_eq!(fine.iter().flatten().count(), 1);
        let six = nums(&answer(&h, "6h")["series"]["cpu.total"]["mean"]);
        assert_eq!(six.iter().flatten().count(), 10 + 1);
        // Back by a day (NTP correcting a wrong clock): dropped, then after BEHIND_RESET the
        // tiers start again from the clock as it is.
        let back = t1 - 86_400 * 1000;
        for s in 0..u64::from(BEHIND_RESET) - 1 {
            h.record(back + s * 1000, &values(&[("cpu.total", 9.0)]));
        }
        let six = nums(&answer(&h, "6h")["series"]["cpu.total"]["max"]);
        assert!(
            six.iter().flatten().all(|&v| v <= 3.0),
            "samples from behind were kept"
        );
        h.record(
            back + u64::from(BEHIND_RESET) * 1000,
            &values(&[("cpu.total", 9.0)]),
        );
        let fine = nums(&answer(&h, "10m")["series"]["cpu.total"]["mean"]);
        assert_eq!(fine.iter().flatten().collect::<Vec<_>>(), [&9.0]);
        assert_eq!(h.dropped_behind, u64::from(BEHIND_RESET) - 1);
    }

    #[test]
    fn websocket_parts_are_valid_json_and_hold_every_series_once() {
        let mut h = week();
        let v: Vec<(String, f32)> = (0..20).map(|i| (format!("temp.s{i}"), 40.0)).collect();
        for s in 0..700u64 {
            h.record(1_700_000_000_000 + s * 1000, &v);
        }
        let p = h.pieces("10m").unwrap();
        let frames = p.frames("system", 16 * 1024);
        assert!(frames.len() > 1, "one frame for {} bytes", p.whole().len());
        let mut seen = Vec::new();
        for (k, f) in frames.iter().enumerate() {
            let v: Value = serde_json::from_str(f).unwrap();
            assert_eq!(v["type"], "history");
            assert_eq!(v["range"], "10m");
            assert_eq!(v["part"], k + 1);
            assert_eq!(v["parts"], frames.len());
            assert_eq!(v["ts"].is_array(), k == 0);
            seen.extend(v["series"].as_object().unwrap().keys().cloned());
        }
        seen.sort();
        assert_eq!(seen.len(), 16, "the first 16 sensors, each once");
        seen.dedup();
        assert_eq!(seen.len(), 16);
        let whole: Value = serde_json::from_str(&p.whole()).unwrap();
        assert_eq!(whole["series"].as_object().unwrap().len(), 16);
    }

    #[test]
    fn answers_share_one_closed_part_per_tier_step_and_match_a_fresh_build() {
        let mut h = week();
        let t0 = 1_700_000_000_000;
        let fresh = |h: &History, range: &str| {
            let kept = h.closed.take();
            let a = h.answer(range);
            *h.closed.borrow_mut() = kept;
            a
        };
        for s in 0..1300u64 {
            // A sensor that comes and goes, a series whose closed points run out of the 10 min
            // window, a gap.
            let mut v = values(&[("cpu.total", (s % 97) as f32)]);
            if (200..700).contains(&s) {
                v.push(("temp.cpu_thermal".into(), 40.0 + (s % 7) as f32));
            }
            if !(900..930).contains(&s) {
                h.record(t0 + s * 1000, &v);
            }
            if s % 3 == 0 || s % 10 == 9 {
                for (range, _, _) in RANGES {
                    assert_eq!(h.answer(range), fresh(&h, range), "{range} at {s} s");
                }
            }
        }
        // Within one 10 s step, every 1 h answer shares the same closed part; the next step
        // builds a new one and the stale one is let go.
        let step = t0 + 1310 * 1000;
        h.record(step, &values(&[("cpu.total", 1.0)]));
        let a = h.pieces("1h").unwrap();
        h.record(step + 1000, &values(&[("cpu.total", 2.0)]));
        let b = h.pieces("1h").unwrap();
        assert!(Arc::ptr_eq(&a.closed, &b.closed));
        assert_ne!(a.whole(), b.whole(), "the open interval moved on");
        h.record(step + 10_000, &values(&[("cpu.total", 3.0)]));
        assert_eq!(
            Arc::strong_count(&a.closed),
            2,
            "only the answers hold the old part"
        );
        assert!(!Arc::ptr_eq(&a.closed, &h.pieces("1h").unwrap().closed));
    }

    #[test]
    fn unknown_ranges_and_an_empty_history_answer_sensibly() {
        let h = week();
        assert!(h.answer("2d").is_none());
        let v = answer(&h, "24h");
        assert_eq!(v["ts"], serde_json::json!([]));
        assert_eq!(v["series"], serde_json::json!({}));
        let none = History::new(capacities(Duration::from_secs(300), 0));
        assert_eq!(answer(&none, "7d")["ts"], serde_json::json!([]));
    }
}
