//! `<root>/config.toml` (DESIGN §6). Every key is optional; unknown keys and bad values are errors
//! that name the key, the value and the file.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Settings failures.
#[derive(Debug, Error)]
pub enum SettingsError {
    /// The file exists but could not be read.
    #[error("cannot read settings file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or has an unknown key or a bad value.
    #[error("invalid settings in {}: {message}fix the key above or remove it to use its default", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's report, which quotes the line, the key and the value.
        message: String,
    },
    /// A value parsed but is out of range.
    #[error("invalid settings in {}: `{key}` = {value}: {reason}", path.display())]
    Value {
        /// The file.
        path: PathBuf,
        /// Dotted key, e.g. `daemon.health_interval_secs`.
        key: &'static str,
        /// The value as written.
        value: String,
        /// What is wrong and what is allowed.
        reason: &'static str,
    },
}

/// All settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// `[daemon]`.
    pub daemon: DaemonSettings,
    /// `[runtime]`.
    pub runtime: RuntimeSettings,
    /// `[health]`.
    pub health: HealthSettings,
    /// `[api]`: `xrat api serve`.
    pub api: ApiSettings,
    /// `[relay]`: the front relay (front mode).
    pub relay: RelaySettings,
    /// `[subscriptions]`: fetching and refreshing provider URLs.
    pub subscriptions: SubscriptionSettings,
    /// `[logs]`: the daemon's log files.
    pub logs: LogsSettings,
}

/// `[daemon]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DaemonSettings {
    /// Period of the health tick.
    pub health_interval_secs: u64,
    /// Most client connections served at once; one more gets 503 (or evicts the longest-idle).
    pub max_connections: u32,
    /// A partial request line must be completed within this (else 408 and close).
    pub frame_timeout_ms: u64,
    /// A connection with nothing pending is closed after this long without a byte.
    pub idle_timeout_secs: u64,
    /// A group whose members may connect read-only (socket 0660, `runtime/` 0710, both that
    /// group); empty: the socket is the daemon user's alone.
    pub socket_group: String,
    /// Most relayed connections open at once on the front ports; one more gets the client
    /// protocol's own refusal.
    pub relay_connections_max: u32,
    /// The loop's kernel interface; `XRAT_BACKEND` overrides it. Read once at start.
    pub backend: BackendChoice,
    /// After a turn that served traffic, how long the loop polls for the next completion before
    /// it sleeps (0: never polls). A request within the window skips the sleeping CPU's wake-up.
    pub busy_poll_us: u64,
    /// The loop thread's scheduler slice (EEVDF's latency hint, `sched_setattr` runtime): a
    /// short slice lets the daemon preempt a busy core on the same CPU when a request arrives
    /// (0: the kernel's default slice).
    pub sched_slice_us: u64,
    /// Event lines held for one `subscribe` connection that has not read them; one more and it
    /// gets `lagged` and is closed.
    pub subscriber_queue_max: u32,
    /// Rotation events and ended sessions kept in the database, the newest of each; older rows
    /// are pruned in steps (0: every row is kept).
    pub history_kept: u32,
}

impl Default for DaemonSettings {
    fn default() -> Self {
        DaemonSettings {
            health_interval_secs: 15,
            max_connections: 1024,
            frame_timeout_ms: 10_000,
            idle_timeout_secs: 300,
            socket_group: String::new(),
            relay_connections_max: 4096,
            backend: BackendChoice::Auto,
            busy_poll_us: BUSY_POLL_US_DEFAULT,
            sched_slice_us: SCHED_SLICE_US_DEFAULT,
            subscriber_queue_max: SUBSCRIBER_QUEUE_MAX_DEFAULT,
            history_kept: HISTORY_KEPT_DEFAULT,
        }
    }
}

/// `daemon.backend`: what the event loop runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BackendChoice {
    /// io_uring, or epoll when io_uring is refused at setup (ENOSYS, EPERM, EINVAL).
    #[serde(rename = "auto")]
    Auto,
    /// io_uring only: refused means the daemon exits with the reason.
    #[serde(rename = "io_uring")]
    IoUring,
    /// epoll (readiness emulating the same completions).
    #[serde(rename = "epoll")]
    Epoll,
}

