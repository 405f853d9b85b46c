//! The Clash shapes, as pure functions of what the store and the daemon say: stored configs as
//! proxies with a `GLOBAL` selector, subscriptions as providers, events as log lines, relay
//! counters as per-second traffic. The field names are mihomo's (what dashboards read).

use std::collections::{HashMap, HashSet};

use serde_json::{json, Value};

use crate::store::{ConfigRow, TestPoint};

/// The selector group every Clash dashboard looks for; its members are the stored configs.
pub const GLOBAL: &str = "GLOBAL";
/// Names a config cannot take as a proxy name: Clash's built-in proxies and groups.
const RESERVED_NAMES: [&str; 5] = [GLOBAL, "DIRECT", "REJECT", "REJECT-DROP", "PASS"];
/// Delay history points per proxy (mihomo keeps 10).
pub const HISTORY_POINTS: usize = 10;
/// `updatedAt` of a provider never fetched: Go's zero time, as mihomo sends it.
const NEVER: &str = "0001-01-01T00:00:00Z";

/// One stored config as a Clash proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The config id.
    pub id: i64,
    /// Its proxy name, unique among the nodes (see [`unique_names`]).
    pub name: String,
    /// The link scheme (`vmess`, `ss`, `socks`, ...).
    pub scheme: String,
    /// The subscription it came from, if any (`provider-name`).
    pub provider: Option<String>,
    /// Its last stored test results, oldest first.
    pub history: Vec<TestPoint>,
}

/// The enabled stored configs as proxies, in id order.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// The proxies.
    pub nodes: Vec<Node>,
}

impl Catalog {
    /// Builds the catalog from the store's rows (disabled configs are left out: nothing can
    /// connect them), their test history and the subscription each config belongs to.
    pub fn build(
        rows: Vec<ConfigRow>,
        mut history: HashMap<i64, Vec<TestPoint>>,
        provider_of: &HashMap<i64, String>,
    ) -> Catalog {
        let rows: Vec<ConfigRow> = rows.into_iter().filter(|r| r.enabled).collect();
        let named: Vec<(i64, String)> = rows.iter().map(|r| (r.id, r.name.clone())).collect();
        let names = unique_names(&named);
        let nodes = rows
            .into_iter()
            .zip(names)
            .map(|(row, name)| Node {
                id: row.id,
                name,
                scheme: row.scheme,
                provider: provider_of.get(&row.id).cloned(),
                history: history.remove(&row.id).unwrap_or_default(),
            })
            .collect();
        Catalog { nodes }
    }

    /// The node called `name`.
    pub fn find(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The node of config `id`.
    pub fn by_id(&self, id: i64) -> Option<&Node> {
        self.nodes.iter().find(|n| n.id == id)
    }
}

/// Proxy names for `(id, name)` pairs, in order: a config keeps its own name unless another
/// config has the same one or it is a reserved Clash name; then it is `name [id]` (ids are
/// never reused, so these stay stable; a literal `x [3]` already taken gets `x [3] [3]`).
pub fn unique_names(configs: &[(i64, String)]) -> Vec<String> {
    let mut count: HashMap<&str, usize> = HashMap::new();
    for (_, name) in configs {
        *count.entry(name.as_str()).or_default() += 1;
    }
    let mut taken: HashSet<String> = configs
        .iter()
        .filter(|(_, n)| count[n.as_str()] == 1 && !RESERVED_NAMES.contains(&n.as_str()))
        .map(|(_, n)| n.clone())
        .collect();
    configs
        .iter()
        .map(|(id, name)| {
            if count[name.as_str()] == 1 && !RESERVED_NAMES.contains(&name.as_str()) {
                return name.clone();
            }
            let mut unique = format!("{name} [{id}]");
            while !taken.insert(unique.clone()) {
                unique = format!("{unique} [{id}]");
            }
            unique
        })
        .collect()
}

/// The Clash proxy type of a link scheme.
pub fn clash_type(scheme: &str) -> &'static str {
    match scheme {
        "vmess" => "Vmess",
        "vless" => "Vless",
        "trojan" => "Trojan",
        "ss" => "Shadowsocks",
        "socks" => "Socks5",
        "http" => "Http",
        "hysteria2" => "Hysteria2",
        "tuic" => "Tuic",
        "wireguard" => "WireGuard",
        "anytls" => "AnyTLS",
        _ => "Unknown",
    }
}

