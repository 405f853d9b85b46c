//! Loopback plumbing of the bench: a SOCKS5 CONNECT, the local source server (zeros and echo),
//! a minimal HTTP/1.1 client for mihomo's REST API, and the two request clients (back to back,
//! and one request every 50 ms each on its own thread). Every socket has a timeout.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::common::cores::socks5_get;

/// Read and write timeout of every socket here.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Most requests one client makes (a run is bounded even if stop never comes).
const REQUESTS_MAX: usize = 100_000;

/// How long the back-to-back client waits after a failed request: a refusing port answers in
/// microseconds, and without a pause the count of failures would measure the client's speed.
pub const RETRY_PAUSE: Duration = Duration::from_millis(1);

/// `127.0.0.1:port`.
pub fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Connects to the SOCKS5 server at `proxy` (no auth) and CONNECTs to 127.0.0.1:`target`.
pub fn socks5_connect(proxy: SocketAddr, target: u16) -> io::Result<TcpStream> {
    let mut s = TcpStream::connect_timeout(&proxy, IO_TIMEOUT)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    // Greeting ("no authentication" only), then CONNECT 127.0.0.1:target, as curl does it.
    s.write_all(&[5, 1, 0])?;
    let mut choice = [0u8; 2];
    s.read_exact(&mut choice)?;
    if choice != [5, 0] {
        return Err(io::Error::other(format!("SOCKS5 method {choice:?}")));
    }
    let [hi, lo] = target.to_be_bytes();
    s.write_all(&[5, 1, 0, 1, 127, 0, 0, 1, hi, lo])?;
    let mut head = [0u8; 4];
    s.read_exact(&mut head)?;
    if head[0] != 5 || head[1] != 0 {
        return Err(io::Error::other(format!(
            "SOCKS5 CONNECT refused: {head:?}"
        )));
    }
    let address = match head[3] {
        1 => 4,
        4 => 16,
        3 => {
            let mut len = [0u8; 1];
            s.read_exact(&mut len)?;
            usize::from(len[0])
        }
        other => return Err(io::Error::other(format!("SOCKS5 address type {other}"))),
    };
    let mut bound = [0u8; 258];
    s.read_exact(&mut bound[..address + 2])?;
    Ok(s)
}

/// Bytes of one echo request and its response.
pub const ECHO_BYTES: usize = 64;

/// A TCP server on 127.0.0.1 in this process, a thread per connection. The first byte picks
/// the mode: `Z` + 8 bytes little-endian length streams that many zero bytes and closes; `E`
/// echoes everything until EOF.
pub struct Source {
    pub port: u16,
}

impl Source {
    pub fn start() -> Source {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the source server");
        let port = listener.local_addr().unwrap().port();
        // The accept thread lives as long as the process (the bench exits when done).
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let _ = serve_source(stream);
                });
            }
        });
        Source { port }
    }
}

fn serve_source(mut s: TcpStream) -> io::Result<()> {
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut mode = [0u8; 1];
    s.read_exact(&mut mode)?;
    match mode[0] {
        b'Z' => {
            let mut len = [0u8; 8];
            s.read_exact(&mut len)?;
            let mut left = u64::from_le_bytes(len);
            let zeros = vec![0u8; 256 * 1024];
            while left > 0 {
                let n = left.min(zeros.len() as u64) as usize;
                s.write_all(&zeros[..n])?;
                left -= n as u64;
            }
            s.shutdown(Shutdown::Write)
        }
        b'E' => {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = s.read(&mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                s.write_all(&buf[..n])?;
            }
        }
        _ => Ok(()),
    }
}

/// Downloads `bytes` zeros from the source through the SOCKS5 server at `proxy`; the wall time
/// from the TCP connect to the last byte.
pub fn download(proxy: SocketAddr, source: u16, bytes: u64) -> io::Result<Duration> {
    let start = Instant::now();
    let mut s = socks5_connect(proxy, source)?;
    let mut head = [b'Z'; 9];
    head[1..].copy_from_slice(&bytes.to_le_bytes());
    s.write_all(&head)?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0u64;
    while got < bytes {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Err(io::Error::other(format!(
                "closed after {got} of {bytes} bytes"
            )));
        }
        got += n as u64;
    }
    Ok(start.elapsed())
}

/// A fresh connection through `proxy`: connect, SOCKS5, one 64-byte request echoed back,
/// close. Its wall time.
pub fn echo_fresh(proxy: SocketAddr, source: u16) -> io::Result<Duration> {
    let start = Instant::now();
    let mut s = socks5_connect(proxy, source)?;
    let mut out = [b'x'; ECHO_BYTES + 1];
    out[0] = b'E';
    s.write_all(&out)?;
    let mut back = [0u8; ECHO_BYTES];
    s.read_exact(&mut back)?;
    Ok(start.elapsed())
}

/// An open echo tunnel through a SOCKS5 server.
pub struct Tunnel(TcpStream);

impl Tunnel {
    pub fn open(proxy: SocketAddr, source: u16) -> io::Result<Tunnel> {
        let mut s = socks5_connect(proxy, source)?;
        s.write_all(b"E")?;
        Ok(Tunnel(s))
    }

