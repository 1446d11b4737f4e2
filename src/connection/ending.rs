//! Every way a WebSocket connection can end: one `match` gives the Close frame (DESIGN.md's
//! close-code table), one `Display` the `reason=` of the close log line.

use std::fmt;

use async_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::rate::{WS_BURST, WS_EMPTY_CLOSE, WS_PER_SEC};

/// Why a connection ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Ending {
    /// The daemon is shutting down.
    Shutdown,
    /// The daemon shut down while a write to this client was blocked.
    ShutdownDuringWrite,
    /// A ping went unanswered for `--pong-timeout`.
    PongTimeout,
    /// No subscription and no client message for `--idle-timeout`.
    Idle,
    /// More invalid commands than `INVALID_BURST` at once, or than `INVALID_PER_SEC` after it.
    InvalidCommands,
    /// The client kept sending faster than its message bucket refills for `WS_EMPTY_CLOSE`.
    RateLimited,
    /// A client message over `MAX_CLIENT_MESSAGE`; how big, where known.
    TooBig(String),
    /// The client broke the WebSocket protocol.
    ProtocolError(String),
    /// A text message that is not UTF-8.
    InvalidUtf8,
    /// A command handler (or the whole task) panicked.
    Panic,
    /// The client closed with this code (1005: none given); tungstenite answered it.
    ClientClosed(u16),
    /// A write blocked past `--write-timeout`.
    WriteTimeout,
    /// A write failed.
    WriteFailed(String),
    /// The client went away: the stream ended (`None`) or the socket failed.
    Gone(Option<String>),
    /// A read failed for another reason.
    ReadFailed(String),
}

impl Ending {
    /// The Close frame this ending sends (DESIGN.md's close-code table), or `None` where the
    /// socket cannot take one (gone, blocked, or the client's own close already answered).
    pub(super) fn close_frame(&self) -> Option<(CloseCode, &'static str)> {
        match self {
            Ending::Shutdown => Some((CloseCode::Away, "server shutting down")),
            Ending::PongTimeout => Some((CloseCode::Policy, "pong timeout")),
            Ending::Idle => Some((CloseCode::Policy, "idle")),
            Ending::InvalidCommands => Some((CloseCode::Policy, "too many invalid commands")),
            Ending::RateLimited => Some((CloseCode::Policy, "too many messages")),
            Ending::TooBig(_) => Some((CloseCode::Size, "message too big")),
            Ending::ProtocolError(_) => Some((CloseCode::Protocol, "protocol error")),
            Ending::InvalidUtf8 => Some((CloseCode::Invalid, "invalid UTF-8")),
            Ending::Panic => Some((CloseCode::Error, "internal error")),
            Ending::ShutdownDuringWrite
            | Ending::ClientClosed(_)
            | Ending::WriteTimeout
            | Ending::WriteFailed(_)
            | Ending::Gone(_)
            | Ending::ReadFailed(_) => None,
        }
    }

    /// How a read error ends the connection.
    pub(super) fn from_read(e: WsError) -> Ending {
        match e {
            WsError::Capacity(CapacityError::MessageTooLong { size, max_size }) => {
                Ending::TooBig(format!("{size} > {max_size} bytes"))
            }
            WsError::Capacity(e) => Ending::TooBig(e.to_string()),
            WsError::Protocol(e) => Ending::ProtocolError(e.to_string()),
            WsError::Utf8(_) => Ending::InvalidUtf8,
            WsError::Io(e) => Ending::Gone(Some(e.to_string())),
            e => Ending::ReadFailed(e.to_string()),
        }
    }
}

/// The `reason=` of the close log line.
impl fmt::Display for Ending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ending::Shutdown => f.write_str("server shutdown"),
            Ending::ShutdownDuringWrite => f.write_str("server shutdown during a blocked write"),
            Ending::PongTimeout => f.write_str("pong timeout"),
            Ending::Idle => f.write_str("idle timeout"),
            Ending::InvalidCommands => f.write_str("too many invalid commands"),
            Ending::RateLimited => write!(
                f,
                "message rate over {WS_PER_SEC}/s (burst {WS_BURST}) for {}s",
                WS_EMPTY_CLOSE.as_secs()
            ),
            Ending::TooBig(size) => write!(f, "message too big ({size})"),
            Ending::ProtocolError(e) => write!(f, "protocol error: {e}"),
            Ending::InvalidUtf8 => f.write_str("invalid UTF-8 in a text frame"),
            Ending::Panic => f.write_str("internal error (panic)"),
            Ending::ClientClosed(code) => write!(f, "client closed ({code})"),
            Ending::WriteTimeout => f.write_str("write timeout"),
            Ending::WriteFailed(e) => write!(f, "write failed: {e}"),
            Ending::Gone(None) => f.write_str("peer closed the socket"),
            Ending::Gone(Some(e)) => write!(f, "peer gone: {e}"),
            Ending::ReadFailed(e) => write!(f, "read failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_ending_has_one_close_code_and_a_log_line() {
        let cases: &[(Ending, Option<u16>, &str)] = &[
            (Ending::Shutdown, Some(1001), "server shutdown"),
            (Ending::PongTimeout, Some(1008), "pong timeout"),
            (Ending::Idle, Some(1008), "idle timeout"),
            (
                Ending::InvalidCommands,
                Some(1008),
                "too many invalid commands",
            ),
            (
                Ending::TooBig("5000 > 4096 bytes".into()),
                Some(1009),
                "message too big (5000 > 4096 bytes)",
            ),
            (Ending::Panic, Some(1011), "internal error (panic)"),
            (Ending::ClientClosed(1000), None, "client closed (1000)"),
            (Ending::WriteTimeout, None, "write timeout"),
            (Ending::Gone(None), None, "peer closed the socket"),
        ];
        for (ending, code, line) in cases {
            assert_eq!(
                ending.close_frame().map(|(c, _)| u16::from(c)),
                *code,
                "{ending:?}"
            );
            assert_eq!(ending.to_string(), *line);
        }
    }

    #[test]
    fn read_errors_map_to_endings() {
        let too_long = WsError::Capacity(CapacityError::MessageTooLong {
            size: 5000,
            max_size: 4096,
        });
        assert_eq!(
            Ending::from_read(too_long),
            Ending::TooBig("5000 > 4096 bytes".into())
        );
        let gone = WsError::Io(std::io::ErrorKind::ConnectionReset.into());
        assert!(matches!(Ending::from_read(gone), Ending::Gone(Some(_))));
    }
}
