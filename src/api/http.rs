//! Just enough HTTP/1.1 for the API: request heads parsed with `httparse`, bodies framed by
//! Content-Length only, JSON responses, keep-alive. Every limit is a const below.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::ipc::protocol::{ResponseEnvelope, PROTOCOL_VERSION};

/// Most bytes of a request head (request line and headers).
pub const HEAD_BYTES_MAX: usize = 8 * 1024;
/// Most headers in one request.
pub const HEADERS_MAX: usize = 32;
/// Most bytes of a request body; the daemon's own frame limit is the same 64 KiB.
pub const BODY_BYTES_MAX: usize = 64 * 1024;
/// Default of `api.header_timeout_ms`: a request head must arrive whole within this, counted
/// from the accept for a connection's first request and from the first byte for a later one (a
/// slow client cannot hold a slot by trickling header bytes).
pub const HEADER_TIMEOUT: Duration = Duration::from_millis(5000);
/// A body must arrive whole within this once its head has arrived.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Keep-alive: how long a connection may sit idle between requests before it is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long writing one response may block on a client that does not read.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes asked of one read(2).
const READ_CHUNK: usize = 4096;

/// One parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method, as sent (methods are case-sensitive).
    pub method: String,
    /// The target without its query string.
    pub path: String,
    /// Headers in order; names lowercased.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body (empty without Content-Length).
    pub body: Vec<u8>,
    /// Whether the client wants the connection kept open after the response.
    pub keep_alive: bool,
}

impl Request {
    /// Values of every header called `name` (lowercase).
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    /// True when a header called `name` (lowercase) is present.
    pub fn has_header(&self, name: &str) -> bool {
        self.header_values(name).next().is_some()
    }
}

/// Why no request was read. All but `Closed` are answered, then the connection is closed: after
/// a framing error the next request's start is unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadError {
    /// The client closed, vanished or stayed idle: nothing to answer.
    Closed,
    /// The head did not arrive whole within its deadline (`api.header_timeout_ms`) (408).
    HeadTimeout(Duration),
    /// The body did not arrive whole within [`BODY_TIMEOUT`] of its head (408).
    BodyTimeout(Duration),
    /// Not valid HTTP/1.x (400).
    Malformed(String),
    /// Head over [`HEAD_BYTES_MAX`] or more than [`HEADERS_MAX`] headers (431).
    HeadTooLarge,
    /// A Transfer-Encoding body; only Content-Length is supported (411).
    LengthRequired,
    /// Content-Length over [`BODY_BYTES_MAX`] (413).
    BodyTooLarge(usize),
}

impl ReadError {
    /// The response this failure gets, or None when there is no one to answer.
    pub fn response(&self) -> Option<Response> {
        let (status, meaning, message) = match self {
            ReadError::Closed => return None,
            ReadError::HeadTimeout(limit) => (
                408,
                "timeout",
                format!(
                    "the request head did not arrive whole within {} ms (api.header_timeout_ms)",
                    limit.as_millis()
                ),
            ),
            ReadError::BodyTimeout(limit) => (
                408,
                "timeout",
                format!(
                    "the request body did not arrive whole within {} ms of its head",
                    limit.as_millis()
                ),
            ),
            ReadError::Malformed(why) => (400, "bad_request", why.clone()),
            ReadError::HeadTooLarge => (
                431,
                "headers_too_large",
                format!("the request head is over {HEAD_BYTES_MAX} bytes or {HEADERS_MAX} headers"),
            ),
            ReadError::LengthRequired => (
                411,
                "length_required",
                "only bodies with a Content-Length are accepted, not Transfer-Encoding".into(),
            ),
            ReadError::BodyTooLarge(len) => (
                413,
                "body_too_large",
                format!("the body is {len} bytes; at most {BODY_BYTES_MAX} are accepted"),
            ),
        };
        Some(Response::error(status, meaning, message))
    }
}

/// One response; always JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// Headers besides the ones every response gets.
    pub headers: Vec<(&'static str, String)>,
    /// The JSON body, newline-terminated.
    pub body: Vec<u8>,
}

