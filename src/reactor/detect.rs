//! Learning which core a binary is without waiting on the loop thread (DESIGN §3a rule 14):
//! `<core> version` runs as a child whose output goes to a memfd, its exit is a pidfd completion
//! in the ring, and a deadline kills it. The answer is cached per binary path, size and mtime.
//! Effects that need the core wait (parked) while it runs; at most one run is in flight.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Seek};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::core::{self, CoreBinary};
use crate::ipc::protocol::Code;
use crate::settings::CoreChoice;
use crate::supervisor::{Now, Rejection};

use super::deadlines::Due;
use super::prepare::error_chain;
use super::process;
use super::ring::Op;
use super::token::{Kind, Token};
use super::Reactor;

/// How long one `version` run may take; cores answer at once, so this only catches hangs.
pub const DETECT_TIMEOUT_MS: u64 = 5_000;
/// Binaries remembered (one per path; settings name one, tests a few).
pub const DETECT_CACHE_MAX: usize = 16;
/// Bytes of version output read.
pub const DETECT_OUTPUT_BYTES_MAX: u64 = 64 * 1024;

/// An effect that needs the core, waiting for detection.
pub enum Parked {
    /// `Effect::Inspect`.
    Inspect(crate::supervisor::InspectId, crate::supervisor::Selection),
    /// `Effect::StartCore`.
    Start(crate::supervisor::CoreId, crate::supervisor::CoreSpec, u64),
}

/// Identity of a binary on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
}

struct Run {
    serial: u64,
    path: PathBuf,
    stamp: Stamp,
    hint: CoreChoice,
    spelling: usize,
    pid: u32,
    pidfd: OwnedFd,
    output: File,
    deadline_ms: u64,
}

/// The cores that can run configs, or why none can.
pub type Installed = Result<Vec<CoreBinary>, Rejection>;

/// Detection state.
#[derive(Default)]
pub struct Detector {
    cache: HashMap<PathBuf, (Stamp, CoreBinary)>,
    /// The binaries of the current round, in preference order.
    round: Vec<(PathBuf, CoreChoice)>,
    /// Those still to run.
    queue: std::collections::VecDeque<(PathBuf, CoreChoice)>,
    /// Why runs of this round failed.
    failures: Vec<Rejection>,
    run: Option<Run>,
    parked: Vec<Parked>,
    /// Killed runs not yet reaped (pid, pidfd).
    killed: Vec<(u32, OwnedFd)>,
    serial: u64,
}

fn stamp(path: &std::path::Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        len: meta.len(),
        modified: meta.modified().ok(),
    })
}

impl Reactor {
    /// Runs `parked` with the installed cores: at once when every located binary is known,
    /// after their version runs otherwise (one at a time; effects arriving meanwhile wait for
    /// the same round).
    pub(super) fn with_cores(&mut self, now: Now, parked: Parked) {
        let settings = &self.env.settings.runtime;
        let located = match core::detect::locate_all(settings, &self.env.paths.settings_file()) {
            Ok(located) => located,
            Err(e) => return self.resume(now, parked, Err(internal(&e))),
        };
        let missing: Vec<(PathBuf, CoreChoice)> = located
            .iter()
            .filter(|(path, _)| self.cached(path).is_none())
            .cloned()
            .collect();
        if missing.is_empty() {
            let installed = self.installed(&located);
            return self.resume(now, parked, Ok(installed));
        }
        self.detector.parked.push(parked);
        if self.detector.run.is_none() && self.detector.queue.is_empty() {
            self.detector.round = located;
            self.detector.failures.clear();
            self.detector.queue = missing.into();
            self.start_next(now);
        }
    }

    /// The cached identity of `path`, if the binary did not change since.
    fn cached(&self, path: &std::path::Path) -> Option<CoreBinary> {
        let (known, binary) = self.detector.cache.get(path)?;
        (Some(known) == stamp(path).as_ref()).then(|| binary.clone())
    }

    fn installed(&self, located: &[(PathBuf, CoreChoice)]) -> Vec<CoreBinary> {
        located.iter().filter_map(|(p, _)| self.cached(p)).collect()
    }

    /// Starts the next version run of the round, or ends the round.
    fn start_next(&mut self, now: Now) {
        while let Some((path, hint)) = self.detector.queue.pop_front() {
            if self.cached(&path).is_some() {
                continue;
            }
            let stamp = stamp(&path).unwrap_or(Stamp {
                len: 0,
                modified: None,
            });
            return self.start_detect(now, path, stamp, hint, 0);
        }
        let round = std::mem::take(&mut self.detector.round);
        let installed = self.installed(&round);
        let result = if installed.is_empty() {
            Err(self.detector.failures.first().cloned().unwrap_or_else(|| {
                Rejection::new(Code::Internal, "no usable proxy core was found")
            }))
        } else {
            Ok(installed)
        };
        for parked in std::mem::take(&mut self.detector.parked) {
            self.resume(now, parked, result.clone());
        }
    }

