//! Printing views and errors.

use serde::Serialize;

/// Prints `view` as pretty JSON on stdout.
pub fn print_json<T: Serialize>(view: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(view).expect("views serialize")
    );
}

/// Prints `label: value` lines with the values aligned, in one write.
pub fn print_aligned(lines: &[(&str, String)]) {
    let text = aligned(lines);
    print!("{text}");
}

/// `label: value` lines with the values aligned, each ending in a newline.
pub fn aligned(lines: &[(&str, String)]) -> String {
    use std::fmt::Write as _;
    let width = lines
        .iter()
        .map(|(label, _)| label.len())
        .max()
        .unwrap_or(0)
        + 1;
    let mut out = String::new();
    for (label, value) in lines {
        let _ = writeln!(out, "{:<width$} {value}", format!("{label}:"));
    }
    out
}

/// Seconds as "1h 2m 3s".
pub fn human_duration(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m {s}s"),
        _ => format!("{h}h {m}m {s}s"),
    }
}

/// Prints an error with its whole chain of causes on stderr.
pub fn print_error(error: &dyn std::error::Error) {
    eprintln!("error: {error}");
    let mut source = error.source();
    while let Some(cause) = source {
        eprintln!("  caused by: {cause}");
        source = cause.source();
    }
}
