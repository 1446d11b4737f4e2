//! The history snapshot: history, events and the last `seq`, kept across restarts in
//! `$RUNTIME_DIRECTORY/history.snap` (`/run/edgemon`, a tmpfs: no write reaches the SD card) and,
//! only with `--state-dir`, on disk.
//!
//! A snapshot is untrusted input: it is written atomically (temp file, fsync, rename), starts
//! with a magic, a version, the payload's length and an FNV-1a checksum of it, and is decoded
//! with a bound on every count and length. A missing, truncated, corrupt, foreign-host or
//! future-version file is a warning and an empty history, never a crash.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::codec::{Bad, Reader, Writer};
use crate::events::Events;
use crate::history::History;

/// The file's name in each directory.
pub const FILE: &str = "history.snap";
/// The first bytes of every snapshot.
pub const MAGIC: &[u8; 8] = b"EDGEMONH";
/// The version this release writes. It reads `VERSION` and every earlier one (the tests keep a
/// version 1 file that later releases must still read). Version 2 adds the firing alerts.
pub const VERSION: u32 = 2;
/// A larger file is not read (a week of 16 cores, interfaces, mounts and sensors is ~7 MiB).
pub const MAX_FILE: u64 = 64 * 1024 * 1024;
const HEADER: usize = 8 + 4 + 8 + 8;

/// What a snapshot holds.
pub struct Snapshot {
    /// The boot it was written in (`/proc/sys/kernel/random/boot_id`).
    pub boot_id: String,
    /// When it was written (unix ms).
    pub saved_ms: u64,
    /// The last `system` `seq`.
    pub seq: u64,
    /// Written by a clean stop (SIGTERM), not a periodic save a crash left behind.
    pub clean_stop: bool,
    /// The tiers.
    pub history: History,
    /// The event ring.
    pub events: Vec<crate::events::Event>,
    /// The alerts firing (and notified) when it was written: (rule, target, since).
    pub firing: Vec<crate::alerts::Firing>,
}

/// FNV-1a, 64 bits: a checksum against a torn or damaged file, not against an attacker (who
/// could write the file could write its checksum).
pub fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// What a snapshot is written from: the live history and events, borrowed.
pub struct SnapshotRef<'a> {
    pub host: &'a str,
    pub boot_id: String,
    pub saved_ms: u64,
    pub seq: u64,
    pub clean_stop: bool,
    pub history: &'a History,
    pub events: &'a Events,
    pub firing: &'a [crate::alerts::Firing],
}

impl SnapshotRef<'_> {
    /// The file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut p = Writer::default();
        p.str(self.host);
        p.str(&self.boot_id);
        p.u64(self.saved_ms);
        p.u64(self.seq);
        p.u8(u8::from(self.clean_stop));
        self.history.encode(&mut p);
        p.u32(self.events.list().count() as u32);
        for e in self.events.list() {
            p.u64(e.ts);
            p.str(&e.kind);
            p.str(&e.state);
            p.str(&e.text);
        }
        p.u32(self.firing.len() as u32);
        for f in self.firing {
            p.str(&f.0);
            p.u8(u8::from(f.1.is_some()));
            p.str(f.1.as_deref().unwrap_or(""));
            p.u64(f.2);
        }
        let payload = p.0;
        let mut out = Vec::with_capacity(HEADER + payload.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        out.extend_from_slice(&checksum(&payload).to_le_bytes());
        out.extend_from_slice(&payload);
        out
    }
}

