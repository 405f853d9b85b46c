//! The front (front mode): the daemon binds the user's ports and relays each connection to the
//! internal inbound of the pool member that [`Effect::Route`](crate::supervisor::Effect::Route)
//! names first (relay.rs, relay_events.rs). Here: the listeners, admission (the empty route and
//! the connection limit get the protocol's own refusal), the drain count per core, the route,
//! and the status fields the executor owns.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::ipc::protocol::RelayView;
use crate::settings::{RuntimeMode, Settings};
use crate::supervisor::{CoreId, Input, Now, RelayFailure, Reply, RouteTarget};

use super::admission::{ACCEPT_PAUSE_MS, FD_LOG_EVERY_MS};
use super::deadlines::Due;
use super::opening::SOCKS5_GENERAL_FAILURE;
use super::relay::{Mode, Relay, FRONT_OPENING_TIMEOUT_MS, REFUSAL_BYTES_MAX, REFUSING_MAX};
use super::retry::{self, FrontPort, Refusal};
use super::ring::{Completion, Op};
use super::setup::LISTEN_BACKLOG;
use super::token::{Kind, Token};
use super::{Reactor, ReactorError};

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

/// One bound front port.
struct Listener {
    fd: OwnedFd,
    addr: SocketAddr,
    port: FrontPort,
    armed: bool,
}

/// The front's state besides the relay table. Empty (no listeners) in direct mode.
#[derive(Default)]
pub struct Front {
    listeners: Vec<Listener>,
    /// What `runtime_status.relay` shows.
    pub counters: RelayView,
    /// Clients being refused at accept (not counted as relayed connections).
    pub refusing: usize,
    /// Relayed connections on each core, for the drain.
    per_core: HashMap<CoreId, u32>,
    /// Cores that were routed and have not been reported drained since.
    routed: HashSet<CoreId>,
    relay_connections_max: u64,
    replay_bytes_max: usize,
    /// `relay.splice`: bulk directions go through kernel pipes (splice.rs).
    pub splice: bool,
    accept_paused: bool,
    last_fd_log_ms: Option<u64>,
}

