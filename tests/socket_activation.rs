//! Socket activation against the real binary: the test plays systemd. It binds the daemon
//! socket itself, starts `xrat daemon run-server` with that listener at fd 3 and `LISTEN_FDS`,
//! `LISTEN_FDNAMES` and `LISTEN_PID` (the daemon's own pid, through `sh -c 'LISTEN_PID=$$ exec
//! …'`), and keeps its own copy open, as systemd does, across a daemon killed with SIGKILL.

mod common;

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::Command;
use std::time::Duration;

use common::activation::{activated, exited, stop, DAEMON_LIMIT};
use common::{alive, stopped, wait_until, Conn, Root};

const PING: &[u8] = b"{\"protocol_version\":1,\"id\":1,\"request\":{\"type\":\"daemon_ping\"}}\n";

/// A root whose `runtime/` exists (as systemd's `DirectoryMode=0700` makes it), and a listener
/// bound at its daemon socket path.
fn root_with_listener() -> (Root, UnixListener) {
    let root = Root::new();
    // A SOCKS port of its own: the front binds it, and tests run side by side.
    root.write_settings("");
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(root.path().join("runtime"))
        .unwrap();
    let listener = UnixListener::bind(root.socket()).unwrap();
    // systemd's default SocketMode=, which the daemon must narrow.
    std::fs::set_permissions(root.socket(), std::fs::Permissions::from_mode(0o666)).unwrap();
    (root, listener)
}

/// A client that connected (into the listener's backlog) and wrote a ping.
fn queued_ping(root: &Root) -> Conn {
    let mut stream = UnixStream::connect(root.socket()).expect("the backlog takes the client");
    stream.write_all(PING).unwrap();
    Conn::new(stream)
}

fn answered_by(conn: &mut Conn, pid: u32) {
    let reply = conn.recv();
    assert_eq!(reply["code"], 200, "{reply}");
    assert_eq!(reply["payload"]["pid"], pid, "{reply}");
}

/// Descriptor targets of `pid` that are sockets, as their inode numbers.
fn socket_inodes(pid: u32) -> Vec<u64> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_str()?.to_string();
            target
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

fn inode(fd: &impl AsRawFd) -> u64 {
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    std::fs::metadata(path).unwrap().ino()
}

#[test]
fn a_client_that_connected_before_the_daemon_started_is_answered() {
    let (root, listener) = root_with_listener();
    // A front port the socket unit lists but config.toml does not.
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let tcp_addr = tcp.local_addr().unwrap();
    let mut early = queued_ping(&root);
    let fds = [listener.as_raw_fd(), tcp.as_raw_fd()];
    let daemon = activated(&root, &fds, "2", "xrat-daemon.socket:front");
    answered_by(&mut early, daemon.id());

    // The daemon serves on the passed socket and holds it to the 0600 rule.
    let mode = std::fs::metadata(root.socket())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let held = socket_inodes(daemon.id());
    assert!(held.contains(&inode(&listener)), "{held:?}");
    // The unclaimed TCP listener was closed in the daemon (the test's copy keeps it alive).
    assert!(!held.contains(&inode(&tcp)), "{held:?}");

    let (status, stderr) = stop(daemon);
    assert!(status.success(), "{status}: {stderr}");
    let socket = root.socket().display().to_string();
    for expected in [
        format!("serving {socket} through the socket systemd passed"),
        format!(
            "closing inherited fd 4 (front, tcp {tcp_addr}): nothing in config.toml listens there"
        ),
        "made it 0600 (set SocketMode=0600 in its .socket unit)".to_string(),
    ] {
        assert!(stderr.contains(&expected), "{expected:?} not in:\n{stderr}");
    }
    // systemd owns the file: a clean exit leaves it, still served by the listener.
    assert!(root.socket().exists(), "an inherited socket is not removed");
    drop(listener);
    std::fs::remove_file(root.socket()).unwrap();
}

