//! config.toml parsing: any text, no panic; every error names the file.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use xrat::settings::Settings;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = Settings::parse(text, Path::new("/fuzz/config.toml")) {
        assert!(e.to_string().contains("/fuzz/config.toml"), "{e}");
    }
});