impl BackendChoice {
    /// Every value, as settings and `XRAT_BACKEND` spell them.
    pub const ALLOWED: [&'static str; 3] = ["auto", "io_uring", "epoll"];

    /// Parses a value as settings spell it.
    pub fn parse(text: &str) -> Option<BackendChoice> {
        match text {
            "auto" => Some(BackendChoice::Auto),
            "io_uring" => Some(BackendChoice::IoUring),
            "epoll" => Some(BackendChoice::Epoll),
            _ => None,
        }
    }

    /// The name as settings write it.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendChoice::Auto => "auto",
            BackendChoice::IoUring => "io_uring",
            BackendChoice::Epoll => "epoll",
        }
    }
}

/// Which proxy core runs sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CoreChoice {
    /// First of xray, v2ray, sing-box, mihomo found on PATH.
    #[serde(rename = "auto")]
    Auto,
    /// Xray-core.
    #[serde(rename = "xray")]
    Xray,
    /// V2Ray.
    #[serde(rename = "v2ray")]
    V2ray,
    /// sing-box.
    #[serde(rename = "sing-box")]
    SingBox,
    /// mihomo (Clash.Meta).
    #[serde(rename = "mihomo")]
    Mihomo,
}

/// A core family named in `runtime.core_preference`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CoreName {
    /// Xray-core.
    #[serde(rename = "xray")]
    Xray,
    /// V2Ray (4 or 5).
    #[serde(rename = "v2ray")]
    V2ray,
    /// sing-box.
    #[serde(rename = "sing-box")]
    SingBox,
    /// mihomo (Clash.Meta).
    #[serde(rename = "mihomo")]
    Mihomo,
}

impl CoreName {
    /// Every family, in the default preference order.
    pub const DEFAULT_PREFERENCE: [CoreName; 4] = [
        CoreName::Xray,
        CoreName::SingBox,
        CoreName::Mihomo,
        CoreName::V2ray,
    ];

    /// The name as settings and messages write it.
    pub fn as_str(self) -> &'static str {
        match self {
            CoreName::Xray => "xray",
            CoreName::V2ray => "v2ray",
            CoreName::SingBox => "sing-box",
            CoreName::Mihomo => "mihomo",
        }
    }
}

/// Who binds the user's ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RuntimeMode {
    /// The daemon binds them and relays each connection to a pool core's internal inbound.
    #[serde(rename = "front")]
    Front,
    /// The session core binds them (milestone 1).
    #[serde(rename = "direct")]
    Direct,
}

impl RuntimeMode {
    /// The name as settings and the protocol write it.
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeMode::Front => "front",
            RuntimeMode::Direct => "direct",
        }
    }
}

/// `[runtime]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeSettings {
    /// Who binds the user's ports.
    pub mode: RuntimeMode,
    /// Which core.
    pub core: CoreChoice,
    /// With `core = "auto"`, the order in which installed cores are tried for a config: the
    /// first that supports every feature of it runs it.
    pub core_preference: Vec<CoreName>,
    /// Explicit core binary; empty means search PATH.
    pub core_path: String,
    /// Address of the inbounds.
    pub listen: String,
    /// SOCKS inbound port.
    pub socks_port: u16,
    /// HTTP inbound port; 0 means none.
    pub http_port: u16,
    /// How long a core may take to accept on its inbound.
    pub ready_timeout_ms: u64,
    /// Reconnect a stale session's config when the daemon starts.
    pub reconnect_on_start: bool,
    /// `[runtime.rotation]`.
    pub rotation: RotationSettings,
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        RuntimeSettings {
            mode: RuntimeMode::Front,
            core: CoreChoice::Auto,
            core_preference: CoreName::DEFAULT_PREFERENCE.to_vec(),
            core_path: String::new(),
            listen: "127.0.0.1".into(),
            socks_port: 1080,
            http_port: 0,
            ready_timeout_ms: 5000,
            reconnect_on_start: true,
            rotation: RotationSettings::default(),
        }
    }
}

/// `[runtime.rotation]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RotationSettings {
    /// Whether automatic rotation starts enabled.
    pub enabled: bool,
    /// Timer rotation period.
    pub interval_secs: u64,
    /// Whether failed health checks trigger a rotation.
    pub health_trigger_enabled: bool,
    /// Quiet time after a rotation for timer and health triggers.
    pub cooldown_secs: u64,
    /// Most candidates probed at once in a batch test.
    pub test_concurrency: u32,
    /// Warm members besides the active one in the pool core (front mode).
    pub pool_size: u32,
    /// How long open connections may stay on a replaced pool core before it is stopped.
    pub drain_secs: u64,
    /// Refresh due subscriptions (`xrat sub update --due`) before each timer rotation, so it
    /// picks from the provider's current list.
    pub refresh_subscriptions: bool,
    /// Failed tests in a row (stored in `config_tests`) that put a config in quarantine.
    pub strikes: u32,
    /// How long a quarantined config is skipped after its last failed test; 0 turns quarantine off.
    pub quarantine_secs: u64,
}

