//! A local HTTP target and a minimal SOCKS5 client.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::*;

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
    if request.starts_with(b"GET /stream ") {
        requests.lock().unwrap().push("/stream".into());
        return serve_stream(stream);
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

/// Chunks of `/stream`, one every [`STREAM_EVERY`]: a 5 s download.
pub const STREAM_CHUNKS: usize = 50;
/// One `/stream` chunk.
pub const STREAM_CHUNK: usize = 1024;
const STREAM_EVERY: Duration = Duration::from_millis(100);

/// `/stream`: [`STREAM_CHUNKS`] chunks of [`STREAM_CHUNK`] bytes (chunk `i` is byte `i`
/// repeated), one every 100 ms, with a Content-Length, so a client can tell a whole download.
fn serve_stream(mut stream: TcpStream) {
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        STREAM_CHUNKS * STREAM_CHUNK
    );
    if stream.write_all(head.as_bytes()).is_err() {
        return;
    }
    for i in 0..STREAM_CHUNKS {
        if stream.write_all(&[i as u8; STREAM_CHUNK]).is_err() {
            return;
        }
        std::thread::sleep(STREAM_EVERY);
    }
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
    socks5_fetch_at(socks_port, [127, 0, 0, 1], target_port, path)
}

/// [`socks5_get`] of `path` from `ip`:`target_port` (an address inside a tunnel, say).
pub fn socks5_get_at(
    socks_port: u16,
    ip: [u8; 4],
    target_port: u16,
    path: &str,
) -> Result<String, String> {
    socks5_fetch_at(socks_port, ip, target_port, path).map(|fetched| fetched.body)
}

fn socks5_fetch_at(
    socks_port: u16,
    ip: [u8; 4],
    target_port: u16,
    path: &str,
) -> Result<Fetched, String> {
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

    // CONNECT ip:target_port.
    let [hi, lo] = target_port.to_be_bytes();
    let [a, b, c, d] = ip;
    stream
        .write_all(&[5, 1, 0, 1, a, b, c, d, hi, lo])
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