impl Snapshot {
    /// Decodes a file's bytes for a daemon on `host` whose tiers keep `capacities`; says why not.
    pub fn decode(bytes: &[u8], host: &str, capacities: [usize; 4]) -> Result<Snapshot, Bad> {
        if bytes.is_empty() {
            return Err("the file is empty".into());
        }
        if bytes.len() < HEADER || &bytes[..8] != MAGIC {
            return Err("not an edgemon history snapshot".into());
        }
        let mut r = Reader::new(&bytes[8..HEADER]);
        let version = r.u32()?;
        if version == 0 || version > VERSION {
            return Err(format!(
                "version {version}, newer than this release reads (up to {VERSION})"
            ));
        }
        let len = r.u64()?;
        let sum = r.u64()?;
        let payload = &bytes[HEADER..];
        if payload.len() as u64 != len {
            return Err(format!(
                "truncated or padded: {} payload bytes, the header says {len}",
                payload.len()
            ));
        }
        if checksum(payload) != sum {
            return Err("the checksum does not match (a damaged file)".into());
        }
        let mut r = Reader::new(payload);
        let snap_host = r.str(256)?;
        if snap_host != host {
            return Err(format!("written on host '{snap_host}', this is '{host}'"));
        }
        let boot_id = r.str(64)?;
        let saved_ms = r.u64()?;
        let seq = r.u64()?;
        let clean_stop = r.u8()? != 0;
        let history = History::decode(&mut r, capacities)?;
        let n = r.count(crate::events::CAPACITY, "events")?;
        let mut events = Vec::with_capacity(n);
        for _ in 0..n {
            events.push(crate::events::Event {
                ts: r.u64()?,
                kind: r.str(32)?,
                state: r.str(16)?,
                text: r.str(crate::events::MAX_TEXT)?,
            });
        }
        let mut firing = Vec::new();
        if version >= 2 {
            let n = r.count(
                crate::alerts::MAX_RULES * crate::alerts::MAX_TARGETS,
                "firing alerts",
            )?;
            for _ in 0..n {
                let name = r.str(32)?;
                let has_target = r.u8()? != 0;
                let target = r.str(256)?;
                firing.push((name, has_target.then_some(target), r.u64()?));
            }
        }
        if !r.at_end() {
            return Err("bytes after the end".into());
        }
        Ok(Snapshot {
            boot_id,
            saved_ms,
            seq,
            clean_stop,
            history,
            events,
            firing,
        })
    }

    /// The events, as a ring to carry on with.
    pub fn events_ring(&self) -> Events {
        let mut ring = Events::default();
        for e in &self.events {
            ring.push(e.ts, &e.kind, &e.state, &e.text);
        }
        ring
    }
}

/// A snapshot of a full week of a 4-core Pi with 2 interfaces, 3 sensors and 2 disks (23
/// series, the budget case) ending at `now_ms`, for host `host`: what the benchmark
/// restores to measure a daemon holding a whole week. The values are a plausible sawtooth.
pub fn synthetic_week(host: &str, now_ms: u64) -> Vec<u8> {
    synthetic(host, now_ms, None, &Events::default())
}

/// The week of `synthetic_week` with what a real one has: the daemon off for two hours ending
/// six hours ago (a gap), and events in the last day (a reboot, under-voltage on and off, an
/// OOM kill): what the dashboard's tests draw a range from.
pub fn synthetic_demo(host: &str, now_ms: u64) -> Vec<u8> {
    let h = 3_600_000u64;
    let mut events = Events::default();
    let ago = |ms: u64| now_ms.saturating_sub(ms);
    events.push(ago(8 * h), "daemon_stop", "once", "edgemon stopped");
    events.push(ago(6 * h), "reboot", "once", "the host booted");
    events.push(ago(6 * h), "daemon_start", "once", "edgemon started");
    events.push(ago(3 * h), "under_voltage", "on", "under-voltage detected");
    events.push(
        ago(3 * h - 120_000),
        "under_voltage",
        "off",
        "under-voltage cleared",
    );
    events.push(
        ago(h),
        "oom_kill",
        "once",
        "the kernel killed a process (out of memory)",
    );
    synthetic(host, now_ms, Some((ago(8 * h), ago(6 * h))), &events)
}

fn synthetic(host: &str, now_ms: u64, gap: Option<(u64, u64)>, events: &Events) -> Vec<u8> {
    let caps = crate::history::capacities(std::time::Duration::from_secs(300), 7);
    let mut h = History::new(caps);
    let names = crate::history::budget_host_series();
    let week_s = 7 * 86_400u64;
    // Every 10 s: enough for every coarse tier to fill, and the 1 s tier holds its last ten
    // minutes at one value in ten, as with nobody watching.
    for s in (0..week_s).step_by(10) {
        let ts = now_ms.saturating_sub((week_s - s) * 1000);
        if gap.is_some_and(|(from, to)| (from..to).contains(&ts)) {
            continue;
        }
        let v: Vec<(String, f32)> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), ((s / 10 + i as u64 * 7) % 97) as f32))
            .collect();
        h.record(ts, &v);
    }
    SnapshotRef {
        host,
        boot_id: crate::events::boot_id(),
        saved_ms: now_ms,
        seq: week_s,
        clean_stop: true,
        history: &h,
        events,
        firing: &[],
    }
    .encode()
}