impl Default for RotationSettings {
    fn default() -> Self {
        RotationSettings {
            enabled: false,
            interval_secs: 1800,
            health_trigger_enabled: true,
            cooldown_secs: 300,
            test_concurrency: 8,
            pool_size: 4,
            drain_secs: 30,
            refresh_subscriptions: false,
            strikes: 3,
            quarantine_secs: 1800,
        }
    }
}

/// `[health]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthSettings {
    /// URL fetched through the session by each probe.
    pub probe_url: String,
    /// Whole-probe deadline.
    pub timeout_ms: u64,
    /// Failed probes in a row that trigger a rotation.
    pub failure_threshold: u32,
    /// Re-probe cadence (and deadline) of a member once a probe or a passive signal failed.
    pub retry_interval_ms: u64,
    /// Failed relayed openings within `passive_window_ms` that fail a member at once.
    pub passive_failures: u32,
    /// The window of `passive_failures`.
    pub passive_window_ms: u64,
}

impl Default for HealthSettings {
    fn default() -> Self {
        HealthSettings {
            probe_url: "http://cp.cloudflare.com/generate_204".into(),
            timeout_ms: 5000,
            failure_threshold: 3,
            retry_interval_ms: 500,
            passive_failures: 2,
            passive_window_ms: 2000,
        }
    }
}

/// `[api]`: the HTTP API server (`xrat api serve`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSettings {
    /// A request head must arrive whole within this (from the accept for a connection's first
    /// request, from its first byte for later ones); a late one gets 408.
    pub header_timeout_ms: u64,
    /// Web origins (`http://host:port`) whose pages may call the API from a browser: they get
    /// CORS headers; any other Origin is refused with 403. The API's own origin (a dashboard
    /// served with `--dashboard`) is always allowed.
    pub cors_origins: Vec<String>,
}

impl Default for ApiSettings {
    fn default() -> Self {
        ApiSettings {
            header_timeout_ms: 5000,
            cors_origins: Vec::new(),
        }
    }
}

/// Most entries in `api.cors_origins`: an allow-list, not a wildcard.
pub const CORS_ORIGINS_MAX: usize = 64;

/// True when `value` is a web origin exactly as a browser sends it in `Origin`: `http` or
/// `https`, a host, an optional non-default port, and nothing else (no path, no trailing `/`).
pub fn is_web_origin(value: &str) -> bool {
    let Ok(url) = url::Url::parse(value) else {
        return false;
    };
    matches!(url.scheme(), "http" | "https") && url.origin().ascii_serialization() == value
}

/// `[relay]`: the front relay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelaySettings {
    /// Opening bytes of a client kept so a failed opening can be replayed on another member.
    pub replay_bytes_max: u32,
    /// Bulk transfers move socket to socket inside the kernel (`splice`) instead of through the
    /// daemon's buffers.
    pub splice: bool,
}

impl Default for RelaySettings {
    fn default() -> Self {
        RelaySettings {
            replay_bytes_max: 16 * 1024,
            splice: true,
        }
    }
}

/// `[logs]`: the log files under `<root>/logs/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogsSettings {
    /// Core log files (`core-<session>.log`, `pool-<core>.log`) kept, the newest by mtime; older
    /// ones are deleted whenever a core with a new log starts.
    pub core_sessions_kept: u32,
}

impl Default for LogsSettings {
    fn default() -> Self {
        LogsSettings {
            core_sessions_kept: 10,
        }
    }
}

/// Most core log files `logs.core_sessions_kept` may keep (each is a file in `logs/`).
pub const CORE_SESSIONS_KEPT_MAX: u32 = 10_000;

/// Most relayed connections a daemon may be configured for (each holds two sockets).
pub const RELAY_CONNECTIONS_LIMIT: u32 = 65_536;
/// Most warm pool members besides the active one (each is an inbound and a probe schedule).
pub const POOL_SIZE_MAX: u32 = 32;
/// Largest `relay.replay_bytes_max`: 1 MiB per connection is already more than any opening.
pub const REPLAY_BYTES_LIMIT: u32 = 1 << 20;

