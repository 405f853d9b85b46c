//! Printing views and errors.

use serde::Serialize;

/// Prints `view` as pretty JSON on stdout.
pub fn print_json<T: Serialize>(view: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(view).expect("views serialize")
    );
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
