//! `xrat api serve`: binds, then accepts on a single-threaded tokio runtime; each connection is
//! served by hyper (HTTP/1.1, upgrades for WebSockets) under a watcher that enforces its
//! deadline, and the table in [`super::slots`] bounds how many are held. SIGTERM or SIGINT stops
//! accepting, gives in-flight requests [`SHUTDOWN_GRACE`], and returns.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use super::auth::{Token, TOKEN_FILE};
use super::gate::App;
use super::slots::{raw_error, send_raw, Phase, Table, CONNECTIONS_MAX};
use super::{
    check_listen, dashboard, ApiError, ServeOptions, HEADERS_MAX, HEAD_BYTES_MAX, IDLE_TIMEOUT,
};
use crate::paths::Paths;
use crate::settings::Settings;

/// After a signal, how long in-flight requests get to finish before the process exits.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Pause after an accept error such as EMFILE, which would otherwise spin the loop.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);
/// Threads for blocking work (daemon calls over the blocking client, store reads); each API
/// request holds at most one, so this also bounds daemon connections the API opens at once.
const BLOCKING_THREADS_MAX: usize = 2 * CONNECTIONS_MAX;
/// hyper's own head deadline, past ours: it bounds the heads of later keep-alive requests,
/// whose first byte our watcher cannot see (it sees only the idle phase).
const HYPER_HEADER_SLACK: Duration = Duration::from_secs(1);
/// Poll period while waiting for connections to finish after a signal.
const DRAIN_STEP: Duration = Duration::from_millis(10);

/// Runs `xrat api serve` until SIGTERM or SIGINT.
pub fn serve(paths: &Paths, options: ServeOptions) -> Result<(), ApiError> {
    check_listen(&options)?;
    let settings = Settings::load(&paths.settings_file())?;
    if let Some(dir) = &options.dashboard {
        dashboard::check_dir(dir)?;
    }
    paths.create_dirs()?;
    let token = Token::load_or_create(&paths.root.join(TOKEN_FILE))?;
    let os = |call| move |source| ApiError::Os { call, source };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS_MAX)
        .build()
        .map_err(os("tokio runtime"))?;
    let result = runtime.block_on(run(paths, options, settings, token));
    // Blocking daemon calls (a rotation may wait minutes) must not hold the exit.
    runtime.shutdown_background();
    result
}

async fn run(
    paths: &Paths,
    options: ServeOptions,
    settings: Settings,
    token: Token,
) -> Result<(), ApiError> {
    let os = |call| move |source| ApiError::Os { call, source };
    let std_listener =
        std::net::TcpListener::bind(options.listen).map_err(|source| ApiError::Bind {
            addr: options.listen,
            source,
        })?;
    std_listener.set_nonblocking(true).map_err(os("fcntl"))?;
    let listener = TcpListener::from_std(std_listener).map_err(os("epoll"))?;
    let bound = listener.local_addr().map_err(os("getsockname"))?;
    let mut term = signal(SignalKind::terminate()).map_err(os("signal"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(os("signal"))?;
    announce_start(bound, token.path(), options.json);
    let (stop_tx, stop) = watch::channel(false);
    let header_timeout = Duration::from_millis(settings.api.header_timeout_ms);
    let app = App::new(
        paths.clone(),
        token,
        &settings,
        bound,
        &options,
        stop.clone(),
    );
    let server = Arc::new(Server {
        router: super::gate::router(app.clone()),
        table: Table::default(),
        header_timeout,
        stop,
    });
    let signal = loop {
        tokio::select! {
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => admit(&server, stream),
                Err(e) => {
                    // ECONNABORTED, EMFILE and the like: the listener itself is fine.
                    let _ = writeln!(io::stderr(), "xrat api: accept failed: {e}");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            },
        }
    };
    drop(listener);
    let _ = stop_tx.send(true);
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    while (server.table.len() > 0 || app.streams_open() > 0) && Instant::now() < deadline {
        tokio::time::sleep(DRAIN_STEP).await;
    }
    if options.json {
        let line = serde_json::json!({"event": "stopped", "signal": signal});
        let _ = writeln!(io::stdout(), "{line}");
    } else {
        let _ = writeln!(io::stdout(), "API stopped ({signal}).");
    }
    Ok(())
}

/// What every connection task shares.
struct Server {
    router: axum::Router,
    table: Table,
    header_timeout: Duration,
    stop: watch::Receiver<bool>,
}

/// The start line: where the API listens and where its token is; with `json`, one JSON object
/// (`event`, `listen`, `url`, `pid`, `token_file`) on one line, so a script reads it as it comes.
fn announce_start(bound: SocketAddr, token_file: &std::path::Path, json: bool) {
    // writeln, not println: a closed stdout must not panic the server (it has a job to do).
    let _ = if json {
        let line = serde_json::json!({
            "event": "listening",
            "listen": bound.to_string(),
            "url": format!("http://{bound}"),
            "pid": std::process::id(),
            "token_file": token_file,
        });
        writeln!(io::stdout(), "{line}")
    } else {
        writeln!(
            io::stdout(),
            "API listening on http://{bound} (token in {})",
            token_file.display()
        )
    };
}

/// Takes a slot for `stream` (evicting the oldest waiting connection at a full house) and
/// starts its task, or answers 503 when every slot is answering a request.
fn admit(server: &Arc<Server>, stream: TcpStream) {
    let accepted = Instant::now();
    let Ok(dup) = stream.as_fd().try_clone_to_owned() else {
        return;
    };
    let Some((id, wake)) = server.table.admit(dup, accepted) else {
        refuse(&stream);
        return;
    };
    let server = server.clone();
    tokio::spawn(async move {
        serve_connection(&server, stream, id, wake).await;
        server.table.remove(id);
    });
}

/// Answers 503 without reading the request: nonblocking, so a client that does not read cannot
/// stall accepting (a short response fits the socket buffer).
fn refuse(stream: &TcpStream) {
    let message =
        format!("the API serves at most {CONNECTIONS_MAX} connections at once; retry shortly");
    if let Ok(fd) = stream.as_fd().try_clone_to_owned() {
        send_raw(&fd, &raw_error(503, "unavailable", &message, true));
        shutdown_write(&fd);
    }
}

fn shutdown_write(fd: &OwnedFd) {
    use std::os::fd::AsRawFd;
    // SAFETY: shutdown(2) on a socket this handle owns.
    unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_WR) };
}

