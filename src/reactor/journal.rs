//! State changes the daemon records in SQLite (issue 10, item 4). The daemon's connection has a
//! busy timeout of zero, so the loop thread never waits on another process's lock. A write that
//! fails (locked, disk full, I/O) is kept, in order, and retried from the deadline table until it
//! is written; meanwhile `runtime_status` shows `store_error`, and a disconnect whose end could
//! not be recorded says so. Nothing is dropped while the daemon runs; at shutdown one last attempt
//! is made and whatever still fails is named in the log.

use std::collections::VecDeque;

use crate::store::{NewPoolProcess, NewRotationEvent, NewSession, StoreError};
use crate::supervisor::{Now, Reply};

use super::deadlines::Due;
use super::prepare::error_chain;
use super::Reactor;

/// Pause between retries of failed writes.
pub const STORE_RETRY_MS: u64 = 1_000;
/// Failed writes kept; each is a few hundred bytes, and a state change happens at most a few
/// times a second, so this covers hours of a locked or full disk.
pub const STORE_PENDING_MAX: usize = 16_384;

/// Commits between two WAL checkpoints. SQLite's own threshold is 1,000 pages, and a pool
/// switch commits about 8, so this keeps the WAL near the size it had with SQLite checkpointing.
pub const CHECKPOINT_COMMITS: u32 = 100;

/// WAL pages past which SQLite checkpoints inside a commit anyway (16 MiB of 4 KiB pages): a
/// safety net for turns that write far more than a switch, such as a batch test's results.
pub const WAL_PAGES_MAX: u32 = 4_000;
/// WAL pages one pool switch commits (its session row, the old row's end, its event, and their
/// indexes; counted with strace: 9 before migration 5 dropped an index, 8 since).
const SWITCH_WAL_PAGES: u32 = 8;
const _: () = assert!(CHECKPOINT_COMMITS * SWITCH_WAL_PAGES < WAL_PAGES_MAX);

/// Rows pruned from each table at one checkpoint: more than the commits between two (each adds
/// at most a few rows), so a backlog shrinks, yet a short step for the loop thread.
pub const PRUNE_ROWS_MAX: u32 = 1_000;
const _: () = assert!(PRUNE_ROWS_MAX > CHECKPOINT_COMMITS);

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
    /// A session row written in a batch that was lost, under the id it was given.
    Session { id: i64, new: NewSession },
}

/// Writes waiting to be retried, oldest first, and the last error.
#[derive(Default)]
pub struct Journal {
    pending: VecDeque<Write>,
    error: Option<String>,
    retry_at: Option<u64>,
    /// The writes made in this turn's open batch, to keep for the retry if it is lost.
    batch: Option<Vec<Write>>,
    /// BEGIN failed this turn (another process holds the lock): writes go one by one.
    batch_refused: bool,
    /// Batches committed since the last checkpoint.
    commits: u32,
}

impl Reactor {
    /// Records `write`, or keeps it for a retry (behind any already waiting, to keep order).
    pub(super) fn record(&mut self, now: Now, write: Write) {
        if self.journal.pending.is_empty() {
            self.open_batch();
            match self.try_write(&write) {
                Ok(()) => {
                    if let Some(batch) = self.journal.batch.as_mut() {
                        batch.push(write);
                    }
                    return;
                }
                Err(why) => {
                    self.journal.error = Some(why);
                    self.check_batch(now);
                }
            }
        }
        self.keep(now, write);
    }

    /// Writes a new session row (in the turn's batch) and returns its id.
    pub(super) fn record_session(&mut self, now: Now, new: NewSession) -> Result<i64, StoreError> {
        self.open_batch();
        match self.env.store.begin_session(&new) {
            Ok(id) => {
                if let Some(batch) = self.journal.batch.as_mut() {
                    batch.push(Write::Session { id, new });
                }
                Ok(id)
            }
            Err(e) => {
                self.check_batch(now);
                Err(e)
            }
        }
    }

    /// Keeps `write` for the retry, behind what already waits.
    fn keep(&mut self, now: Now, write: Write) {
        if self.journal.pending.len() >= STORE_PENDING_MAX {
            eprintln!("xrat: {STORE_PENDING_MAX} state changes are waiting to be recorded; dropping the oldest: {:?}", self.journal.pending.front());
            self.journal.pending.pop_front();
        }
        self.journal.pending.push_back(write);
        self.schedule_retry(now);
    }

    fn schedule_retry(&mut self, now: Now) {
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

    /// Opens the turn's batch before its first write; once a turn, so a refused BEGIN is not
    /// retried for every write.
    fn open_batch(&mut self) {
        if self.journal.batch.is_some() || self.journal.batch_refused {
            return;
        }
        match self.env.store.begin_batch() {
            Ok(()) => self.journal.batch = Some(Vec::new()),
            Err(_) => self.journal.batch_refused = true,
        }
    }

    /// After a failed write: SQLite may have rolled the whole batch back (disk full, I/O); then
    /// its writes are kept for the retry, ahead of everything that waits.
    fn check_batch(&mut self, now: Now) {
        if self.journal.batch.is_none() || self.env.store.in_batch() {
            return;
        }
        self.lose_batch(now);
    }

    fn lose_batch(&mut self, now: Now) {
        let Some(batch) = self.journal.batch.take() else {
            return;
        };
        if batch.is_empty() {
            return;
        }
        for write in batch.into_iter().rev() {
            self.journal.pending.push_front(write);
        }
        while self.journal.pending.len() > STORE_PENDING_MAX {
            eprintln!("xrat: {STORE_PENDING_MAX} state changes are waiting to be recorded; dropping the oldest: {:?}", self.journal.pending.front());
            self.journal.pending.pop_front();
        }
        self.schedule_retry(now);
    }

    /// Commits the turn's batch (the end of a pump, before its replies are sent).
    pub(super) fn commit_batch(&mut self, now: Now) {
        self.journal.batch_refused = false;
        if self.journal.batch.is_none() {
            return;
        }
        if !self.env.store.in_batch() {
            return self.lose_batch(now);
        }
        match self.env.store.commit_batch() {
            Ok(()) => {
                self.journal.batch = None;
                self.journal.commits += 1;
            }
            Err(e) => {
                self.journal.error = Some(error_chain(&e));
                self.lose_batch(now);
            }
        }
    }

    /// Every [`CHECKPOINT_COMMITS`] commits, once the turn's replies are sent, prunes the
    /// history to `daemon.history_kept` rows a table and checkpoints the WAL: together they cost a millisecond or
    /// more (the copy and its fsync), which no reply should wait for.
    pub(super) fn checkpoint_if_due(&mut self) {
        if self.journal.commits < CHECKPOINT_COMMITS || !self.journal.pending.is_empty() {
            return;
        }
        self.journal.commits = 0;
        // Nothing is lost on failure: a locked database is pruned and checkpointed next time.
        let pruned = match self.env.settings.daemon.history_kept {
            0 => Ok(0),
            kept => self.env.store.prune_history(kept, PRUNE_ROWS_MAX),
        };
        for e in [pruned.err(), self.env.store.checkpoint().err()]
            .into_iter()
            .flatten()
            .filter(|e| !e.is_busy())
        {
            eprintln!("xrat: {}", error_chain(&e));
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
            Write::Session { id, new } => store.restore_session(*id, new),
        };
        result.map_err(|e| error_chain(&e))
    }

    /// Retries the waiting writes in order, stopping at the first that still fails.
    pub(super) fn retry_writes(&mut self, now: Now) {
        // One by one, outside any batch: a write taken off the queue is written or put back.
        self.commit_batch(now);
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
