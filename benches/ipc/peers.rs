//! The peer servers xrat is measured against: tokio, tokio-uring and blocking threads.
//!
//! Each runs in its own process (the bench binary re-executed with [`PEER_ENV`] set), as xrat's
//! daemon does, so no server shares an address space, allocator or scheduler slot with the
//! client. All three share [`respond`], the plain typed-serde handling a typical daemon has, so
//! they differ only in how bytes reach and leave that function.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use xrat::ipc::protocol::{Code, PingPayload, Request, RequestEnvelope, PROTOCOL_VERSION};

/// Names the peer a re-executed bench binary must serve, instead of benchmarking.
pub const PEER_ENV: &str = "XRAT_BENCH_PEER";

/// The socket path a peer binds.
pub const SOCKET_ENV: &str = "XRAT_BENCH_SOCKET";

/// The peers, by the names used in benchmark ids and in [`PEER_ENV`].
pub const PEERS: [&str; 3] = ["tokio", "tokio-uring", "blocking"];

/// Bytes a connection asks the kernel for per read.
const READ_BYTES: usize = 8 * 1024;

/// When this process was started as a peer, serves until killed and never returns.
///
/// Checked first thing in `main`, before criterion parses arguments.
pub fn serve_if_asked() {
    let Some(peer) = std::env::var_os(PEER_ENV) else {
        return;
    };
    let peer = peer.to_string_lossy().into_owned();
    let Some(socket) = std::env::var_os(SOCKET_ENV).map(PathBuf::from) else {
        eprintln!("bench peer {peer}: {SOCKET_ENV} is not set");
        std::process::exit(2);
    };
    let started = Instant::now();
    let result = match peer.as_str() {
        "tokio" => serve_tokio(&socket, started),
        "tokio-uring" => serve_tokio_uring(&socket, started),
        "blocking" => serve_blocking(&socket, started),
        other => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("unknown peer {other:?}; expected one of {PEERS:?}"),
        )),
    };
    match result {
        Ok(()) => std::process::exit(0),
        Err(error) => {
            eprintln!("bench peer {peer} on {}: {error}", socket.display());
            std::process::exit(1);
        }
    }
}

/// Appends the reply line (with its `\n`) to one request line to `out`; nothing for a blank
/// line.
///
/// Peers implement only `daemon_ping`; anything else gets 501, which the benches never ask for.
/// The reply is serialized straight from typed structs into the connection's output buffer, as
/// a careful author would write it: no `serde_json::Value` tree, no allocation per reply beyond
/// the request's own parse.
pub fn respond(line: &[u8], started: Instant, out: &mut Vec<u8>) {
    if line.trim_ascii().is_empty() {
        return;
    }
    let request = serde_json::from_slice::<RequestEnvelope>(line);
    let id = request.as_ref().ok().and_then(|r| r.id.as_ref());
    let code = match &request {
        Err(_) => Code::BadRequest,
        Ok(request) if request.protocol_version != PROTOCOL_VERSION => Code::UnsupportedVersion,
        Ok(request) if request.request == Request::DaemonPing => Code::Ok,
        Ok(_) => Code::NotImplemented,
    };
    let written = if code == Code::Ok {
        let payload = PingPayload {
            daemon_ready: true,
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_secs: started.elapsed().as_secs(),
            // Not xrat's loop, so no backend to name; the reply is a few bytes shorter.
            backend: None,
        };
        serde_json::to_writer(&mut *out, &Reply::new(id, code, "success", payload))
    } else {
        let payload = ErrorReply {
            error: code.meaning(),
        };
        let message = "the benchmark peer answers daemon_ping only";
        serde_json::to_writer(&mut *out, &Reply::new(id, code, message, payload))
    };
    written.expect("a reply serializes into a Vec");
    out.push(b'\n');
}

/// [`xrat::ipc::protocol::ResponseEnvelope`]'s wire shape, field for field, with a typed payload.
#[derive(Serialize)]
struct Reply<'a, P> {
    protocol_version: u64,
    id: Option<&'a serde_json::Value>,
    ok: bool,
    code: u16,
    message: &'a str,
    payload: P,
}

impl<'a, P: Serialize> Reply<'a, P> {
    fn new(id: Option<&'a serde_json::Value>, code: Code, message: &'a str, payload: P) -> Self {
        Reply {
            protocol_version: PROTOCOL_VERSION,
            id,
            ok: code == Code::Ok,
            code: code.number(),
            message,
            payload,
        }
    }
}

/// `{"error": <meaning>}`, borrowed.
#[derive(Serialize)]
struct ErrorReply {
    error: &'static str,
}

