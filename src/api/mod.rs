//! The standalone HTTP/1.1 JSON API (`xrat api serve`), a client of the daemon socket.
//!
//! It keeps no state of its own: each request opens one connection to the daemon (or the store,
//! for `/v1/configs`) and the daemon's response envelope goes back as the HTTP body. The server is
//! small and blocking: one thread per connection, at most [`CONNECTIONS_MAX`] at once, every read
//! and write bounded by a timeout; at a full house the oldest connection still reading a request
//! is evicted for a new one. `docs/API.md` says why this and not the daemon's io_uring
//! reactor, and lists the endpoints.

mod auth;
mod http;
mod routes;
mod server;
#[cfg(test)]
mod tests;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use thiserror::Error;

use crate::paths::PathsError;

pub use auth::{Token, TOKEN_BYTES, TOKEN_FILE};
pub use http::{
    Deadlines, BODY_BYTES_MAX, BODY_TIMEOUT, HEADERS_MAX, HEADER_TIMEOUT, HEAD_BYTES_MAX,
    IDLE_TIMEOUT, WRITE_TIMEOUT,
};
pub use routes::{http_status, ROTATE_TIMEOUT, RUNTIME_OP_TIMEOUT};
pub use server::{serve, CONNECTIONS_MAX, SHUTDOWN_GRACE, THREADS_MAX};

/// Where `xrat api serve` listens unless `--listen` says otherwise: loopback, so the default
/// never exposes the API; the port is arbitrary (another is one `--listen` away).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8787";

/// How to run the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeOptions {
    /// The address to bind; port 0 picks a free port (the start line names it).
    pub listen: SocketAddr,
    /// Allow an address other than loopback.
    pub allow_remote: bool,
    /// Print the start and stop lines as JSON objects (`xrat api serve --json`).
    pub json: bool,
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
