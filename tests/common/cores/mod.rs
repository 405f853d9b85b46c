//! Real proxy cores on loopback for the end-to-end tests (DESIGN §8): finding the V2Ray,
//! sing-box and mihomo binaries, remote proxy servers built from them, a local HTTP target,
//! and a minimal SOCKS5 client. Everything listens on and dials 127.0.0.1 only; every child process is killed
//! and reaped on drop; every wait is bounded.

use std::time::Duration;

/// Read/write timeout of every socket here, and the whole-request deadline of the SOCKS client.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a remote server may take to accept on its port.
const READY_LIMIT: Duration = Duration::from_secs(5);
/// How long a core's config check may run before it is killed.
const CHECK_LIMIT: Duration = Duration::from_secs(10);
/// Most header bytes the HTTP target reads from one request.
const MAX_REQUEST: usize = 16 * 1024;

mod bins;
mod handshake;
mod http;
mod mihomo;
mod newer;
mod remote;

// Each test crate uses a different subset of these.
#[allow(unused_imports)]
pub use bins::*;
#[allow(unused_imports)]
pub use handshake::*;
#[allow(unused_imports)]
pub use http::*;
#[allow(unused_imports)]
pub use mihomo::*;
#[allow(unused_imports)]
pub use newer::*;
#[allow(unused_imports)]
pub use remote::*;