/// Whether the protocol carries UDP (plain HTTP proxies cannot).
pub fn carries_udp(scheme: &str) -> bool {
    scheme != "http"
}

/// Unix seconds as RFC 3339 in UTC (`2026-12-01T18:09:07Z`).
pub fn rfc3339(unix: u64) -> String {
    let (date, (h, m, s)) = crate::utc::fields(unix);
    format!("{date}T{h:02}:{m:02}:{s:02}Z")
}

/// `history`: `{time, delay}` points, a failed test as delay 0 (as mihomo records it).
fn history_json(points: &[TestPoint]) -> Value {
    let start = points.len().saturating_sub(HISTORY_POINTS);
    let list: Vec<Value> = points[start..]
        .iter()
        .map(|p| json!({"time": rfc3339(p.at), "delay": p.latency_ms.unwrap_or(0)}))
        .collect();
    Value::Array(list)
}

/// One proxy entry. `alive` is the last stored test's verdict (true before any test, as in
/// mihomo).
pub fn proxy_json(node: &Node) -> Value {
    let alive = node.history.last().is_none_or(|p| p.latency_ms.is_some());
    json!({
        "name": node.name,
        "type": clash_type(&node.scheme),
        "udp": carries_udp(&node.scheme),
        "xudp": false,
        "alive": alive,
        "history": history_json(&node.history),
        "extra": {},
        "id": node.id.to_string(),
        "provider-name": node.provider.clone().unwrap_or_default(),
        "dialer-proxy": "",
        "tfo": false,
        "mptcp": false,
        "smux": false,
        "uot": false,
        "interface": "",
        "routing-mark": 0,
    })
}

/// The `GLOBAL` selector: every node, `now` the active config's name ("" without a session).
pub fn global_json(catalog: &Catalog, active: Option<i64>) -> Value {
    let now = active
        .and_then(|id| catalog.by_id(id))
        .map(|n| n.name.clone())
        .unwrap_or_default();
    let all: Vec<&str> = catalog.nodes.iter().map(|n| n.name.as_str()).collect();
    json!({
        "name": GLOBAL,
        "type": "Selector",
        "now": now,
        "all": all,
        "udp": true,
        "xudp": false,
        "alive": true,
        "history": [],
        "extra": {},
        "hidden": false,
        "icon": "",
        "testUrl": "",
        "provider-name": "",
        "dialer-proxy": "",
    })
}

/// `GET /proxies`: every node and `GLOBAL`, keyed by name.
pub fn proxies_json(catalog: &Catalog, active: Option<i64>) -> Value {
    let mut map = serde_json::Map::new();
    for node in &catalog.nodes {
        map.insert(node.name.clone(), proxy_json(node));
    }
    map.insert(GLOBAL.into(), global_json(catalog, active));
    json!({ "proxies": map })
}

/// What a provider entry needs of a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderInfo {
    /// The subscription's name.
    pub name: String,
    /// Its last successful fetch, unix seconds.
    pub updated_at: Option<u64>,
    /// Its `subscription-userinfo` numbers.
    pub upload: Option<u64>,
    /// See `upload`.
    pub download: Option<u64>,
    /// See `upload`.
    pub total: Option<u64>,
    /// See `upload`.
    pub expire: Option<u64>,
}

/// One subscription as a Clash proxy provider, with its enabled configs as proxies.
pub fn provider_json(info: &ProviderInfo, catalog: &Catalog, test_url: &str) -> Value {
    let proxies: Vec<Value> = catalog
        .nodes
        .iter()
        .filter(|n| n.provider.as_deref() == Some(info.name.as_str()))
        .map(proxy_json)
        .collect();
    let mut provider = json!({
        "name": info.name,
        "type": "Proxy",
        "vehicleType": "HTTP",
        "proxies": proxies,
        "testUrl": test_url,
        "expectedStatus": "*",
        "updatedAt": info.updated_at.map_or(NEVER.to_owned(), rfc3339),
    });
    if info.upload.is_some() || info.download.is_some() || info.total.is_some() {
        provider["subscriptionInfo"] = json!({
            "Upload": info.upload.unwrap_or(0),
            "Download": info.download.unwrap_or(0),
            "Total": info.total.unwrap_or(0),
            "Expire": info.expire.unwrap_or(0),
        });
    }
    provider
}