    fn start_detect(
        &mut self,
        now: Now,
        path: PathBuf,
        stamp: Stamp,
        hint: CoreChoice,
        spelling: usize,
    ) {
        let args = [OsString::from(core::detect::spellings(hint)[spelling])];
        let spawned = process::memfd(c"xrat-core-version").and_then(|output| {
            let child = process::spawn_to(&path, &args, output.try_clone()?)?;
            Ok((child, output))
        });
        let (child, output) = match spawned {
            Ok(ok) => ok,
            Err(source) => {
                let e = core::CoreError::Spawn { path, source };
                return self.detected(now, Err(internal(&e)));
            }
        };
        self.detector.serial += 1;
        let run = Run {
            serial: self.detector.serial,
            path,
            stamp,
            hint,
            spelling,
            pid: child.pid,
            pidfd: child.pidfd,
            output,
            deadline_ms: now.monotonic_ms + DETECT_TIMEOUT_MS,
        };
        self.deadlines.add(run.deadline_ms, Due::Detect(run.serial));
        let fd = run.pidfd.as_raw_fd();
        let token = Token {
            kind: Kind::Pidfd,
            generation: 0,
            slot: run.pid,
        };
        self.detector.run = Some(run);
        // SAFETY: a poll carries no buffer; the pidfd lives in the run (or `killed`) until its
        // completion is handled.
        unsafe { self.push(Op::PollIn { fd }, token.encode()) };
    }

    /// A pidfd fired for `pid`: true when it was a version run's.
    pub(super) fn detect_exited(&mut self, now: Now, pid: u32) -> bool {
        if let Some(i) = self.detector.killed.iter().position(|(p, _)| *p == pid) {
            let (_, pidfd) = self.detector.killed.swap_remove(i);
            process::reap(pidfd.as_raw_fd());
            return true;
        }
        let Some(mut run) = self.detector.run.take_if(|r| r.pid == pid) else {
            return false;
        };
        process::reap(run.pidfd.as_raw_fd());
        self.deadlines
            .remove(run.deadline_ms, Due::Detect(run.serial));
        let mut text = String::new();
        let _ = run.output.rewind();
        let _ = (&mut run.output)
            .take(DETECT_OUTPUT_BYTES_MAX)
            .read_to_string(&mut text);
        match core::detect::identify(&run.path, run.hint, &text) {
            Some(Ok(binary)) => {
                if self.detector.cache.len() >= DETECT_CACHE_MAX {
                    self.detector.cache.clear();
                }
                self.detector
                    .cache
                    .insert(run.path.clone(), (run.stamp.clone(), binary.clone()));
                self.detected(now, Ok(binary));
            }
            Some(Err(e)) => self.detected(now, Err(internal(&e))),
            None if run.spelling == 0 => self.start_detect(now, run.path, run.stamp, run.hint, 1),
            None => {
                let e = core::detect::unrecognised(&run.path, &text, "", None);
                self.detected(now, Err(internal(&e)));
            }
        }
        true
    }

    /// A version run passed its deadline: kill it and answer with the timeout.
    pub(super) fn detect_expired(&mut self, now: Now, serial: u64) {
        let Some(run) = self.detector.run.take_if(|r| r.serial == serial) else {
            return;
        };
        process::signal_group(run.pid, libc::SIGKILL);
        let limit = Duration::from_millis(DETECT_TIMEOUT_MS);
        let e = core::detect::unrecognised(&run.path, "", "", Some(limit));
        self.detector.killed.push((run.pid, run.pidfd));
        self.detected(now, Err(internal(&e)));
    }

    /// One version run ended: note a failure, go on with the round.
    fn detected(&mut self, now: Now, result: Result<CoreBinary, Rejection>) {
        if let Err(rejection) = result {
            self.detector.failures.push(rejection);
        }
        self.start_next(now);
    }

    fn resume(&mut self, now: Now, parked: Parked, core: Installed) {
        match parked {
            Parked::Inspect(inspect, selection) => self.inspect_with(inspect, selection, &core),
            Parked::Start(id, spec, ready_timeout_ms) => {
                self.start_core_with(now, id, spec, ready_timeout_ms, core)
            }
        }
    }
}

fn internal(e: &dyn std::error::Error) -> Rejection {
    Rejection::new(Code::Internal, error_chain(e))
}
