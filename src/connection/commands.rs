//! A connection's client commands: subscribe (with its backfill, at most once per topic per
//! `BACKFILL_AGAIN_AFTER`), unsubscribe, and the error frames for everything else.

use std::panic::AssertUnwindSafe;
use std::time::Instant;

use async_tungstenite::tungstenite::protocol::frame::Utf8Bytes;

use super::{BACKFILL_AGAIN_AFTER, Ending, MAX_SUBSCRIPTIONS, Session, Step, Sub, panic_message};
use crate::protocol::{self, Command};

/// A WebSocket `history` part stays about this size (the socket's send buffer).
pub const HISTORY_PART_BYTES: usize = 64 * 1024;

/// What a client command asks for.
pub(super) enum Action {
    /// Send these frames back.
    Reply(Vec<Utf8Bytes>),
    /// Subscribe to this topic (async: the backfill may wait for its producer's first read),
    /// resuming a log after a line's position.
    Subscribe(String, Option<crate::logs::Pos>),
    /// Send this range of the `system` history (async: built on a blocking thread).
    History(String),
}

impl Session {
    /// Runs a client command, turning a panic in it into a 1011 close of this connection only.
    pub(super) fn command_guarded(&mut self, text: &str) -> Step<Action> {
        match std::panic::catch_unwind(AssertUnwindSafe(|| self.command(text))) {
            Ok(r) => r,
            Err(panic) => {
                log::error!("ws command handler panicked: {}", panic_message(&*panic));
                Err(Ending::Panic)
            }
        }
    }

    /// Handles one client command; returns the frames to send back.
    fn command(&mut self, text: &str) -> Step<Action> {
        match protocol::parse(text) {
            Err(e) => self.invalid(&e, None).map(Action::Reply),
            Ok(Command::Subscribe(topic, None)) => Ok(Action::Subscribe(topic, None)),
            Ok(Command::Subscribe(topic, Some(after))) => {
                if !self.app.topics.is_log(&topic) {
                    let msg = "after is for log topics (a line's pos)";
                    return self.invalid(msg, Some(&topic)).map(Action::Reply);
                }
                match crate::logs::Pos::parse(&after) {
                    Ok(pos) => Ok(Action::Subscribe(topic, Some(pos))),
                    Err(why) => {
                        let msg = format!("invalid after: {why}");
                        self.invalid(&msg, Some(&topic)).map(Action::Reply)
                    }
                }
            }
            Ok(Command::History { topic, range }) => {
                if topic != crate::topics::SYSTEM {
                    let msg = format!(
                        "history is kept for the {} topic only",
                        crate::topics::SYSTEM
                    );
                    return self.invalid(&msg, Some(&topic)).map(Action::Reply);
                }
                if !crate::history::RANGES.iter().any(|(n, _, _)| *n == range) {
                    let msg = "unknown range: use 10m, 1h, 6h, 24h or 7d";
                    return self.invalid(msg, Some(&topic)).map(Action::Reply);
                }
                // Like a backfill: each range at most once per connection per 10 s, so a loop
                // of small requests cannot turn into megabytes sent back.
                if !self.may_backfill(&format!("history {range}"), Instant::now()) {
                    let msg = format!(
                        "history {range} was sent less than {} s ago",
                        BACKFILL_AGAIN_AFTER.as_secs()
                    );
                    return self.invalid(&msg, Some(&topic)).map(Action::Reply);
                }
                Ok(Action::History(range))
            }
            Ok(Command::Unsubscribe(topic)) => {
                self.subs.retain(|s| s.topic != topic);
                Ok(Action::Reply(vec![protocol::unsubscribed(&topic)]))
            }
            Ok(Command::Other(op)) if op == "panic" && self.app.config.test_hooks => {
                panic!("test hook: injected panic in a connection handler")
            }
            Ok(Command::Other(op)) => self
                .invalid(
                    &format!("unknown op '{op}' (expected subscribe, unsubscribe or history)"),
                    None,
                )
                .map(Action::Reply),
        }
    }

    /// Subscribes to `topic` and sends the acknowledgement and backfill (or the error frame).
    pub(super) async fn subscribe_and_reply(
        &mut self,
        topic: &str,
        after: Option<&crate::logs::Pos>,
    ) -> Step {
        let replies = self.subscribe(topic, after).await?;
        self.send_all(replies).await?;
        // The backfill is out: the hub may write live frames itself from here on.
        if let Some(sub) = self.subs.iter().find(|s| s.topic == topic) {
            sub.outlet.go_live(sub.membership.id());
        }
        Ok(())
    }

