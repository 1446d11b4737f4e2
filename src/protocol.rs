//! The WebSocket wire format, both directions: client commands
//! (`{"op":"subscribe"|"unsubscribe","topic":"..."}`, parsed by a pure function so it can be fuzzed)
//! and every frame the server sends (`data`, `history` and its 8 KiB split, `subscribed`,
//! `unsubscribed`, `error`, `missed`), with the `ts` clock they carry. DESIGN.md's protocol section
//! maps to this file.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use async_tungstenite::tungstenite::protocol::frame::Utf8Bytes;
use serde::Deserialize;

/// A history frame stays under this many bytes: tungstenite keeps its write buffer at the size of
/// the largest frame a connection ever sent, so one huge frame would cost every dashboard for life.
pub const MAX_HISTORY_FRAME: usize = 8 * 1024;

/// A valid client command.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// Subscribe to a topic; for a log topic, `after` (a line's `pos`) resumes right after it.
    Subscribe(String, Option<String>),
    /// Unsubscribe from a topic.
    Unsubscribe(String),
    /// The history of a topic over a range (`{"op":"history","topic":"system","range":"24h"}`).
    History {
        /// The topic (only `system` keeps a history).
        topic: String,
        /// `10m`, `1h`, `6h`, `24h` or `7d`.
        range: String,
    },
    /// Any other op (only the test hooks give one a meaning).
    Other(String),
}

/// Parses one text frame; the error is the message for the client's error frame.
pub fn parse(text: &str) -> Result<Command, String> {
    #[derive(Deserialize)]
    struct Raw {
        op: String,
        topic: Option<String>,
        range: Option<String>,
        after: Option<String>,
    }
    let raw: Raw = serde_json::from_str(text).map_err(|e| format!("invalid JSON command: {e}"))?;
    match (raw.op.as_str(), raw.topic) {
        ("subscribe" | "unsubscribe" | "history", None) => Err("missing topic".into()),
        ("history", Some(topic)) => match raw.range {
            Some(range) => Ok(Command::History { topic, range }),
            None => Err("missing range (10m, 1h, 6h, 24h or 7d)".into()),
        },
        ("subscribe", Some(t)) => Ok(Command::Subscribe(t, raw.after)),
        ("unsubscribe", Some(t)) => Ok(Command::Unsubscribe(t)),
        (op, _) => Ok(Command::Other(op.to_string())),
    }
}

/// Milliseconds since the Unix epoch: the `ts` of every frame.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What a new subscriber gets before live frames.
#[derive(Clone, Debug, Default)]
pub struct Backfill {
    /// Frames to send, in order.
    pub frames: Vec<Utf8Bytes>,
    /// Live frames with `seq` up to this are already covered by `frames` and are skipped.
    pub covers_seq: u64,
}

/// `{"type":"data","topic":..,"seq":..,"ts":..,"data":..}` around already-serialized `data`.
pub fn data_frame(topic: &str, seq: u64, ts: u64, data: &str) -> Utf8Bytes {
    let topic = json_string(topic);
    Utf8Bytes::from(format!(
        "{{\"type\":\"data\",\"topic\":{topic},\"seq\":{seq},\"ts\":{ts},\"data\":{data}}}"
    ))
}

/// History as `{"type":"history","topic":..,"data":[{seq,ts,data},..]}` frames, oldest first,
/// each under `MAX_HISTORY_FRAME` bytes (an item larger than that gets a frame of its own). `extra`
/// (e.g. `"host":{..},`) goes into the first frame only. Items are `(seq, ts, data JSON)`.
pub fn history_frames(topic: &str, extra: &str, items: &[(u64, u64, &str)]) -> Backfill {
    let topic_json = json_string(topic);
    let head = format!("{{\"type\":\"history\",\"topic\":{topic_json},\"data\":[");
    let first_head = format!("{{\"type\":\"history\",\"topic\":{topic_json},{extra}\"data\":[");
    let mut frames = Vec::new();
    let mut cur = String::new();
    for (seq, ts, data) in items {
        let mut item = String::with_capacity(data.len() + 48);
        let _ = write!(item, "{{\"seq\":{seq},\"ts\":{ts},\"data\":{data}}}");
        if !cur.is_empty() && cur.len() + 1 + item.len() + 2 > MAX_HISTORY_FRAME {
            cur.push_str("]}");
            frames.push(Utf8Bytes::from(std::mem::take(&mut cur)));
        }
        if cur.is_empty() {
            cur.push_str(if frames.is_empty() {
                &first_head
            } else {
                &head
            });
        } else {
            cur.push(',');
        }
        cur.push_str(&item);
    }
    if cur.is_empty() {
        // Always one history frame, even if empty, so a client knows live data comes next.
        cur.push_str(&first_head);
    }
    cur.push_str("]}");
    frames.push(Utf8Bytes::from(cur));
    Backfill {
        frames,
        covers_seq: items.last().map_or(0, |i| i.0),
    }
}

