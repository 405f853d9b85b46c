//! The accept loop: one thread per connection, at most [`CONNECTIONS_MAX`] at once, and a
//! graceful stop on SIGTERM/SIGINT (read through a signalfd, polled with the listener).
//!
//! A full house: a new connection evicts the connection that has waited longest for its current
//! request to arrive whole (it gets 503 and is closed); only when every slot is serving a request
//! that arrived whole is the new connection answered 503 at once. So clients that trickle bytes
//! can delay no one: each holds its slot only until someone else needs it, and never past the
//! header deadline.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::auth::{Token, TOKEN_FILE};
use super::http::{encode, Connection, Deadlines, Response};
use super::routes::{respond, Context};
use super::{check_listen, ApiError, ServeOptions};
use crate::paths::Paths;
use crate::settings::Settings;

/// Most connections held at once. At the limit a new connection evicts the oldest one still
/// reading a request; when none is, it is answered 503 and closed at once.
pub const CONNECTIONS_MAX: usize = 64;
/// Most connection threads alive at once: the slots plus evicted threads that are winding down
/// (each only sees its socket shut down and exits). Past it a new connection gets 503.
pub const THREADS_MAX: usize = 2 * CONNECTIONS_MAX;
/// After a signal, how long in-flight requests get to finish before the process exits.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Pause after an accept error such as EMFILE, which would otherwise spin the poll loop.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);
/// After an error response, how long the client's unread input is drained (see [`linger`]).
const LINGER_TIMEOUT: Duration = Duration::from_secs(2);
/// Most bytes drained after an error response.
const LINGER_BYTES_MAX: usize = 1024 * 1024;
/// Poll period while waiting for connections to finish after a signal.
const DRAIN_STEP: Duration = Duration::from_millis(10);

/// State shared by the accept loop and every connection thread.
struct Shared {
    ctx: Context,
    deadlines: Deadlines,
    slots: Mutex<Slots>,
    /// Connection threads alive (evicted ones included).
    threads: AtomicUsize,
    stopping: AtomicBool,
}

impl Shared {
    fn slots(&self) -> MutexGuard<'_, Slots> {
        // A panicking connection thread cannot leave the table half-updated (every update is
        // one map operation), so a poisoned lock is still good.
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What a connection is doing, for choosing whom to evict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Waiting for a request to arrive whole (head or body), since the given instant.
    Reading(Instant),
    /// A request arrived whole and is being answered: never evicted.
    Busy,
    /// An error was answered and the client's input is being drained before the close.
    Closing,
}

/// One held connection: its phase and a second handle on its socket, to shut it down.
struct Held {
    phase: Phase,
    stream: TcpStream,
}

/// The connection table: at most [`CONNECTIONS_MAX`] entries, keyed by a never-reused id.
#[derive(Default)]
pub(super) struct Slots {
    next_id: u64,
    held: HashMap<u64, Held>,
}

impl Slots {
    fn insert(&mut self, stream: TcpStream, now: Instant) -> u64 {
        self.next_id += 1;
        let held = Held {
            phase: Phase::Reading(now),
            stream,
        };
        self.held.insert(self.next_id, held);
        self.next_id
    }

    /// Sets the phase of `id`; false when it was evicted (the caller must stop at once).
    fn set(&mut self, id: u64, phase: Phase) -> bool {
        match self.held.get_mut(&id) {
            Some(held) => {
                held.phase = phase;
                true
            }
            None => false,
        }
    }

    /// Whom a new connection evicts: a closing connection first, else the one whose current
    /// request has waited longest; None when every connection is busy answering.
    fn victim(&self) -> Option<u64> {
        pick_victim(self.held.iter().map(|(&id, held)| (id, held.phase)))
    }
}

/// [`Slots::victim`] over `(id, phase)` pairs; ties go to the lower (older) id.
pub(super) fn pick_victim(entries: impl Iterator<Item = (u64, Phase)>) -> Option<u64> {
    entries
        .filter_map(|(id, phase)| match phase {
            Phase::Closing => Some(((0, None), id)),
            Phase::Reading(since) => Some(((1, Some(since)), id)),
            Phase::Busy => None,
        })
        .min()
        .map(|(_, id)| id)
}