impl Response {
    /// `value` as JSON with `status`.
    pub fn json(status: u16, value: &impl Serialize) -> Response {
        let mut body = serde_json::to_vec(value).expect("envelopes serialize");
        // A trailing newline keeps shells tidy after `curl ...`.
        body.push(b'\n');
        Response {
            status,
            headers: Vec::new(),
            body,
        }
    }

    /// A failure in the daemon's envelope shape, so clients parse one shape for every answer.
    pub fn error(status: u16, meaning: &str, message: String) -> Response {
        Response::json(
            status,
            &ResponseEnvelope {
                protocol_version: PROTOCOL_VERSION,
                id: None,
                ok: false,
                code: status,
                message,
                payload: serde_json::json!({ "error": meaning }),
            },
        )
    }

    /// Adds a header.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }
}

/// The reason phrase of every status the API sends.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        423 => "Locked",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

/// The read deadlines of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// Whole head, from the accept (first request) or the first byte (later requests).
    pub header: Duration,
    /// Whole body, from the end of its head.
    pub body: Duration,
    /// Keep-alive: wait for a later request's first byte.
    pub idle: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines {
            header: HEADER_TIMEOUT,
            body: BODY_TIMEOUT,
            idle: IDLE_TIMEOUT,
        }
    }
}

/// A client connection with the bytes read past the last request (pipelining).
pub struct Connection {
    stream: TcpStream,
    buf: Vec<u8>,
    deadlines: Deadlines,
    /// When the connection was accepted, until its first request has been read.
    accepted: Option<Instant>,
}

/// What one bounded read brought.
enum Fill {
    Data,
    Eof,
    Timeout,
}

impl Connection {
    /// Wraps a stream accepted at `accepted`.
    pub fn new(
        stream: TcpStream,
        deadlines: Deadlines,
        accepted: Instant,
    ) -> io::Result<Connection> {
        stream.set_nonblocking(false)?;
        stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
        // Responses go out in one write; waiting for more to coalesce only adds latency.
        stream.set_nodelay(true)?;
        Ok(Connection {
            stream,
            buf: Vec::new(),
            deadlines,
            accepted: Some(accepted),
        })
    }

    /// Reads the next request. The first must arrive whole within the header deadline of the
    /// accept (a client that sends nothing is closed then, unanswered); a later one may take the
    /// idle timeout to begin, then has the header deadline from its first byte. A head that is
    /// late gets [`ReadError::HeadTimeout`], a body [`ReadError::BodyTimeout`].
    pub fn read_request(&mut self) -> Result<Request, ReadError> {
        let head_deadline = match self.accepted.take() {
            Some(accepted) => {
                let deadline = accepted + self.deadlines.header;
                if self.buf.is_empty() {
                    match self.fill(deadline) {
                        Fill::Data => {}
                        Fill::Eof | Fill::Timeout => return Err(ReadError::Closed),
                    }
                }
                deadline
            }
            None => {
                if self.buf.is_empty() {
                    match self.fill(Instant::now() + self.deadlines.idle) {
                        Fill::Data => {}
                        Fill::Eof | Fill::Timeout => return Err(ReadError::Closed),
                    }
                }
                Instant::now() + self.deadlines.header
            }
        };
        let head_timeout = ReadError::HeadTimeout(self.deadlines.header);
        let (head_len, mut request) = loop {
            if let Some(parsed) = parse_head(&self.buf)? {
                break parsed;
            }
            if self.buf.len() > HEAD_BYTES_MAX {
                return Err(ReadError::HeadTooLarge);
            }
            self.fill_by(head_deadline, &head_timeout)?;
        };
        let body_deadline = Instant::now() + self.deadlines.body;
        let body_timeout = ReadError::BodyTimeout(self.deadlines.body);
        let length = content_length(&request)?;
        let end = head_len + length;
        if self.buf.len() < end && expects_continue(&request) {
            // curl waits a second for this before sending a body over 1 KiB.
            let _ = self.stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        while self.buf.len() < end {
            self.fill_by(body_deadline, &body_timeout)?;
        }
        request.body = self.buf[head_len..end].to_vec();
        self.buf.drain(..end);
        Ok(request)
    }

    /// Writes `response`; `keep_alive` false adds `Connection: close`.
    pub fn write_response(&mut self, response: &Response, keep_alive: bool) -> io::Result<()> {
        self.stream.write_all(&encode(response, keep_alive))?;
        self.stream.flush()
    }

    /// The stream, for a last shutdown.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Like [`Connection::fill`], but a request already begun turns EOF and timeout into errors.
    fn fill_by(&mut self, deadline: Instant, timeout: &ReadError) -> Result<(), ReadError> {
        match self.fill(deadline) {
            Fill::Data => Ok(()),
            Fill::Eof => Err(ReadError::Closed),
            Fill::Timeout => Err(timeout.clone()),
        }
    }

    /// One read, bounded by `deadline`; errors other than a timeout count as EOF.
    fn fill(&mut self, deadline: Instant) -> Fill {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Fill::Timeout;
        }
        if self.stream.set_read_timeout(Some(left)).is_err() {
            return Fill::Eof;
        }
        let mut chunk = [0u8; READ_CHUNK];
        match self.stream.read(&mut chunk) {
            Ok(0) => Fill::Eof,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Fill::Data
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Fill::Timeout
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Fill::Data,
            Err(_) => Fill::Eof,
        }
    }
}