#[test]
fn a_client_queued_while_the_daemon_is_killed_is_answered_by_the_next_one() {
    let (root, listener) = root_with_listener();
    let fds = [listener.as_raw_fd()];
    let mut first = activated(&root, &fds, "1", "xrat-daemon.socket");
    answered_by(&mut queued_ping(&root), first.id());

    // Stopped, the daemon cannot accept: the next client stays in the kernel's backlog. Then
    // it dies the hard way, as in a crash.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(first.id() as i32, libc::SIGSTOP) };
    assert!(
        wait_until(DAEMON_LIMIT, || stopped(first.id())),
        "the daemon did not stop on SIGSTOP"
    );
    let mut queued = queued_ping(&root);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(first.id() as i32, libc::SIGKILL) };
    assert!(!exited(&mut first, DAEMON_LIMIT).success());
    assert!(!alive(first.id()));

    // No daemon runs, and still a new client is queued, not refused.
    let mut meanwhile = queued_ping(&root);
    queued
        .reader
        .get_ref()
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut byte = [0u8; 1];
    let pending = queued.reader.get_mut().read(&mut byte);
    assert!(
        pending
            .as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock),
        "the queued client must be neither answered nor closed yet: {pending:?}"
    );
    queued
        .reader
        .get_ref()
        .set_read_timeout(Some(DAEMON_LIMIT))
        .unwrap();

    let second = activated(&root, &fds, "1", "xrat-daemon.socket");
    answered_by(&mut queued, second.id());
    answered_by(&mut meanwhile, second.id());
    let (status, stderr) = stop(second);
    assert!(status.success(), "{status}: {stderr}");
    drop(listener);
    std::fs::remove_file(root.socket()).unwrap();
}

/// Runs the daemon with `listen_fds` announced over `fds`; its exit status and stderr.
fn refused(root: &Root, fds: &[RawFd], listen_fds: &str, names: &str) -> String {
    let mut child = activated(root, fds, listen_fds, names);
    let status = exited(&mut child, DAEMON_LIMIT);
    let mut stderr = String::new();
    let pipe = child.stderr.as_mut().unwrap();
    pipe.read_to_string(&mut stderr).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(!root.socket().exists(), "nothing is served: {stderr}");
    stderr
}

#[test]
fn malformed_variables_and_descriptors_are_clear_errors() {
    let root = Root::new();
    let err = refused(&root, &[], "two", "xrat-daemon.socket");
    assert_eq!(
        err,
        "error: LISTEN_FDS=\"two\" is not a descriptor count of at most 64; it is systemd's socket activation variable: let xrat-daemon.socket set it, or unset it when starting xrat by hand\n"
    );
    let err = refused(&root, &[], "1", "a:b");
    assert!(
        err.starts_with("error: LISTEN_FDNAMES=\"a:b\" names 2 descriptor(s) but LISTEN_FDS=1;"),
        "{err}"
    );
    // A pipe where a listening socket should be (ListenFIFO=, say).
    let (read, write) = pipe();
    let err = refused(&root, &[read.as_raw_fd()], "1", "xrat-daemon.socket");
    assert!(
        err.starts_with("error: inherited fd 3 (xrat-daemon.socket) is not a socket")
            && err.contains("xrat-daemon.socket may only hold ListenStream= lines"),
        "{err}"
    );
    drop((read, write));
    // A connected stream socket (what Accept=yes passes) is not a listener either.
    let (one, _other) = UnixStream::pair().unwrap();
    let err = refused(&root, &[one.as_raw_fd()], "1", "conn");
    assert!(
        err.contains("inherited fd 3 (conn) is a stream socket that is not listening (Accept=yes"),
        "{err}"
    );
}

fn pipe() -> (std::fs::File, std::fs::File) {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two descriptors into the array; both are owned right after.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    use std::os::fd::FromRawFd;
    // SAFETY: fresh descriptors owned by nobody else.
    unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    }
}

/// With `daemon.socket_group` a passed socket gets the group's modes, whatever the unit said
/// (issue 13): 0660 with the group, `runtime/` 0710, and a log line naming the unit's fix. The
/// group is this process's own, so no account is needed.
#[test]
fn a_passed_socket_follows_the_socket_group() {
    let (root, listener) = root_with_listener();
    let out = Command::new("id").arg("-gn").output().unwrap();
    assert!(
        out.status.success(),
        "id -gn: {}",
        common::text(&out.stderr)
    );
    let group = common::text(&out.stdout).trim().to_string();
    root.write_settings(&format!("[daemon]\nsocket_group = \"{group}\"\n"));
    let mut early = queued_ping(&root);
    let daemon = activated(&root, &[listener.as_raw_fd()], "1", "xrat-daemon.socket");
    answered_by(&mut early, daemon.id());

    // SAFETY: getegid touches no memory.
    let gid = unsafe { libc::getegid() };
    let meta = std::fs::metadata(root.socket()).unwrap();
    assert_eq!((meta.mode() & 0o777, meta.gid()), (0o660, gid), "socket");
    let meta = std::fs::metadata(root.path().join("runtime")).unwrap();
    assert_eq!((meta.mode() & 0o777, meta.gid()), (0o710, gid), "runtime/");

    let (status, stderr) = stop(daemon);
    assert!(status.success(), "{status}: {stderr}");
    let expected =
        format!("made it 0660 (set SocketMode=0660 and SocketGroup={group} in its .socket unit)");
    assert!(stderr.contains(&expected), "{expected:?} not in:\n{stderr}");
    drop(listener);
    std::fs::remove_file(root.socket()).unwrap();
}
