//! Which kernel interface the loop runs on: io_uring ([`Ring`]) or epoll ([`Epoll`]), chosen once
//! at start from `daemon.backend` and `XRAT_BACKEND` (DESIGN §3a rule 12). Static dispatch: the
//! reactor holds a [`Backend`] and never asks which one it is, except to report it.

use std::io;

use crate::settings::{BackendChoice, Settings};

use super::bufring::BufRing;
use super::epoll::Epoll;
use super::ring::{Completion, Op, Ring};
use super::ReactorError;

/// The environment variable that overrides `daemon.backend`.
pub const BACKEND_ENV: &str = "XRAT_BACKEND";

/// The loop's backend.
pub enum Backend {
    /// io_uring.
    Uring(Ring),
    /// epoll, where io_uring is refused or not wanted.
    Epoll(Epoll),
}

/// The backend asked for: `XRAT_BACKEND` when set (and not empty), else `daemon.backend`.
pub fn choice(settings: &Settings) -> Result<BackendChoice, ReactorError> {
    match std::env::var(BACKEND_ENV) {
        Ok(value) if !value.is_empty() => {
            BackendChoice::parse(&value).ok_or(ReactorError::BackendEnv { value })
        }
        Ok(_) | Err(std::env::VarError::NotPresent) => Ok(settings.daemon.backend),
        Err(std::env::VarError::NotUnicode(raw)) => Err(ReactorError::BackendEnv {
            value: raw.to_string_lossy().into_owned(),
        }),
    }
}

impl Backend {
    /// Builds the backend `choice` names, on the calling (loop) thread. `auto` falls back to
    /// epoll only when io_uring is refused at setup (ENOSYS, EPERM, EINVAL), saying why and
    /// how to allow it; other setup errors (ENOMEM, EMFILE) stay errors.
    pub fn open(choice: BackendChoice) -> Result<Backend, ReactorError> {
        match choice {
            BackendChoice::IoUring => Ring::new().map(Backend::Uring),
            BackendChoice::Epoll => Epoll::new().map(Backend::Epoll),
            BackendChoice::Auto => match Ring::new() {
                Ok(ring) => Ok(Backend::Uring(ring)),
                Err(ReactorError::IoUringUnavailable { source }) => {
                    eprintln!("xrat: io_uring is refused here ({source}); serving on epoll instead. To use io_uring, allow it: `sysctl -w kernel.io_uring_disabled=0`, or in a container a seccomp profile that allows io_uring_setup (docker run --security-opt seccomp=<profile.json>); set daemon.backend = \"epoll\" to choose epoll without this line");
                    Epoll::new().map(Backend::Epoll)
                }
                Err(e) => Err(e),
            },
        }
    }

    /// The backend's name, as `daemon_ping` reports it.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Uring(_) => "io_uring",
            Backend::Epoll(_) => "epoll",
        }
    }

    /// The syscall that waits, for error messages.
    pub fn wait_call(&self) -> &'static str {
        match self {
            Backend::Uring(_) => "io_uring_enter",
            Backend::Epoll(_) => "epoll_wait",
        }
    }

    /// Registers a provided-buffer ring under group `bgid`; it must outlive the backend.
    pub fn register_buf_ring(&mut self, ring: &BufRing, bgid: u16) -> io::Result<()> {
        match self {
            Backend::Uring(r) => r.register_buf_ring(ring, bgid),
            Backend::Epoll(e) => e.register_buf_ring(ring, bgid),
        }
    }

    /// Queues one op.
    ///
    /// # Safety
    /// As [`Ring::push`]: the memory behind every pointer in `op` stays allocated, at the same
    /// address, and untouched by Rust code until the op's final completion.
    pub unsafe fn push(&mut self, op: Op, user_data: u64, bgid: u16) -> io::Result<()> {
        match self {
            // SAFETY: the caller's contract is the ring's.
            Backend::Uring(r) => unsafe { r.push(op, user_data, bgid) },
            // SAFETY: the caller's contract is the same for epoll.
            Backend::Epoll(e) => unsafe { e.push(op, user_data, bgid) },
        }
    }

    /// Submits queued ops and blocks until at least one completion is ready.
    pub fn submit_and_wait(&mut self) -> io::Result<()> {
        match self {
            Backend::Uring(r) => r.submit_and_wait(),
            Backend::Epoll(e) => e.submit_and_wait(),
        }
    }

    /// Submits queued ops and reports, without blocking, whether a completion is ready.
    pub fn submit_and_peek(&mut self) -> io::Result<bool> {
        match self {
            Backend::Uring(r) => r.submit_and_peek(),
            Backend::Epoll(e) => e.submit_and_peek(),
        }
    }

    /// Copies every ready completion into `batch` (up to its capacity limit).
    pub fn drain_into(&mut self, batch: &mut Vec<Completion>) {
        match self {
            Backend::Uring(r) => r.drain_into(batch),
            Backend::Epoll(e) => e.drain_into(batch),
        }
    }
}
