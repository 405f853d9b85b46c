//! The active config's stored name in `runtime_status` (`active_config_name`), so that
//! `xrat status`, which scripts run per call, answers without opening the database itself
//! (that open and query were about three quarters of its instructions with a session).
//!
//! The daemon reads the name once per active config and keeps it: a stored config's name
//! never changes under its id. A read that fails (the database locked, say) is not kept, so
//! the next status tries again; meanwhile the field is absent and the CLI reads the name
//! itself, as it did before.

use super::Reactor;
use crate::supervisor::Reply;

/// The last active config's id and stored name (`None`: no such row).
#[derive(Debug, Default)]
pub(super) struct ActiveName(Option<(i64, Option<String>)>);

impl Reactor {
    /// Puts the active config's name into a `runtime_status` reply or a `subscribe` snapshot.
    pub(super) fn annotate_name(&mut self, reply: &mut Reply) {
        let status = match reply {
            Reply::RuntimeStatus(status) => &mut **status,
            Reply::Subscribed(subscribed) => &mut subscribed.runtime_status,
            _ => return,
        };
        let Some(id) = status.active_config_id else {
            return;
        };
        if !matches!(self.active_name.0, Some((known, _)) if known == id) {
            match self.env.store.config(id) {
                Ok(row) => self.active_name.0 = Some((id, row.map(|c| c.name))),
                Err(_) => return,
            }
        }
        status.active_config_name = self.active_name.0.as_ref().and_then(|(_, n)| n.clone());
    }
}
