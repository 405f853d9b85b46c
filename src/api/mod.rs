//! The standalone HTTP API (`xrat api serve`), a client of the daemon socket.
//!
//! Two dialects on one port: xrat's own `/v1` routes, whose bodies are the daemon's response
//! envelopes, and a Clash-compatible API (`/version`, `/proxies`, `/configs`, WebSocket streams)
//! so Clash dashboards can watch and steer the daemon. It keeps no state of its own: each request
//! asks the daemon (or reads the store). It runs on axum/hyper over a single-threaded tokio
//! runtime in its own process, so the daemon stays on its ring. `docs/API.md` lists the routes,
//! the limits and why the API is a separate process.

// Handlers return `Result<_, Response>` so an early error is the answer itself; a response is
// made once per request, so boxing it would only add an allocation.
#![allow(clippy::result_large_err)]

mod auth;
mod clash;
mod daemon;
mod dashboard;
mod frames;
mod gate;
mod server;
mod slots;
mod streams;
#[cfg(test)]
mod tests;
mod v1;
mod views;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

use crate::paths::PathsError;

pub use auth::{Token, TOKEN_BYTES, TOKEN_FILE};
pub use dashboard::UI_PREFIX;
pub use server::{serve, SHUTDOWN_GRACE};
pub use slots::CONNECTIONS_MAX;
pub use v1::{http_status, ROTATE_TIMEOUT, RUNTIME_OP_TIMEOUT};

/// Most bytes of a request head (request line and headers); hyper answers 431 past it.
pub const HEAD_BYTES_MAX: usize = 8 * 1024;
/// Most headers in one request; hyper answers 431 past it.
pub const HEADERS_MAX: usize = 32;
/// Most bytes of a request body; the daemon's own frame limit is the same 64 KiB.
pub const BODY_BYTES_MAX: usize = 64 * 1024;
/// Default of `api.header_timeout_ms`: a connection's first request head must arrive whole
/// within this of the accept, or it gets 408 (a slow client cannot hold a slot by trickling).
pub const HEADER_TIMEOUT: Duration = Duration::from_millis(5000);
/// A body must arrive whole within this once its head has arrived, or it gets 408.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Keep-alive: a connection idle this long after a response (or still writing one to a client
/// that does not read) is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// WebSocket streams open at once (a dashboard opens four or five); past it an upgrade gets 503.
pub const WEBSOCKETS_MAX: usize = 32;

/// Where `xrat api serve` listens unless `--listen` says otherwise: loopback, so the default
/// never exposes the API; the port is arbitrary (another is one `--listen` away).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8787";

/// How to run the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeOptions {
    /// The address to bind; port 0 picks a free port (the start line names it).
    pub listen: SocketAddr,
    /// Allow an address other than loopback.
    pub allow_remote: bool,
    /// Print the start and stop lines as JSON objects (`xrat api serve --json`).
    pub json: bool,
    /// A dashboard's static files, served at [`dashboard::UI_PREFIX`] (`--dashboard DIR`).
    pub dashboard: Option<PathBuf>,
}

/// Why the API server could not start or stopped with an error.
#[derive(Debug, Error)]
pub enum ApiError {
    /// `--listen` names a non-loopback address without `--allow-remote`.
    #[error("refusing to listen on {addr}: it is not a loopback address (127.0.0.0/8 or ::1), so other machines could reach the API; add --allow-remote if that is intended (the API speaks plain HTTP, so put TLS in front of it)")]
    NotLoopback {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// Binding the listening socket failed.
    #[error("cannot listen on {addr}: {source}; is another `xrat api serve` running? pick another address with --listen")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What bind said.
        #[source]
        source: io::Error,
    },
    /// Reading or creating the token file failed.
    #[error("cannot use the API token file {}: {detail}", path.display())]
    Token {
        /// The token file.
        path: PathBuf,
        /// What went wrong and what to do.
        detail: String,
    },
    /// The XRAT root could not be resolved or created.
    #[error(transparent)]
    Paths(#[from] PathsError),
    /// `config.toml` is invalid (the message names the key and the file).
    #[error(transparent)]
    Settings(#[from] crate::settings::SettingsError),
    /// `--dashboard DIR` is not a directory with an index.html.
    #[error("cannot serve the dashboard in {}: {detail}", dir.display())]
    Dashboard {
        /// The directory given.
        dir: PathBuf,
        /// What is wrong and what to do.
        detail: String,
    },
    /// An OS call the server loop needs failed.
    #[error("the API server failed in {call}: {source}")]
    Os {
        /// The call that failed.
        call: &'static str,
        /// Its error.
        #[source]
        source: io::Error,
    },
}

/// True for 127.0.0.0/8 and ::1, including the IPv4-mapped form `::ffff:127.x.y.z`.
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback(),
    }
}

/// Checks the binding rule: loopback, or anything when `allow_remote` is set.
pub fn check_listen(options: &ServeOptions) -> Result<(), ApiError> {
    if options.allow_remote || is_loopback(options.listen.ip()) {
        Ok(())
    } else {
        Err(ApiError::NotLoopback {
            addr: options.listen,
        })
    }
}
