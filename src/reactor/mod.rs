//! The event loop: one thread, one io_uring ring, or epoll where io_uring is refused (DESIGN
//! §3a, in the style of TigerBeetle's loop; `backend.rs` chooses). Submit and wait, copy a batch
//! of completions, then dispatch them; completions become supervisor inputs, supervisor effects
//! become operations.

mod admission;
pub mod backend;
mod bufring;
mod busy;
mod conn;
mod cores;
mod deadlines;
mod detect;
mod epoll;
mod epoll_ops;
mod exec;
mod first_read;
mod front;
mod handlers;
mod hold;
mod journal;
mod launch;
pub mod listenfds;
mod names;
mod opening;
mod pipe;
mod pool;
mod prepare;
/// Core configs hold credentials: the standalone `config test` writes them the same way.
pub(crate) use prepare::write_private;
mod probes;
mod process;
mod reattach;
mod refresh;
mod relay;
mod relay_events;
mod reload;
mod reply;
mod retry;
pub mod ring;
mod route_wait;
mod setup;
mod sockgroup;
mod spare;
mod splice;
mod subscribers;
mod token;

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

use slab::Slab;
use thiserror::Error;

use crate::paths::{Paths, PathsError};
use crate::settings::Settings;
use crate::supervisor::{Input, Now, Supervisor, SupervisorConfig};

use backend::Backend;
use bufring::BufRing;
use conn::Conn;
use reply::ReplyEncoder;
use ring::{Completion, Op};
use token::{Kind, Token};

/// The provided-buffer group that connection receives draw from.
const RECV_BUFFER_GROUP: u16 = 0;
/// Batches with at most this many connections to answer try a direct `send` first.
pub const DIRECT_SEND_CONNECTIONS_MAX: usize = 2;
/// How long shutdown waits for clients to take their last replies.
pub const SHUTDOWN_FLUSH_MS: u64 = 2_000;