    /// One 64-byte round trip.
    pub fn round_trip(&mut self) -> io::Result<Duration> {
        let start = Instant::now();
        self.0.write_all(&[b'y'; ECHO_BYTES])?;
        let mut back = [0u8; ECHO_BYTES];
        self.0.read_exact(&mut back)?;
        Ok(start.elapsed())
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP/1.1 client for mihomo's REST API

/// A response: status and body.
pub struct Response {
    pub status: u16,
    pub body: String,
}

/// A keep-alive HTTP connection to 127.0.0.1:`port`.
pub struct Http {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Http {
    pub fn connect(port: u16) -> io::Result<Http> {
        let stream = TcpStream::connect_timeout(&local(port), IO_TIMEOUT)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(Http {
            stream,
            buf: Vec::with_capacity(4096),
        })
    }

    /// One request; the response must carry a Content-Length (or have no body).
    pub fn request(&mut self, method: &str, path: &str, body: &str) -> io::Result<Response> {
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.stream.write_all(request.as_bytes())?;
        self.buf.clear();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                let status = head
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse::<u16>().ok())
                    .ok_or_else(|| io::Error::other(format!("bad status line: {head:?}")))?;
                let lower = head.to_ascii_lowercase();
                if lower.contains("transfer-encoding: chunked") {
                    return Err(io::Error::other("chunked response (not supported here)"));
                }
                let length = lower
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                while self.buf.len() < end + 4 + length {
                    let n = self.stream.read(&mut chunk)?;
                    if n == 0 {
                        return Err(io::Error::other("closed inside the body"));
                    }
                    self.buf.extend_from_slice(&chunk[..n]);
                }
                let body = String::from_utf8_lossy(&self.buf[end + 4..end + 4 + length]);
                return Ok(Response {
                    status,
                    body: body.into_owned(),
                });
            }
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::Error::other("closed before the response head"));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Request clients

/// One request's outcome: start and end since the client's epoch, and whether it got the page.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub started: Duration,
    pub ended: Duration,
    pub ok: bool,
    pub error: String,
}

/// GETs `/page` from the HTTP target through 127.0.0.1:`socks`, either back to back on one
/// thread (`gap` zero; 1 ms pause after a failure) or one request every `gap`, each on its own thread so a hung request
/// does not hold back the next. Bounded by [`REQUESTS_MAX`].
pub struct Requests {
    pub epoch: Instant,
    stop: Arc<AtomicBool>,
    outcomes: Arc<Mutex<Vec<Outcome>>>,
    thread: Option<JoinHandle<Vec<JoinHandle<()>>>>,
}

impl Requests {
    pub fn start(socks: u16, target: u16, body: String, gap: Duration) -> Requests {
        let epoch = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, outcomes) = (stop.clone(), outcomes.clone());
            std::thread::spawn(move || {
                let mut threads = Vec::new();
                let mut made = 0;
                while !stop.load(Ordering::SeqCst) && made < REQUESTS_MAX {
                    made += 1;
                    let (outcomes, body) = (outcomes.clone(), body.clone());
                    let request = move || {
                        let started = epoch.elapsed();
                        let result = socks5_get(socks, target, "/page");
                        let ok = result.as_ref().is_ok_and(|b| *b == body);
                        let ended = epoch.elapsed();
                        outcomes.lock().unwrap().push(Outcome {
                            started,
                            ended,
                            ok,
                            error: result.err().unwrap_or_default(),
                        });
                        ok
                    };
                    if gap.is_zero() {
                        if !request() {
                            std::thread::sleep(RETRY_PAUSE);
                        }
                    } else {
                        threads.push(std::thread::spawn(move || {
                            request();
                        }));
                        std::thread::sleep(gap);
                    }
                }
                threads
            })
        };
        Requests {
            epoch,
            stop,
            outcomes,
            thread: Some(thread),
        }
    }

    /// Whether a request that started at or after `at` has succeeded yet.
    pub fn good_since(&self, at: Duration) -> bool {
        let outcomes = self.outcomes.lock().unwrap();
        outcomes.iter().any(|o| o.ok && o.started >= at)
    }

    /// Stops, waits for requests in flight (each is bounded by its 5 s deadline), and returns
    /// every outcome by start.
    pub fn stop(mut self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.thread.take().unwrap().join().unwrap() {
            t.join().unwrap();
        }
        let mut all = self.outcomes.lock().unwrap().clone();
        all.sort_by_key(|o| o.started);
        all
    }
}

/// Failed requests that ended after `at` (a request cut in flight counts), and how long after
/// `at` the first request that started after it succeeded.
pub fn after(outcomes: &[Outcome], at: Duration) -> (usize, Option<Duration>) {
    let failed = outcomes.iter().filter(|o| !o.ok && o.ended >= at).count();
    let first_good = outcomes
        .iter()
        .filter(|o| o.ok && o.started >= at)
        .map(|o| o.ended)
        .min();
    (failed, first_good.map(|end| end - at))
}