/// `{"type":"subscribed","topic":..}`.
pub fn subscribed(topic: &str) -> Utf8Bytes {
    ack("subscribed", topic)
}

/// `{"type":"unsubscribed","topic":..}`.
pub fn unsubscribed(topic: &str) -> Utf8Bytes {
    ack("unsubscribed", topic)
}

/// `{"type":"error","error":..}`, with `"topic"` when the error concerns one.
pub fn error_frame(error: &str, topic: Option<&str>) -> Utf8Bytes {
    let mut v = serde_json::json!({ "type": "error", "error": error });
    if let Some(t) = topic {
        v["topic"] = t.into();
    }
    Utf8Bytes::from(v.to_string())
}

/// `{"type":"missed","topic":..,"lines":N}`: a log subscriber lost `lines` lines.
pub fn missed(topic: &str, lines: u64) -> Utf8Bytes {
    Utf8Bytes::from(
        serde_json::json!({ "type": "missed", "topic": topic, "lines": lines }).to_string(),
    )
}

/// `{"type":"missed","topic":..,"lines":null,"reason":..}`: lines lost at the source, how many
/// not known (DESIGN.md's reasons: `too_far` for a tail that skipped ahead).
pub fn missed_at_source(topic: &str, reason: &str) -> Utf8Bytes {
    Utf8Bytes::from(
        serde_json::json!({ "type": "missed", "topic": topic, "lines": null, "reason": reason })
            .to_string(),
    )
}

/// `{"type": kind, "topic": topic}`.
fn ack(kind: &str, topic: &str) -> Utf8Bytes {
    Utf8Bytes::from(serde_json::json!({ "type": kind, "topic": topic }).to_string())
}

/// `s` as a JSON string literal.
fn json_string(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse() {
        assert_eq!(
            parse(r#"{"op":"subscribe","topic":"system"}"#),
            Ok(Command::Subscribe("system".into(), None))
        );
        assert_eq!(
            parse(r#"{"topic":"x","op":"unsubscribe","extra":1}"#),
            Ok(Command::Unsubscribe("x".into()))
        );
        assert_eq!(
            parse(r#"{"op":"dance"}"#),
            Ok(Command::Other("dance".into()))
        );
        assert_eq!(parse(r#"{"op":"subscribe"}"#), Err("missing topic".into()));
        for bad in [
            "",
            "{",
            "[]",
            "null",
            r#"{"op":1}"#,
            r#"{"topic":"x"}"#,
            r#"{"op":"subscribe","topic":7}"#,
        ] {
            assert!(parse(bad).unwrap_err().starts_with("invalid JSON"), "{bad}");
        }
    }

    #[test]
    fn data_frame_is_valid_json_with_contract_fields() {
        let f = data_frame("system", 7, 123, "{\"a\":1}");
        let v: serde_json::Value = serde_json::from_str(&f).unwrap();
        assert_eq!(v["type"], "data");
        assert_eq!(v["topic"], "system");
        assert_eq!(v["seq"], 7);
        assert_eq!(v["ts"], 123);
        assert_eq!(v["data"]["a"], 1);
    }

    #[test]
    fn small_frames_have_the_contract_shapes() {
        let json = |t: &Utf8Bytes| serde_json::from_str::<serde_json::Value>(t).unwrap();
        assert_eq!(
            json(&subscribed("system")),
            serde_json::json!({"type": "subscribed", "topic": "system"})
        );
        assert_eq!(
            json(&unsubscribed("system")),
            serde_json::json!({"type": "unsubscribed", "topic": "system"})
        );
        assert_eq!(
            json(&error_frame("unknown topic", Some("x"))),
            serde_json::json!({"type": "error", "error": "unknown topic", "topic": "x"})
        );
        assert_eq!(
            json(&error_frame("missing topic", None)),
            serde_json::json!({"type": "error", "error": "missing topic"})
        );
        assert_eq!(
            json(&missed("logs/app", 3)),
            serde_json::json!({"type": "missed", "topic": "logs/app", "lines": 3})
        );
    }
}
