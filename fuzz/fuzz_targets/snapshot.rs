//! The history snapshot decoder must never panic, nor allocate without bound, on any bytes: as
//! a whole file, and as a payload sealed with a right checksum (so the decoder past it is reached).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = edgemon::check_snapshot(data, "pi");
    let _ = edgemon::check_snapshot(&edgemon::seal_snapshot(data), "pi");
});
