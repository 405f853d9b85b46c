//! Access by peer credentials (issue 13 item 2), with the real daemon on both backends. The test
//! runs as root (as CI does): it makes a group and an owner account for the daemon (removed at
//! the end, also on failure), runs the daemon as that owner with `daemon.socket_group`, and the
//! real `xrat` CLI through `setpriv` as a member of the group, as a user outside it, as the owner
//! and as root. A raw protocol client connects from a thread that took another uid (Linux
//! credentials are per thread under the raw syscalls), to see several refusals on one
//! connection cost one log line.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::{text, Root};
use serde_json::Value;

/// The "nogroup" gid Debian and most systems have; only used as a primary gid with no rights.
const NOGROUP: u32 = 65534;
/// Serializes account changes between this file's tests.
static ACCOUNTS_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
/// Read timeout of the raw client.
const RAW_READ_TIMEOUT: Duration = Duration::from_secs(10);

fn fail_unless_root() {
    // SAFETY: geteuid touches no memory.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "tests/peercred.rs makes a group and a user and runs commands as other uids, so it needs root (CI runs as root): run it as root, e.g. `sudo -E env PATH=$PATH cargo test --test peercred`"
    );
    for tool in ["groupadd", "useradd", "userdel", "groupdel", "setpriv"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "`{tool}` is missing; install it with `apt-get install passwd util-linux`"
        );
    }
}

fn run(program: &str, args: &[&str]) -> Output {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        text(&out.stderr)
    );
    out
}

/// A group and the daemon's owner account (a member of the group by its primary gid),
/// removed when dropped.
struct Accounts {
    group: String,
    gid: u32,
    owner: String,
    owner_uid: u32,
}

impl Accounts {
    fn create(tag: &str) -> Accounts {
        // groupadd and useradd lock /etc/group and /etc/passwd and give up when another holds
        // the lock: the tests of this file take turns.
        let _turn = ACCOUNTS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let stem = format!("xp{}{tag}", std::process::id());
        let (group, owner) = (format!("{stem}g"), format!("{stem}o"));
        run("groupadd", &[&group]);
        // From here on Drop removes what exists; a failed useradd leaves only the group.
        let mut accounts = Accounts {
            gid: 0,
            owner_uid: 0,
            group,
            owner,
        };
        let id = |args: &[&str]| -> u32 { text(&run("id", args).stdout).trim().parse().unwrap() };
        run(
            "useradd",
            &[
                "--no-create-home",
                "--no-user-group",
                "--gid",
                &accounts.group,
                "--shell",
                "/usr/sbin/nologin",
                &accounts.owner,
            ],
        );
        accounts.owner_uid = id(&["-u", &accounts.owner]);
        accounts.gid = id(&["-g", &accounts.owner]);
        accounts
    }
}

impl Drop for Accounts {
    fn drop(&mut self) {
        let _turn = ACCOUNTS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let _ = Command::new("userdel").arg(&self.owner).output();
        let _ = Command::new("groupdel").arg(&self.group).output();
    }
}

/// `xrat ARGS` as another identity: `setpriv CREDS xrat ARGS` with the root's environment.
fn xrat_as(root: &Root, creds: &[String], backend: &str, args: &[&str]) -> Output {
    Command::new("setpriv")
        .args(creds)
        .arg(common::xrat_bin())
        .args(args)
        .env("XRAT_ROOT", root.path())
        .env("XRAT_BACKEND", backend)
        .env_remove("NOTIFY_SOCKET")
        .output()
        .unwrap()
}

fn creds(uid: u32, gid: u32, groups: Option<u32>) -> Vec<String> {
    let groups = match groups {
        Some(g) => format!("--groups={g}"),
        None => "--clear-groups".to_string(),
    };
    vec![format!("--reuid={uid}"), format!("--regid={gid}"), groups]
}

/// Connects to `socket` from a thread that has taken `uid`, primary `gid` and the
/// supplementary `groups`; the kernel records those credentials for `SO_PEERCRED`.
fn connect_as(socket: &Path, uid: u32, gid: u32, groups: &[u32]) -> std::io::Result<UnixStream> {
    let (socket, groups) = (socket.to_path_buf(), groups.to_vec());
    std::thread::spawn(move || {
        // Raw syscalls: glibc's wrappers would change every thread of the test process.
        // SAFETY: plain credential syscalls on this thread, with a valid group array.
        unsafe {
            let groups: Vec<libc::gid_t> = groups.clone();
            assert_eq!(
                libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()),
                0
            );
            assert_eq!(libc::syscall(libc::SYS_setresgid, gid, gid, gid), 0);
            assert_eq!(libc::syscall(libc::SYS_setresuid, uid, uid, uid), 0);
        }
        UnixStream::connect(&socket)
    })
    .join()
    .unwrap()
}

