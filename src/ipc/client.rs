//! Blocking client of the daemon socket, with connect and read timeouts. Used by the CLI.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;

use super::protocol::{Request, RequestEnvelope, ResponseEnvelope, PROTOCOL_VERSION};

/// How long a plain request may take before the client gives up.
pub const READ_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);

/// Client failures.
#[derive(Debug, Error)]
pub enum ClientError {
    /// Nothing listens at the socket path.
    #[error("daemon not running at {}; start it with `xrat daemon start`", path.display())]
    NotRunning {
        /// The socket path tried.
        path: PathBuf,
        /// What connect said.
        #[source]
        source: std::io::Error,
    },
    /// The daemon accepted but the exchange failed.
    #[error("talking to the daemon at {} failed", path.display())]
    Io {
        /// The socket path.
        path: PathBuf,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// The daemon did not answer in time.
    #[error("the daemon at {} did not answer within {} ms; check {} or restart it", path.display(), timeout.as_millis(), log.display())]
    Timeout {
        /// The socket path.
        path: PathBuf,
        /// The read timeout that elapsed.
        timeout: Duration,
        /// Where the daemon logs.
        log: PathBuf,
    },
    /// The daemon closed the connection without a reply.
    #[error("the daemon at {} closed the connection without answering", path.display())]
    Closed {
        /// The socket path.
        path: PathBuf,
    },
    /// The reply was not protocol v1 JSON.
    #[error("the daemon at {} sent a reply that is not protocol v1: {line}", path.display())]
    BadReply {
        /// The socket path.
        path: PathBuf,
        /// The reply line (cut to a sane length).
        line: String,
    },
}

impl ClientError {
    /// True when the daemon could not be reached at all (CLI exit code 3).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, ClientError::NotRunning { .. })
    }
}

/// One connection to the daemon; requests are sent one at a time.
#[derive(Debug)]
pub struct Client {
    path: PathBuf,
    log: PathBuf,
    reader: BufReader<UnixStream>,
    next_id: u64,
}

impl Client {
    /// Connects to the socket; `log` is named in timeout errors.
    pub fn connect(
        socket: &Path,
        log: &Path,
        read_timeout: Duration,
    ) -> Result<Client, ClientError> {
        let stream = UnixStream::connect(socket).map_err(|source| ClientError::NotRunning {
            path: socket.to_path_buf(),
            source,
        })?;
        let io = |source| ClientError::Io {
            path: socket.to_path_buf(),
            source,
        };
        stream.set_read_timeout(Some(read_timeout)).map_err(io)?;
        stream.set_write_timeout(Some(read_timeout)).map_err(io)?;
        Ok(Client {
            path: socket.to_path_buf(),
            log: log.to_path_buf(),
            reader: BufReader::new(stream),
            next_id: 1,
        })
    }

    /// Sends one request and waits for its response.
    pub fn call(&mut self, request: Request) -> Result<ResponseEnvelope, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let envelope = RequestEnvelope {
            protocol_version: PROTOCOL_VERSION,
            id: Some(id.into()),
            request,
        };
        let mut line = serde_json::to_vec(&envelope).expect("requests serialize");
        line.push(b'\n');
        self.reader
            .get_mut()
            .write_all(&line)
            .map_err(|source| self.io_error(source))?;
        let mut reply = String::new();
        match self.reader.read_line(&mut reply) {
            Ok(0) => Err(ClientError::Closed {
                path: self.path.clone(),
            }),
            Ok(_) => serde_json::from_str(&reply).map_err(|_| ClientError::BadReply {
                path: self.path.clone(),
                line: reply.chars().take(200).collect(),
            }),
            Err(source) => Err(self.io_error(source)),
        }
    }

    fn io_error(&self, source: std::io::Error) -> ClientError {
        match source.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => ClientError::Timeout {
                path: self.path.clone(),
                timeout: self
                    .reader
                    .get_ref()
                    .read_timeout()
                    .ok()
                    .flatten()
                    .unwrap_or_default(),
                log: self.log.clone(),
            },
            _ => ClientError::Io {
                path: self.path.clone(),
                source,
            },
        }
    }
}
