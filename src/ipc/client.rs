//! Blocking client of the daemon socket, with connect and read timeouts. Used by the CLI.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;

use super::protocol::{Request, RequestEnvelope, ResponseEnvelope, PROTOCOL_VERSION};

/// How long connecting may wait while the daemon's accept queue is full.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between connect attempts while the accept queue is full.
const CONNECT_RETRY: Duration = Duration::from_millis(5);

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
    /// The socket's mode or a directory above it keeps this user out (exit code 1: the daemon
    /// may well be running; starting another would not help).
    #[error("permission denied connecting to {}: the daemon's socket is open only to its user and, with daemon.socket_group, that group's members; run the command as the daemon's user or root, or ask its owner to set daemon.socket_group and add you to the group (`usermod -aG <group> <you>`)", path.display())]
    Denied {
        /// The socket path tried.
        path: PathBuf,
        /// What connect said.
        #[source]
        source: std::io::Error,
    },
    /// The daemon accepted but the exchange failed.
    #[error("talking to the daemon at {} failed; if this persists, restart it with `xrat daemon stop` and `xrat daemon start`", path.display())]
    Io {
        /// The socket path.
        path: PathBuf,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// The daemon's accept queue stayed full.
    #[error("the daemon at {} accepted no connection within {} ms (its queue is full); it may be overloaded or stuck: check {}", path.display(), timeout.as_millis(), log.display())]
    ConnectTimeout {
        /// The socket path.
        path: PathBuf,
        /// The connect timeout that elapsed.
        timeout: Duration,
        /// Where the daemon logs.
        log: PathBuf,
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
    #[error("the daemon at {} closed the connection without answering; it may have just exited: check `xrat daemon status`", path.display())]
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
    /// True when the daemon could not be reached at all (CLI exit code 3). A connection reset
    /// or closed before any reply counts: a daemon that just died can leave its listening socket
    /// alive for a moment (the kernel tears the ring down after the process is gone).
    pub fn is_unreachable(&self) -> bool {
        match self {
            ClientError::NotRunning { .. } | ClientError::Closed { .. } => true,
            ClientError::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ),
            _ => false,
        }
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
        let stream = connect_timeout(socket, CONNECT_TIMEOUT).map_err(|source| {
            if source.kind() == std::io::ErrorKind::TimedOut {
                ClientError::ConnectTimeout {
                    path: socket.to_path_buf(),
                    timeout: CONNECT_TIMEOUT,
                    log: log.to_path_buf(),
                }
            } else if source.kind() == std::io::ErrorKind::PermissionDenied {
                ClientError::Denied {
                    path: socket.to_path_buf(),
                    source,
                }
            } else {
                ClientError::NotRunning {
                    path: socket.to_path_buf(),
                    source,
                }
            }
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
        if let Err(source) = self.reader.get_mut().write_all(&line) {
            // A daemon that refused this connection (connection limit, shutting down) wrote its
            // answer before closing: read it rather than report a broken pipe.
            let refused = matches!(
                source.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            );
            let mut early = String::new();
            if refused && matches!(self.reader.read_line(&mut early), Ok(n) if n > 0) {
                if let Ok(reply) = serde_json::from_str(&early) {
                    return Ok(reply);
                }
            }
            return Err(self.io_error(source));
        }
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

    /// Sends `subscribe` and returns its answer; on success the connection carries the event
    /// stream from here on ([`Client::next_line`]), read without a timeout (a quiet daemon is
    /// not a stuck one).
    pub fn subscribe(
        &mut self,
        events: Vec<super::events::Category>,
    ) -> Result<ResponseEnvelope, ClientError> {
        let reply = self.call(Request::Subscribe { events })?;
        if reply.ok {
            let io = |source| ClientError::Io {
                path: self.path.clone(),
                source,
            };
            self.reader.get_ref().set_read_timeout(None).map_err(io)?;
        }
        Ok(reply)
    }

    /// The next line of a stream, without its newline; None once the daemon closed it.
    pub fn next_line(&mut self) -> Result<Option<String>, ClientError> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => Ok(None),
            Ok(_) => {
                line.truncate(line.trim_end_matches('\n').len());
                Ok(Some(line))
            }
            Err(source) => Err(self.io_error(source)),
        }
    }

    /// True when a whole line already waits in the buffer (a burst of events: a redraw can
    /// wait for its end).
    pub fn line_buffered(&self) -> bool {
        self.reader.buffer().contains(&b'\n')
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

/// Connects without blocking forever: a Unix socket whose accept queue is full answers EAGAIN to
/// a non-blocking connect, so retry until `timeout`, then report `TimedOut`.
fn connect_timeout(path: &Path, timeout: Duration) -> std::io::Result<UnixStream> {
    use std::os::fd::FromRawFd;
    use std::os::unix::ffi::OsStrExt;

    // SAFETY: zeroed sockaddr_un is valid; we fill family and a NUL-terminated path.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    if bytes.len() >= addr.sun_path.len() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "socket path longer than sun_path",
        ));
    }
    for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    let deadline = std::time::Instant::now() + timeout;
    loop {
        // SAFETY: plain socket(2); the fd is owned by the UnixStream right away.
        let fd = unsafe {
            libc::socket(
                libc::AF_UNIX,
                libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh socket nobody else owns.
        let stream = unsafe { UnixStream::from_raw_fd(fd) };
        // SAFETY: `addr` is a valid sockaddr_un and the length covers it.
        let rc = unsafe {
            libc::connect(
                fd,
                (&addr as *const libc::sockaddr_un).cast(),
                std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            stream.set_nonblocking(false)?;
            return Ok(stream);
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EAGAIN) {
            return Err(err);
        }
        if std::time::Instant::now() >= deadline {
            return Err(std::io::Error::from(std::io::ErrorKind::TimedOut));
        }
        std::thread::sleep(CONNECT_RETRY);
    }
}
