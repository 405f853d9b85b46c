//! Socket activation of the front port (issue 9): systemd (played by the test) holds the user's
//! SOCKS port and the daemon socket, and hands both to `xrat daemon run-server`. The daemon
//! relays on the passed front listener instead of binding its own, and because the listener
//! outlives a daemon that dies, a client that connects while no daemon runs waits in the
//! kernel's backlog and is served by the next daemon, which adopts the running pool core.
//! Without activation the same port refuses in that gap (`front_switch`'s restart test).
//! Real cores on loopback: sing-box as the pool core, V2Ray remotes.

mod common;

use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixListener;
use std::time::Duration;

use common::activation::{activated, exited, stop, DAEMON_LIMIT};
use common::cores::{socks5_get, Core};
use common::front::{front_unstarted, Opts};
use common::{alive, core_processes, wait_until};

/// How long the client waits in the backlog with no daemon at all, before the next one starts.
const GAP: Duration = Duration::from_millis(300);

/// Until the daemon answers a ping on its socket (at most [`DAEMON_LIMIT`]).
fn wait_ready(root: &common::Root) {
    let ready = wait_until(DAEMON_LIMIT, || {
        root.run(&["daemon", "status", "--json"]).status.success()
    });
    assert!(ready, "the activated daemon never answered\n{}", root.log());
}

#[test]
fn a_front_client_queued_while_no_daemon_runs_is_served_by_the_next_one() {
    let mut f = front_unstarted(Opts::new(Core::SingBox, 2));
    // As systemd's DirectoryMode=0700 makes it (the config imports may have made it already).
    std::fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(f.root.path().join("runtime"))
        .unwrap();
    let ipc = UnixListener::bind(f.root.socket()).unwrap();
    let front = TcpListener::bind(("127.0.0.1", f.socks_port)).unwrap();
    let fds = [ipc.as_raw_fd(), front.as_raw_fd()];
    let names = "xrat-daemon.socket:xrat-daemon.socket";

    let mut first = activated(&f.root, &fds, "2", names);
    f.daemon_pid = first.id();
    wait_ready(&f.root);
    let connected = f.connect(f.ids[0]);
    f.wait_alive(2);
    assert!(f.get().is_ok(), "traffic through the passed front port");
    let cores = core_processes(&f.root);

    // The daemon dies the hard way; the pool core lives on (its own process group).
    // SAFETY: signalling our own child.
    unsafe { libc::kill(first.id() as i32, libc::SIGKILL) };
    assert!(!exited(&mut first, DAEMON_LIMIT).success());
    assert!(!alive(first.id()));

    // A client connects now: the listener is still open (ours), so the kernel queues it.
    let (socks_port, target) = (f.socks_port, f.http.port());
    let client = std::thread::spawn(move || socks5_get(socks_port, target, "/queued"));
    std::thread::sleep(GAP);
    assert!(
        !client.is_finished(),
        "the queued client was answered with no daemon running"
    );

    let second = activated(&f.root, &fds, "2", names);
    let body = client.join().unwrap();
    assert!(
        body.is_ok(),
        "the queued client was not served by the next daemon: {body:?}\n{}",
        f.root.log()
    );
    wait_ready(&f.root);
    let status = f.status();
    assert_eq!(status["session_id"], connected["session_id"], "{status}");
    assert_eq!(
        core_processes(&f.root),
        cores,
        "the pool core was adopted, not restarted"
    );
    assert!(f.get().is_ok());

    let (exit, stderr) = stop(second);
    assert!(exit.success(), "{exit}: {stderr}");
    let expected = format!(
        "listening on 127.0.0.1:{} through the socket systemd passed",
        f.socks_port
    );
    assert!(stderr.contains(&expected), "{expected:?} not in:\n{stderr}");
    drop(ipc);
    std::fs::remove_file(f.root.socket()).ok();
}
