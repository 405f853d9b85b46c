//! `xrat config test` without a daemon: the same batch test the rotation runs (DESIGN §7), done
//! with blocking sockets. One temporary core per core family, one loopback SOCKS inbound per
//! config routed to its outbound; probes run on at most `concurrency` worker threads; the cores
//! are killed and their configs removed when the run ends, however it ends.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use thiserror::Error;

use super::{ErrorKind, TestOptions, TestOutcome};
use crate::core::{self, CoreBinary};
use crate::links::Outbound;
use crate::probe::{Action, Event, Probe, ProbeTarget};

/// Poll period while waiting for a test core's inbounds to accept.
const READY_POLL_MS: u64 = 20;
/// Bytes read per `read` during a probe.
const PROBE_READ_BYTES: usize = 4096;
/// Lines of a failed core's log quoted in its members' errors.
const LOG_TAIL_LINES: usize = 5;

/// Failures of the run as a whole (a single config's failure is a [`TestOutcome`]).
#[derive(Debug, Error)]
pub enum StandaloneError {
    /// The work directory or a core config could not be written.
    #[error("cannot write the test core's files in {}: {source}; check that the XRAT root is writable", dir.display())]
    Files {
        /// The directory.
        dir: PathBuf,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// No free loopback port.
    #[error("cannot reserve loopback ports for the test inbounds on {listen}: {source}")]
    Ports {
        /// `runtime.listen`.
        listen: IpAddr,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
}

/// One config to test, with the core that runs it or why none can.
pub struct Member<'a> {
    /// The config.
    pub config_id: i64,
    /// Its outbound.
    pub outbound: &'a Outbound,
    /// The chosen core, or why none runs it.
    pub core: Result<&'a CoreBinary, String>,
}

/// Where the run puts things and how long cores may take to listen.
pub struct Setup<'a> {
    /// Directory for the test cores' configs and log (`<root>/runtime`).
    pub dir: &'a Path,
    /// `runtime.listen`.
    pub listen: IpAddr,
    /// `runtime.ready_timeout_ms`.
    pub ready_timeout: Duration,
}

/// A spawned test core: killed, reaped and its config removed on drop.
struct TestCore {
    child: Child,
    config: PathBuf,
}

