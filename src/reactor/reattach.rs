//! Reattach on start (DESIGN §5): a session the previous daemon left running is adopted when its
//! pid is alive with the same start time and executable; every other open session is ended as
//! stale, and its config is connected again when `runtime.reconnect_on_start` is set.
//!
//! In front mode the session's process may be a pool core: its recorded members come along, so
//! the front can relay to them at once. Pool core processes no session was adopted on serve
//! nobody; they are stopped (when still the recorded process) and their records dropped.

use std::net::SocketAddr;
use std::path::Path;

use crate::settings::RuntimeMode;
use crate::store::{PoolProcessRow, SessionRow};
use crate::supervisor::{Now, SessionInfo};

use super::prepare::{error_chain, Env};
use super::process::{self, Spawned};

/// A live session taken over from a previous daemon.
pub struct Adopted {
    /// What the supervisor will track.
    pub info: SessionInfo,
    /// Its pidfd, to watch in the ring (not our child: watched, never reaped).
    pub spawned: Spawned,
    /// Front mode: the pool core process the session ran on, with its members.
    pub pool: Option<PoolProcessRow>,
}

/// What reattaching decided.
#[derive(Default)]
pub struct Reattached {
    /// The adopted session, if one was alive.
    pub adopted: Option<Adopted>,
    /// A config to connect again.
    pub reconnect: Option<i64>,
}

/// Adopts at most one live session (the newest); ends the rest as stale.
pub fn reattach(env: &Env, now: Now) -> Reattached {
    let open = match env.store.open_sessions() {
        Ok(open) => open,
        Err(e) => {
            eprintln!("xrat: cannot read open sessions: {}", error_chain(&e));
            return Reattached::default();
        }
    };
    let pools = match env.store.pool_processes() {
        Ok(pools) => pools,
        Err(e) => {
            eprintln!("xrat: cannot read pool core records: {}", error_chain(&e));
            Vec::new()
        }
    };
    let front = env.settings.runtime.mode == RuntimeMode::Front;
    let mut result = Reattached::default();
    for row in open {
        if result.adopted.is_none() {
            if let Some(adopted) = adopt(&row, &pools, front) {
                eprintln!(
                    "xrat: reattached session {} (pid {})",
                    row.id, adopted.info.pid
                );
                result.adopted = Some(adopted);
                continue;
            }
        }
        eprintln!(
            "xrat: session {} is stale (its core is gone); ending it",
            row.id
        );
        let _ = env.store.end_session(row.id, now.unix_secs, "stale");
        if env.settings.runtime.reconnect_on_start && result.reconnect.is_none() {
            result.reconnect = row.config_id;
        }
    }
    if result.adopted.is_some() {
        result.reconnect = None;
    }
    let kept = result.adopted.as_ref().and_then(|a| a.pool.as_ref());
    stop_unadopted_pools(env, pools, kept.map(|p| p.id));
    result
}

/// Stops the recorded pool core processes that were not adopted (identity checked, so a reused
/// pid is left alone), removes their configs (they carry credentials) and forgets them.
fn stop_unadopted_pools(env: &Env, pools: Vec<PoolProcessRow>, kept: Option<i64>) {
    for pool in pools.into_iter().filter(|p| Some(p.id) != kept) {
        if process::is_same_process(pool.pid, pool.pid_start_time, Path::new(&pool.core_path)) {
            eprintln!(
                "xrat: stopping pool core pid {} left by the previous daemon (no session was adopted on it)",
                pool.pid
            );
            process::signal_group(pool.pid, libc::SIGTERM);
        }
        let _ = std::fs::remove_file(&pool.config_path);
        if let Err(e) = env.store.forget_pool_process(pool.pid, pool.pid_start_time) {
            eprintln!("xrat: {}", error_chain(&e));
        }
    }
}

/// The session's core, when it is the very process that was recorded. A session on a pool core
/// is adopted only in front mode: in direct mode its internal port is not the user's.
fn adopt(row: &SessionRow, pools: &[PoolProcessRow], front: bool) -> Option<Adopted> {
    let (pid, start) = (row.pid?, row.pid_start_time?);
    if !process::is_same_process(pid, start, Path::new(&row.core_path)) {
        return None;
    }
    let pool = pools
        .iter()
        .find(|p| (p.pid, p.pid_start_time) == (pid, start))
        .cloned();
    if pool.is_some() && !front {
        eprintln!(
            "xrat: session {} ran on a pool core and runtime.mode is direct now; not adopting it",
            row.id
        );
        return None;
    }
    if pool.is_none() && front {
        // Its core binds the user's port itself; the front could not have bound it, or the
        // port changed since. Either way the front cannot route to it.
        eprintln!(
            "xrat: session {} ran in direct mode and runtime.mode is front now; not adopting it",
            row.id
        );
        return None;
    }
    let socks_addr: SocketAddr = row.socks_addr.parse().ok()?;
    let pidfd = match process::pidfd_open(pid) {
        Ok(pidfd) => pidfd,
        Err(e) => {
            eprintln!("xrat: cannot watch session {} (pid {pid}): {e}", row.id);
            return None;
        }
    };
    let info = SessionInfo {
        id: row.id,
        config_id: row.config_id.unwrap_or(0),
        core: row.core.clone(),
        pid,
        socks_addr,
        http_addr: row.http_addr.as_ref().and_then(|a| a.parse().ok()),
        started_at: row.started_at,
    };
    Some(Adopted {
        info,
        spawned: Spawned {
            pid,
            pidfd,
            start_time: start,
        },
        pool,
    })
}

#[cfg(test)]
#[path = "reattach_tests.rs"]
mod tests;