    /// Subscribes to `topic`; returns the acknowledgement and the backfill, or an error frame.
    async fn subscribe(
        &mut self,
        topic: &str,
        after: Option<&crate::logs::Pos>,
    ) -> Step<Vec<Utf8Bytes>> {
        if self.subs.iter().any(|s| s.topic == topic) {
            return Ok(vec![protocol::subscribed(topic)]);
        }
        if self.subs.len() >= MAX_SUBSCRIPTIONS {
            let msg = format!("too many subscriptions (at most {MAX_SUBSCRIPTIONS})");
            return self.invalid(&msg, Some(topic));
        }
        // SECURITY: only catalog names are topics; a name never reaches the filesystem.
        let outlet = self.ws.get_ref().outlet().clone();
        let sub = match self
            .app
            .registry
            .attach(topic, &self.tx, Some(outlet.clone()))
        {
            Ok(sub) => sub,
            Err(e) => return self.invalid(&e.to_string(), Some(topic)),
        };
        // Taken after subscribing, so nothing published in between is missed; overlap is skipped by seq.
        // Boxed: inlined, these reads (a file, the journal, a container engine) would be part
        // of every connection's task for its whole life (see `a_connection_task_stays_small`).
        let backfill = match after {
            // A resume sends only what the client lacks: from the ring always, from the source
            // (up to 1 MiB) at most once per topic per BACKFILL_AGAIN_AFTER.
            Some(pos) => {
                let may_read = self.may_backfill(topic, Instant::now());
                Box::pin(self.app.topics.resume(topic, pos, may_read)).await
            }
            None => {
                let mut b = Box::pin(self.app.topics.backfill(topic)).await;
                if b.frames.is_empty()
                    && let Some(last) = sub.hub().last_frame()
                {
                    // Periodic topics: the latest frame now rather than up to a period from now.
                    b.covers_seq = last.seq();
                    b.frames.push(last.text());
                }
                if !self.may_backfill(topic, Instant::now()) {
                    // Sent moments ago: live frames from here on (`covers_seq` still skips the
                    // overlap).
                    b.frames.clear();
                }
                b
            }
        };
        // Until it goes live, the hub queues this subscription's frames and the task skips
        // what the backfill covered.
        outlet.add_lane(sub.id(), backfill.covers_seq, self.app.topics.is_log(topic));
        self.subs.push(Sub {
            topic: topic.to_string(),
            membership: sub,
            outlet,
        });
        let mut out = vec![protocol::subscribed(topic)];
        out.extend(backfill.frames);
        Ok(out)
    }

    /// Sends the `system` history over `range` as `history` frames, in order, after anything
    /// queued before (the frames go out from this task, not through the drop-oldest queue; the
    /// task handles one command at a time, so one range is in flight at most).
    pub(super) async fn send_history(&mut self, range: &str) -> Step {
        let sampler = self.app.sampler.clone();
        let range = range.to_string();
        let pieces = smol::unblock(move || sampler.history_answer(&range)).await;
        let frames = match pieces {
            Some(p) => p.frames(crate::topics::SYSTEM, HISTORY_PART_BYTES),
            None => Vec::new(),
        };
        self.send_all(frames.into_iter().map(Utf8Bytes::from).collect())
            .await
    }

    /// Whether `topic`'s backfill may go out now (not sent in the last `BACKFILL_AGAIN_AFTER`);
    /// if so, records that it goes out.
    fn may_backfill(&mut self, topic: &str, now: Instant) -> bool {
        self.backfilled
            .retain(|(_, at)| now < *at + BACKFILL_AGAIN_AFTER);
        if self.backfilled.iter().any(|(t, _)| t == topic) {
            return false;
        }
        self.backfilled.push((topic.to_string(), now));
        true
    }

    /// An error frame for an invalid command; too many in a row end the connection with 1008.
    pub(super) fn invalid(&mut self, error: &str, topic: Option<&str>) -> Step<Vec<Utf8Bytes>> {
        // The command that spends the last of the allowance closes the connection.
        let now = Instant::now();
        self.invalid.take(now);
        if !self.invalid.has_token(now) {
            return Err(Ending::InvalidCommands);
        }
        Ok(vec![protocol::error_frame(error, topic)])
    }
}