/// Longest `api.header_timeout_ms`: ten minutes; more would let a slow client hold a slot for
/// as long as it likes.
pub const API_HEADER_TIMEOUT_MS_MAX: u64 = 600_000;

/// Most connections a daemon may be configured to serve; bounded by the reactor's slab tokens.
pub const MAX_CONNECTIONS_LIMIT: u32 = 65_536;

/// Default `daemon.busy_poll_us` (docs/BENCHMARKS.md "Busy polling": the curve it was picked from).
pub const BUSY_POLL_US_DEFAULT: u64 = 25;
/// Largest `daemon.busy_poll_us`: a longer window only burns CPU between requests a person sends.
pub const BUSY_POLL_US_MAX: u64 = 1000;
/// Default `daemon.sched_slice_us` (docs/BENCHMARKS.md "IPC under relay load").
pub const SCHED_SLICE_US_DEFAULT: u64 = 100;
/// Shortest and longest slice the kernel takes (it clamps `sched_runtime` to 0.1-100 ms).
pub const SCHED_SLICE_US_MIN: u64 = 100;
/// See [`SCHED_SLICE_US_MIN`].
pub const SCHED_SLICE_US_MAX: u64 = 100_000;
const _: () = assert!(SCHED_SLICE_US_MIN <= SCHED_SLICE_US_DEFAULT);
const _: () = assert!(SCHED_SLICE_US_DEFAULT <= SCHED_SLICE_US_MAX);
/// Default of `daemon.subscriber_queue_max`.
pub const SUBSCRIBER_QUEUE_MAX_DEFAULT: u32 = 1024;
/// Upper bound of `daemon.subscriber_queue_max`: at a few hundred bytes a line, 64 MiB held for
/// one subscriber that does not read.
pub const SUBSCRIBER_QUEUE_MAX_LIMIT: u32 = 262_144;
const _: () = assert!(SUBSCRIBER_QUEUE_MAX_DEFAULT <= SUBSCRIBER_QUEUE_MAX_LIMIT);
/// Default of `daemon.history_kept`: every switch adds one row to each table, so 10,000 are
/// about 14 hours of a script switching every 5 s, or 100 days of a rotation every 15 minutes.
pub const HISTORY_KEPT_DEFAULT: u32 = 10_000;
/// Upper bound of `daemon.history_kept` (a few hundred bytes a row: tens of GB at most).
pub const HISTORY_KEPT_MAX: u32 = 100_000_000;
const _: () = assert!(HISTORY_KEPT_DEFAULT <= HISTORY_KEPT_MAX);
const _: () = assert!(BUSY_POLL_US_DEFAULT <= BUSY_POLL_US_MAX);
/// Longest period in seconds (366 days): intervals and cooldowns are turned into monotonic
/// milliseconds and added to the clock, which must not overflow.
pub const DURATION_SECS_MAX: u64 = 366 * 24 * 3600;

/// Largest `runtime.rotation.strikes`.
pub const STRIKES_MAX: u32 = 100;
/// Longest timeout in milliseconds (10 minutes): a probe or a start that takes longer is dead.
pub const TIMEOUT_MS_MAX: u64 = 600_000;
/// Most candidates probed at once in a batch test (each is a socket and a probe slot).
pub const TEST_CONCURRENCY_MAX: u32 = 256;
const _: () = assert!(DURATION_SECS_MAX * 1000 < u64::MAX / 4);
const _: () = assert!(TIMEOUT_MS_MAX <= DURATION_SECS_MAX * 1000);

