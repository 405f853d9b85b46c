//! A daemon for end-to-end session tests: a fresh root, a core, a SOCKS port, and the calls
//! the tests make (`--json` CLI commands, a fetch through the session).

use serde_json::Value;

use super::cores::{free_port, socks5_get, HttpTarget};
use super::{alive, text, Root};

/// Path of the health probe URL on the HTTP target.
pub const HEALTH: &str = "/health";

/// A daemon in a fresh root with the given `[runtime]` core lines, on a free SOCKS port, its
/// health probe pointed at the local target.
pub struct Daemon {
    pub root: Root,
    pub socks_port: u16,
}

impl Daemon {
    pub fn start(runtime: &str, target: &HttpTarget) -> Daemon {
        Daemon::start_in(Root::new(), runtime, target)
    }

    /// [`Daemon::start`] in a root the caller prepared (a tmpfs mounted on it, say).
    pub fn start_in(root: Root, runtime: &str, target: &HttpTarget) -> Daemon {
        let socks_port = free_port();
        root.write_settings(&format!(
            "[runtime]\n{runtime}socks_port = {socks_port}\nhttp_port = 0\n\
             ready_timeout_ms = 5000\n\n[health]\nprobe_url = \"{}\"\n",
            target.url(HEALTH),
        ));
        root.start();
        Daemon { root, socks_port }
    }

    /// `xrat ARGS --json`, asserting success; the parsed output.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.push("--json");
        let out = self.root.run(&args);
        assert!(
            out.status.success(),
            "xrat {args:?} failed ({}): {}{}\n{}",
            out.status,
            text(&out.stdout),
            text(&out.stderr),
            self.logs()
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("xrat {args:?}: bad JSON ({e}): {}", text(&out.stdout)))
    }

    pub fn import(&self, link: &str) -> i64 {
        let view = self.json(&["config", "import", link]);
        let imported = view["imported"].as_array().unwrap();
        assert_eq!(imported.len(), 1, "import of {link}: {view}");
        imported[0]["id"].as_i64().unwrap()
    }

    /// Connects `config_id`; the new session's id and core pid.
    pub fn connect(&self, config_id: i64) -> (u64, u32) {
        let reply = self.json(&["connect", &config_id.to_string()]);
        assert_eq!(reply["config_id"], config_id, "{reply}");
        let session = reply["session_id"].as_u64().unwrap();
        let pid = reply["pid"].as_u64().unwrap() as u32;
        assert!(alive(pid), "core pid {pid} not running right after connect");
        (session, pid)
    }

    pub fn status(&self) -> Value {
        self.json(&["status"])
    }

    pub fn fetch(&self, target: &HttpTarget, what: &str) -> String {
        socks5_get(self.socks_port, target.port(), "/e2e").unwrap_or_else(|e| {
            panic!(
                "fetch through the session for {what} failed: {e}\n{}",
                self.logs()
            )
        })
    }

    /// The daemon log and the core logs, for failure messages.
    pub fn logs(&self) -> String {
        let mut all = format!("daemon log:\n{}", self.root.log());
        if let Ok(dir) = std::fs::read_dir(self.root.path().join("logs")) {
            for entry in dir.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name != "daemon.log" {
                    let body = std::fs::read_to_string(entry.path()).unwrap_or_default();
                    all.push_str(&format!("\n{name}:\n{body}"));
                }
            }
        }
        all
    }
}