/// Serves one connection with hyper until it ends, is evicted, misses its deadline, or the
/// server stops (then it finishes the request in flight and closes).
async fn serve_connection(
    server: &Arc<Server>,
    stream: TcpStream,
    id: u64,
    wake: Arc<tokio::sync::Notify>,
) {
    let _ = stream.set_nodelay(true);
    let service = {
        let server = server.clone();
        hyper::service::service_fn(move |request| {
            let server = server.clone();
            async move {
                server.table.set(id, Phase::Busy);
                let mut router = server.router.clone();
                let response = tower::Service::call(&mut router, request).await;
                server.table.set(id, Phase::Idle(Instant::now()));
                response
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(server.header_timeout + HYPER_HEADER_SLACK)
        .max_headers(HEADERS_MAX)
        .max_buf_size(HEAD_BYTES_MAX.max(8192))
        .max_header_size(HEAD_BYTES_MAX);
    let connection = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(connection);
    let mut stop = server.stop.clone();
    let mut stopping = *stop.borrow();
    if stopping {
        connection.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            _ = connection.as_mut() => return,
            _ = watch_deadline(server, id, &wake) => {}
            changed = stop.changed(), if !stopping => {
                stopping = true;
                if changed.is_ok() {
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Waits until `id`'s deadline passes (then answers or closes it) or its phase changes.
async fn watch_deadline(server: &Server, id: u64, wake: &tokio::sync::Notify) {
    let (deadline, answer) = match server.table.phase(id) {
        Some(Phase::Head(since)) => (since + server.header_timeout, true),
        Some(Phase::Idle(since)) => (since + IDLE_TIMEOUT, false),
        Some(Phase::Busy) | None => {
            wake.notified().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::time::sleep_until(deadline.into()) => {
            // Re-check: the phase may have changed at the very deadline.
            if server.table.phase(id).is_some_and(|p| p != Phase::Busy) {
                let bytes = answer.then(|| head_timeout_answer(server.header_timeout));
                server.table.close(id, bytes.as_deref());
            }
            // The shut-down socket ends hyper's connection; wait for that, not for a new phase.
            wake.notified().await;
        }
        _ = wake.notified() => {}
    }
}

/// The 408 for a first request head that did not arrive whole in time.
fn head_timeout_answer(limit: Duration) -> Vec<u8> {
    let message = format!(
        "the request head did not arrive whole within {} ms (api.header_timeout_ms)",
        limit.as_millis()
    );
    raw_error(408, "timeout", &message, false)
}
