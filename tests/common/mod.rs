//! Shared helpers: a temporary XRAT root, the real `xrat` binary, and a line client.
#![allow(dead_code)] // each test crate uses a different subset

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary under test.
pub fn xrat_bin() -> &'static str {
    env!("CARGO_BIN_EXE_xrat")
}

/// A temporary XRAT root; stops any daemon it started when dropped.
pub struct Root {
    pub dir: tempfile::TempDir,
    /// The SOCKS port settings get when they name none (see [`Root::own_socks_port`]).
    socks_port: u16,
}

impl Root {
    pub fn new() -> Root {
        Root {
            dir: tempfile::Builder::new()
                .prefix("xrat")
                .tempdir_in("/tmp")
                .unwrap(),
            socks_port: cores::free_port(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn socket(&self) -> PathBuf {
        self.path().join("runtime/daemon.sock")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path().join("logs/daemon.log")).unwrap_or_default()
    }

    /// A daemon in front mode (the default) binds `runtime.socks_port` at start, so tests
    /// running side by side must not all take the default 1080: settings that parse and name
    /// no SOCKS port get a free one (broken settings are left as the test wrote them).
    fn own_socks_port(&self) {
        let path = self.path().join("config.toml");
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let Ok(mut table) = text.parse::<toml::Table>() else {
            return;
        };
        let runtime = table
            .entry("runtime")
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let Some(runtime) = runtime.as_table_mut() else {
            return;
        };
        if runtime.contains_key("socks_port") {
            return;
        }
        let port = i64::from(self.socks_port);
        runtime.insert("socks_port".into(), toml::Value::Integer(port));
        std::fs::write(&path, toml::to_string(&table).unwrap()).unwrap();
    }

    pub fn write_settings(&self, text: &str) {
        std::fs::write(self.path().join("config.toml"), text).unwrap();
        self.own_socks_port();
    }

    pub fn command(&self, args: &[&str]) -> Command {
        if matches!(args, ["daemon", "start" | "run-server" | "restart", ..]) {
            self.own_socks_port();
        }
        let mut command = Command::new(xrat_bin());
        command
            .args(args)
            .env("XRAT_ROOT", self.path())
            .env_remove("NOTIFY_SOCKET");
        command
    }

    /// Runs `xrat ARGS` to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// `xrat daemon start`, asserting success; returns the daemon's pid.
    pub fn start(&self) -> u32 {
        let out = self.run(&["daemon", "start", "--json"]);
        assert!(
            out.status.success(),
            "start failed: {}\nlog:\n{}",
            text(&out.stderr),
            self.log()
        );
        let view: Value = serde_json::from_slice(&out.stdout).unwrap();
        view["pid"].as_u64().unwrap() as u32
    }

    pub fn connect(&self) -> Conn {
        Conn::new(UnixStream::connect(self.socket()).unwrap())
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        if self.socket().exists() {
            let _ = self.run(&["daemon", "stop"]);
        }
    }
}

/// A protocol client that sends raw lines and reads JSON replies.
pub struct Conn {
    pub reader: BufReader<UnixStream>,
}

impl Conn {
    pub fn new(stream: UnixStream) -> Conn {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Conn {
            reader: BufReader::new(stream),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).unwrap();
    }

    /// The next reply line as JSON; panics on EOF.
    pub fn recv(&mut self) -> Value {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).unwrap();
        assert!(n > 0, "connection closed while waiting for a reply");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad reply {line:?}: {e}"))
    }

    /// True when the daemon closed the connection (EOF).
    pub fn at_eof(&mut self) -> bool {
        let mut line = String::new();
        matches!(self.reader.read_line(&mut line), Ok(0))
    }

    /// Sends one request of `type` with `id` and returns the reply.
    pub fn call(&mut self, id: Value, body: Value) -> Value {
        let line = serde_json::json!({"protocol_version": 1, "id": id, "request": body});
        self.send(format!("{line}\n").as_bytes());
        self.recv()
    }
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The state letter of a `/proc/.../stat` file (`R`, `S`, `T`, `Z`, ...).
fn state(stat: &str) -> Option<char> {
    std::fs::read_to_string(stat).ok().and_then(|s| {
        s.rsplit_once(')')
            .and_then(|(_, r)| r.trim_start().chars().next())
    })
}

/// True while the pid exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    state(&format!("/proc/{pid}/stat")).is_some_and(|state| state != 'Z' && state != 'X')
}

/// True once every thread of `pid` is stopped (`T`): `kill(SIGSTOP)` returns before that,
/// and a thread still running may yet accept, read or answer.
pub fn stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    let states: Vec<Option<char>> = tasks
        .flatten()
        .map(|task| state(&format!("{}/stat", task.path().display())))
        .collect();
    !states.is_empty() && states.iter().all(|s| *s == Some('T'))
}

/// Polls `cond` every 10 ms for at most `limit`.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

pub mod activation;
pub mod api;
pub mod ca;
pub mod cores;
pub mod daemon;
pub mod front;
pub mod rig;
pub mod seccomp;
pub mod subserver;

/// Live core processes started for `root`, session and batch-test cores alike (their command
/// line names a config in its runtime directory).
pub fn core_processes(root: &Root) -> Vec<u32> {
    let marker = format!("{}/", root.path().join("runtime").display());
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&marker))
                && alive(*pid)
        })
        .collect()
}
