//! Server processes under test (xrat's daemon and the peers), their CPU placement and their end.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::client::{Client, Conn};
use crate::peers::{PEERS, PEER_ENV, SOCKET_ENV};

/// How long a server gets to answer its first `daemon_ping`.
const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a server gets to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the client and the servers run.
///
/// The default ([`Placement::split`]), with two CPUs or more: the client (this process) gets the
/// first allowed CPU and every server process the second. Each side then owns a core: a
/// measurement is the server's work plus the socket hop, not the scheduler trading one core
/// between client and server, and a server with many threads (the blocking peer) cannot spread
/// over more cores than the single-threaded ones.
#[derive(Clone, Copy)]
pub struct Placement {
    client_cpu: usize,
    server_cpu: usize,
    client: libc::cpu_set_t,
    server: libc::cpu_set_t,
}

impl Placement {
    /// Client on the first allowed CPU, servers on the second; `None` when fewer than two CPUs
    /// are allowed (then nothing is pinned and the scheduler decides).
    pub fn split() -> Option<Placement> {
        match allowed_cpus()?[..] {
            [client, server, ..] => Some(Placement::new(client, server)),
            _ => None,
        }
    }

    /// Client and servers on the first allowed CPU: a round trip then costs both sides' CPU
    /// work and two context switches, with no cross-CPU wake-up in it (which on a virtual
    /// machine can cost more than the work itself).
    pub fn same() -> Option<Placement> {
        let cpu = *allowed_cpus()?.first()?;
        Some(Placement::new(cpu, cpu))
    }

    fn new(client_cpu: usize, server_cpu: usize) -> Placement {
        Placement {
            client_cpu,
            server_cpu,
            client: cpu_set(client_cpu),
            server: cpu_set(server_cpu),
        }
    }

    /// Pins the calling thread (criterion and the client run on the main thread).
    pub fn pin_client(&self) -> io::Result<()> {
        set_affinity(&self.client)
    }

    /// "client on CPU a, servers on CPU b".
    pub fn describe(&self) -> String {
        format!(
            "client on CPU {}, servers on CPU {}",
            self.client_cpu, self.server_cpu
        )
    }
}

/// The CPUs this process may run on, in ascending order.
fn allowed_cpus() -> Option<Vec<usize>> {
    // SAFETY: cpu_set_t is a plain bit array, for which all zeroes is the valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 is the calling thread; the size and pointer describe `set`, which outlives
    // the call.
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
    if rc != 0 {
        return None;
    }
    let cpus = (0..libc::CPU_SETSIZE as usize)
        // SAFETY: every index is below CPU_SETSIZE, the capacity of `set`.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect();
    Some(cpus)
}