/// Binds one front port: SO_REUSEADDR (a restarted daemon rebinds while old connections are in
/// TIME_WAIT), close-on-exec (cores must not inherit it), non-blocking. The one place a
/// listener is made, so systemd socket activation can hand over an inherited fd instead.
pub fn front_listener(addr: SocketAddr) -> io::Result<OwnedFd> {
    let family = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    let kind = libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK;
    // SAFETY: plain socket(2); checked before being owned.
    let fd = unsafe { libc::socket(family, kind, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh socket owned by nobody else.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    let (storage, len) = super::prepare::sockaddr(addr);
    // SAFETY: setsockopt reads the int we pass; bind reads the sockaddr we pass; listen takes
    // no memory. All on the socket we own.
    unsafe {
        let opt = (&one as *const libc::c_int).cast();
        let size = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        if libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, opt, size) != 0 {
            return Err(io::Error::last_os_error());
        }
        let sa = (&storage as *const libc::sockaddr_storage).cast();
        if libc::bind(fd, sa, len) != 0 || libc::listen(fd, LISTEN_BACKLOG) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(owned)
}

/// Binds the front ports in front mode (nothing in direct mode).
pub fn bind(
    settings: &Settings,
    inherited: &mut super::listenfds::Inherited,
) -> Result<Front, ReactorError> {
    let mut front = Front {
        relay_connections_max: settings.daemon.relay_connections_max as u64,
        replay_bytes_max: settings.relay.replay_bytes_max as usize,
        splice: settings.relay.splice,
        ..Front::default()
    };
    let runtime = &settings.runtime;
    if runtime.mode != RuntimeMode::Front {
        return Ok(front);
    }
    let ip: std::net::IpAddr = runtime.listen.parse().expect("validated in settings");
    let mut ports = vec![(runtime.socks_port, FrontPort::Socks, "runtime.socks_port")];
    if runtime.http_port != 0 {
        ports.push((runtime.http_port, FrontPort::Http, "runtime.http_port"));
    }
    for (number, port, key) in ports {
        let addr = SocketAddr::new(ip, number);
        let fd = super::listenfds::inherited_or_bind(inherited, addr, front_listener)
            .map_err(|source| ReactorError::FrontBind { addr, key, source })?;
        front.listeners.push(Listener {
            fd,
            addr,
            port,
            armed: false,
        });
    }
    Ok(front)
}

impl Reactor {
    /// Arms the accept of every front listener not armed (at start, and after a pause).
    pub(super) fn front_resume_accept(&mut self) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        self.front.accept_paused = false;
        for index in 0..self.front.listeners.len() {
            let listener = &mut self.front.listeners[index];
            if listener.armed {
                continue;
            }
            listener.armed = true;
            let fd = listener.fd.as_raw_fd();
            let token = Token {
                kind: Kind::FrontAccept,
                generation: 0,
                slot: index as u32,
            };
            // SAFETY: an accept carries no buffer; the listener lives as long as the reactor.
            unsafe { self.push(Op::AcceptMulti { fd }, token.encode()) };
        }
    }

    /// A front listener's accept completed.
    pub(super) fn on_front_accept(&mut self, now: Now, token: Token, c: &Completion) {
        let index = token.slot as usize;
        let Some(listener) = self.front.listeners.get_mut(index) else {
            return;
        };
        if !c.more() {
            listener.armed = false;
        }
        let port = listener.port;
        match c.result {
            fd if fd >= 0 => {
                // SAFETY: the accepted socket is ours alone.
                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                self.admit_front(now, port, owned);
            }
            r => match -r {
                libc::ECANCELED | libc::ECONNABORTED | libc::EINTR | libc::EAGAIN => {}
                errno @ (libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                    self.front_out_of_fds(now, errno)
                }
                errno => eprintln!(
                    "xrat: accepting on the front port failed: {}",
                    io::Error::from_raw_os_error(errno)
                ),
            },
        }
        if !self.front.accept_paused {
            self.front_resume_accept();
        }
    }

    /// Out of descriptors: pause the front's accepts (existing relays go on), say so at most
    /// once a second.
    fn front_out_of_fds(&mut self, now: Now, errno: i32) {
        let due = self
            .front
            .last_fd_log_ms
            .is_none_or(|at| now.monotonic_ms >= at + FD_LOG_EVERY_MS);
        if due {
            self.front.last_fd_log_ms = Some(now.monotonic_ms);
            eprintln!(
                "xrat: the front cannot accept: {}; pausing for {ACCEPT_PAUSE_MS} ms (raise ulimit -n or lower daemon.relay_connections_max)",
                io::Error::from_raw_os_error(errno)
            );
        }
        self.front.accept_paused = true;
        self.deadlines
            .add(now.monotonic_ms + ACCEPT_PAUSE_MS, Due::AcceptResume);
    }

    /// A client came in on a front port: relay it to the route's first member, or refuse it in
    /// its protocol (no session, or the connection limit).
    pub(super) fn admit_front(&mut self, now: Now, port: FrontPort, client: OwnedFd) {
        if self.shutdown_deadline.is_some() {
            return; // dropped: closed
        }
        // While a dead pool core's replacement starts, clients wait (see hold.rs).
        let Some(client) = self.hold_client(port, client) else {
            return;
        };
        let at_limit = self.front.counters.connections_open >= self.front.relay_connections_max;
        if self.route.is_empty() || at_limit {
            return self.refuse_front(now, port, client, at_limit);
        }
        set_nodelay(client.as_raw_fd());
        self.relays.next_serial = self.relays.next_serial.wrapping_add(1);
        let relay = Relay::new(
            self.relays.next_serial,
            port,
            client,
            Mode::Relaying,
            self.front.replay_bytes_max,
        );
        let slot = self.relays.slab.insert(relay);
        self.front.counters.connections_open += 1;
        self.front.counters.connections_total += 1;
        self.relay_connect_next(slot);
        self.relay_wake(slot);
    }

    fn refuse_front(&mut self, now: Now, port: FrontPort, client: OwnedFd, at_limit: bool) {
        if at_limit {
            self.front.counters.refused_at_limit += 1;
        }
        if self.front.refusing >= REFUSING_MAX {
            return; // dropped: closed unanswered, the bound holds
        }
        let http = if at_limit {
            retry::http_at_limit(self.front.relay_connections_max as u32)
        } else {
            retry::http_no_session()
        };
        let refusal = Refusal::new(port, SOCKS5_GENERAL_FAILURE, http, false);
        let mode = Mode::Refusing {
            refusal,
            answered: false,
        };
        self.relays.next_serial = self.relays.next_serial.wrapping_add(1);
        let relay = Relay::new(
            self.relays.next_serial,
            port,
            client,
            mode,
            REFUSAL_BYTES_MAX,
        );
        let slot = self.relays.slab.insert(relay);
        self.front.refusing += 1;
        self.relay_timer(now, slot, FRONT_OPENING_TIMEOUT_MS);
        self.relay_wake(slot);
    }

    /// The limit on relayed connections (the hold's bound too).
    pub(super) fn front_connections_max(&self) -> u64 {
        self.front.relay_connections_max
    }

    /// Opens the relay's socket to `addr` (the member `target`) and starts the connect.
    pub(super) fn relay_connect(
        &mut self,
        slot: usize,
        target: RouteTarget,
        addr: SocketAddr,
    ) -> io::Result<()> {
        let family = if addr.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        };
        // SAFETY: plain socket(2); checked before being owned.
        let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        set_nodelay(fd);
        let (storage, len) = super::prepare::sockaddr(addr);
        let r = &mut self.relays.slab[slot];
        *r.addr = storage;
        // SAFETY: a fresh socket owned by nobody else.
        r.core = Some(unsafe { OwnedFd::from_raw_fd(fd) });
        r.connected = false;
        r.core_cancelled = false;
        r.target = Some(target);
        r.ops.connect = true;
        r.attempts += 1;
        if r.attempts > 1 {
            // From now on the client's bytes go out behind the kept ones, never twice.
            r.replay_sent = Some(0);
            self.front.counters.retries += 1;
        }
        *self.front.per_core.entry(target.core).or_default() += 1;
        let (token, addr) = (
            r.token(Kind::RelayConnect, slot),
            (&*r.addr as *const libc::sockaddr_storage).cast(),
        );
        // SAFETY: the address is boxed in the relay and the socket owned by it; the relay is
        // freed only after this connect's completion.
        unsafe { self.push(Op::Connect { fd, addr, len }, token) };
        Ok(())
    }

    /// The relay leaves its member (closed, or moving to the next): the member's core may be
    /// drained now.
    pub(super) fn relay_detach(&mut self, slot: usize) {
        let Some(target) = self.relays.slab.get_mut(slot).and_then(|r| r.target.take()) else {
            return;
        };
        let count = self.front.per_core.entry(target.core).or_default();
        *count = count.saturating_sub(1);
        if *count == 0 {
            self.front.per_core.remove(&target.core);
            self.report_drained(target.core);
        }
    }

    /// `CoreDrained` once for a core that was routed, is not now, and has no relay left.
    fn report_drained(&mut self, core: CoreId) {
        let routed_now = self.route.iter().any(|t| t.core == core);
        if routed_now || self.front.per_core.contains_key(&core) {
            return;
        }
        if self.front.routed.remove(&core) {
            self.inputs.push_back(Input::CoreDrained { core });
        }
    }

    /// `Effect::Route`: new connections follow it; open ones stay on their member.
    pub(super) fn set_route(&mut self, _now: Now, targets: Vec<RouteTarget>) {
        self.route = targets;
        for t in &self.route {
            self.front.routed.insert(t.core);
        }
        let routed: Vec<CoreId> = self.front.routed.iter().copied().collect();
        for core in routed {
            self.report_drained(core);
        }
    }

    /// A pool core exited: its relays are closed (there is nothing left to relay to), except
    /// those whose opening is not over: they are replayed on another core, as if refused.
    pub(super) fn front_core_exited(&mut self, core: CoreId) {
        self.front.routed.remove(&core);
        let slots: Vec<usize> = self
            .relays
            .slab
            .iter()
            .filter(|(_, r)| r.target.is_some_and(|t| t.core == core))
            .map(|(slot, _)| slot)
            .collect();
        for slot in slots {
            let r = &mut self.relays.slab[slot];
            if r.opened || !r.replay.complete() || !matches!(r.mode, Mode::Relaying) {
                self.close_relay(slot);
                continue;
            }
            // Not a failure of the member: the supervisor has the exit itself.
            r.last_failure = Some(RelayFailure::Refused);
            r.refused_core = Some(core);
            self.relay_detach(slot);
            self.relays.slab[slot].mode = Mode::Switching;
            self.retire_core(slot);
            self.relay_wake(slot);
        }
    }

    /// Shutdown: stop accepting on the front and close every relay.
    pub(super) fn front_shutdown(&mut self) {
        let armed: Vec<i32> = self
            .front
            .listeners
            .iter()
            .filter(|l| l.armed)
            .map(|l| l.fd.as_raw_fd())
            .collect();
        for fd in armed {
            // SAFETY: a cancel carries no buffer.
            unsafe { self.push(Op::CancelFd { fd }, Token::singleton(Kind::Cancel).encode()) };
        }
        let slots: Vec<usize> = self.relays.slab.iter().map(|(slot, _)| slot).collect();
        for slot in slots {
            self.close_relay(slot);
        }
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

    /// The front's part of `runtime_status`: its addresses and counters (front mode only).
    pub(super) fn annotate_front(&self, reply: &mut Reply) {
        let Some(status) = reply.runtime_status_mut() else {
            return;
        };
        if self.front.listeners.is_empty() {
            return;
        }
        let addr = |port| {
            self.front
                .listeners
                .iter()
                .find(|l| l.port == port)
                .map(|l| l.addr.to_string())
        };
        status.front_socks_addr = addr(FrontPort::Socks);
        status.front_http_addr = addr(FrontPort::Http);
        status.relay = Some(self.front.counters.clone());
    }
}

/// Test builds only (debug, or the `test-hooks` feature): `XRAT_TEST_FRONT_ROUTE` is a
/// comma-separated list of members as `socks` or `socks|http` addresses, routed in that order
/// (config ids 1, 2, …, each on a made-up core of its own, as separate servers are: a member
/// that refuses says nothing of the others), with `XRAT_TEST_FRONT_STALL_MS` (default 2000).
/// It lets tests drive the relay against plain servers, without a pool core.
#[cfg(any(debug_assertions, feature = "test-hooks"))]
pub fn test_route(reactor: &mut Reactor) {
    let Ok(list) = std::env::var("XRAT_TEST_FRONT_ROUTE") else {
        return;
    };
    let stall_ms = std::env::var("XRAT_TEST_FRONT_STALL_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let mut targets = Vec::new();
    for (i, member) in list.split(',').enumerate() {
        let core = CoreId(u64::MAX - i as u64);
        let (socks, http) = member.split_once('|').unwrap_or((member, ""));
        let addrs = MemberAddrs {
            socks: socks.parse().expect("XRAT_TEST_FRONT_ROUTE: socks address"),
            http: http.parse().ok(),
            pid: 0,
        };
        let config_id = i as i64 + 1;
        reactor.pool_members.insert((core, config_id), addrs);
        targets.push(RouteTarget {
            core,
            config_id,
            stall_ms,
        });
    }
    eprintln!("xrat: test route from XRAT_TEST_FRONT_ROUTE: {list}");
    reactor.set_route(Now::default(), targets);
}

/// Relayed bytes go out at once: interactive protocols (SSH, TLS handshakes) must not wait for
/// Nagle. Best effort: a failure only costs latency.
fn set_nodelay(fd: i32) {
    let one: libc::c_int = 1;
    // SAFETY: setsockopt reads the int we pass, on a socket we own.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}
