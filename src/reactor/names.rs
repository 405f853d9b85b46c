//! The active config's stored name in `runtime_status` (`active_config_name`), so that
//! `xrat status`, which scripts run per call, answers without opening the database itself
//! (that open and query were about three quarters of its instructions with a session).
//!
//! A name can change under its id while the daemon runs, by processes it is not told about:
//! `xrat sub update` renames a node, `xrat config remove` deletes the row. So the name read is
//! kept for at most [`ACTIVE_NAME_TTL_MS`], not for the session: at most one read a second
//! however often scripts ask (a read per request would cost each `runtime_status` a read
//! transaction), and a renamed or removed config shows within that bound. A read that fails
//! (the database locked, say) is not kept, so the next request tries again; meanwhile the field
//! is absent and the CLI reads the name itself, as it did before.

use super::Reactor;
use crate::supervisor::{Now, Reply};

/// How long a name read from the database is served before it is read again.
pub(super) const ACTIVE_NAME_TTL_MS: u64 = 1000;

/// The last name read: config id, when (monotonic ms), and the name (`None`: no such row).
#[derive(Debug, Default)]
pub(super) struct ActiveName(Option<(i64, u64, Option<String>)>);

impl Reactor {
    /// Puts the active config's name into a `runtime_status` reply or a `subscribe` snapshot.
    pub(super) fn annotate_name(&mut self, now: Now, reply: &mut Reply) {
        let Some(status) = reply.runtime_status_mut() else {
            return;
        };
        let Some(id) = status.active_config_id else {
            return;
        };
        let fresh = matches!(self.active_name.0, Some((known, at, _))
            if known == id && now.monotonic_ms.saturating_sub(at) < ACTIVE_NAME_TTL_MS);
        if !fresh {
            match self.env.store.config_name(id) {
                Ok(name) => self.active_name.0 = Some((id, now.monotonic_ms, name)),
                Err(_) => return,
            }
        }
        status.active_config_name = self.active_name.0.as_ref().and_then(|(_, _, n)| n.clone());
    }
}
