//! Launching cores: the session core on the user's inbounds (recorded in `runtime_sessions`),
//! and the batch-test and pool cores, one process per core family their members need.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::core::{self, CoreBinary, PoolInbound};
use crate::ipc::protocol::Code;
use crate::links::Outbound;
use crate::store::{NewSession, Store, StoreError};
use crate::supervisor::{CoreId, Now, Rejection, SessionInfo};

use super::prepare::{error_chain, free_ports, write_private, Prepared};
use super::process::{self, Spawned};
use super::Reactor;

/// Cores just spawned, before they are watched.
pub struct Launched {
    /// Waited once every inbound accepted.
    pub grace_ms: u64,
    /// One process for a session; one per core family for a batch.
    pub spawned: Vec<Spawned>,
    pub log: PathBuf,
    /// Files to remove when the core exits (batch configs carry credentials).
    pub configs: Vec<PathBuf>,
    pub session: Option<SessionInfo>,
    pub inbounds: Vec<(i64, SocketAddr)>,
    /// Further inbounds the readiness wait covers (pool members' HTTP inbounds); the supervisor
    /// is told only `inbounds`.
    pub also_ready: Vec<SocketAddr>,
}

/// Which multi-member core is launched: names its files and messages, and decides whether
/// members get HTTP inbounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Multi {
    Batch,
    /// `http`: `runtime.http_port` is set, so every member gets an HTTP inbound too.
    Pool {
        http: bool,
    },
}

impl Multi {
    fn http(self) -> bool {
        matches!(self, Multi::Pool { http: true })
    }

    fn prefix(self) -> &'static str {
        match self {
            Multi::Batch => "batch",
            Multi::Pool { .. } => "pool",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Multi::Batch => "the batch test",
            Multi::Pool { .. } => "the pool core",
        }
    }

    /// Batch cores live seconds and share one log; a pool core lives long, drains next to its
    /// successor, and its exit quotes its own log's tail, so each has its own.
    fn log_name(self, id: CoreId) -> String {
        match self {
            Multi::Batch => "batch.log".into(),
            Multi::Pool { .. } => format!("pool-{}.log", id.0),
        }
    }
}

/// A member's internal inbounds in a batch or pool core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberPorts {
    pub config_id: i64,
    pub socks: SocketAddr,
    pub http: Option<SocketAddr>,
}

/// One process of a batch or pool core, as spawned.
pub struct Part {
    pub binary: CoreBinary,
    pub config: PathBuf,
    pub pid: u32,
    pub start_time: u64,
    pub members: Vec<MemberPorts>,
}

/// Why a session row could not be written: 503 while another process holds the database (the
/// loop never waits on another process's lock, so the caller retries), 500 otherwise.
pub fn not_recorded(store: &Store, e: &StoreError) -> Rejection {
    if e.is_busy() {
        return Rejection::new(
            Code::Unavailable,
            format!("{} is locked by another process, so the session cannot be recorded; retry in a moment (or stop whatever holds the database open for writing)", store.path().display()),
        );
    }
    Rejection::new(Code::Internal, error_chain(e))
}

/// The members' indices grouped by the core binary that runs them, in first-seen order.
fn by_core(prepared: &[(i64, Prepared)]) -> Vec<(&CoreBinary, Vec<usize>)> {
    let mut groups: Vec<(&CoreBinary, Vec<usize>)> = Vec::new();
    for (i, (_, p)) in prepared.iter().enumerate() {
        match groups.iter_mut().find(|(core, _)| core.path == p.core.path) {
            Some((_, indices)) => indices.push(i),
            None => groups.push((&p.core, vec![i])),
        }
    }
    groups
}