impl Drop for TestCore {
    fn drop(&mut self) {
        // SAFETY: plain syscall on the child's own process group (spawned with process_group 0).
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Runs the test; `on_done` sees each result as it arrives (the progress bar). Results come
/// back in the order of `members`.
pub fn run(
    setup: &Setup<'_>,
    members: &[Member<'_>],
    options: &TestOptions,
    on_done: &mut dyn FnMut(&TestOutcome),
) -> Result<Vec<TestOutcome>, StandaloneError> {
    let target = ProbeTarget::parse(&options.url).map_err(|e| StandaloneError::Files {
        dir: setup.dir.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let mut results: Vec<Option<TestOutcome>> = vec![None; members.len()];
    let mut cores = Vec::new();
    let mut probes: Vec<(usize, SocketAddr)> = Vec::new();
    for (binary, indices) in group_by_core(members, &mut results, on_done) {
        let (core, addrs) = match start_core(setup, binary, members, &indices)? {
            Ok(started) => started,
            Err(why) => {
                for i in indices {
                    let outcome = TestOutcome::failed(
                        members[i].config_id,
                        ErrorKind::CoreFailed,
                        why.clone(),
                        unix_now(),
                    );
                    on_done(&outcome);
                    results[i] = Some(outcome);
                }
                continue;
            }
        };
        cores.push(core);
        probes.extend(indices.into_iter().zip(addrs));
    }
    let done = probe_all(&probes, &target, options, members, on_done);
    for (i, outcome) in done {
        results[i] = Some(outcome);
    }
    drop(cores);
    Ok(results
        .into_iter()
        .map(|r| r.expect("every member has a result"))
        .collect())
}

/// Members grouped by core binary; those without a core get their result at once.
fn group_by_core<'a>(
    members: &[Member<'a>],
    results: &mut [Option<TestOutcome>],
    on_done: &mut dyn FnMut(&TestOutcome),
) -> Vec<(&'a CoreBinary, Vec<usize>)> {
    let mut groups: Vec<(&CoreBinary, Vec<usize>)> = Vec::new();
    for (i, member) in members.iter().enumerate() {
        match &member.core {
            Err(why) => {
                let outcome = TestOutcome::failed(
                    member.config_id,
                    ErrorKind::Unsupported,
                    why.clone(),
                    unix_now(),
                );
                on_done(&outcome);
                results[i] = Some(outcome);
            }
            Ok(core) => match groups.iter_mut().find(|(c, _)| c.path == core.path) {
                Some((_, indices)) => indices.push(i),
                None => groups.push((core, vec![i])),
            },
        }
    }
    groups
}

/// Free loopback ports (bound, then released for the core to take).
fn free_ports(listen: IpAddr, count: usize) -> std::io::Result<Vec<u16>> {
    let held: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind((listen, 0)))
        .collect::<Result<_, _>>()?;
    held.iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect()
}

type Started = Result<(TestCore, Vec<SocketAddr>), String>;

/// Renders, spawns and waits for one test core. The outer error stops the run; the inner one
/// fails this core's members.
fn start_core(
    setup: &Setup<'_>,
    binary: &CoreBinary,
    members: &[Member<'_>],
    indices: &[usize],
) -> Result<Started, StandaloneError> {
    let ports =
        free_ports(setup.listen, indices.len()).map_err(|source| StandaloneError::Ports {
            listen: setup.listen,
            source,
        })?;
    let candidates: Vec<(u16, &Outbound)> = ports
        .iter()
        .zip(indices)
        .map(|(port, i)| (*port, members[*i].outbound))
        .collect();
    let rendered = match core::render_batch(binary, setup.listen, &candidates) {
        Ok(text) => text,
        Err(e) => return Ok(Err(e.to_string())),
    };
    let files = |source| StandaloneError::Files {
        dir: setup.dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(setup.dir).map_err(files)?;
    let stem = format!("ctest-{}-{}", std::process::id(), ports[0]);
    let ext = if binary.kind == core::CoreKind::Mihomo {
        "yaml"
    } else {
        "json"
    };
    let config = setup.dir.join(format!("{stem}.{ext}"));
    let log = setup.dir.join("ctest.log");
    crate::reactor::write_private(&config, &rendered).map_err(files)?;
    let log_file = std::fs::File::create(&log).map_err(files)?;
    let log_err = log_file.try_clone().map_err(files)?;
    let spawned = Command::new(&binary.path)
        .args(core::run_args(binary, &config))
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(log_err)
        .process_group(0)
        .spawn();
    let child = match spawned {
        Ok(child) => child,
        Err(e) => {
            let _ = std::fs::remove_file(&config);
            let path = binary.path.display();
            return Ok(Err(format!("cannot start the test core {path}: {e}")));
        }
    };
    let mut core = TestCore { child, config };
    let addrs: Vec<SocketAddr> = ports
        .iter()
        .map(|p| SocketAddr::new(setup.listen, *p))
        .collect();
    if let Err(why) = wait_ready(&mut core, &addrs, setup.ready_timeout) {
        return Ok(Err(format!("{why}; {}", log_tail(&log))));
    }
    std::thread::sleep(core::ready_grace(binary));
    Ok(Ok((core, addrs)))
}

/// Waits until every inbound accepts, the core exits, or the timeout passes.
fn wait_ready(core: &mut TestCore, addrs: &[SocketAddr], timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut pending: Vec<SocketAddr> = addrs.to_vec();
    let polls = timeout.as_millis() as u64 / READY_POLL_MS + 1;
    for _ in 0..polls {
        if let Ok(Some(status)) = core.child.try_wait() {
            return Err(format!("the test core exited at start ({status})"));
        }
        pending
            .retain(|addr| TcpStream::connect_timeout(addr, Duration::from_millis(200)).is_err());
        if pending.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(READY_POLL_MS));
    }
    Err(format!(
        "the test core did not listen on {} within {} ms (runtime.ready_timeout_ms)",
        pending[0],
        timeout.as_millis()
    ))
}

fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join(" | ");
    format!("core log {}: {tail}", log.display())
}

/// Probes every inbound on at most `concurrency` threads; results arrive on this thread.
fn probe_all(
    probes: &[(usize, SocketAddr)],
    target: &ProbeTarget,
    options: &TestOptions,
    members: &[Member<'_>],
    on_done: &mut dyn FnMut(&TestOutcome),
) -> Vec<(usize, TestOutcome)> {
    let next = AtomicUsize::new(0);
    let (tx, rx) = mpsc::channel();
    let workers = (options.concurrency.max(1) as usize).min(probes.len());
    let timeout = Duration::from_millis(options.timeout_ms);
    let mut out = Vec::with_capacity(probes.len());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let tx = tx.clone();
            let next = &next;
            scope.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&(member, addr)) = probes.get(i) else {
                    return;
                };
                let result = probe_once(addr, target, timeout);
                let outcome =
                    TestOutcome::from_probe(members[member].config_id, &result, unix_now());
                if tx.send((member, outcome)).is_err() {
                    return;
                }
            });
        }
        drop(tx);
        for (member, outcome) in rx.iter().take(probes.len()) {
            on_done(&outcome);
            out.push((member, outcome));
        }
    });
    out
}

/// One probe through the SOCKS inbound at `addr`: latency in ms, or why it failed, worded as
/// the daemon's probes word it.
pub fn probe_once(
    addr: SocketAddr,
    target: &ProbeTarget,
    timeout: Duration,
) -> Result<u64, String> {
    let start = Instant::now();
    let deadline = start + timeout;
    let timed_out = || format!("no answer within {} ms", timeout.as_millis());
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("{e} connecting to the SOCKS inbound"))?;
    let mut probe = Probe::new(target.clone());
    let mut action = probe.on_event(Event::Connected);
    let mut buf = [0u8; PROBE_READ_BYTES];
    // Every step sends or reads at least one byte, and a response is bounded by
    // PROBE_RESPONSE_BYTES_MAX, so this bounds the exchange.
    for _ in 0..crate::probe::PROBE_RESPONSE_BYTES_MAX * 2 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out());
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(|e| e.to_string())?;
        stream
            .set_write_timeout(Some(left))
            .map_err(|e| e.to_string())?;
        action = match action {
            Action::Send(bytes) => match stream.write_all(&bytes) {
                Ok(()) => probe.on_event(Event::Sent),
                Err(e) => return Err(io_failure(&e, timed_out)),
            },
            Action::Recv => match stream.read(&mut buf) {
                Ok(0) => probe.on_event(Event::Eof),
                Ok(n) => probe.on_event(Event::Received(&buf[..n])),
                Err(e) => return Err(io_failure(&e, timed_out)),
            },
            Action::Finished(result) => {
                return result.map(|_| start.elapsed().as_millis() as u64);
            }
        };
    }
    Err(timed_out())
}

fn io_failure(e: &std::io::Error, timed_out: impl Fn() -> String) -> String {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => timed_out(),
        _ => format!("{e} while talking to the proxy"),
    }
}
