//! Share links and subscription blobs: any text, no panic; every parsed link survives the JSON
//! round trip the store relies on, and its error messages stay short.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xrat::links::{parse_input, parse_link, ParsedLink};

fn check(link: &ParsedLink) {
    let json = serde_json::to_string(link).expect("a parsed link serializes");
    let back: ParsedLink = serde_json::from_str(&json).expect("and deserializes");
    assert_eq!(&back, link, "JSON round trip changed the link");
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_link(text) {
        Ok(link) => check(&link),
        Err(e) => assert!(e.to_string().chars().count() < 1024),
    }
    for line in parse_input(text) {
        assert!(line.line >= 1);
        if let Ok(link) = &line.result {
            check(link);
        }
    }
});
