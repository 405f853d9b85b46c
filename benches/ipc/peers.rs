//! The peer servers xrat is measured against: tokio, tokio-uring and blocking threads.
//!
//! Each runs in its own process (the bench binary re-executed with [`PEER_ENV`] set), as xrat's
//! daemon does, so no server shares an address space, allocator or scheduler slot with the
//! client. All three share [`respond`], the plain typed-serde handling a typical daemon has, so
//! they differ only in how bytes reach and leave that function.

use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use xrat::ipc::protocol::{
    Code, ErrorPayload, PingPayload, Request, RequestEnvelope, ResponseEnvelope, PROTOCOL_VERSION,
};

/// Names the peer a re-executed bench binary must serve, instead of benchmarking.
pub const PEER_ENV: &str = "XRAT_BENCH_PEER";

/// The socket path a peer binds.
pub const SOCKET_ENV: &str = "XRAT_BENCH_SOCKET";

/// The peers, by the names used in benchmark ids and in [`PEER_ENV`].
pub const PEERS: [&str; 3] = ["tokio", "tokio-uring", "blocking"];

/// Bytes a tokio-uring connection asks the kernel for per read.
const URING_READ_BYTES: usize = 8 * 1024;

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

/// The reply line (with its `\n`) to one request line; `None` for a blank line.
///
/// Peers implement only `daemon_ping`; anything else gets 501, which the benches never ask for.
pub fn respond(line: &str, started: Instant) -> Option<Vec<u8>> {
    if line.trim_ascii().is_empty() {
        return None;
    }
    let (id, code, payload) = match serde_json::from_str::<RequestEnvelope>(line) {
        Err(_) => (None, Code::BadRequest, error_payload(Code::BadRequest)),
        Ok(request) if request.protocol_version != PROTOCOL_VERSION => (
            request.id,
            Code::UnsupportedVersion,
            error_payload(Code::UnsupportedVersion),
        ),
        Ok(request) => match request.request {
            Request::DaemonPing => {
                let ping = PingPayload {
                    daemon_ready: true,
                    pid: std::process::id(),
                    version: env!("CARGO_PKG_VERSION").to_string(),
                    uptime_secs: started.elapsed().as_secs(),
                    // The field xrat's ping carries, so every server writes the same bytes (the
                    // value is not this peer's loop).
                    backend: Some("io_uring".to_string()),
                };
                let payload = serde_json::to_value(ping).expect("a ping payload serializes");
                (request.id, Code::Ok, payload)
            }
            _ => (
                request.id,
                Code::NotImplemented,
                error_payload(Code::NotImplemented),
            ),
        },
    };
    let ok = code == Code::Ok;
    let response = ResponseEnvelope {
        protocol_version: PROTOCOL_VERSION,
        id,
        ok,
        code: code.number(),
        message: if ok {
            Code::Ok.meaning().to_string()
        } else {
            format!(
                "the benchmark peer answers daemon_ping only ({})",
                code.meaning()
            )
        },
        payload,
    };
    let mut out = serde_json::to_vec(&response).expect("a response serializes");
    out.push(b'\n');
    Some(out)
}

/// `{"error": <meaning>}`.
fn error_payload(code: Code) -> serde_json::Value {
    serde_json::to_value(ErrorPayload {
        error: code.meaning().to_string(),
    })
    .expect("an error payload serializes")
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

/// Serves one tokio connection until the client hangs up.
async fn tokio_connection(mut stream: tokio::net::UnixStream, started: Instant) -> io::Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

    let (read, mut write) = stream.split();
    let mut lines = tokio::io::BufReader::new(read).lines();
    // Strictly one request at a time per connection, which is what keeps pipelined replies in
    // request order.
    while let Some(line) = lines.next_line().await? {
        if let Some(reply) = respond(&line, started) {
            write.write_all(&reply).await?;
        }
    }
    Ok(())
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

/// Serves one tokio-uring connection until the client hangs up.
async fn uring_connection(
    stream: tokio_uring::net::UnixStream,
    started: Instant,
) -> io::Result<()> {
    use tokio_uring::buf::BoundedBuf;

    let mut pending: Vec<u8> = Vec::with_capacity(URING_READ_BYTES);
    loop {
        if pending.capacity() - pending.len() < URING_READ_BYTES / 2 {
            pending.reserve(URING_READ_BYTES);
        }
        // The kernel writes behind the bytes not yet consumed, so a line split across reads is
        // joined without a copy.
        let at = pending.len();
        let (read, buf) = stream.read(pending.slice(at..)).await;
        pending = buf.into_inner();
        if read? == 0 {
            return Ok(());
        }
        let mut consumed = 0;
        while let Some(end) = pending[consumed..].iter().position(|&b| b == b'\n') {
            let line = &pending[consumed..consumed + end];
            consumed += end + 1;
            let reply = match std::str::from_utf8(line) {
                Ok(line) => respond(line, started),
                // Not UTF-8, so not JSON: the same 400 as any other unparsable line.
                Err(_) => respond("\u{0}", started),
            };
            if let Some(reply) = reply {
                // One write per reply, as the tokio peer does, so the two differ in the I/O
                // layer only.
                let (written, _) = stream.write_all(reply).await;
                written?;
            }
        }
        pending.drain(..consumed);
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

/// Serves one blocking connection, on its own thread, until the client hangs up.
fn blocking_connection(stream: std::os::unix::net::UnixStream, started: Instant) -> io::Result<()> {
    let mut reader = BufReader::new(&stream);
    let mut writer = &stream;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if let Some(reply) = respond(&line, started) {
            writer.write_all(&reply)?;
        }
    }
}