impl Reactor {
    /// Records the session and spawns its core on the user's inbounds.
    pub(super) fn spawn_session(
        &mut self,
        now: Now,
        installed: &[CoreBinary],
        config_id: i64,
    ) -> Result<Launched, Rejection> {
        let prepared = self.prepared_for(installed, config_id)?;
        let binary = &prepared.core;
        self.env.ports_free()?;
        let internal = |e: &dyn std::error::Error| Rejection::new(Code::Internal, error_chain(e));
        let sessions_dir = self.env.paths.runtime_dir().join("sessions");
        std::fs::create_dir_all(&sessions_dir).map_err(|e| internal(&e))?;
        let inbounds = self.env.inbounds();
        let socks_addr = SocketAddr::new(inbounds.listen, inbounds.socks_port);
        let http_addr = inbounds
            .http_port
            .map(|p| SocketAddr::new(inbounds.listen, p));
        let new = NewSession {
            config_id,
            core: binary.kind.name().to_string(),
            core_path: binary.path.display().to_string(),
            config_path: String::new(),
            socks_addr: socks_addr.to_string(),
            http_addr: http_addr.map(|a| a.to_string()),
            started_at: now.unix_secs,
            // Not spawned yet: recorded once it runs.
            process: None,
        };
        let session_id = self
            .record_session(now, new)
            .map_err(|e| not_recorded(&self.env.store, &e))?;
        let config_path = sessions_dir.join(format!("{session_id}.json"));
        let log = self
            .env
            .paths
            .logs_dir()
            .join(format!("core-{session_id}.log"));
        let spawned = write_private(&config_path, &prepared.rendered).and_then(|()| {
            process::spawn(&binary.path, &core::run_args(binary, &config_path), &log)
        });
        let spawned = match spawned {
            Ok(spawned) => spawned,
            Err(e) => {
                let ended = super::journal::Write::EndSession {
                    session_id,
                    at: now.unix_secs,
                    reason: "spawn_failed".to_string(),
                };
                self.record(now, ended);
                let _ = std::fs::remove_file(&config_path);
                let path = binary.path.display();
                return Err(Rejection::new(
                    Code::Internal,
                    format!("cannot start {path} for session {session_id}: {e}"),
                ));
            }
        };
        self.prune_core_logs(&log);
        // The core runs now: a failure to record its identity must not orphan it.
        let write = super::journal::Write::Process {
            session_id,
            pid: spawned.pid,
            start_time: spawned.start_time,
        };
        self.record(now, write);
        let info = SessionInfo {
            id: session_id,
            config_id,
            core: binary.kind.name().to_string(),
            pid: spawned.pid,
            socks_addr,
            http_addr,
            started_at: now.unix_secs,
        };
        Ok(Launched {
            grace_ms: core::ready_grace(binary).as_millis() as u64,
            spawned: vec![spawned],
            log,
            configs: Vec::new(),
            session: Some(info),
            inbounds: Vec::new(),
            also_ready: Vec::new(),
        })
    }

    /// Renders and spawns a batch core: one loopback SOCKS inbound per candidate, and one
    /// process per core the candidates need (with `auto`, a REALITY candidate may need mihomo
    /// while the rest run on sing-box); to the supervisor they are one core.
    pub(super) fn spawn_batch(
        &mut self,
        id: CoreId,
        installed: &[CoreBinary],
        config_ids: &[i64],
    ) -> Result<Launched, Rejection> {
        let (launched, _parts) = self.spawn_multi(id, installed, config_ids, Multi::Batch)?;
        Ok(launched)
    }

    /// A batch or pool core: free loopback ports for every member's inbounds, one process per
    /// core family, each with its own config; on any failure nothing of it is left running.
    pub(super) fn spawn_multi(
        &mut self,
        id: CoreId,
        installed: &[CoreBinary],
        config_ids: &[i64],
        multi: Multi,
    ) -> Result<(Launched, Vec<Part>), Rejection> {
        let refuse = |message: String| Rejection::new(Code::Internal, message);
        let prepared = self.prepare_members(installed, config_ids, multi)?;
        let listen = self.env.listen();
        let per_member = if multi.http() { 2 } else { 1 };
        let ports = free_ports(listen, prepared.len() * per_member)
            .map_err(|e| refuse(format!("no free ports for {}: {e}", multi.what())))?;
        let members: Vec<MemberPorts> = prepared
            .iter()
            .zip(ports.chunks(per_member))
            .map(|((config_id, _), ports)| MemberPorts {
                config_id: *config_id,
                socks: SocketAddr::new(listen, ports[0]),
                http: ports.get(1).map(|port| SocketAddr::new(listen, *port)),
            })
            .collect();
        let log = self.env.paths.logs_dir().join(multi.log_name(id));
        let mut launched = Launched {
            grace_ms: 0,
            spawned: Vec::new(),
            log: log.clone(),
            configs: Vec::new(),
            session: None,
            inbounds: members.iter().map(|m| (m.config_id, m.socks)).collect(),
            also_ready: members.iter().filter_map(|m| m.http).collect(),
        };
        let mut parts = Vec::new();
        for (n, (binary, indices)) in by_core(&prepared).into_iter().enumerate() {
            let inbounds: Vec<PoolInbound<'_>> = indices
                .iter()
                .map(|&i| PoolInbound {
                    socks_port: members[i].socks.port(),
                    http_port: members[i].http.map(|addr| addr.port()),
                    outbound: &prepared[i].1.outbound,
                })
                .collect();
            let (spawned, config) = match self.spawn_part(id, n, binary, &inbounds, &log, multi) {
                Ok(ok) => ok,
                Err(rejection) => {
                    self.abandon(&mut launched);
                    return Err(rejection);
                }
            };
            let grace_ms = core::ready_grace(binary).as_millis() as u64;
            launched.grace_ms = launched.grace_ms.max(grace_ms);
            parts.push(Part {
                binary: binary.clone(),
                config: config.clone(),
                pid: spawned.pid,
                start_time: spawned.start_time,
                members: indices.iter().map(|&i| members[i]).collect(),
            });
            launched.spawned.push(spawned);
            launched.configs.push(config);
        }
        if matches!(multi, Multi::Pool { .. }) {
            self.prune_core_logs(&log);
        }
        Ok((launched, parts))
    }

