//! Reattach on start (DESIGN §5): a session the previous daemon left running is adopted when its
//! pid is alive with the same start time and executable; every other open session is ended as
//! stale, and its config is connected again when `runtime.reconnect_on_start` is set.

use std::os::fd::OwnedFd;
use std::path::Path;

use crate::settings::Settings;
use crate::supervisor::{Now, SessionInfo};

use super::process;
use super::runtime::Runtime;

/// A live session taken over from a previous daemon.
pub struct Adopted {
    /// What the supervisor will track.
    pub info: SessionInfo,
    /// Its pidfd, to watch in the ring.
    pub pidfd: OwnedFd,
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
pub fn reattach(runtime: &mut Runtime, settings: &Settings, now: Now) -> Reattached {
    let open = match runtime.store().open_sessions() {
        Ok(open) => open,
        Err(e) => {
            eprintln!(
                "xrat: cannot read open sessions: {}",
                super::runtime::error_chain(&e)
            );
            return Reattached::default();
        }
    };
    let mut result = Reattached::default();
    for row in open {
        let alive = match (row.pid, row.pid_start_time) {
            (Some(pid), Some(start)) => {
                process::is_same_process(pid, start, Path::new(&row.core_path))
            }
            _ => false,
        };
        if alive && result.adopted.is_none() {
            let pid = row.pid.expect("alive implies a pid");
            match process::pidfd_open(pid) {
                Ok(pidfd) => {
                    eprintln!("xrat: reattached session {} (pid {pid})", row.id);
                    let info = SessionInfo {
                        id: row.id,
                        config_id: row.config_id.unwrap_or(0),
                        core: row.core.clone(),
                        pid,
                        socks_addr: row.socks_addr.clone(),
                        http_addr: row.http_addr.clone(),
                        started_at: row.started_at,
                    };
                    result.adopted = Some(Adopted { info, pidfd });
                    continue;
                }
                Err(e) => eprintln!("xrat: cannot watch session {} (pid {pid}): {e}", row.id),
            }
        }
        eprintln!(
            "xrat: session {} is stale (its core is gone); ending it",
            row.id
        );
        let _ = runtime.store().end_session(row.id, now.unix_secs, "stale");
        if settings.runtime.reconnect_on_start && result.reconnect.is_none() {
            result.reconnect = row.config_id;
        }
    }
    if result.adopted.is_some() {
        result.reconnect = None;
    }
    result
}
