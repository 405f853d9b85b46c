//! `Effect::RefreshSubscriptions`: runs `xrat sub update --due` (this same binary) as a child,
//! watched by a pidfd in the ring like a core, with a deadline that kills it. Fetching and
//! parsing happen in the child, so a slow provider costs the loop nothing; the child writes
//! the store in its own transactions. Its output goes to the daemon's stderr (the log).

use std::ffi::OsString;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use crate::supervisor::{Input, Now, RefreshId};

use super::deadlines::Due;
use super::process;
use super::ring::Op;
use super::token::{Kind, Token};
use super::Reactor;

/// The run in flight (the supervisor asks for at most one) and killed runs not yet reaped.
#[derive(Default)]
pub struct Refresher {
    run: Option<Run>,
    killed: Vec<(u32, OwnedFd)>,
}

struct Run {
    refresh: RefreshId,
    pid: u32,
    pidfd: OwnedFd,
    deadline_ms: u64,
    timeout_ms: u64,
}

impl Reactor {
    /// Starts a refresh run; a spawn failure is answered at once.
    pub(super) fn start_refresh(&mut self, now: Now, refresh: RefreshId, timeout_ms: u64) {
        let spawned = std::io::stderr()
            .as_fd()
            .try_clone_to_owned()
            .and_then(|log| {
                let args: Vec<OsString> = ["sub", "update", "--due"].map(OsString::from).into();
                process::spawn_self(&args, File::from(log))
            });
        let child = match spawned {
            Ok(child) => child,
            Err(e) => {
                let result = Err(format!("cannot start `xrat sub update --due`: {e}"));
                return self
                    .inputs
                    .push_back(Input::RefreshDone { refresh, result });
            }
        };
        let run = Run {
            refresh,
            pid: child.pid,
            pidfd: child.pidfd,
            deadline_ms: now.monotonic_ms + timeout_ms,
            timeout_ms,
        };
        self.deadlines.add(run.deadline_ms, Due::Refresh(refresh.0));
        let fd = run.pidfd.as_raw_fd();
        let token = Token {
            kind: Kind::Pidfd,
            generation: 0,
            slot: run.pid,
        };
        self.refresher.run = Some(run);
        // SAFETY: a poll carries no buffer; the pidfd lives in the run (or `killed`) until its
        // completion is handled.
        unsafe { self.push(Op::PollIn { fd }, token.encode()) };
    }

    /// A pidfd fired for `pid`: true when it was a refresh run's.
    pub(super) fn refresh_exited(&mut self, pid: u32) -> bool {
        if let Some(i) = self.refresher.killed.iter().position(|(p, _)| *p == pid) {
            let (_, pidfd) = self.refresher.killed.swap_remove(i);
            process::reap(pidfd.as_raw_fd());
            return true;
        }
        let Some(run) = self.refresher.run.take_if(|r| r.pid == pid) else {
            return false;
        };
        let how = process::reap(run.pidfd.as_raw_fd());
        self.deadlines
            .remove(run.deadline_ms, Due::Refresh(run.refresh.0));
        // `sub update` exits 0 when every due subscription updated.
        let result = if how == "exited with status 0" {
            Ok(())
        } else {
            Err(how)
        };
        self.inputs.push_back(Input::RefreshDone {
            refresh: run.refresh,
            result,
        });
        true
    }

    /// A run passed its deadline: kill its group and answer.
    pub(super) fn refresh_expired(&mut self, refresh: u64) {
        let Some(run) = self.refresher.run.take_if(|r| r.refresh.0 == refresh) else {
            return;
        };
        process::signal_group(run.pid, libc::SIGKILL);
        let result = Err(format!(
            "killed after {} s (`subscriptions.refresh_timeout_secs`)",
            run.timeout_ms / 1000
        ));
        self.refresher.killed.push((run.pid, run.pidfd));
        self.inputs.push_back(Input::RefreshDone {
            refresh: run.refresh,
            result,
        });
    }
}