/// Whether `bytes` decode as a snapshot written on `host` (for the fuzzer): `Err` says why not.
pub fn check_snapshot(bytes: &[u8], host: &str) -> Result<(), String> {
    let caps = crate::history::capacities(std::time::Duration::from_secs(300), 7);
    Snapshot::decode(bytes, host, caps).map(|_| ())
}

/// `payload` with a version 1 header and its right checksum, so a fuzzer reaches the decoder
/// past the checksum.
pub fn seal_snapshot(payload: &[u8]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&checksum(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Writes `bytes` to `dir/FILE` atomically: a temp file beside it, fsync, rename.
pub fn write(dir: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, dir.join(FILE))
}

/// Reads `dir/FILE`: `Ok(None)` if there is none, else its bytes (at most `MAX_FILE`).
pub fn read(dir: &Path) -> Result<Option<Vec<u8>>, Bad> {
    let path = dir.join(FILE);
    let meta = match std::fs::metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    if meta.len() > MAX_FILE {
        return Err(format!(
            "{}: {} bytes, larger than any snapshot ({MAX_FILE})",
            path.display(),
            meta.len()
        ));
    }
    std::fs::read(&path)
        .map(Some)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Where the runtime snapshot lives: `$RUNTIME_DIRECTORY` (its first entry; systemd's
/// `RuntimeDirectory=`), else `/run/edgemon` if it exists and is writable, else nowhere. Never a
/// disk path.
pub fn runtime_dir() -> Option<PathBuf> {
    if let Some(dirs) = std::env::var_os("RUNTIME_DIRECTORY") {
        let first = dirs.to_string_lossy().split(':').next().map(PathBuf::from);
        if let Some(d) = first.filter(|d| !d.as_os_str().is_empty()) {
            return Some(d);
        }
    }
    let run = PathBuf::from("/run/edgemon");
    let probe = run.join(".edgemon-probe");
    let writable = std::fs::File::create(&probe).is_ok();
    let _ = std::fs::remove_file(&probe);
    writable.then_some(run)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::capacities;
    use std::time::Duration;

    const CAPS: fn() -> [usize; 4] = || capacities(Duration::from_secs(300), 7);

    /// A small known history: 20 minutes of cpu.total and a sensor, and two events.
    fn sample_bytes(host: &str) -> Vec<u8> {
        let mut h = History::new(CAPS());
        let t0 = 1_800_000_000_000u64;
        for s in 0..1200u64 {
            let v = vec![
                ("cpu.total".to_string(), (s % 100) as f32),
                ("temp.soc".to_string(), 40.0 + (s % 10) as f32),
            ];
            h.record(t0 + s * 1000, &v);
        }
        let mut events = Events::default();
        events.push(t0, "daemon_start", "once", "started");
        events.push(t0 + 5000, "under_voltage", "on", "under-voltage started");
        let firing = [
            ("under_voltage".to_string(), None, t0 + 5000),
            ("disk_full".to_string(), Some("/data".to_string()), t0),
        ];
        SnapshotRef {
            host,
            boot_id: "b0".into(),
            saved_ms: t0 + 1_200_000,
            seq: 1200,
            clean_stop: true,
            history: &h,
            events: &events,
            firing: &firing,
        }
        .encode()
    }

    #[test]
    fn a_snapshot_round_trips_history_events_and_seq() {
        let bytes = sample_bytes("pi");
        let s = Snapshot::decode(&bytes, "pi", CAPS()).unwrap();
        assert_eq!(
            (s.seq, s.clean_stop, s.boot_id.as_str()),
            (1200, true, "b0")
        );
        assert_eq!(s.events.len(), 2);
        assert_eq!(s.events[1].kind, "under_voltage");
        assert_eq!(s.history.series_count(), 2);
        assert_eq!(s.firing.len(), 2);
        assert_eq!(s.firing[1].1.as_deref(), Some("/data"));
        // The same answers as the history it was written from.
        let again = SnapshotRef {
            host: "pi",
            boot_id: "b0".into(),
            saved_ms: s.saved_ms,
            seq: s.seq,
            clean_stop: s.clean_stop,
            history: &s.history,
            events: &s.events_ring(),
            firing: &s.firing,
        }
        .encode();
        assert_eq!(again, bytes, "decoding and encoding again changes nothing");
        // Fewer days kept now: the newest points that fit.
        let short =
            Snapshot::decode(&bytes, "pi", capacities(Duration::from_secs(300), 0)).unwrap();
        assert!(short.history.answer("1h").unwrap().contains("cpu.total"));
    }

    #[test]
    fn hostile_snapshots_are_refused_with_a_reason_and_never_crash() {
        let good = sample_bytes("pi");
        let mut cases: Vec<(String, Vec<u8>)> = vec![
            ("empty".into(), Vec::new()),
            ("not ours".into(), b"#!/bin/sh\nrm -rf /\n".to_vec()),
            ("other host".into(), sample_bytes("other-pi")),
        ];
        let mut future = good.clone();
        future[8..12].copy_from_slice(&(VERSION + 1).to_le_bytes());
        cases.push(("future version".into(), future));
        let mut zero = good.clone();
        zero[8..12].copy_from_slice(&0u32.to_le_bytes());
        cases.push(("version 0".into(), zero));
        for cut in (0..good.len()).step_by(64) {
            cases.push((format!("truncated at {cut}"), good[..cut].to_vec()));
        }
        for at in (HEADER..good.len()).step_by(97) {
            let mut b = good.clone();
            b[at] ^= 0x5a;
            cases.push((format!("flipped byte {at}"), b));
        }
        let mut padded = good.clone();
        padded.extend_from_slice(&[0; 16]);
        cases.push(("padded".into(), padded));
        // A payload with a valid checksum that claims absurd counts.
        let mut p = Writer::default();
        p.str("pi");
        p.str("b0");
        p.u64(0);
        p.u64(0);
        p.u8(1);
        p.u32(4);
        for (k, step) in crate::history::STEPS_MS.iter().enumerate() {
            p.u64(*step);
            p.u32(u32::MAX);
            p.u8(if k == 0 { 1 } else { 3 });
            p.opt_u64(None);
        }
        cases.push(("absurd capacity".into(), seal_snapshot(&p.0)));
        for (name, bytes) in &cases {
            let why = match Snapshot::decode(bytes, "pi", CAPS()) {
                Ok(_) => panic!("{name}: accepted"),
                Err(why) => why,
            };
            assert!(!why.is_empty(), "{name}: no reason");
        }
        assert!(cases.len() > 20);
    }

    #[test]
    fn the_version_1_file_still_reads() {
        // Written by version 1 (sample_bytes("pi")); later releases must keep reading it.
        let v1 = include_bytes!("../tests/fixtures/history-v1.snap");
        let s = Snapshot::decode(v1, "pi", CAPS()).expect("a version 1 snapshot");
        assert_eq!(s.seq, 1200);
        assert_eq!(s.events.len(), 2);
        assert_eq!(s.history.series_count(), 2);
        assert!(s.firing.is_empty(), "version 1 kept no alerts");
    }

    #[test]
    fn the_version_2_file_still_reads() {
        // Written by version 2 (sample_bytes("pi")); later releases must keep reading it.
        let v2 = include_bytes!("../tests/fixtures/history-v2.snap");
        let s = Snapshot::decode(v2, "pi", CAPS()).expect("a version 2 snapshot");
        assert_eq!((s.seq, s.events.len()), (1200, 2));
        assert_eq!(
            s.firing[0],
            ("under_voltage".to_string(), None, 1_800_000_005_000)
        );
    }

    #[test]
    #[ignore = "writes this version's fixture; run once per snapshot version"]
    fn write_the_fixture() {
        let path = format!("tests/fixtures/history-v{VERSION}.snap");
        std::fs::write(path, sample_bytes("pi")).unwrap();
    }

    #[test]
    fn files_are_written_whole_and_read_back_with_a_size_bound() {
        let d = std::env::temp_dir().join(format!("edgemon-snap-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        assert_eq!(read(&d).unwrap(), None);
        write(&d, b"one").unwrap();
        write(&d, b"two").unwrap();
        assert_eq!(read(&d).unwrap().as_deref(), Some(&b"two"[..]));
        assert!(!d.join(format!(".{FILE}.tmp")).exists());
        let big = std::fs::File::create(d.join(FILE)).unwrap();
        big.set_len(MAX_FILE + 1).unwrap();
        assert!(read(&d).unwrap_err().contains("larger"));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
