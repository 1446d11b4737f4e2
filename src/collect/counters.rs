//! Per-second rates from kernel counters read at two moments (network bytes and errors, disk
//! bytes and operations): one reading kept per name, nothing else.

use std::collections::HashMap;
use std::time::Instant;

/// A gap longer than this starts over instead of averaging: readings come every second while
/// someone watches and every 10 s otherwise (for the history), so this is only a long stall.
pub const MAX_GAP_SECS: f64 = 15.0;

/// The previous reading of `N` counters per name.
#[derive(Debug)]
pub struct Deltas<const N: usize> {
    prev: Option<(Instant, HashMap<String, [u64; N]>)>,
}

impl<const N: usize> Default for Deltas<N> {
    fn default() -> Self {
        Deltas { prev: None }
    }
}

impl<const N: usize> Deltas<N> {
    /// Each name's counters per second since the previous reading, in the order given: `None`
    /// for a name not read before, after a gap over `MAX_GAP_SECS`, or for a counter that went
    /// backwards (a device re-created), which would otherwise read as a huge rate.
    pub fn update(
        &mut self,
        now: Instant,
        readings: &[(String, [u64; N])],
    ) -> Vec<[Option<f64>; N]> {
        let prev = self.prev.take().filter(|(at, _)| {
            let gap = now.saturating_duration_since(*at).as_secs_f64();
            gap > 0.0 && gap <= MAX_GAP_SECS
        });
        let out = readings
            .iter()
            .map(|(name, now_counts)| {
                let before = prev
                    .as_ref()
                    .and_then(|(at, m)| m.get(name).map(|c| (*at, c)));
                std::array::from_fn(|i| {
                    let (at, counts) = before?;
                    let secs = now.saturating_duration_since(at).as_secs_f64();
                    now_counts[i]
                        .checked_sub(counts[i])
                        .map(|d| d as f64 / secs)
                })
            })
            .collect();
        self.prev = Some((now, readings.iter().cloned().collect()));
        out
    }
}

/// A byte or operation rate as a whole number.
pub fn whole(rate: Option<f64>) -> Option<u64> {
    rate.map(|r| r.round() as u64)
}

/// A rate of rare events (errors) with one decimal: 1 in 10 s is 0.1, not 0.
pub fn tenths(rate: Option<f64>) -> Option<f32> {
    rate.map(|r| (r * 10.0).round() as f32 / 10.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rates_come_from_deltas_over_elapsed_time() {
        let mut d = Deltas::<2>::default();
        let t0 = Instant::now();
        let first = d.update(t0, &[("eth0".into(), [1000, 3])]);
        assert_eq!(first, [[None, None]], "no rate without a previous reading");
        let second = d.update(t0 + Duration::from_secs(2), &[("eth0".into(), [5000, 4])]);
        assert_eq!(whole(second[0][0]), Some(2000));
        assert_eq!(tenths(second[0][1]), Some(0.5));
    }

    #[test]
    fn a_long_gap_a_reset_counter_or_a_new_name_gives_no_rate() {
        let mut d = Deltas::<1>::default();
        let t0 = Instant::now();
        d.update(t0, &[("a".into(), [1000])]);
        let after_gap = d.update(t0 + Duration::from_secs(60), &[("a".into(), [9000])]);
        assert_eq!(after_gap, [[None]]);
        let reset = d.update(t0 + Duration::from_secs(61), &[("a".into(), [10])]);
        assert_eq!(reset, [[None]]);
        let more = d.update(
            t0 + Duration::from_secs(62),
            &[("a".into(), [20]), ("b".into(), [5])],
        );
        assert_eq!(more, [[Some(10.0)], [None]]);
    }
}
