//! The mDNS message parser (src/mdns/wire.rs) must never panic, loop, or return what breaks its
//! own bounds, on any datagram a host on the LAN could send.
#![no_main]

#[path = "../../src/mdns/wire.rs"]
#[allow(dead_code)]
mod wire;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = wire::parse(data) {
        assert!(m.questions.len() <= 64);
        assert!(m.records.len() <= 256);
        let names = m
            .questions
            .iter()
            .map(|q| &q.name)
            .chain(m.records.iter().map(|r| &r.name));
        for n in names {
            assert!(n.len() <= wire::MAX_NAME, "{n}");
        }
    }
});
