//! Reattach on start (DESIGN §5): a session the previous daemon left running is adopted when its
//! pid is alive with the same start time and executable; every other open session is ended as
//! stale, and its config is connected again when `runtime.reconnect_on_start` is set.

use std::net::SocketAddr;
use std::path::Path;

use crate::store::SessionRow;
use crate::supervisor::{Now, SessionInfo};

use super::prepare::{error_chain, Env};
use super::process::{self, Spawned};

/// A live session taken over from a previous daemon.
pub struct Adopted {
    /// What the supervisor will track.
    pub info: SessionInfo,
    /// Its pidfd, to watch in the ring (not our child: watched, never reaped).
    pub spawned: Spawned,
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
    let mut result = Reattached::default();
    for row in open {
        if result.adopted.is_none() {
            if let Some(adopted) = adopt(&row) {
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
    result
}

/// The session's core, when it is the very process that was recorded.
fn adopt(row: &SessionRow) -> Option<Adopted> {
    let (pid, start) = (row.pid?, row.pid_start_time?);
    if !process::is_same_process(pid, start, Path::new(&row.core_path)) {
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
    })
}