/// Counts a connection thread while it lives and frees its slot when it ends.
struct Slot {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.shared.slots().held.remove(&self.id);
        self.shared.threads.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Runs `xrat api serve` until SIGTERM or SIGINT: checks the binding rule, makes or reads the
/// token, binds, prints the start line, then serves.
pub fn serve(paths: &Paths, options: ServeOptions) -> Result<(), ApiError> {
    check_listen(&options)?;
    let settings = Settings::load(&paths.settings_file())?;
    paths.create_dirs()?;
    let token = Token::load_or_create(&paths.root.join(TOKEN_FILE))?;
    let listener = TcpListener::bind(options.listen).map_err(|source| ApiError::Bind {
        addr: options.listen,
        source,
    })?;
    let os = |call| move |source| ApiError::Os { call, source };
    let bound = listener.local_addr().map_err(os("getsockname"))?;
    listener.set_nonblocking(true).map_err(os("fcntl"))?;
    // Before any thread exists, so every connection thread inherits the blocked mask and the
    // signals reach only the signalfd.
    let signals = block_signals().map_err(os("signalfd"))?;
    announce_start(bound, token.path(), options.json);
    let shared = Arc::new(Shared {
        ctx: Context {
            paths: paths.clone(),
            token,
        },
        deadlines: Deadlines {
            header: Duration::from_millis(settings.api.header_timeout_ms),
            ..Deadlines::default()
        },
        slots: Mutex::new(Slots::default()),
        threads: AtomicUsize::new(0),
        stopping: AtomicBool::new(false),
    });
    let signal = accept_loop(&listener, &signals, &shared)?;
    drop(listener);
    shared.stopping.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    while shared.threads.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        std::thread::sleep(DRAIN_STEP);
    }
    if options.json {
        let line = serde_json::json!({"event": "stopped", "signal": signal});
        let _ = writeln!(io::stdout(), "{line}");
    } else {
        let _ = writeln!(io::stdout(), "API stopped ({signal}).");
    }
    Ok(())
}

/// The start line: where the API listens and where its token is; with `json`, one JSON object
/// (`event`, `listen`, `url`, `pid`, `token_file`) on one line, so a script reads it as it comes.
fn announce_start(bound: std::net::SocketAddr, token_file: &std::path::Path, json: bool) {
    // writeln, not println: a closed stdout must not panic the server (it has a job to do).
    let _ = if json {
        let line = serde_json::json!({
            "event": "listening",
            "listen": bound.to_string(),
            "url": format!("http://{bound}"),
            "pid": std::process::id(),
            "token_file": token_file,
        });
        writeln!(io::stdout(), "{line}")
    } else {
        writeln!(
            io::stdout(),
            "API listening on http://{bound} (token in {})",
            token_file.display()
        )
    };
}

/// Accepts until a signal arrives; returns its name.
fn accept_loop(
    listener: &TcpListener,
    signals: &OwnedFd,
    shared: &Arc<Shared>,
) -> Result<&'static str, ApiError> {
    loop {
        let mut fds = [
            libc::pollfd {
                fd: listener.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: signals.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `fds` is a valid array of two pollfd for the duration of the call.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(ApiError::Os {
                call: "poll",
                source: e,
            });
        }
        if fds[1].revents != 0 {
            return Ok(read_signal(signals));
        }
        if fds[0].revents != 0 {
            accept_ready(listener, shared);
        }
    }
}

/// Accepts every pending connection.
fn accept_ready(listener: &TcpListener, shared: &Arc<Shared>) {
    loop {
        match listener.accept() {
            Ok((stream, _)) => admit(stream, shared),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // ECONNABORTED, EMFILE and the like: the listener itself is fine.
                let _ = writeln!(io::stderr(), "xrat api: accept failed: {e}");
                std::thread::sleep(ACCEPT_ERROR_PAUSE);
                return;
            }
        }
    }
}

/// Starts a thread for `stream`, evicting the oldest reading connection at a full house, or
/// answers 503 when every slot is serving a request.
fn admit(stream: TcpStream, shared: &Arc<Shared>) {
    let accepted = Instant::now();
    if shared.threads.load(Ordering::SeqCst) >= THREADS_MAX {
        refuse(stream);
        return;
    }
    let Ok(handle) = stream.try_clone() else {
        refuse(stream);
        return;
    };
    let mut slots = shared.slots();
    if slots.held.len() >= CONNECTIONS_MAX {
        let Some(victim) = slots.victim() else {
            drop(slots);
            refuse(stream);
            return;
        };
        if let Some(held) = slots.held.remove(&victim) {
            evict(held);
        }
    }
    let id = slots.insert(handle, accepted);
    drop(slots);
    shared.threads.fetch_add(1, Ordering::SeqCst);
    let slot = Slot {
        shared: shared.clone(),
        id,
    };
    let spawned = std::thread::Builder::new()
        .name("xrat-api-conn".into())
        .spawn(move || {
            serve_connection(stream, &slot.shared, slot.id, accepted);
            drop(slot);
        });
    if let Err(e) = spawned {
        let _ = writeln!(io::stderr(), "xrat api: cannot start a thread: {e}");
    }
}

