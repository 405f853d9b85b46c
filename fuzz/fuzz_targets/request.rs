//! The daemon's request decoder: any bytes, no panic; an error always carries a message, and an
//! accepted request's echoed id is valid JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match xrat::ipc::decode_request(data) {
        Ok((id, _request)) => {
            serde_json::from_slice::<serde_json::Value>(id.as_json())
                .expect("an accepted id is JSON");
        }
        Err(e) => {
            assert!(!e.message.is_empty(), "an error without a message");
            assert!(matches!(e.code.number(), 400 | 426), "{e:?}");
            serde_json::from_slice::<serde_json::Value>(e.id.as_json())
                .expect("an echoed id is JSON");
        }
    }
});
