//! A local HTTPS subscription server for the subscription tests: rustls with an rcgen CA and a
//! leaf for 127.0.0.1, one thread per connection, routes the test can change while it runs
//! (a body with an optional `subscription-userinfo`, a status, a redirect loop, a body that
//! never comes, an oversized body). Listens on 127.0.0.1 only; every wait is bounded.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Most request-head bytes read.
const HEAD_BYTES_MAX: usize = 16 * 1024;
/// Socket read/write timeout.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a slow route holds the connection before giving up on it.
pub const SLOW_HOLD: Duration = Duration::from_secs(15);

/// What a path answers.
#[derive(Clone, Debug)]
pub enum Route {
    /// 200 with this body and, when given, a `subscription-userinfo` header.
    Body(String, Option<String>),
    /// This status with a short body.
    Status(u16),
    /// 302 to the same path, forever.
    RedirectLoop,
    /// Headers promised, the body never sent (until [`SLOW_HOLD`]).
    Slow,
    /// 200 with this many bytes.
    Huge(usize),
}

#[derive(Default)]
struct State {
    routes: HashMap<String, Route>,
    /// (path, user-agent) of every request.
    hits: Vec<(String, String)>,
}

/// The server; stops accepting when dropped.
pub struct SubServer {
    pub port: u16,
    /// PEM of the CA that signed the server's certificate (for `--ca`).
    pub ca_file: PathBuf,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    _dir: tempfile::TempDir,
}

impl SubServer {
    pub fn start() -> SubServer {
        let dir = tempfile::tempdir().unwrap();
        let (config, ca_pem) = tls_config();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca_pem).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (config, s, st) = (config.clone(), s.clone(), st.clone());
                std::thread::spawn(move || {
                    let _ = serve(stream, config, &s, &st);
                });
            }
        });
        SubServer {
            port,
            ca_file,
            state,
            stop,
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    pub fn set(&self, path: &str, route: Route) {
        self.state
            .lock()
            .unwrap()
            .routes
            .insert(path.to_owned(), route);
    }

    pub fn body(&self, path: &str, body: &str) {
        self.set(path, Route::Body(body.to_owned(), None));
    }

    /// Requests for `path` so far, with their user-agents.
    pub fn hits(&self, path: &str) -> Vec<String> {
        let state = self.state.lock().unwrap();
        state
            .hits
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, ua)| ua.clone())
            .collect()
    }

    pub fn ca(&self) -> &str {
        self.ca_file.to_str().unwrap()
    }
}

impl Drop for SubServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// A CA and a leaf for 127.0.0.1 signed by it; the server config and the CA's PEM.
fn tls_config() -> (Arc<rustls::ServerConfig>, String) {
    let (ca_cert, leaf, leaf_key) =
        super::ca::ca_and_leaf("xrat test CA", &["127.0.0.1", "localhost"]);
    let chain = vec![CertificateDer::from(leaf.der().to_vec())];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    (Arc::new(config), ca_cert.pem())
}

fn serve(
    stream: TcpStream,
    config: Arc<rustls::ServerConfig>,
    state: &Mutex<State>,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    if stop.load(Ordering::SeqCst) {
        return Ok(());
    }
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let conn = rustls::ServerConnection::new(config).map_err(std::io::Error::other)?;
    let mut tls = rustls::StreamOwned::new(conn, stream);
    let head = read_head(&mut tls)?;
    let mut lines = head.lines();
    let path = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("/")
        .to_owned();
    let ua = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("user-agent"))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default();
    let route = {
        let mut s = state.lock().unwrap();
        s.hits.push((path.clone(), ua));
        s.routes.get(&path).cloned().unwrap_or(Route::Status(404))
    };
    match route {
        Route::Body(body, userinfo) => {
            let extra = userinfo
                .map(|u| format!("subscription-userinfo: {u}\r\n"))
                .unwrap_or_default();
            respond(&mut tls, "200 OK", &extra, body.as_bytes())
        }
        Route::Status(code) => respond(&mut tls, &format!("{code} Status"), "", b"no such page\n"),
        Route::RedirectLoop => {
            let location = format!("Location: {path}\r\n");
            respond(&mut tls, "302 Found", &location, b"")
        }
        Route::Huge(n) => respond(&mut tls, "200 OK", "", &vec![b'a'; n]),
        Route::Slow => {
            let head = "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n";
            tls.write_all(head.as_bytes())?;
            tls.flush()?;
            let started = Instant::now();
            while started.elapsed() < SLOW_HOLD && !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(())
        }
    }
}

fn read_head(tls: &mut impl Read) -> std::io::Result<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > HEAD_BYTES_MAX {
            return Err(std::io::Error::other("request head too large"));
        }
        let n = tls.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

fn respond(tls: &mut impl Write, status: &str, extra: &str, body: &[u8]) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes())?;
    tls.write_all(body)?;
    tls.flush()
}
