//! The request-head parser must never panic, and a parsed head never claims more bytes than given
//! or than the head limit.
#![no_main]

use edgemon::http::{HeadError, MAX_HEAD, parse_head};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse_head(data) {
        Ok(Some((req, n))) => {
            assert!(n <= data.len() && n <= MAX_HEAD);
            assert!(req.path.starts_with('/'));
            // Parsing the same head again gives the same answer.
            let again = parse_head(&data[..n]).unwrap().unwrap();
            assert_eq!(again.0, req);
            assert_eq!(again.1, n);
        }
        Ok(None) => assert!(data.len() < MAX_HEAD),
        Err(HeadError::TooLarge | HeadError::Malformed(_)) => {}
        Err(e) => panic!("parse_head returned an I/O-only error: {e:?}"),
    }
});