/// tokio, current-thread runtime, one task per connection: the usual shape of a tokio daemon.
fn serve_tokio(socket: &Path, started: Instant) -> io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::UnixListener::bind(socket)?;
        loop {
            // A failed accept (say, EMFILE) costs one client, not the server.
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                // A client that hangs up mid-request ends only its own connection.
                let _ = tokio_connection(stream, started).await;
            });
        }
    })
}

/// Answers every complete line in `pending` into `out` and drops the consumed bytes; a partial
/// line stays for the next read.
fn answer_lines(pending: &mut Vec<u8>, started: Instant, out: &mut Vec<u8>) {
    let mut consumed = 0;
    while let Some(end) = pending[consumed..].iter().position(|&b| b == b'\n') {
        respond(&pending[consumed..consumed + end], started, out);
        consumed += end + 1;
    }
    pending.drain(..consumed);
}

/// Serves one tokio connection until the client hangs up.
///
/// Replies to everything one read brought are written together once the read buffer runs dry
/// (a `BufWriter` flushed at that point, in effect): one write per batch of pipelined requests,
/// and still one per request when requests come one at a time.
async fn tokio_connection(mut stream: tokio::net::UnixStream, started: Instant) -> io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut pending: Vec<u8> = Vec::with_capacity(READ_BYTES);
    let mut out: Vec<u8> = Vec::with_capacity(READ_BYTES);
    loop {
        if pending.capacity() - pending.len() < READ_BYTES / 2 {
            pending.reserve(READ_BYTES);
        }
        if stream.read_buf(&mut pending).await? == 0 {
            return Ok(());
        }
        answer_lines(&mut pending, started, &mut out);
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
    }
}

/// tokio-uring 0.5: connections read and write through io_uring with owned buffers.
fn serve_tokio_uring(socket: &Path, started: Instant) -> io::Result<()> {
    tokio_uring::start(async move {
        // tokio-uring's own UnixListener::bind sets SO_REUSEPORT, which AF_UNIX refuses on
        // Linux >= 6.12.9 (upstream issues #323/#332); tokio's listener, driven by the same
        // runtime, accepts instead. Only accepts go through epoll; all connection I/O is uring.
        let listener = tokio::net::UnixListener::bind(socket)?;
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let stream = stream.into_std()?;
            // tokio hands over an O_NONBLOCK socket; io_uring reads on one may complete with
            // EAGAIN instead of waiting for data.
            stream.set_nonblocking(false)?;
            let stream = tokio_uring::net::UnixStream::from_std(stream);
            tokio_uring::spawn(async move {
                let _ = uring_connection(stream, started).await;
            });
        }
    })
}

/// Serves one tokio-uring connection until the client hangs up; replies are batched per read,
/// as in [`tokio_connection`].
async fn uring_connection(
    stream: tokio_uring::net::UnixStream,
    started: Instant,
) -> io::Result<()> {
    use tokio_uring::buf::BoundedBuf;

    let mut pending: Vec<u8> = Vec::with_capacity(READ_BYTES);
    let mut out: Vec<u8> = Vec::with_capacity(READ_BYTES);
    loop {
        if pending.capacity() - pending.len() < READ_BYTES / 2 {
            pending.reserve(READ_BYTES);
        }
        // The kernel writes behind the bytes not yet consumed, so a line split across reads is
        // joined without a copy.
        let at = pending.len();
        let (read, buf) = stream.read(pending.slice(at..)).await;
        pending = buf.into_inner();
        if read? == 0 {
            return Ok(());
        }
        answer_lines(&mut pending, started, &mut out);
        if !out.is_empty() {
            // Owned buffers: the reply batch goes to the kernel and comes back for reuse.
            let (written, buf) = stream.write_all(out).await;
            written?;
            out = buf;
            out.clear();
        }
    }
}

/// std blocking sockets, one thread per connection.
fn serve_blocking(socket: &Path, started: Instant) -> io::Result<()> {
    let listener = std::os::unix::net::UnixListener::bind(socket)?;
    for stream in listener.incoming() {
        let Ok(stream) = stream else {
            continue;
        };
        std::thread::spawn(move || {
            let _ = blocking_connection(stream, started);
        });
    }
    Ok(())
}

/// Serves one blocking connection, on its own thread, until the client hangs up; replies are
/// batched per read, as in [`tokio_connection`].
fn blocking_connection(
    mut stream: std::os::unix::net::UnixStream,
    started: Instant,
) -> io::Result<()> {
    let mut pending: Vec<u8> = Vec::with_capacity(READ_BYTES);
    let mut out: Vec<u8> = Vec::with_capacity(READ_BYTES);
    let mut chunk = [0u8; READ_BYTES];
    loop {
        let read = stream.read(&mut chunk)?;
        if read == 0 {
            return Ok(());
        }
        pending.extend_from_slice(&chunk[..read]);
        answer_lines(&mut pending, started, &mut out);
        if !out.is_empty() {
            stream.write_all(&out)?;
            out.clear();
        }
    }
}
