//! The pool core (front mode, DESIGN §1, §5) as the executor runs it: spawned like a batch core
//! (one process per core family its members need), with an HTTP inbound per member as well when
//! `runtime.http_port` is set. Its members' internal inbounds fill the front's address map and
//! are recorded in the store, so a restarted daemon that adopts the process knows them; a
//! session on a member is a `runtime_sessions` row that names the member's process.

use std::collections::HashMap;
use std::path::PathBuf;

use crate::core::CoreBinary;
use crate::ipc::protocol::Code;
use crate::store::{NewPoolProcess, NewSession, PoolMember, PoolProcessRow};
use crate::supervisor::{CoreId, Now, Rejection, SessionInfo};

use super::front::MemberAddrs;
use super::journal::Write;
use super::launch::{not_recorded, Launched, Multi, Part};
use super::process::Spawned;
use super::Reactor;

/// One process of a pool core: what a session on one of its members records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolProc {
    pub pid: u32,
    /// `/proc/<pid>/stat` field 22, recorded with the session for reattaching.
    pub start_time: u64,
    /// Core kind name, e.g. `sing-box`.
    pub core: String,
    pub core_path: PathBuf,
    /// Its config, shared by its members (so a session's end leaves it alone).
    pub config: PathBuf,
}

/// Every running pool core's processes, by the supervisor's name for the core.
#[derive(Default)]
pub struct Pools {
    by_core: HashMap<CoreId, Vec<PoolProc>>,
}

impl Pools {
    /// Starts tracking a pool core's processes (spawned, or adopted at start).
    pub fn insert(&mut self, core: CoreId, procs: Vec<PoolProc>) {
        self.by_core.insert(core, procs);
    }
}

impl Reactor {
    /// Renders and spawns a pool core; fills the front's address map and records every process
    /// with its members for reattaching.
    pub(super) fn spawn_pool(
        &mut self,
        now: Now,
        id: CoreId,
        installed: &[CoreBinary],
        config_ids: &[i64],
    ) -> Result<Launched, Rejection> {
        let http = self.env.settings.runtime.http_port != 0;
        let (launched, parts) =
            self.spawn_multi(id, installed, config_ids, Multi::Pool { http })?;
        let mut procs = Vec::with_capacity(parts.len());
        for part in parts {
            for m in &part.members {
                let addrs = MemberAddrs {
                    socks: m.socks,
                    http: m.http,
                    pid: part.pid,
                };
                self.pool_members.insert((id, m.config_id), addrs);
            }
            // The process runs now: a failed write is retried, never a reason to refuse it.
            let record = pool_record(now, &part, &launched.log);
            self.record(now, Write::PoolProcess(record));
            procs.push(PoolProc {
                pid: part.pid,
                start_time: part.start_time,
                core: part.binary.kind.name().to_string(),
                core_path: part.binary.path,
                config: part.config,
            });
        }
        self.pools.insert(id, procs);
        Ok(launched)
    }

    /// A core's last process exited: when it was a pool core, its members leave the front's
    /// address map (their ports may be reused) and its records leave the store.
    pub(super) fn pool_core_exited(&mut self, now: Now, id: CoreId) {
        self.pool_members.retain(|(core, _), _| *core != id);
        for p in self.pools.by_core.remove(&id).unwrap_or_default() {
            let write = Write::PoolGone {
                pid: p.pid,
                start_time: p.start_time,
            };
            self.record(now, write);
        }
    }

    /// `Effect::BeginSession`'s work: the row for a session on a pool member, and its process
    /// identity. The member's process and config are shared, so nothing is spawned or written
    /// besides the row (and ending the session leaves the config alone, see `end_session`).
    pub(super) fn pool_session(
        &mut self,
        now: Now,
        core: CoreId,
        config_id: i64,
    ) -> Result<SessionInfo, Rejection> {
        let missing = |what: &str| {
            Rejection::new(
                Code::Internal,
                format!("cannot record a session on config {config_id}: pool core {} has no {what} for it (the core exited or never started); this is a bug in xrat, please report it", core.0),
            )
        };
        let member = *self
            .pool_members
            .get(&(core, config_id))
            .ok_or_else(|| missing("member"))?;
        let proc_ = self
            .pools
            .by_core
            .get(&core)
            .and_then(|procs| procs.iter().find(|p| p.pid == member.pid))
            .ok_or_else(|| missing("process"))?
            .clone();
        let new = NewSession {
            config_id,
            core: proc_.core.clone(),
            core_path: proc_.core_path.display().to_string(),
            config_path: proc_.config.display().to_string(),
            socks_addr: member.socks.to_string(),
            http_addr: member.http.map(|a| a.to_string()),
            started_at: now.unix_secs,
            // The pool core runs already: its identity goes in the same row, one write.
            process: Some((proc_.pid, proc_.start_time)),
        };
        let session_id = self
            .record_session(now, new)
            .map_err(|e| not_recorded(&self.env.store, &e))?;
        Ok(SessionInfo {
            id: session_id,
            config_id,
            core: proc_.core,
            pid: proc_.pid,
            socks_addr: member.socks,
            http_addr: member.http,
            started_at: now.unix_secs,
        })
    }
}

impl Reactor {
    /// A pool core process the previous daemon left running, adopted with a session on it:
    /// its members' inbounds go back into the front's address map, and its config and record
    /// go when it exits, as for a pool core spawned here.
    pub(super) fn adopt_pool(&mut self, id: CoreId, spawned: Spawned, row: PoolProcessRow) {
        for m in &row.members {
            let socks = m.socks_addr.parse();
            let http = m.http_addr.as_deref().map(str::parse).transpose();
            let (Ok(socks), Ok(http)) = (socks, http) else {
                eprintln!("xrat: pool core pid {}: member {} has unreadable addresses ({} {:?}); it is not relayed to", row.pid, m.config_id, m.socks_addr, m.http_addr);
                continue;
            };
            let addrs = MemberAddrs {
                socks,
                http,
                pid: row.pid,
            };
            self.pool_members.insert((id, m.config_id), addrs);
        }
        let config = PathBuf::from(&row.config_path);
        let proc_ = PoolProc {
            pid: row.pid,
            start_time: row.pid_start_time,
            core: row.core,
            core_path: PathBuf::from(row.core_path),
            config: config.clone(),
        };
        self.pools.insert(id, vec![proc_]);
        let log = PathBuf::from(row.log_path);
        self.watch(id, vec![spawned], log, vec![config]);
    }
}

/// The store's record of one pool core process.
fn pool_record(now: Now, part: &Part, log: &std::path::Path) -> NewPoolProcess {
    NewPoolProcess {
        pid: part.pid,
        pid_start_time: part.start_time,
        core: part.binary.kind.name().to_string(),
        core_path: part.binary.path.display().to_string(),
        config_path: part.config.display().to_string(),
        log_path: log.display().to_string(),
        started_at: now.unix_secs,
        members: part
            .members
            .iter()
            .map(|m| PoolMember {
                config_id: m.config_id,
                socks_addr: m.socks.to_string(),
                http_addr: m.http.map(|a| a.to_string()),
            })
            .collect(),
    }
}
