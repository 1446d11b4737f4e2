//! Token buckets: how fast one client may send WebSocket messages or HTTP requests. A client
//! that empties its bucket is not refused at once: its socket is simply not read until a token is
//! back (backpressure on that socket only; nobody else waits), so the bursts a real client makes
//! (a page's startup, a script's thousand pipelined requests) are served, just slowed.

use std::time::{Duration, Instant};

/// Every loop over ready input (a WebSocket's messages, a connection's pipelined requests) yields
/// to the executor after at most this many, so one busy client cannot hold the thread.
pub const READ_BATCH: u32 = 32;
/// WebSocket messages a client may send at once (a fragmented message counts once; pings count).
pub const WS_BURST: u32 = 2_000;
/// WebSocket messages per second sustained.
pub const WS_PER_SEC: u32 = 100;
/// A WebSocket whose bucket stays empty this long is closed with 1008.
pub const WS_EMPTY_CLOSE: Duration = Duration::from_secs(5);
/// HTTP requests a connection may send at once.
pub const HTTP_BURST: u32 = 2_000;
/// HTTP requests per second sustained, per connection.
pub const HTTP_PER_SEC: u32 = 1_000;

/// One client's bucket.
#[derive(Debug)]
pub struct Bucket {
    /// Tokens now (fractions accrue between refills).
    tokens: f64,
    /// The most tokens held.
    burst: f64,
    /// Tokens added per second.
    per_sec: f64,
    /// When `tokens` was last brought up to date.
    last: Instant,
    /// Since when the client has been held back without the bucket recovering, if it is.
    empty_since: Option<Instant>,
}

impl Bucket {
    /// A full bucket of `burst` tokens refilled at `per_sec`.
    pub fn new(burst: u32, per_sec: u32, now: Instant) -> Bucket {
        Bucket {
            tokens: f64::from(burst),
            burst: f64::from(burst),
            per_sec: f64::from(per_sec),
            last: now,
            empty_since: None,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.burst);
        self.last = now;
        if self.tokens >= 2.0 {
            // Room for more than the one message that was waiting: the client let up.
            self.empty_since = None;
        }
    }

    /// Whether the client may be read now. `false` starts (or continues) the empty stretch;
    /// the caller waits until [`Bucket::ready_at`] before reading that client again.
    pub fn has_token(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            return true;
        }
        self.empty_since.get_or_insert(now);
        false
    }

    /// Spends one token for a message or request just read (it may go below zero for the one
    /// read past the limit; the next reads wait longer).
    pub fn take(&mut self, now: Instant) {
        self.refill(now);
        self.tokens -= 1.0;
    }

    /// When the next token is there.
    pub fn ready_at(&self) -> Instant {
        let missing = (1.0 - self.tokens).max(0.0);
        self.last + Duration::from_secs_f64(missing / self.per_sec)
    }

    /// Since when the client has been held back without letting up, if it still is now: a
    /// client that went quiet lets its bucket fill up again, and that ends the stretch.
    pub fn held_back_since(&mut self, now: Instant) -> Option<Instant> {
        self.refill(now);
        self.empty_since
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_served_then_the_rate_holds() {
        let t0 = Instant::now();
        let mut b = Bucket::new(3, 10, t0);
        for _ in 0..3 {
            assert!(b.has_token(t0));
            b.take(t0);
        }
        assert!(!b.has_token(t0), "the burst is spent");
        assert_eq!(b.held_back_since(t0), Some(t0));
        let next = b.ready_at();
        assert!(
            next > t0 && next <= t0 + Duration::from_millis(101),
            "{:?}",
            next - t0
        );
        assert!(b.has_token(next));
        b.take(next);
        assert!(!b.has_token(next));
        assert_eq!(
            b.held_back_since(next),
            Some(t0),
            "still held back since t0"
        );
    }

    #[test]
    fn a_client_gone_quiet_is_not_held_back_whoever_asks() {
        let t0 = Instant::now();
        let mut b = Bucket::new(2, 10, t0);
        b.take(t0);
        b.take(t0);
        assert!(!b.has_token(t0));
        let next = b.ready_at();
        assert!(b.has_token(next), "one token back");
        // No message read since: judged 5 s later, the bucket is full and nothing is held back.
        assert_eq!(b.held_back_since(t0 + Duration::from_secs(5)), None);
    }

    #[test]
    fn letting_up_ends_the_empty_stretch() {
        let t0 = Instant::now();
        let mut b = Bucket::new(2, 10, t0);
        b.take(t0);
        b.take(t0);
        assert!(!b.has_token(t0));
        assert!(b.has_token(t0 + Duration::from_millis(250)));
        assert_eq!(
            b.held_back_since(t0 + Duration::from_millis(250)),
            None,
            "2.5 tokens back: the client let up"
        );
        assert!(b.has_token(t0 + Duration::from_secs(60)));
        b.take(t0 + Duration::from_secs(60));
        assert!(
            b.has_token(t0 + Duration::from_secs(60)),
            "refill stops at the burst"
        );
    }
}