fn request_line(request: &str) -> Vec<u8> {
    format!("{{\"protocol_version\":1,\"id\":7,\"request\":{request}}}\n").into_bytes()
}

fn mode_and_gid(path: &Path) -> (u32, u32) {
    let meta = std::fs::metadata(path).unwrap();
    (meta.mode() & 0o777, meta.gid())
}

/// The whole scenario on one backend.
fn scenario(backend: &str, tag: &str) {
    fail_unless_root();
    let accounts = Accounts::create(tag);
    // Declared after the accounts: dropped (the daemon stopped) before they are removed.
    let root = Root::new();
    root.write_settings(&format!(
        "[daemon]\nsocket_group = \"{}\"\n",
        accounts.group
    ));
    // The root is the owner's; the group may pass through it, as docs/SETTINGS.md says.
    std::os::unix::fs::chown(root.path(), Some(accounts.owner_uid), Some(accounts.gid)).unwrap();
    std::fs::set_permissions(
        root.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o710),
    )
    .unwrap();
    let (owner, gid) = (accounts.owner_uid, accounts.gid);
    // Unused uids far above any real account: setpriv needs no passwd entry.
    let member = 2_000_000_000 + std::process::id() % 100_000 * 4;
    let outsider = member + 1;
    let as_owner = creds(owner, gid, None);
    let as_member = creds(member, NOGROUP, Some(gid));
    let as_outsider = creds(outsider, NOGROUP, None);

    let out = xrat_as(&root, &as_owner, backend, &["daemon", "start", "--json"]);
    assert!(
        out.status.success(),
        "start: {}\n{}",
        text(&out.stderr),
        root.log()
    );
    let ping: Value = serde_json::from_slice(
        &xrat_as(&root, &as_owner, backend, &["daemon", "status", "--json"]).stdout,
    )
    .unwrap();
    assert_eq!(ping["backend"], backend, "{ping}");

    // The socket and runtime/ belong to the group, with the modes of docs/SETTINGS.md.
    assert_eq!(mode_and_gid(&root.socket()), (0o660, gid), "socket");
    assert_eq!(
        mode_and_gid(&root.path().join("runtime")),
        (0o710, gid),
        "runtime/"
    );
    assert_eq!(std::fs::metadata(root.socket()).unwrap().uid(), owner);
    assert!(
        !root.log().contains("cannot reach the socket"),
        "the root is 0710 with the group: no warning expected\n{}",
        root.log()
    );

    // A member reads.
    let out = xrat_as(&root, &as_member, backend, &["status", "--json"]);
    assert!(out.status.success(), "member status: {}", text(&out.stderr));
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["runtime_status"], "idle", "{status}");
    for args in [
        &["proxy", "status", "--json"][..],
        &["daemon", "status", "--json"],
    ] {
        let out = xrat_as(&root, &as_member, backend, args);
        assert!(
            out.status.success(),
            "member {args:?}: {}",
            text(&out.stderr)
        );
    }
    // ... and is refused every change, with the group and the fix named, exit code 1.
    for args in [
        &["connect", "1"][..],
        &["disconnect"],
        &["proxy", "stop"],
        &["daemon", "reload"],
        &["daemon", "stop"],
    ] {
        let out = xrat_as(&root, &as_member, backend, args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "member {args:?}: {stderr}");
        for expected in [
            "403".to_string(),
            format!("socket group `{}` is read-only", accounts.group),
            format!("run the command as user `{}` or root", accounts.owner),
        ] {
            assert!(
                stderr.contains(&expected),
                "member {args:?}: {expected:?} not in {stderr}"
            );
        }
    }

    // Someone outside the group cannot even connect: the socket's mode says no.
    let out = xrat_as(&root, &as_outsider, backend, &["status"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "outsider: {stderr}");
    assert!(
        stderr.contains("permission denied connecting to"),
        "{stderr}"
    );
    let raw = connect_as(&root.socket(), outsider, NOGROUP, &[]);
    assert_eq!(
        raw.unwrap_err().kind(),
        std::io::ErrorKind::PermissionDenied
    );

    // Several refusals on one connection: each answered 403, one log line. The first line is
    // read-only, so the credentials are read only at the second (they are read lazily).
    let stream = connect_as(&root.socket(), member, NOGROUP, &[gid]).unwrap();
    stream.set_read_timeout(Some(RAW_READ_TIMEOUT)).unwrap();
    let mut reader = BufReader::new(stream);
    for request in [
        r#"{"type":"daemon_ping"}"#,
        r#"{"type":"proxy_start"}"#,
        r#"{"type":"runtime_disconnect"}"#,
        r#"{"type":"daemon_ping"}"#,
        r#"{"type":"daemon_shutdown"}"#,
    ] {
        reader.get_mut().write_all(&request_line(request)).unwrap();
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let reply: Value = serde_json::from_str(&line).unwrap();
        let expected = if request.contains("daemon_ping") {
            200
        } else {
            403
        };
        assert_eq!(reply["code"], expected, "{request}: {reply}");
        if expected == 403 {
            assert_eq!(reply["payload"]["error"], "forbidden", "{reply}");
            assert_eq!(reply["id"], 7, "{reply}");
        }
    }
    drop(reader);

    // A member may follow the event stream: the snapshot, then events as they come.
    let stream = connect_as(&root.socket(), member, NOGROUP, &[gid]).unwrap();
    stream.set_read_timeout(Some(RAW_READ_TIMEOUT)).unwrap();
    let mut reader = BufReader::new(stream);
    reader
        .get_mut()
        .write_all(&request_line(r#"{"type":"subscribe","events":[]}"#))
        .unwrap();
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let reply: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(reply["code"], 200, "member subscribe: {reply}");
    assert_eq!(
        reply["payload"]["runtime_status"]["runtime_status"], "idle",
        "{reply}"
    );
    drop(reader);

    // The owner and root may do everything: a change passes the gate (404: no such config).
    let out = xrat_as(&root, &as_owner, backend, &["connect", "999999"]);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("404") && !stderr.contains("403"),
        "owner: {stderr}"
    );
    for who in [&as_owner, &creds(0, 0, None)] {
        for args in [&["proxy", "stop"][..], &["proxy", "start"]] {
            let out = xrat_as(&root, who, backend, args);
            assert!(
                out.status.success(),
                "{who:?} {args:?}: {}",
                text(&out.stderr)
            );
        }
    }

    let log = root.log();
    let refusals = log
        .matches(&format!("from read-only uid {member} (403)"))
        .count();
    // One line for each of the five CLI connections refused, one for the raw connection's three.
    assert_eq!(refusals, 6, "{log}");
    assert!(
        log.contains(&format!(
            "refused `proxy_start` from read-only uid {member}"
        )),
        "{log}"
    );

    let out = xrat_as(&root, &as_owner, backend, &["daemon", "stop"]);
    assert!(out.status.success(), "stop: {}", text(&out.stderr));
}

#[test]
fn group_members_read_others_are_kept_out_on_epoll() {
    scenario("epoll", "e");
}

#[test]
fn group_members_read_others_are_kept_out_on_io_uring() {
    scenario("io_uring", "u");
}

/// A root the group cannot pass through gets one warning at start naming it and the fix; and
/// without `daemon.socket_group` the socket and `runtime/` are private again.
#[test]
fn an_unreachable_root_is_reported_and_no_group_means_private() {
    fail_unless_root();
    let accounts = Accounts::create("w");
    let root = Root::new();
    root.write_settings(&format!(
        "[daemon]\nsocket_group = \"{}\"\n",
        accounts.group
    ));
    // A private root, as xrat creates ~/.config/xrat (the test's umask may leave it wider).
    std::fs::set_permissions(
        root.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    root.start();
    let log = root.log();
    let expected = format!(
        "members of socket group `{}` cannot reach the socket: they may not pass through {}",
        accounts.group,
        root.path().display()
    );
    assert!(log.contains(&expected), "{expected:?} not in\n{log}");
    assert!(log.contains("chmod g+x"), "{log}");
    let out = root.run(&["daemon", "stop"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    root.write_settings("");
    root.start();
    assert_eq!(mode_and_gid(&root.socket()).0, 0o600, "socket");
    assert_eq!(
        mode_and_gid(&root.path().join("runtime")).0,
        0o700,
        "runtime/"
    );
    let out = root.run(&["daemon", "stop"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// An unknown group is a settings error naming the key, the value, the file and the fix.
#[test]
fn an_unknown_group_stops_the_start() {
    let root = Root::new();
    root.write_settings("[daemon]\nsocket_group = \"no-such-group-xrat-test\"\n");
    let out = root.run(&["daemon", "start"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for expected in [
        "`daemon.socket_group` = \"no-such-group-xrat-test\"",
        "config.toml",
        "groupadd",
    ] {
        assert!(stderr.contains(expected), "{expected:?} not in {stderr}");
    }
}