/// Reactor failures; each message says what to change.
#[derive(Debug, Error)]
pub enum ReactorError {
    /// io_uring is refused by the kernel or a sandbox.
    #[error("io_uring is unavailable (daemon.backend or XRAT_BACKEND is \"io_uring\"): set daemon.backend = \"auto\" or \"epoll\" to serve on epoll, or allow io_uring. Check `sysctl kernel.io_uring_disabled` (0 allows it; set it with `sysctl -w kernel.io_uring_disabled=0`), or, in a container, use a seccomp profile that allows io_uring_setup (Docker >= 25 blocks it by default); Linux >= 6.1 is required")]
    IoUringUnavailable {
        /// What io_uring_setup said.
        #[source]
        source: io::Error,
    },
    /// `XRAT_BACKEND` names no backend.
    #[error("XRAT_BACKEND={value:?} is not a backend; use auto, io_uring or epoll, or unset it to use daemon.backend from config.toml")]
    BackendEnv {
        /// The value as set.
        value: String,
    },
    /// The ring could not be built for another reason (memory, fd limits).
    #[error("cannot set up the io_uring ring; check `ulimit -l` and free memory")]
    RingSetup {
        /// What io_uring_setup said.
        #[source]
        source: io::Error,
    },
    /// The provided-buffer ring was refused.
    #[error("cannot register the receive buffer ring; xrat needs Linux >= 6.1")]
    BufRing {
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// Another daemon holds the lock.
    #[error("another xrat daemon is already running for {} (it holds {}); stop it with `xrat daemon stop`", root.display(), lock.display())]
    AlreadyRunning {
        /// The XRAT root.
        root: PathBuf,
        /// The lock file.
        lock: PathBuf,
    },
    /// The lock file could not be opened or locked.
    #[error("cannot lock {}", path.display())]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// The socket could not be bound.
    #[error("cannot listen on {}; check the directory's permissions", path.display())]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// The readiness datagram could not be sent.
    #[error("cannot notify systemd at NOTIFY_SOCKET={}", path.display())]
    Notify {
        /// The notify socket.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// A setup syscall failed.
    #[error("{what} failed")]
    Syscall {
        /// Which call.
        what: &'static str,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// A front port could not be bound (front mode).
    #[error("cannot listen on {addr} ({key}): the port is taken or not allowed; free it, choose another {key} in config.toml, or set runtime.mode = \"direct\" to let the core bind it")]
    FrontBind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The setting that names the port.
        key: &'static str,
        /// What bind said.
        #[source]
        source: io::Error,
    },
    /// systemd's socket activation variables or descriptors are unusable.
    #[error(transparent)]
    ListenFds(#[from] listenfds::ListenFdsError),
    /// The database could not be opened.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The root or socket path is unusable.
    #[error(transparent)]
    Paths(#[from] PathsError),
    /// `daemon.socket_group` cannot be applied to the socket.
    #[error(transparent)]
    SocketGroup(#[from] sockgroup::SocketGroupError),
}

/// Everything the loop owns. Field order matters: the ring is dropped before the memory its
/// operations point into.
pub struct Reactor {
    ring: Backend,
    bufs: BufRing,
    /// Front mode: relayed connections (their buffers outlive their ops: the ring goes first).
    relays: relay::Relays,
    front: front::Front,
    conns: Slab<Conn>,
    sup: Supervisor,
    /// Supervisor inputs waiting for [`Reactor::pump`], the one place that feeds it.
    inputs: VecDeque<Input>,
    env: prepare::Env,
    procs: cores::Procs,
    /// Pool cores' processes (front mode): what a session on a member records.
    pools: pool::Pools,
    detector: detect::Detector,
    refresher: refresh::Refresher,
    /// Renders made by the last inspect, by config id.
    prepared: std::collections::HashMap<i64, prepare::Prepared>,
    /// Front mode: where new relayed connections go, best first.
    route: Vec<crate::supervisor::RouteTarget>,
    /// Front mode: clients held while no pool core is up.
    hold: hold::Hold,
    /// Front mode: each pool member's internal inbounds, filled when its pool core is spawned
    /// (or adopted) and removed when the core exits.
    #[allow(
        dead_code,
        reason = "the pool and the front read it; they land on their own branches"
    )]
    pool_members: std::collections::HashMap<(crate::supervisor::CoreId, i64), front::MemberAddrs>,
    probes: probes::Probes,
    deadlines: deadlines::Deadlines,
    admission: admission::Admission,
    journal: journal::Journal,
    active_name: names::ActiveName,
    encoder: ReplyEncoder,
    /// Reply buffers of closed connections, for the next ones.
    spare: spare::Spare,
    /// For the direct `recv` right after accept.
    scratch: Box<[u8]>,
    batch: Vec<Completion>,
    /// The busy-poll window after traffic (`daemon.busy_poll_us`).
    busy: busy::BusyPoll,
    /// Slots with replies to send after this batch.
    dirty: Vec<usize>,
    /// Slots whose multishot receive must be re-armed after buffers are published.
    rearm: Vec<usize>,
    /// Connections whose first read was peeked this turn, as (slot, serial) (`first_read`).
    peeked: Vec<(usize, u32)>,
    listener: OwnedFd,
    accept_armed: bool,
    signal_fd: OwnedFd,
    signal_buf: Box<[u8; 128]>,
    timer_fd: OwnedFd,
    timer_buf: Box<[u8; 8]>,
    timer_armed_at: Option<u64>,
    connections_max: usize,
    next_serial: u32,
    shutdown_deadline: Option<u64>,
    socket_path: PathBuf,
    /// The daemon socket came from systemd (`xrat-daemon.socket`), which owns its file: it is
    /// left in place at exit (see [`run_server`]).
    socket_inherited: bool,
    /// Listeners systemd passed that nothing took yet: the front takes the user's ports from
    /// here ([`listenfds::inherited_or_bind`]) before the daemon reports ready, and whatever is
    /// left then is closed with a log line.
    inherited: listenfds::Inherited,
    /// `XRAT_LOG=debug`: log routine events (ticks) too.
    log_debug: bool,
    _lock: File,
}

/// Runs the daemon in the foreground until shutdown (`xrat daemon run-server`).
pub fn run_server(paths: &Paths, settings: &Settings) -> Result<(), ReactorError> {
    // First of all: systemd's descriptors sit at 3 and up, and adopting them means owning
    // whatever is open there, so nothing may have been opened (and kept) before.
    let mut inherited = listenfds::Inherited::from_env()?;
    if !inherited.is_empty() {
        let passed = inherited.describe().join(", ");
        eprintln!("xrat: systemd passed {passed}");
    }
    paths.create_dirs()?;
    let socket_path = paths.checked_socket()?;
    let lock = setup::lock(&paths.lock_file(), &paths.root)?;
    setup::raise_fd_limit();
    if settings.daemon.sched_slice_us != 0 {
        setup::set_sched_slice(settings.daemon.sched_slice_us);
    }
    // Declared before the ring so that an early return drops the ring (which still has them
    // registered) first.
    let bufs = BufRing::new();
    let mut ring = Backend::open(backend::choice(settings)?)?;
    ring.register_buf_ring(&bufs, RECV_BUFFER_GROUP)
        .map_err(|source| ReactorError::BufRing { source })?;
    let signal_fd = setup::signalfd()?;
    let timer_fd = setup::timerfd()?;
    let group = sockgroup::resolve(&settings.daemon.socket_group)?;
    let runtime_dir = paths.runtime_dir();
    let (listener, socket_inherited) =
        setup::daemon_listener(&socket_path, &runtime_dir, &mut inherited, group.as_ref())?;
    // Front mode: the user's ports are bound (or taken from systemd) before any client is
    // answered.
    let front = front::bind(settings, &mut inherited)?;
    let probe_target = crate::probe::ProbeTarget::parse(&settings.health.probe_url)
        .expect("validated with the settings");
    let store = crate::store::Store::open(&paths.database())?;
    // From here on the loop thread never waits on another process's lock (see journal.rs).
    store.set_busy_timeout(std::time::Duration::ZERO)?;
    // After the replies, from the loop (journal.rs): no reply waits for a checkpoint.
    store.defer_checkpoints(journal::WAL_PAGES_MAX)?;
    let env = prepare::Env {
        paths: paths.clone(),
        settings: settings.clone(),
        store,
    };
    let reattached = reattach::reattach(&env, now());
    let mut sup = Supervisor::new(
        supervisor_config(settings),
        now(),
        reattached.adopted.as_ref().map(|a| a.info.clone()),
    );
    let backend_name = ring.name();
    sup.enable_refresh(now(), refresh_config(settings));
    let mut reactor = Reactor {
        ring,
        bufs,
        relays: relay::Relays::default(),
        front,
        conns: Slab::with_capacity(settings.daemon.max_connections as usize),
        sup,
        inputs: VecDeque::new(),
        env,
        procs: cores::Procs::default(),
        pools: pool::Pools::default(),
        detector: detect::Detector::default(),
        refresher: refresh::Refresher::default(),
        prepared: std::collections::HashMap::new(),
        route: Vec::new(),
        hold: hold::Hold::default(),
        pool_members: std::collections::HashMap::new(),
        probes: probes::Probes::new(probe_target),
        deadlines: deadlines::Deadlines::default(),
        journal: journal::Journal::default(),
        active_name: names::ActiveName::default(),
        admission: admission::Admission::new(
            settings.daemon.frame_timeout_ms,
            settings.daemon.idle_timeout_secs * 1000,
            crate::ipc::access::Policy::of_this_process(&settings.daemon.socket_group),
        ),
        encoder: ReplyEncoder::new(backend_name),
        spare: spare::Spare::default(),
        scratch: vec![0; bufring::RECV_BUFFER_BYTES as usize].into_boxed_slice(),
        batch: Vec::with_capacity(ring::BATCH_COMPLETIONS_MAX),
        busy: busy::BusyPoll::new(),
        dirty: Vec::new(),
        rearm: Vec::new(),
        peeked: Vec::new(),
        listener,
        accept_armed: false,
        signal_fd,
        signal_buf: Box::new([0; 128]),
        timer_fd,
        timer_buf: Box::new([0; 8]),
        timer_armed_at: None,
        connections_max: admission::clamp_connections(
            settings.daemon.max_connections as u64,
            settings.runtime.rotation.test_concurrency as u64,
        ) as usize,
        next_serial: 0,
        shutdown_deadline: None,
        socket_path,
        socket_inherited,
        inherited,
        log_debug: std::env::var("XRAT_LOG").is_ok_and(|v| v == "debug"),
        _lock: lock,
    };
    #[cfg(any(debug_assertions, feature = "test-hooks"))]
    front::test_route(&mut reactor);
    reactor.start()?;
    if let (Some(adopted), Some(core)) = (reattached.adopted, reactor.sup.adopted_core()) {
        if let Some(pool) = adopted.pool {
            let members = pool
                .members
                .iter()
                .filter_map(|m| Some((m.config_id, m.socks_addr.parse().ok()?)))
                .collect();
            reactor.adopt_pool(core, adopted.spawned, pool);
            reactor.sup.adopt_pool(now(), members);
            reactor.pump(now());
        } else {
            let log = paths
                .logs_dir()
                .join(format!("core-{}.log", adopted.info.id));
            reactor.watch(core, vec![adopted.spawned], log, Vec::new());
        }
    }
    if let Some(config_id) = reattached.reconnect {
        eprintln!("xrat: reconnecting config {config_id} (runtime.reconnect_on_start)");
        reactor.sup.reconnect(now(), config_id);
        reactor.pump(now());
    }
    // Every listener has been taken by now (the daemon socket above; the front's ports when
    // the front starts); a leftover is a socket unit out of step with config.toml.
    reactor.inherited.close_unclaimed();
    setup::notify_ready()?;
    eprintln!(
        "xrat: daemon {} serving {} (pid {}, backend {})",
        env!("CARGO_PKG_VERSION"),
        reactor.socket_path.display(),
        std::process::id(),
        backend_name
    );
    let result = reactor.run();
    reactor.journal_at_exit();
    // The socket goes last, after every reply was flushed, so a client that saw it vanish knows
    // the daemon is gone. Not an inherited one: systemd owns that file and still listens on it
    // (clients queue there until the next daemon; `RemoveOnStop=yes` removes it when the
    // socket unit stops), and removing it would leave systemd listening on a name nobody can
    // reach.
    if !reactor.socket_inherited {
        let _ = std::fs::remove_file(&reactor.socket_path);
    }
    eprintln!("xrat: daemon stopped");
    result
}

/// What the supervisor takes from the settings (bounded there, so the products cannot overflow).
fn supervisor_config(settings: &Settings) -> SupervisorConfig {
    SupervisorConfig {
        pid: std::process::id(),
        health_interval_ms: settings.daemon.health_interval_secs * 1000,
        probe_timeout_ms: settings.health.timeout_ms,
        ready_timeout_ms: settings.runtime.ready_timeout_ms,
        rotation_interval_secs: settings.runtime.rotation.interval_secs,
        health_trigger_enabled: settings.runtime.rotation.health_trigger_enabled,
        cooldown_secs: settings.runtime.rotation.cooldown_secs,
        test_concurrency: settings.runtime.rotation.test_concurrency,
        failure_threshold: settings.health.failure_threshold,
        rotation_enabled: settings.runtime.rotation.enabled,
        front: settings.runtime.mode == crate::settings::RuntimeMode::Front,
        pool_size: settings.runtime.rotation.pool_size,
        drain_ms: settings.runtime.rotation.drain_secs * 1000,
        retry_interval_ms: settings.health.retry_interval_ms,
        passive_failures: settings.health.passive_failures,
        passive_window_ms: settings.health.passive_window_ms,
        probe_url: settings.health.probe_url.clone(),
        strikes: settings.runtime.rotation.strikes,
        quarantine_secs: settings.runtime.rotation.quarantine_secs,
        subscriber_queue_max: settings.daemon.subscriber_queue_max,
    }
}

/// When the daemon runs `xrat sub update --due` (bounded in settings).
fn refresh_config(settings: &Settings) -> crate::supervisor::RefreshConfig {
    let s = &settings.subscriptions;
    crate::supervisor::RefreshConfig {
        check_interval_ms: s.check_interval_secs * 1000,
        timeout_ms: s.refresh_timeout_secs * 1000,
        before_rotation: settings.runtime.rotation.refresh_subscriptions,
    }
}

/// The current time for the supervisor.
fn now() -> Now {
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Now {
        monotonic_ms: setup::monotonic_ms(),
        unix_secs: wall.as_secs(),
        unix_ms: wall.as_millis() as u64,
    }
}

impl Reactor {
    fn start(&mut self) -> Result<(), ReactorError> {
        self.arm_accept();
        self.front_resume_accept();
        self.arm_signal();
        self.arm_timer_read();
        self.sync_timer()
    }

    fn run(&mut self) -> Result<(), ReactorError> {
        loop {
            let what = self.ring.wait_call();
            self.busy
                .wait(&mut self.ring)
                .map_err(|source| ReactorError::Syscall { what, source })?;
            self.batch.clear();
            let mut batch = std::mem::take(&mut self.batch);
            self.ring.drain_into(&mut batch);
            let now = now();
            for completion in &batch {
                self.dispatch(now, completion);
            }
            let window_us = self.env.settings.daemon.busy_poll_us;
            self.busy.after_batch(&batch, window_us);
            self.batch = batch;
            self.run_deadlines(now);
            self.pump(now);
            self.after_batch(now)?;
            if self.finished(now) {
                return Ok(());
            }
        }
    }

    fn dispatch(&mut self, now: Now, c: &Completion) {
        let Some(token) = Token::decode(c.user_data) else {
            eprintln!(
                "xrat: completion with unknown user_data {:#x} dropped",
                c.user_data
            );
            return;
        };
        match token.kind {
            Kind::Accept => self.on_accept(now, c),
            Kind::Recv => self.on_recv(now, token, c),
            Kind::Reject => self.on_reject_read(token, c.result),
            Kind::Send => self.on_send(token, c),
            Kind::Cancel => {}
            Kind::Close if c.result < 0 => {
                let e = std::io::Error::from_raw_os_error(-c.result);
                eprintln!("xrat: closing a client socket failed: {e}");
            }
            Kind::Close => {}
            Kind::Signal => self.on_signal(now, c),
            Kind::Timer => self.on_timer(c),
            Kind::Pidfd => self.on_pidfd(now, token),
            Kind::ProbeIo => self.on_probe_io(now, token, c),
            Kind::FrontAccept => self.on_front_accept(now, token, c),
            Kind::RelayConnect
            | Kind::RelayClientRecv
            | Kind::RelayClientSend
            | Kind::RelayCoreRecv
            | Kind::RelayCoreSend
            | Kind::RelayUpPoll
            | Kind::RelayDownPoll
            | Kind::RelayUpSplice
            | Kind::RelayDownSplice => self.on_relay(now, token, c),
            Kind::Wake => self.relays.wake_armed = false,
        }
    }

    /// Work deferred to the end of a batch: publish recycled buffers, re-arm receives, start
    /// sends, and point the timerfd at the supervisor's next deadline.
    fn after_batch(&mut self, now: Now) -> Result<(), ReactorError> {
        self.bufs.publish();
        self.flush_dirty();
        if self.settle_peeked(now) {
            // A fresh connection's next request or its close, seen after its reply went out.
            self.pump(now);
            self.flush_dirty();
        }
        // After the sends: a direct send that drained a paused connection's backlog resumes its
        // reading here, not after the next completion (which might never come).
        for slot in std::mem::take(&mut self.rearm) {
            self.arm_recv(slot);
        }
        // Relay ops go behind the IPC sends, a bounded number per turn.
        self.relay_turn();
        if self.shutdown_deadline.is_some() {
            self.close_flushed(now);
        }
        // A write made after the pump must not hold the lock while the loop waits.
        self.commit_batch(now);
        self.checkpoint_if_due();
        self.sync_timer()
    }

    fn flush_dirty(&mut self) {
        let mut dirty = std::mem::take(&mut self.dirty);
        // One connection waiting for its reply is latency: send it now. Many are throughput:
        // one io_uring_enter carries all their sends.
        let direct = dirty.len() <= DIRECT_SEND_CONNECTIONS_MAX;
        for slot in dirty.drain(..) {
            self.flush(slot, direct);
        }
        self.dirty = dirty;
    }

    fn sync_timer(&mut self) -> Result<(), ReactorError> {
        // Inputs left over by a pump that hit its round limit: wake at once.
        let leftover = (!self.inputs.is_empty()).then(setup::monotonic_ms);
        let wanted = [
            self.sup.poll_timeout(),
            self.shutdown_deadline,
            self.deadlines.next(),
            leftover,
        ]
        .into_iter()
        .flatten()
        .min();
        if let Some(deadline) = wanted.filter(|d| Some(*d) != self.timer_armed_at) {
            setup::arm_timer(self.timer_fd.as_raw_fd(), deadline)?;
            self.timer_armed_at = Some(deadline);
        }
        Ok(())
    }

    fn finished(&self, now: Now) -> bool {
        let Some(deadline) = self.shutdown_deadline else {
            return false;
        };
        if now.monotonic_ms >= deadline {
            eprintln!(
                "xrat: {} client(s) did not take their replies within {SHUTDOWN_FLUSH_MS} ms; closing anyway",
                self.conns.len()
            );
            return true;
        }
        self.conns.is_empty() && !self.accept_armed
    }

    /// Queues `op`.
    ///
    /// # Safety
    /// Every pointer in `op` must stay valid, and the memory it names untouched by Rust code,
    /// until the op's final completion has been taken from the ring (see [`Backend::push`]).
    unsafe fn push(&mut self, op: Op, user_data: u64) {
        // SAFETY: the caller's contract is the ring's.
        if let Err(e) = unsafe { self.ring.push(op, user_data, RECV_BUFFER_GROUP) } {
            // Only a failing io_uring_enter gets here (epoll queues without a syscall); the op
            // is lost, so say so loudly.
            eprintln!("xrat: cannot queue {op:?}: {e}");
        }
    }

    fn arm_accept(&mut self) {
        let fd = self.listener.as_raw_fd();
        // SAFETY: an accept carries no buffer; the listener outlives the loop.
        unsafe {
            self.push(
                Op::AcceptMulti { fd },
                Token::singleton(Kind::Accept).encode(),
            )
        };
        self.accept_armed = true;
    }

    fn arm_signal(&mut self) {
        let op = Op::Read {
            fd: self.signal_fd.as_raw_fd(),
            ptr: self.signal_buf.as_mut_ptr(),
            len: self.signal_buf.len() as u32,
        };
        // SAFETY: `signal_buf` is boxed in the reactor, which outlives the ring's ops.
        unsafe { self.push(op, Token::singleton(Kind::Signal).encode()) };
    }

    fn arm_timer_read(&mut self) {
        let op = Op::Read {
            fd: self.timer_fd.as_raw_fd(),
            ptr: self.timer_buf.as_mut_ptr(),
            len: self.timer_buf.len() as u32,
        };
        // SAFETY: `timer_buf` is boxed in the reactor, which outlives the ring's ops.
        unsafe { self.push(op, Token::singleton(Kind::Timer).encode()) };
    }
}
