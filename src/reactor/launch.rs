//! Launching cores: the session core on the user's inbounds (recorded in `runtime_sessions`),
//! and the batch-test core, one process per core family its candidates need.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::core::{self, CoreBinary};
use crate::ipc::protocol::Code;
use crate::store::NewSession;
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
        };
        let store = &self.env.store;
        let session_id = store.begin_session(&new).map_err(|e| {
            if e.is_busy() {
                // The loop never waits on another process's lock: the caller retries.
                Rejection::new(
                    Code::Unavailable,
                    format!("{} is locked by another process, so the session cannot be recorded; retry in a moment (or stop whatever holds the database open for writing)", store.path().display()),
                )
            } else {
                internal(&e)
            }
        })?;
        let config_path = sessions_dir.join(format!("{session_id}.json"));
        let log = self
            .env
            .paths
            .logs_dir()
            .join(format!("core-{session_id}.log"));
        let spawned = write_private(&config_path, &prepared.rendered).and_then(|()| {
            process::spawn(&binary.path, &core::run_args(binary, &config_path), &log)
        });
        let spawned = spawned.map_err(|e| {
            let _ = store.end_session(session_id, now.unix_secs, "spawn_failed");
            let _ = std::fs::remove_file(&config_path);
            let path = binary.path.display();
            Rejection::new(
                Code::Internal,
                format!("cannot start {path} for session {session_id}: {e}"),
            )
        })?;
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
        let refuse = |message: String| Rejection::new(Code::Internal, message);
        let mut prepared = Vec::with_capacity(config_ids.len());
        for config_id in config_ids {
            let p = self.prepared_for(installed, *config_id).map_err(|r| {
                refuse(format!(
                    "config {config_id} cannot run in the batch test: {}",
                    r.message
                ))
            })?;
            prepared.push((*config_id, p));
        }
        let listen = self.env.listen();
        let ports = free_ports(listen, prepared.len())
            .map_err(|e| refuse(format!("no free ports for the batch test: {e}")))?;
        let mut groups: Vec<(CoreBinary, Vec<(u16, &crate::links::Outbound)>)> = Vec::new();
        for ((_, p), port) in prepared.iter().zip(&ports) {
            match groups.iter_mut().find(|(core, _)| core.path == p.core.path) {
                Some((_, members)) => members.push((*port, &p.outbound)),
                None => groups.push((p.core.clone(), vec![(*port, &p.outbound)])),
            }
        }
        let log = self.env.paths.logs_dir().join("batch.log");
        let mut launched = Launched {
            grace_ms: 0,
            spawned: Vec::new(),
            log: log.clone(),
            configs: Vec::new(),
            session: None,
            inbounds: prepared
                .iter()
                .zip(&ports)
                .map(|((config_id, _), port)| (*config_id, SocketAddr::new(listen, *port)))
                .collect(),
        };
        for (n, (binary, pairs)) in groups.iter().enumerate() {
            let started = self.spawn_batch_part(id, n, binary, pairs, &log);
            match started {
                Ok((spawned, path)) => {
                    launched.spawned.push(spawned);
                    launched.configs.push(path);
                    launched.grace_ms = launched
                        .grace_ms
                        .max(core::ready_grace(binary).as_millis() as u64);
                }
                Err(rejection) => {
                    // Nothing of this batch may outlive the refusal.
                    for spawned in std::mem::take(&mut launched.spawned) {
                        process::signal_group(spawned.pid, libc::SIGKILL);
                        self.bury(spawned);
                    }
                    for path in &launched.configs {
                        let _ = std::fs::remove_file(path);
                    }
                    return Err(rejection);
                }
            }
        }
        Ok(launched)
    }

    /// Renders and spawns a pool core (front mode). For now the members get SOCKS inbounds
    /// only, like a batch core.
    pub(super) fn spawn_pool(
        &mut self,
        id: CoreId,
        installed: &[CoreBinary],
        config_ids: &[i64],
    ) -> Result<Launched, Rejection> {
        self.spawn_batch(id, installed, config_ids)
    }

    fn spawn_batch_part(
        &mut self,
        id: CoreId,
        n: usize,
        binary: &CoreBinary,
        pairs: &[(u16, &crate::links::Outbound)],
        log: &std::path::Path,
    ) -> Result<(Spawned, PathBuf), Rejection> {
        let refuse = |message: String| Rejection::new(Code::Internal, message);
        let listen = self.env.listen();
        let rendered =
            core::render_batch(binary, listen, pairs).map_err(|e| refuse(error_chain(&e)))?;
        let path = self
            .env
            .paths
            .runtime_dir()
            .join(format!("batch-{}-{n}.json", id.0));
        write_private(&path, &rendered)
            .map_err(|e| refuse(format!("cannot write {}: {e}", path.display())))?;
        let spawned =
            process::spawn(&binary.path, &core::run_args(binary, &path), log).map_err(|e| {
                let _ = std::fs::remove_file(&path);
                refuse(format!(
                    "cannot start the batch test core {}: {e}",
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
