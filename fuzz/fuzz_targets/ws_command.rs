//! The client command parser must never panic on any text, and a log position (`after`) that
//! parses encodes to one that parses to the same.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = edgemon::protocol::parse(text);
        if let Some(once) = edgemon::reencode_log_pos(text) {
            assert_eq!(edgemon::reencode_log_pos(&once).as_deref(), Some(once.as_str()));
        }
    }
});
