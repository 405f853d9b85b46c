//! The front (front mode): the daemon binds the user's ports and relays each connection to the
//! internal inbound of the pool member that [`Effect::Route`](crate::supervisor::Effect::Route)
//! names first.

use std::net::SocketAddr;

use crate::supervisor::{CoreId, Now, RouteTarget};

/// Where one pool member listens, and which process serves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberAddrs {
    /// Its internal SOCKS inbound.
    pub socks: SocketAddr,
    /// Its internal HTTP inbound, when `runtime.http_port` is set.
    pub http: Option<SocketAddr>,
    /// The process (of the pool core's one per core family) that serves it.
    pub pid: u32,
}

use super::Reactor;

impl Reactor {
    /// `Effect::Route`.
    pub(super) fn set_route(&mut self, _now: Now, targets: Vec<RouteTarget>) {
        self.route = targets;
    }

    /// `Effect::BeginSession`: records the session on the member (see `pool.rs`).
    pub(super) fn begin_pool_session(&mut self, now: Now, core: CoreId, config_id: i64) {
        let session = self.pool_session(now, core, config_id);
        self.inputs
            .push_back(crate::supervisor::Input::SessionBegun {
                core,
                config_id,
                session,
            });
    }
}