/// A CPU set holding `cpu` alone.
fn cpu_set(cpu: usize) -> libc::cpu_set_t {
    // SAFETY: all zeroes is the valid empty set (see `allowed_cpus`).
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` came from `allowed_cpus`, so it is below CPU_SETSIZE.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    set
}

/// Sets the calling thread's CPU set. Only a syscall: safe between fork and exec.
fn set_affinity(set: &libc::cpu_set_t) -> io::Result<()> {
    // SAFETY: pid 0 is the calling thread; size and pointer describe `set`.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(set), set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A running server process, stopped when dropped.
pub struct Server {
    /// Benchmark id: "xrat-uring", "xrat-epoll", "tokio", "tokio-uring" or "blocking".
    pub name: &'static str,
    /// Where it listens.
    pub socket: PathBuf,
    child: Child,
    /// Where the server's output goes, when not to the bench's stderr.
    log: Option<PathBuf>,
    /// Holds the socket (and for xrat the whole root) until the server is gone.
    _dir: TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            eprintln!(
                "note: {} had exited ({status}) before the run ended{}",
                self.name,
                self.log_note()
            );
            return;
        }
        // xrat treats SIGTERM as daemon_shutdown; the peers just die of it.
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: `pid` is our own child and still unreaped (try_wait just saw it running), so
        // the number cannot name another process; kill only sends a signal.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match self.child.try_wait() {
                // A daemon must shut down cleanly on SIGTERM; a peer's death by it is expected.
                Ok(Some(status)) if self.log.is_some() && !status.success() => {
                    eprintln!(
                        "note: {} exited with {status} on SIGTERM{}",
                        self.name,
                        self.log_note()
                    );
                    return;
                }
                Ok(Some(_)) | Err(_) => return,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Ok(None) => break,
            }
        }
        eprintln!(
            "note: {} did not exit within {STOP_TIMEOUT:?} of SIGTERM; killing it{}",
            self.name,
            self.log_note()
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    #[allow(dead_code)] // the busy-poll bench reads it; the IPC bench does not
    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The end of the server's log, when it has one (peers write to the bench's stderr).
    fn log_note(&self) -> String {
        match &self.log {
            Some(log) => format!("; its output:\n{}", log_tail(log)),
            None => String::new(),
        }
    }
}

/// xrat's daemon once per reactor backend: (benchmark id, `XRAT_BACKEND` value).
pub const XRAT_BACKENDS: [(&str, &str); 2] = [("xrat-uring", "io_uring"), ("xrat-epoll", "epoll")];

/// Starts xrat's daemon on each backend and the three peers; a server that does not come up is left out of
/// every group, with a note saying why.
pub fn start_all(placement: Option<Placement>) -> Vec<Server> {
    let mut servers = Vec::new();
    let xrats = XRAT_BACKENDS
        .iter()
        .map(|&(name, backend)| start_xrat(name, backend, &daemon_settings(), placement));
    let peers = PEERS.iter().map(|&peer| start_peer(peer, placement));
    for started in xrats.chain(peers) {
        match started {
            Ok(server) => servers.push(server),
            Err(note) => eprintln!("note: {note}"),
        }
    }
    servers
}

/// `XRAT_ROOT=<tempdir> XRAT_BACKEND=<backend> xrat daemon run-server`, in the foreground, its
/// output kept in a log.
pub fn start_xrat(
    name: &'static str,
    backend: &str,
    extra_settings: &str,
    placement: Option<Placement>,
) -> Result<Server, String> {
    let dir = tempdir()?;
    let root = dir.path().join("root");
    std::fs::create_dir(&root)
        .map_err(|e| format!("{name} skipped: cannot create its root: {e}"))?;
    // Each daemon binds its own front SOCKS port, so two backends can run side by side.
    let port = free_port().map_err(|e| format!("{name} skipped: no free port: {e}"))?;
    let settings = format!("[runtime]\nsocks_port = {port}\n{extra_settings}");
    std::fs::write(root.join("config.toml"), settings)
        .map_err(|e| format!("{name} skipped: cannot write its config.toml: {e}"))?;
    let log_path = dir.path().join("daemon.log");
    let log = File::create(&log_path).map_err(|e| format!("{name} skipped: log: {e}"))?;
    let err_log = log
        .try_clone()
        .map_err(|e| format!("{name} skipped: log: {e}"))?;
    let mut command = Command::new(env!("CARGO_BIN_EXE_xrat"));
    command
        .args(["daemon", "run-server"])
        .env("XRAT_ROOT", &root)
        .env("XRAT_BACKEND", backend)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err_log);
    let socket = root.join("runtime").join("daemon.sock");
    let log = Some(log_path.clone());
    match spawn_and_wait(command, name, socket, log, dir, placement) {
        Ok(server) => Ok(server),
        Err(why) => Err(format!(
            "{name} skipped: {why}; its output:\n{}",
            log_tail(&log_path)
        )),
    }
}

/// The bench binary again, serving `peer` (see `peers::serve_if_asked`).
fn start_peer(peer: &'static str, placement: Option<Placement>) -> Result<Server, String> {
    let dir = tempdir()?;
    let socket = dir.path().join(format!("{peer}.sock"));
    let exe = std::env::current_exe().map_err(|e| format!("{peer} skipped: {e}"))?;
    let mut command = Command::new(exe);
    command
        .env(PEER_ENV, peer)
        .env(SOCKET_ENV, &socket)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    spawn_and_wait(command, peer, socket, None, dir, placement)
        .map_err(|why| format!("{peer} skipped: {why}"))
}

/// `[daemon]` settings from `XRAT_BENCH_BUSY_POLL_US` and `XRAT_BENCH_SCHED_SLICE_US`, each
/// when set (else the daemon's default).
fn daemon_settings() -> String {
    let mut lines = String::new();
    for (var, key) in [
        ("XRAT_BENCH_BUSY_POLL_US", "busy_poll_us"),
        ("XRAT_BENCH_SCHED_SLICE_US", "sched_slice_us"),
    ] {
        if let Ok(us) = std::env::var(var) {
            lines.push_str(&format!("{key} = {us}\n"));
        }
    }
    if lines.is_empty() {
        lines
    } else {
        format!("[daemon]\n{lines}")
    }
}

/// A loopback TCP port that was free a moment ago.
fn free_port() -> io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A private directory for one server's socket (and xrat's root and log).
fn tempdir() -> Result<TempDir, String> {
    tempfile::Builder::new()
        .prefix("xrat-bench-")
        .tempdir()
        .map_err(|e| format!("cannot create a temporary directory: {e}"))
}

/// Spawns `command` on the servers' CPU, tied to this process's life, and waits until it
/// answers `daemon_ping` on `socket`.
fn spawn_and_wait(
    mut command: Command,
    name: &'static str,
    socket: PathBuf,
    log: Option<PathBuf>,
    dir: TempDir,
    placement: Option<Placement>,
) -> Result<Server, String> {
    let parent = std::process::id() as libc::pid_t;
    let server_cpu = placement.map(|p| p.server);
    // SAFETY: the hook runs between fork and exec, where only async-signal-safe calls are
    // allowed: it makes three syscalls (sched_setaffinity, prctl, getppid) on values prepared
    // before the fork, and neither allocates nor takes locks.
    unsafe {
        command.pre_exec(move || {
            if let Some(set) = &server_cpu {
                set_affinity(set)?;
            }
            // A bench killed outright (Ctrl-C, SIGKILL) must not leave servers behind.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                return Err(io::Error::other("the bench exited while starting a server"));
            }
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start it: {e}"))?;
    if let Err(why) = wait_ready(&mut child, &socket) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(why);
    }
    Ok(Server {
        name,
        socket,
        child,
        log,
        _dir: dir,
    })
}

/// Waits until `daemon_ping` answers on `socket`, or the child exits, or the timeout passes.
fn wait_ready(child: &mut Child, socket: &Path) -> Result<(), String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut client = Client::new();
    let mut last_error = String::from("no socket yet");
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("it exited ({status}) before answering daemon_ping"));
        }
        match Conn::connect(socket).and_then(|mut conn| client.ping(&mut conn)) {
            Ok(()) => return Ok(()),
            Err(error) => last_error = error.to_string(),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!(
        "daemon_ping did not answer on {} within {READY_TIMEOUT:?} (last: {last_error})",
        socket.display()
    ))
}

/// The last lines of a log, for a note on why a server did not come up.
fn log_tail(path: &Path) -> String {
    const TAIL_BYTES: u64 = 2048;
    let mut bytes = Vec::new();
    if let Ok(mut file) = File::open(path) {
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = file.seek(SeekFrom::Start(len.saturating_sub(TAIL_BYTES)));
        let _ = file.read_to_end(&mut bytes);
    }
    // The cut may fall inside a character.
    let text = String::from_utf8_lossy(&bytes);
    if text.trim().is_empty() {
        "  (nothing)".to_string()
    } else {
        text.lines().map(|line| format!("  {line}\n")).collect()
    }
}