impl Settings {
    /// Loads `path`; a missing file means all defaults.
    pub fn load(path: &Path) -> Result<Settings, SettingsError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Settings::default()),
            Err(source) => {
                return Err(SettingsError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        Settings::parse(&text, path)
    }

    /// Parses settings text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Settings, SettingsError> {
        let settings: Settings = toml::from_str(text).map_err(|e| SettingsError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        settings.validate(path)?;
        Ok(settings)
    }

    /// Range checks toml cannot express. The first violation is reported.
    fn validate(&self, path: &Path) -> Result<(), SettingsError> {
        let (d, r, h, a) = (&self.daemon, &self.runtime, &self.health, &self.api);
        let relay = &self.relay;
        const AT_LEAST_ONE: &str = "must be at least 1";
        let preference = &r.core_preference;
        let duplicate = preference
            .iter()
            .enumerate()
            .any(|(i, name)| preference[..i].contains(name));
        const PERIOD: &str = "must be between 1 and 31622400 seconds (366 days)";
        const TIMEOUT: &str = "must be between 1 and 600000 ms (10 minutes)";
        let period = |v: u64| v == 0 || v > DURATION_SECS_MAX;
        let timeout = |v: u64| v == 0 || v > TIMEOUT_MS_MAX;
        let checks: [(&'static str, bool, String, &'static str); 30] = [
            (
                "daemon.frame_timeout_ms",
                timeout(d.frame_timeout_ms),
                d.frame_timeout_ms.to_string(),
                TIMEOUT,
            ),
            (
                "daemon.idle_timeout_secs",
                period(d.idle_timeout_secs),
                d.idle_timeout_secs.to_string(),
                PERIOD,
            ),
            (
                "daemon.health_interval_secs",
                period(d.health_interval_secs),
                d.health_interval_secs.to_string(),
                PERIOD,
            ),
            (
                "daemon.max_connections",
                d.max_connections == 0 || d.max_connections > MAX_CONNECTIONS_LIMIT,
                d.max_connections.to_string(),
                "must be between 1 and 65536",
            ),
            (
                "daemon.subscriber_queue_max",
                d.subscriber_queue_max == 0 || d.subscriber_queue_max > SUBSCRIBER_QUEUE_MAX_LIMIT,
                d.subscriber_queue_max.to_string(),
                "must be between 1 and 262144 event lines",
            ),
            (
                "daemon.history_kept",
                d.history_kept > HISTORY_KEPT_MAX,
                d.history_kept.to_string(),
                "must be 0 (keep every row) or at most 100000000",
            ),
            (
                "daemon.busy_poll_us",
                d.busy_poll_us > BUSY_POLL_US_MAX,
                d.busy_poll_us.to_string(),
                "must be between 0 (off) and 1000",
            ),
            (
                "daemon.sched_slice_us",
                d.sched_slice_us != 0
                    && !(SCHED_SLICE_US_MIN..=SCHED_SLICE_US_MAX).contains(&d.sched_slice_us),
                d.sched_slice_us.to_string(),
                "must be 0 (the kernel's default slice) or between 100 and 100000",
            ),
            (
                "runtime.core_preference",
                preference.is_empty(),
                "[]".into(),
                "must name at least one of xray, sing-box, mihomo, v2ray",
            ),
            (
                "runtime.core_preference",
                duplicate,
                format!(
                    "[{}]",
                    preference
                        .iter()
                        .map(|name| format!("{:?}", name.as_str()))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                "names a core twice; list each of xray, sing-box, mihomo, v2ray at most once",
            ),
            (
                "runtime.listen",
                r.listen.parse::<std::net::IpAddr>().is_err(),
                format!("{:?}", r.listen),
                "must be an IP address such as 127.0.0.1",
            ),
            (
                "runtime.socks_port",
                r.socks_port == 0,
                "0".into(),
                "must be a port between 1 and 65535",
            ),
            (
                "runtime.http_port",
                r.http_port != 0 && r.http_port == r.socks_port,
                r.http_port.to_string(),
                "must differ from runtime.socks_port (or be 0 for no HTTP inbound)",
            ),
            (
                "runtime.ready_timeout_ms",
                timeout(r.ready_timeout_ms),
                r.ready_timeout_ms.to_string(),
                TIMEOUT,
            ),
            (
                "runtime.rotation.interval_secs",
                period(r.rotation.interval_secs),
                r.rotation.interval_secs.to_string(),
                PERIOD,
            ),
            (
                "runtime.rotation.cooldown_secs",
                r.rotation.cooldown_secs > DURATION_SECS_MAX,
                r.rotation.cooldown_secs.to_string(),
                "must be at most 31622400 seconds (366 days)",
            ),
            (
                "runtime.rotation.test_concurrency",
                r.rotation.test_concurrency == 0
                    || r.rotation.test_concurrency > TEST_CONCURRENCY_MAX,
                r.rotation.test_concurrency.to_string(),
                "must be between 1 and 256",
            ),
            (
                "runtime.rotation.strikes",
                r.rotation.strikes == 0 || r.rotation.strikes > STRIKES_MAX,
                r.rotation.strikes.to_string(),
                "must be between 1 and 100",
            ),
            (
                "runtime.rotation.quarantine_secs",
                r.rotation.quarantine_secs > DURATION_SECS_MAX,
                r.rotation.quarantine_secs.to_string(),
                "must be at most 31622400 seconds (366 days); 0 turns quarantine off",
            ),
            (
                "health.probe_url",
                crate::probe::ProbeTarget::parse(&h.probe_url).is_err(),
                format!("{:?}", h.probe_url),
                "must be an http:// URL with a host (the probe does not speak TLS)",
            ),
            (
                "health.timeout_ms",
                timeout(h.timeout_ms),
                h.timeout_ms.to_string(),
                TIMEOUT,
            ),
            (
                "health.failure_threshold",
                h.failure_threshold == 0,
                "0".into(),
                AT_LEAST_ONE,
            ),
            (
                "daemon.relay_connections_max",
                d.relay_connections_max == 0 || d.relay_connections_max > RELAY_CONNECTIONS_LIMIT,
                d.relay_connections_max.to_string(),
                "must be between 1 and 65536",
            ),
            (
                "runtime.rotation.pool_size",
                r.rotation.pool_size > POOL_SIZE_MAX,
                r.rotation.pool_size.to_string(),
                "must be between 0 and 32",
            ),
            (
                "runtime.rotation.drain_secs",
                r.rotation.drain_secs > DURATION_SECS_MAX,
                r.rotation.drain_secs.to_string(),
                "must be at most 31622400 seconds (366 days)",
            ),
            (
                "health.retry_interval_ms",
                timeout(h.retry_interval_ms),
                h.retry_interval_ms.to_string(),
                TIMEOUT,
            ),
            (
                "health.passive_failures",
                h.passive_failures == 0,
                "0".into(),
                AT_LEAST_ONE,
            ),
            (
                "health.passive_window_ms",
                timeout(h.passive_window_ms),
                h.passive_window_ms.to_string(),
                TIMEOUT,
            ),
            (
                "relay.replay_bytes_max",
                relay.replay_bytes_max > REPLAY_BYTES_LIMIT,
                relay.replay_bytes_max.to_string(),
                "must be at most 1048576 (1 MiB)",
            ),
            (
                "api.header_timeout_ms",
                a.header_timeout_ms == 0 || a.header_timeout_ms > API_HEADER_TIMEOUT_MS_MAX,
                a.header_timeout_ms.to_string(),
                "must be between 1 and 600000 (10 minutes)",
            ),
        ];
        let kept = self.logs.core_sessions_kept;
        let logs_check = (
            "logs.core_sessions_kept",
            kept == 0 || kept > CORE_SESSIONS_KEPT_MAX,
            kept.to_string(),
            "must be between 1 and 10000 (the current session's log is always kept)",
        );
        // Outside the array, like logs_check, so other keys' checks can be added beside it.
        let cors_check = (
            "api.cors_origins",
            a.cors_origins.len() > CORS_ORIGINS_MAX
                || a.cors_origins.iter().any(|o| !is_web_origin(o)),
            format!("{:?}", a.cors_origins),
            "must be at most 64 origins, each as a browser sends it: http://host or http://host:port (https too), no path, no trailing /",
        );
        let mut checks = checks.into_iter().chain([logs_check, cors_check]);
        match checks.find(|(_, bad, _, _)| *bad) {
            Some((key, _, value, reason)) => Err(SettingsError::Value {
                path: path.to_path_buf(),
                key,
                value,
                reason,
            }),
            None => {
                self.daemon.validate_socket_group(path)?;
                self.subscriptions.validate(path)
            }
        }
    }
}

impl DaemonSettings {
    /// `daemon.socket_group` must name a group this system knows (looked up through NSS).
    fn validate_socket_group(&self, path: &Path) -> Result<(), SettingsError> {
        let group = &self.socket_group;
        if group.is_empty() || crate::ipc::access::group_id(group).is_some() {
            return Ok(());
        }
        Err(SettingsError::Value {
            path: path.to_path_buf(),
            key: "daemon.socket_group",
            value: format!("{group:?}"),
            reason: "names no group on this system (`getent group` lists them); create it with `groupadd`, or set it to \"\" to keep the socket to the daemon's user",
        })
    }
}

#[path = "settings_subs.rs"]
mod subs;
pub use subs::{SubscriptionSettings, BODY_BYTES_MIN, DEFAULT_USER_AGENT};

#[cfg(test)]
#[path = "settings_tests.rs"]
mod tests;