/// Answers 503 without reading the request, from the accept thread: nonblocking, so a client
/// that does not read cannot stall accepting (a short response fits the socket buffer).
fn refuse(stream: TcpStream) {
    let message =
        format!("the API serves at most {CONNECTIONS_MAX} connections at once; retry shortly");
    let response = Response::error(503, "unavailable", message).with_header("Retry-After", "1");
    if stream.set_nonblocking(true).is_ok() {
        let _ = (&stream).write_all(&encode(&response, false));
        let _ = stream.shutdown(Shutdown::Write);
    }
}

/// Ends an evicted connection from the accept thread: a reading one is told 503 (written with
/// MSG_DONTWAIT: the handle shares its file status flags with the thread's, so it must not be
/// switched to nonblocking); then both directions are shut down, which wakes the connection's
/// thread from its read with EOF, and it exits without writing.
fn evict(held: Held) {
    if let Phase::Reading(_) = held.phase {
        let message = format!(
            "the API was full ({CONNECTIONS_MAX} connections) and this connection had waited longest for its request; retry"
        );
        let response = Response::error(503, "unavailable", message).with_header("Retry-After", "1");
        let bytes = encode(&response, false);
        // SAFETY: send(2) of a live buffer on a socket this handle owns.
        unsafe {
            libc::send(
                held.stream.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            );
        }
    }
    let _ = held.stream.shutdown(Shutdown::Both);
}

/// Serves requests on one connection until it closes, fails, is evicted, or the server stops.
/// Every phase change goes through the slot table; a false answer means the connection was
/// evicted (and already answered), so the thread stops without writing.
fn serve_connection(stream: TcpStream, shared: &Shared, id: u64, accepted: Instant) {
    let Ok(mut conn) = Connection::new(stream, shared.deadlines, accepted) else {
        return;
    };
    let mut first = true;
    loop {
        if !first && !shared.slots().set(id, Phase::Reading(Instant::now())) {
            return;
        }
        first = false;
        let read = conn.read_request();
        let phase = if read.is_ok() {
            Phase::Busy
        } else {
            Phase::Closing
        };
        if !shared.slots().set(id, phase) {
            return;
        }
        let request = match read {
            Ok(request) => request,
            Err(e) => {
                if let Some(response) = e.response() {
                    let _ = conn.write_response(&response, false);
                    linger(conn.stream());
                }
                return;
            }
        };
        let started = Instant::now();
        let response = respond(&shared.ctx, &request);
        // A one-line access log (never headers: they hold the token).
        let _ = writeln!(
            io::stderr(),
            "{} {} {} {} ms",
            request.method,
            request.path,
            response.status,
            started.elapsed().as_millis()
        );
        let keep = request.keep_alive && !shared.stopping.load(Ordering::SeqCst);
        if conn.write_response(&response, keep).is_err() || !keep {
            break;
        }
    }
    // Half-close first so the client reads the last response before it sees the end.
    let _ = conn.stream().shutdown(Shutdown::Write);
}

/// Closes after an error answered before the request was read whole (an oversized body, say):
/// closing with unread input makes the kernel send RST, which can destroy the response before
/// the client reads it. So half-close, then read and drop what the client still sends, bounded.
fn linger(stream: &TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    let deadline = Instant::now() + LINGER_TIMEOUT;
    let mut drained = 0;
    let mut sink = [0u8; 4096];
    while drained < LINGER_BYTES_MAX {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match (&*stream).read(&mut sink) {
            Ok(0) | Err(_) => return,
            Ok(n) => drained += n,
        }
    }
}

/// Blocks SIGTERM and SIGINT in this thread (and threads started after) and returns a
/// signalfd that reports them.
fn block_signals() -> io::Result<OwnedFd> {
    // SAFETY: sigset operations on a local, zero-initialised set; pthread_sigmask changes only
    // this thread's mask; the new fd is checked, then owned.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// Reads one pending signal and names it.
fn read_signal(signals: &OwnedFd) -> &'static str {
    // SAFETY: signalfd_siginfo is plain data; zeroed is a valid value.
    let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::signalfd_siginfo>();
    // SAFETY: reads at most `size` bytes into `info`, which is that large.
    let n = unsafe {
        libc::read(
            signals.as_raw_fd(),
            (&mut info as *mut libc::signalfd_siginfo).cast(),
            size,
        )
    };
    match (n == size as isize).then_some(info.ssi_signo as i32) {
        Some(libc::SIGINT) => "SIGINT",
        _ => "SIGTERM",
    }
}
