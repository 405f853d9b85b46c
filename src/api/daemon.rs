//! The API's ways to the daemon and the store: one request over the blocking client on
//! tokio's blocking pool (the same client the CLI uses, so errors read the same), store reads
//! there too, and the `subscribe` event stream over an async Unix socket.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::UnixStream;

use crate::ipc::client::{Client, ClientError, CONNECT_TIMEOUT, READ_TIMEOUT_DEFAULT};
use crate::ipc::protocol::{Request, ResponseEnvelope, PROTOCOL_VERSION};
use crate::paths::Paths;
use crate::store::{Store, StoreError};

/// Event categories a stream asks `subscribe` for (the contract's names).
pub const CATEGORIES: [&str; 6] = ["session", "health", "rotation", "config", "pool", "relay"];

/// One request over a fresh daemon connection: the API keeps nothing between requests.
pub async fn call(
    paths: &Paths,
    request: Request,
    timeout: Duration,
) -> Result<ResponseEnvelope, ClientError> {
    let socket = paths.checked_socket().map_err(|e| ClientError::Io {
        path: paths.socket(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()),
    })?;
    let log = paths.daemon_log();
    let joined = tokio::task::spawn_blocking(move || {
        Client::connect(&socket, &log, timeout).and_then(|mut client| client.call(request))
    })
    .await;
    joined.unwrap_or_else(|e| {
        Err(ClientError::Io {
            path: paths.socket(),
            source: std::io::Error::other(format!("the API's daemon call failed: {e}")),
        })
    })
}

/// A successful daemon answer's payload; anything else as (HTTP status, message).
pub async fn payload(
    paths: &Paths,
    request: Request,
    timeout: Duration,
) -> Result<Value, (u16, String)> {
    match call(paths, request, timeout).await {
        Ok(envelope) if envelope.ok => Ok(envelope.payload),
        Ok(envelope) => Err((super::v1::http_status(envelope.code), envelope.message)),
        Err(e) => Err((super::v1::client_failure_status(&e).0, e.to_string())),
    }
}

/// Runs `read` on a fresh store connection on the blocking pool; the error is its message.
pub async fn store<T, F>(paths: &Paths, read: F) -> Result<T, String>
where
    T: Send + 'static,
    F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
{
    let path = paths.database();
    let joined =
        tokio::task::spawn_blocking(move || Store::open(&path).and_then(|s| read(&s))).await;
    match joined {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(format!("the API's store read failed: {e}")),
    }
}

/// An open `subscribe` stream: its snapshot, then one event per [`Subscription::next`].
pub struct Subscription {
    /// The first response's payload (`categories`, `seq`, `runtime_status`, ...).
    pub snapshot: Value,
    lines: Lines<BufReader<UnixStream>>,
}

/// Why no stream: the daemon answered with a code (`400` from a daemon without `subscribe`),
/// or could not be reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscribeError {
    /// The daemon answered, but not 200.
    Refused {
        /// Its protocol code.
        code: u16,
        /// Its message.
        message: String,
    },
    /// No exchange: not running, timed out, garbled.
    Unreachable(String),
}

/// Opens a `subscribe` stream for `categories` (empty: all).
pub async fn subscribe(paths: &Paths, categories: &[&str]) -> Result<Subscription, SubscribeError> {
    let unreachable = |what: String| SubscribeError::Unreachable(what);
    let socket = paths
        .checked_socket()
        .map_err(|e| unreachable(e.to_string()))?;
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, UnixStream::connect(&socket))
        .await
        .map_err(|_| unreachable(format!("connecting to {} timed out", socket.display())))?
        .map_err(|e| unreachable(format!("daemon not running at {}: {e}", socket.display())))?;
    let request = serde_json::json!({
        "protocol_version": PROTOCOL_VERSION,
        "id": 1,
        "request": {"type": "subscribe", "events": categories},
    });
    let mut line = request.to_string();
    line.push('\n');
    let mut reader = BufReader::new(stream);
    reader
        .get_mut()
        .write_all(line.as_bytes())
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let mut lines = reader.lines();
    let first = tokio::time::timeout(READ_TIMEOUT_DEFAULT, lines.next_line())
        .await
        .map_err(|_| unreachable("the daemon did not answer subscribe in time".into()))?
        .map_err(|e| unreachable(e.to_string()))?
        .ok_or_else(|| unreachable("the daemon closed the subscribe connection".into()))?;
    let envelope: ResponseEnvelope =
        serde_json::from_str(&first).map_err(|e| unreachable(format!("bad reply: {e}")))?;
    if envelope.code != 200 {
        return Err(SubscribeError::Refused {
            code: envelope.code,
            message: envelope.message,
        });
    }
    Ok(Subscription {
        snapshot: envelope.payload,
        lines,
    })
}

impl Subscription {
    /// The next event; None when the daemon closed the stream (it was lagged, or stopped).
    /// A line that is not JSON is skipped.
    pub async fn next(&mut self) -> Option<Value> {
        loop {
            let line = self.lines.next_line().await.ok()??;
            if let Ok(event) = serde_json::from_str(&line) {
                return Some(event);
            }
        }
    }
}
