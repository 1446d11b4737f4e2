//! Client commands on the WebSocket: `{"op":"subscribe"|"unsubscribe","topic":"..."}`, parsed by a
//! pure function so it can be fuzzed and tested without a connection.

use serde::Deserialize;

/// A valid client command.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// Subscribe to a topic.
    Subscribe(String),
    /// Unsubscribe from a topic.
    Unsubscribe(String),
    /// Any other op (only the test hooks give one a meaning).
    Other(String),
}

/// Parses one text frame; the error is the message for the client's error frame.
pub fn parse(text: &str) -> Result<Command, String> {
    #[derive(Deserialize)]
    struct Raw {
        op: String,
        topic: Option<String>,
    }
    let raw: Raw = serde_json::from_str(text).map_err(|e| format!("invalid JSON command: {e}"))?;
    match (raw.op.as_str(), raw.topic) {
        ("subscribe" | "unsubscribe", None) => Err("missing topic".into()),
        ("subscribe", Some(t)) => Ok(Command::Subscribe(t)),
        ("unsubscribe", Some(t)) => Ok(Command::Unsubscribe(t)),
        (op, _) => Ok(Command::Other(op.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse() {
        assert_eq!(
            parse(r#"{"op":"subscribe","topic":"system"}"#),
            Ok(Command::Subscribe("system".into()))
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
}
