//! The accept loop: one thread per connection, at most [`CONNECTIONS_MAX`] at once, and a
//! graceful stop on SIGTERM/SIGINT (read through a signalfd, polled with the listener).

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::auth::{Token, TOKEN_FILE};
use super::http::{encode, Connection, Response};
use super::routes::{respond, Context};
use super::{check_listen, ApiError, ServeOptions};
use crate::paths::Paths;

/// Most connections served at once; one more is answered 503 and closed at once. Each holds a
/// thread, so this bounds the server's threads and memory.
pub const CONNECTIONS_MAX: usize = 64;
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
    active: AtomicUsize,
    stopping: AtomicBool,
}

/// Counts a connection while it lives; dropping it (also when spawning fails) frees the slot.
struct Slot(Arc<Shared>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Runs `xrat api serve` until SIGTERM or SIGINT: checks the binding rule, makes or reads the
/// token, binds, prints the start line, then serves.
pub fn serve(paths: &Paths, options: ServeOptions) -> Result<(), ApiError> {
    check_listen(&options)?;
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
    // writeln, not println: a closed stdout must not panic the server (it has a job to do).
    let _ = writeln!(
        io::stdout(),
        "API listening on http://{bound} (token in {})",
        token.path().display()
    );
    let shared = Arc::new(Shared {
        ctx: Context {
            paths: paths.clone(),
            token,
        },
        active: AtomicUsize::new(0),
        stopping: AtomicBool::new(false),
    });
    let signal = accept_loop(&listener, &signals, &shared)?;
    drop(listener);
    shared.stopping.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    while shared.active.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        std::thread::sleep(DRAIN_STEP);
    }
    let _ = writeln!(io::stdout(), "API stopped ({signal}).");
    Ok(())
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

/// Starts a thread for `stream`, or answers 503 when every slot is taken.
fn admit(stream: TcpStream, shared: &Arc<Shared>) {
    if shared.active.fetch_add(1, Ordering::SeqCst) >= CONNECTIONS_MAX {
        shared.active.fetch_sub(1, Ordering::SeqCst);
        refuse(stream);
        return;
    }
    let slot = Slot(shared.clone());
    let spawned = std::thread::Builder::new()
        .name("xrat-api-conn".into())
        .spawn(move || {
            let shared = slot.0.clone();
            serve_connection(stream, &shared);
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

/// Serves requests on one connection until it closes, fails, or the server stops.
fn serve_connection(stream: TcpStream, shared: &Shared) {
    let Ok(mut conn) = Connection::new(stream) else {
        return;
    };
    loop {
        let request = match conn.read_request() {
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