    /// A core with a new log started: keep only the newest `logs.core_sessions_kept` core
    /// logs (a readdir and a few unlinks, short enough for the loop thread).
    fn prune_core_logs(&self, current: &std::path::Path) {
        let keep = self.env.settings.logs.core_sessions_kept as usize;
        let dir = self.env.paths.logs_dir();
        match crate::paths::logs::prune_core_logs(&dir, keep, current) {
            Ok(removed) if !removed.is_empty() => eprintln!(
                "xrat: removed {} old core log(s) from {} (logs.core_sessions_kept = {keep})",
                removed.len(),
                dir.display()
            ),
            Ok(_) => {}
            Err(e) => eprintln!(
                "xrat: cannot remove old core logs from {}: {e}; they stay",
                dir.display()
            ),
        }
    }

    /// Each member's render (from the last inspect, or fresh), in order.
    fn prepare_members(
        &self,
        installed: &[CoreBinary],
        config_ids: &[i64],
        multi: Multi,
    ) -> Result<Vec<(i64, Prepared)>, Rejection> {
        config_ids
            .iter()
            .map(|config_id| {
                let p = self.prepared_for(installed, *config_id).map_err(|r| {
                    Rejection::new(
                        Code::Internal,
                        format!(
                            "config {config_id} cannot run in {}: {}",
                            multi.what(),
                            r.message
                        ),
                    )
                })?;
                Ok((*config_id, p))
            })
            .collect()
    }

    /// Kills what a refused multi-member start already spawned and removes its configs.
    fn abandon(&mut self, launched: &mut Launched) {
        for spawned in std::mem::take(&mut launched.spawned) {
            process::signal_group(spawned.pid, libc::SIGKILL);
            self.bury(spawned);
        }
        for path in std::mem::take(&mut launched.configs) {
            let _ = std::fs::remove_file(path);
        }
    }

    fn spawn_part(
        &mut self,
        id: CoreId,
        n: usize,
        binary: &CoreBinary,
        inbounds: &[PoolInbound<'_>],
        log: &std::path::Path,
        multi: Multi,
    ) -> Result<(Spawned, PathBuf), Rejection> {
        let refuse = |message: String| Rejection::new(Code::Internal, message);
        let listen = self.env.listen();
        let rendered = match multi {
            Multi::Batch => {
                let pairs: Vec<(u16, &Outbound)> = inbounds
                    .iter()
                    .map(|m| (m.socks_port, m.outbound))
                    .collect();
                core::render_batch(binary, listen, &pairs)
            }
            Multi::Pool { .. } => core::render_pool(binary, listen, inbounds),
        };
        let rendered = rendered.map_err(|e| refuse(error_chain(&e)))?;
        let path =
            self.env
                .paths
                .runtime_dir()
                .join(format!("{}-{}-{n}.json", multi.prefix(), id.0));
        write_private(&path, &rendered)
            .map_err(|e| refuse(format!("cannot write {}: {e}", path.display())))?;
        let spawned =
            process::spawn(&binary.path, &core::run_args(binary, &path), log).map_err(|e| {
                let _ = std::fs::remove_file(&path);
                refuse(format!(
                    "cannot start {} core {}: {e}",
                    multi.what(),
                    binary.path.display()
                ))
            })?;
        Ok((spawned, path))
    }

    /// The render the last inspect made of `config_id`, or a fresh one. (A rotation inspects its
    /// candidates once and starts them moments later; rendering twice doubled the synchronous
    /// work on the loop thread.)
    fn prepared_for(
        &self,
        installed: &[CoreBinary],
        config_id: i64,
    ) -> Result<Prepared, Rejection> {
        match self.prepared.get(&config_id) {
            Some(p) => Ok(p.clone()),
            None => self.env.prepare(installed, config_id),
        }
    }
}
