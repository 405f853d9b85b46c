//! The benchmark client: one code path for every server, so differences in the numbers come from
//! the servers alone.
//!
//! It is blocking, single-threaded and allocation-free in steady state: the client shares a CPU
//! with criterion, and whatever it costs is added to every server's time alike.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use xrat::ipc::protocol::ResponseEnvelope;

/// How long a read may wait for a reply before the bench gives up on the server: a hung server
/// must fail the run, not stall it.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// Bytes a connection buffers while looking for the end of a reply line. A ping reply is about
/// 150 bytes; a pipelined batch of 16 fits many times over.
const READ_BUFFER_BYTES: usize = 16 * 1024;

/// What every correct ping reply starts with, up to the id (both serde's field order and the
/// daemon's encoder produce it).
const REPLY_HEAD: &[u8] = b"{\"protocol_version\":1,\"id\":";

/// What follows the id of a successful reply.
const REPLY_OK: &[u8] = b",\"ok\":true,\"code\":200,";

/// Splits a byte stream into lines without allocating per line.
pub struct Lines {
    buf: Box<[u8]>,
    head: usize,
    tail: usize,
}

impl Lines {
    /// An empty line buffer.
    pub fn new() -> Lines {
        Lines {
            buf: vec![0; READ_BUFFER_BYTES].into_boxed_slice(),
            head: 0,
            tail: 0,
        }
    }

    /// Forgets buffered bytes, so the buffer can serve a new connection.
    pub fn clear(&mut self) {
        self.head = 0;
        self.tail = 0;
    }

    /// The next line from `stream`, without its `\n`.
    pub fn next<'a>(&'a mut self, stream: &mut impl Read) -> io::Result<&'a [u8]> {
        loop {
            if let Some(at) = self.buf[self.head..self.tail]
                .iter()
                .position(|&b| b == b'\n')
            {
                let line = self.head..self.head + at;
                self.head += at + 1;
                return Ok(&self.buf[line]);
            }
            if self.head > 0 {
                self.buf.copy_within(self.head..self.tail, 0);
                self.tail -= self.head;
                self.head = 0;
            }
            if self.tail == self.buf.len() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "reply line longer than the client's buffer",
                ));
            }
            let n = stream.read(&mut self.buf[self.tail..])?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "server closed the connection before replying",
                ));
            }
            self.tail += n;
        }
    }
}

/// A persistent connection with its own line buffer (pipelined replies of several connections
/// must not mix).
pub struct Conn {
    stream: UnixStream,
    lines: Lines,
}

impl Conn {
    /// Connects to a server's socket.
    pub fn connect(path: &Path) -> io::Result<Conn> {
        Ok(Conn {
            stream: open(path)?,
            lines: Lines::new(),
        })
    }
}

/// Connects with the reply timeout set.
fn open(path: &Path) -> io::Result<UnixStream> {
    let stream = UnixStream::connect(path)?;
    stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
    Ok(stream)
}

/// Request ids and the reusable buffers of one client.
pub struct Client {
    next_id: u64,
    out: Vec<u8>,
    lines: Lines,
}

impl Client {
    /// A client whose first request id is 1.
    pub fn new() -> Client {
        Client {
            next_id: 1,
            out: Vec::with_capacity(READ_BUFFER_BYTES),
            lines: Lines::new(),
        }
    }

    /// One round trip on a persistent connection.
    pub fn ping(&mut self, conn: &mut Conn) -> io::Result<()> {
        let id = self.take_id();
        self.out.clear();
        push_ping(&mut self.out, id);
        conn.stream.write_all(&self.out)?;
        check_reply(conn.lines.next(&mut conn.stream)?, id)
    }

    /// Connect, one ping, read the reply, close.
    pub fn connect_ping_close(&mut self, path: &Path) -> io::Result<()> {
        let mut stream = open(path)?;
        let id = self.take_id();
        self.out.clear();
        push_ping(&mut self.out, id);
        stream.write_all(&self.out)?;
        self.lines.clear();
        check_reply(self.lines.next(&mut stream)?, id)
    }

    /// Writes `depth` pings to every connection (one write each), then reads every reply.
    ///
    /// All batches go out before any reply is read, so the server has every connection's work
    /// queued at once; a batch and its replies are far below a socket buffer, so this cannot
    /// deadlock.
    pub fn pipeline(&mut self, conns: &mut [Conn], depth: u64) -> io::Result<()> {
        let first = self.next_id;
        for conn in conns.iter_mut() {
            self.out.clear();
            for _ in 0..depth {
                let id = self.take_id();
                push_ping(&mut self.out, id);
            }
            conn.stream.write_all(&self.out)?;
        }
        let mut id = first;
        for conn in conns.iter_mut() {
            for _ in 0..depth {
                check_reply(conn.lines.next(&mut conn.stream)?, id)?;
                id += 1;
            }
        }
        Ok(())
    }

    /// The next request id; ids never repeat within a client.
    fn take_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }
}

/// Appends `{"protocol_version":1,"id":<id>,"request":{"type":"daemon_ping"}}\n`.
fn push_ping(out: &mut Vec<u8>, id: u64) {
    let mut digits = [0u8; 20];
    out.extend_from_slice(b"{\"protocol_version\":1,\"id\":");
    out.extend_from_slice(decimal(id, &mut digits));
    out.extend_from_slice(b",\"request\":{\"type\":\"daemon_ping\"}}\n");
}

/// Decimal digits of `n`, written into `digits`, without going through `fmt` (whose cost would
/// rival the rest of the client's work).
fn decimal(mut n: u64, digits: &mut [u8; 20]) -> &[u8] {
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &digits[at..]
}

/// Checks that `line` is the successful reply to request `id`.
///
/// The fast path compares bytes of the compact form every server here writes; anything else
/// (other spacing or field order) is parsed properly, so a valid reply is never rejected.
pub fn check_reply(line: &[u8], id: u64) -> io::Result<()> {
    let mut digits = [0u8; 20];
    if line
        .strip_prefix(REPLY_HEAD)
        .and_then(|rest| rest.strip_prefix(decimal(id, &mut digits)))
        .is_some_and(|tail| tail.starts_with(REPLY_OK))
    {
        return Ok(());
    }
    let bad = |why: &str| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "reply to request {id} {why}: {}",
                String::from_utf8_lossy(line)
            ),
        )
    };
    let reply: ResponseEnvelope =
        serde_json::from_slice(line).map_err(|_| bad("is not a response envelope"))?;
    if reply.id != Some(serde_json::Value::from(id)) {
        return Err(bad("carries another id"));
    }
    if !reply.ok || reply.code != 200 {
        return Err(bad("is not a success"));
    }
    Ok(())
}
