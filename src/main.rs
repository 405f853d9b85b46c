//! The `xrat` binary: argv to [`xrat::cli::run`], the outcome to an exit code.
//!
//! `no_main`: std's own start-up (`lang_start`) asks glibc for the main thread's stack bounds to
//! guard against stack overflow, and glibc finds them by parsing `/proc/self/maps` with sscanf.
//! Measured with callgrind, that is 117k of the 535k instructions of a whole `xrat daemon status`
//! run, more than all of xrat's own work (26k). Scripts run `xrat` thousands of times, so the
//! binary starts itself and keeps the two things of `lang_start` that matter here: SIGPIPE
//! ignored (a closed pipe is an EPIPE error, not a silent death) and a panic exits with 101.
//! What is given up: a stack overflow on the main thread is a plain SIGSEGV instead of a
//! "has overflowed its stack" message.

// Under `cargo test` the harness supplies `main`, so the binary starts itself only otherwise.
#![cfg_attr(not(test), no_main)]

#[cfg(not(test))]
use std::ffi::{c_char, c_int};

#[cfg(not(test))]
use std::sync::atomic::{AtomicBool, Ordering};

#[cfg(not(test))]
/// The exit code of a panic, as std's own start-up uses.
const EXIT_PANIC: i32 = 101;

#[cfg(not(test))]
/// The exit code when the reader of stdout went away (`xrat config list | head -3`): the reader
/// got what it wanted, so it is not an error, as for ripgrep.
const EXIT_OK: i32 = 0;

#[cfg(not(test))]
/// Set by the panic hook when `println!` found stdout closed (EPIPE, since SIGPIPE is ignored).
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// A closed stdout makes `println!` panic with "failed printing to stdout: Broken pipe". That is
/// the reader's choice, not a bug: end quietly instead of printing a panic message. Every other
/// panic goes to the default hook.
#[cfg(not(test))]
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .unwrap_or_default();
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            STDOUT_CLOSED.store(true, Ordering::Relaxed);
        } else {
            default(info);
        }
    }));
}

/// The C entry point (glibc's `__libc_start_main` calls it); arguments come from
/// `std::env::args`, which glibc hands std before `main` runs.
#[cfg(not(test))]
#[no_mangle]
extern "C" fn main(_argc: c_int, _argv: *const *const c_char) -> c_int {
    // SAFETY: called before any other thread exists; SIG_IGN for SIGPIPE is what std's start-up
    // installs, so no code in the process expects another disposition.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    quiet_on_closed_stdout();
    let run = || xrat::cli::main(std::env::args().collect());
    // The panic hook has already printed the message; unwinding out of an `extern "C"` function
    // would abort instead of exiting.
    let code = match std::panic::catch_unwind(run) {
        Ok(code) => code,
        Err(_) if STDOUT_CLOSED.load(Ordering::Relaxed) => EXIT_OK,
        Err(_) => EXIT_PANIC,
    };
    // Flushes stdout and exits, as returning from std's `main` does.
    std::process::exit(code)
}
