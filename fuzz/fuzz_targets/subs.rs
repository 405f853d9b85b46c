//! Subscription bodies (SIP008 and sing-box JSON, Clash YAML, base64 and link lists): any text,
//! no panic; every entry that parsed is a link the store can keep (its JSON round trip holds)
//! and has an identity key; error messages stay short.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xrat::links::ParsedLink;
use xrat::subs::{identity_key, parse_body};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_body(text, "https://fuzz.invalid/s") {
        Ok(parsed) => {
            for entry in parsed.entries {
                match entry.result {
                    Ok(link) => {
                        let json = serde_json::to_string(&link).expect("a link serializes");
                        let back: ParsedLink = serde_json::from_str(&json).expect("and back");
                        assert_eq!(back, link, "JSON round trip changed the link");
                        assert!(!identity_key(&link.outbound).is_empty());
                    }
                    Err(e) => assert!(e.chars().count() < 4096, "{e}"),
                }
            }
        }
        Err(e) => assert!(e.to_string().chars().count() < 4096),
    }
});