/// The bytes of `response` on the wire, in one buffer so it leaves in one write.
pub fn encode(response: &Response, keep_alive: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nConnection: {}\r\n",
        response.status,
        reason(response.status),
        response.body.len(),
        if keep_alive { "keep-alive" } else { "close" },
    );
    for (name, value) in &response.headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&response.body);
    bytes
}

/// Parses a complete head at the start of `buf` into a request with an empty body; None while
/// the head is incomplete.
pub fn parse_head(buf: &[u8]) -> Result<Option<(usize, Request)>, ReadError> {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut parsed = httparse::Request::new(&mut headers);
    let head_len = match parsed.parse(buf) {
        Ok(httparse::Status::Partial) => return Ok(None),
        // A whole head can arrive in one read past the limit; it is refused all the same.
        Ok(httparse::Status::Complete(n)) if n > HEAD_BYTES_MAX => {
            return Err(ReadError::HeadTooLarge)
        }
        Ok(httparse::Status::Complete(n)) => n,
        Err(httparse::Error::TooManyHeaders) => return Err(ReadError::HeadTooLarge),
        Err(e) => {
            return Err(ReadError::Malformed(format!(
                "the request is not valid HTTP/1.1 ({e})"
            )))
        }
    };
    let target = parsed.path.unwrap_or("/");
    let headers: Vec<(String, Vec<u8>)> = parsed
        .headers
        .iter()
        .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
        .collect();
    let mut request = Request {
        method: parsed.method.unwrap_or_default().to_owned(),
        path: target.split('?').next().unwrap_or(target).to_owned(),
        headers,
        body: Vec::new(),
        keep_alive: false,
    };
    request.keep_alive = keep_alive(parsed.version.unwrap_or(0), &request);
    Ok(Some((head_len, request)))
}

/// HTTP/1.1 keeps the connection unless told `close`; HTTP/1.0 closes unless told `keep-alive`.
fn keep_alive(version: u8, request: &Request) -> bool {
    let has = |token: &str| {
        request.header_values("connection").any(|v| {
            v.split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
        })
    };
    if version >= 1 {
        !has("close")
    } else {
        has("keep-alive")
    }
}

/// The body length: 0 without Content-Length; every Content-Length must agree.
fn content_length(request: &Request) -> Result<usize, ReadError> {
    if request.has_header("transfer-encoding") {
        return Err(ReadError::LengthRequired);
    }
    let mut length = None;
    for value in request.header_values("content-length") {
        let bad = || ReadError::Malformed("Content-Length is not a decimal number".into());
        if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
            return Err(bad());
        }
        // Digits only, so this fails only on overflow, which is over the limit anyway.
        let n: usize = std::str::from_utf8(value)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(usize::MAX);
        if length.is_some_and(|l| l != n) {
            return Err(ReadError::Malformed(
                "conflicting Content-Length headers".into(),
            ));
        }
        length = Some(n);
    }
    match length.unwrap_or(0) {
        n if n > BODY_BYTES_MAX => Err(ReadError::BodyTooLarge(n)),
        n => Ok(n),
    }
}

fn expects_continue(request: &Request) -> bool {
    request
        .header_values("expect")
        .any(|v| v.trim_ascii().eq_ignore_ascii_case(b"100-continue"))
}
