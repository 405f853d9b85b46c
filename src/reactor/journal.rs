//! State changes the daemon records in SQLite (issue 10, item 4). The daemon's connection has a
//! busy timeout of zero, so the loop thread never waits on another process's lock. A write that
//! fails (locked, disk full, I/O) is kept, in order, and retried from the deadline table until it
//! is written; meanwhile `runtime_status` shows `store_error`, and a disconnect whose end could
//! not be recorded says so. Nothing is dropped while the daemon runs; at shutdown one last attempt
//! is made and whatever still fails is named in the log.

use std::collections::VecDeque;

use crate::store::{NewPoolProcess, NewRotationEvent};
use crate::supervisor::{Now, Reply};

use super::deadlines::Due;
use super::prepare::error_chain;
use super::Reactor;

/// Pause between retries of failed writes.
pub const STORE_RETRY_MS: u64 = 1_000;
/// Failed writes kept; each is a few hundred bytes, and a state change happens at most a few
/// times a second, so this covers hours of a locked or full disk.
pub const STORE_PENDING_MAX: usize = 16_384;

/// One write to the store.
#[derive(Debug, Clone)]
pub enum Write {
    /// A session ended.
    EndSession {
        session_id: i64,
        at: u64,
        reason: String,
    },
    /// A rotation happened.
    Event(NewRotationEvent),
    /// A session's core identity, for reattaching after a daemon restart.
    Process {
        session_id: i64,
        pid: u32,
        start_time: u64,
    },
    /// A pool core process and its members' internal inbounds, for reattaching.
    PoolProcess(NewPoolProcess),
    /// A pool core process exited: its record is of no use any more.
    PoolGone { pid: u32, start_time: u64 },
    /// Config test results (a rotation's batch, a `config_test` request).
    Tests(Vec<crate::store::NewConfigTest>),
}

/// Writes waiting to be retried, oldest first, and the last error.
#[derive(Default)]
pub struct Journal {
    pending: VecDeque<Write>,
    error: Option<String>,
    retry_at: Option<u64>,
}

impl Reactor {
    /// Records `write`, or keeps it for a retry (behind any already waiting, to keep order).
    pub(super) fn record(&mut self, now: Now, write: Write) {
        if self.journal.pending.is_empty() {
            match self.try_write(&write) {
                Ok(()) => return,
                Err(why) => self.journal.error = Some(why),
            }
        }
        if self.journal.pending.len() >= STORE_PENDING_MAX {
            eprintln!("xrat: {STORE_PENDING_MAX} state changes are waiting to be recorded; dropping the oldest: {:?}", self.journal.pending.front());
            self.journal.pending.pop_front();
        }
        self.journal.pending.push_back(write);
        if self.journal.retry_at.is_none() {
            let at = now.monotonic_ms + STORE_RETRY_MS;
            self.journal.retry_at = Some(at);
            self.deadlines.add(at, Due::StoreRetry);
            eprintln!(
                "xrat: recording a state change failed: {}; retrying every {STORE_RETRY_MS} ms",
                self.journal.error.as_deref().unwrap_or("")
            );
        }
    }

    fn try_write(&mut self, write: &Write) -> Result<(), String> {
        let store = &mut self.env.store;
        let result = match write {
            Write::EndSession {
                session_id,
                at,
                reason,
            } => store.end_session(*session_id, *at, reason),
            Write::Event(event) => store.insert_rotation_event(event).map(drop),
            Write::Process {
                session_id,
                pid,
                start_time,
            } => store.set_session_process(*session_id, *pid, *start_time),
            Write::PoolProcess(new) => store.record_pool_process(new),
            Write::PoolGone { pid, start_time } => store.forget_pool_process(*pid, *start_time),
            Write::Tests(tests) => store.record_tests(tests).map(drop),
        };
        result.map_err(|e| error_chain(&e))
    }

    /// Retries the waiting writes in order, stopping at the first that still fails.
    pub(super) fn retry_writes(&mut self, now: Now) {
        self.journal.retry_at = None;
        while let Some(write) = self.journal.pending.front().cloned() {
            if let Err(why) = self.try_write(&write) {
                self.journal.error = Some(why);
                let at = now.monotonic_ms + STORE_RETRY_MS;
                self.journal.retry_at = Some(at);
                self.deadlines.add(at, Due::StoreRetry);
                return;
            }
            self.journal.pending.pop_front();
        }
        if self.journal.error.take().is_some() {
            eprintln!("xrat: every state change is recorded again");
        }
    }

    /// Puts what could not be recorded into the replies that report it.
    pub(super) fn annotate(&self, reply: &mut Reply) -> Option<String> {
        let error = self.journal.error.as_ref()?;
        if let Reply::Subscribed(subscribed) = reply {
            subscribed.runtime_status.store_error = Some(format!(
                "{} state change(s) not recorded yet: {error}; retrying every {STORE_RETRY_MS} ms",
                self.journal.pending.len()
            ));
            return None;
        }
        match reply {
            Reply::RuntimeStatus(status) => {
                status.store_error = Some(format!(
                    "{} state change(s) not recorded yet: {error}; retrying every {STORE_RETRY_MS} ms",
                    self.journal.pending.len()
                ));
                None
            }
            Reply::Disconnected(d) => {
                let ended = self.journal.pending.iter().any(|w| {
                    matches!(w, Write::EndSession { session_id, .. } if *session_id == d.stopped_session)
                });
                ended.then(|| {
                    format!("disconnected; recording it failed: {error}; will retry every {STORE_RETRY_MS} ms")
                })
            }
            _ => None,
        }
    }

    /// At shutdown: one last attempt; what still fails is named.
    pub(super) fn flush_journal(&mut self, now: Now) {
        if self.journal.pending.is_empty() {
            return;
        }
        self.retry_writes(now);
        for write in &self.journal.pending {
            eprintln!("xrat: not recorded at shutdown: {write:?}");
        }
    }
}

impl Reactor {
    /// The loop ended: last attempt at what is still waiting.
    pub(super) fn journal_at_exit(&mut self) {
        self.flush_journal(super::now());
    }
}
