//! A daemon with several remote V2Ray servers and their configs, for the rotation tests of
//! direct mode (the core binds the user's port; front mode has tests/front_*.rs).

use std::time::Duration;

use serde_json::{json, Value};

use super::cores::{free_port, socks5_get, Core, HttpTarget, Proto, RemoteServer};
use super::{core_processes, text, wait_until, Root};

/// A rotation_events row: trigger, from, to, result, detail.
pub type Event = (String, Option<i64>, Option<i64>, String, String);

/// The daemon, its HTTP probe target, the remotes and their config ids.
pub struct Rig {
    pub root: Root,
    pub http: HttpTarget,
    pub servers: Vec<RemoteServer>,
    pub ids: Vec<i64>,
    pub socks_port: u16,
}

/// `count` remote SOCKS servers, their configs imported, and a daemon with `settings` running.
pub fn rig(count: usize, settings: &str) -> Rig {
    rig_with(count, settings, 800)
}

/// [`rig`] with another `health.timeout_ms`.
pub fn rig_with(count: usize, settings: &str, probe_timeout_ms: u64) -> Rig {
    let root = Root::new();
    let http = HttpTarget::start();
    let socks_port = free_port();
    root.write_settings(&format!(
        "[daemon]\nhealth_interval_secs = 1\n[runtime]\nmode = \"direct\"\n{}socks_port = {socks_port}\n[health]\nprobe_url = \"{}\"\ntimeout_ms = {probe_timeout_ms}\n{settings}",
        Core::V2ray.runtime_settings(),
        http.url("/probe"),
    ));
    let servers: Vec<RemoteServer> = (0..count)
        .map(|_| RemoteServer::start_on(Proto::Socks, Core::V2ray))
        .collect();
    let ids = servers.iter().map(|s| import(&root, &s.link())).collect();
    root.start();
    Rig {
        root,
        http,
        servers,
        ids,
        socks_port,
    }
}

fn import(root: &Root, link: &str) -> i64 {
    let out = root.run(&["config", "import", link, "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let view: Value = serde_json::from_slice(&out.stdout).unwrap();
    view["imported"][0]["id"].as_i64().unwrap()
}

impl Rig {
    pub fn call(&self, body: Value) -> Value {
        self.root.connect().call(json!(1), body)
    }

    pub fn connect(&self, id: i64) -> Value {
        let reply = self.call(json!({"type": "runtime_connect", "config_id": id}));
        assert_eq!(reply["code"], 200, "{reply}\n{}", self.root.log());
        reply["payload"].clone()
    }

    pub fn status(&self) -> Value {
        self.call(json!({"type": "runtime_status"}))["payload"].clone()
    }

    pub fn proxy(&self) -> Value {
        self.call(json!({"type": "proxy_status"}))["payload"].clone()
    }

    pub fn active(&self) -> Option<i64> {
        self.status()["active_config_id"].as_i64()
    }

    /// Exactly one core runs for the session: a rotation or rollback never leaves two, and
    /// the batch test core is gone.
    pub fn one_core(&self) {
        let ok = wait_until(Duration::from_secs(3), || {
            core_processes(&self.root).len() == 1
        });
        assert!(ok, "core processes: {:?}", core_processes(&self.root));
    }

    pub fn traffic_flows(&self) -> bool {
        socks5_get(self.socks_port, self.http.port(), "/page")
            .is_ok_and(|body| body == self.http.body())
    }

    pub fn events(&self) -> Vec<Event> {
        let db = rusqlite::Connection::open(self.root.path().join("xrat.db")).unwrap();
        let mut stmt = db
            .prepare("SELECT trigger, from_config_id, to_config_id, result, detail FROM rotation_events ORDER BY id")
            .unwrap();
        stmt.query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
    }
}
