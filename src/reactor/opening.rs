//! The openings the front observes, as pure parsers (mini-redis style: `Ok(None)` = incomplete,
//! `Err` = malformed, `Ok(Some(..))` = one complete message and its length). The client's side:
//! the SOCKS5 greeting and request, or an HTTP proxy request head. The core's side: the SOCKS5
//! method reply and CONNECT reply, or an HTTP status line. The front forwards these bytes as
//! they are; parsing only tells where the handshake ends and whether the member failed it.

use thiserror::Error;

/// SOCKS protocol version 5.
pub const SOCKS5: u8 = 5;
/// SOCKS5 "no authentication required".
pub const SOCKS5_NO_AUTH: u8 = 0;
/// The SOCKS5 method reply choosing "no authentication".
pub const SOCKS5_NO_AUTH_REPLY: [u8; 2] = [SOCKS5, SOCKS5_NO_AUTH];
/// SOCKS5 reply: general SOCKS server failure.
pub const SOCKS5_GENERAL_FAILURE: u8 = 1;
/// Header fields an HTTP request or response head may carry before it is called malformed.
pub const HTTP_HEADERS_MAX: usize = 64;

const ATYP_IPV4: u8 = 1;
const ATYP_DOMAIN: u8 = 3;
const ATYP_IPV6: u8 = 4;

/// Why an opening could not be parsed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum OpeningError {
    /// The first byte is not SOCKS version 5.
    #[error("not socks5: version byte {0:#04x}")]
    Version(u8),
    /// A greeting that offers no method.
    #[error("socks5 greeting offers no authentication method")]
    NoMethods,
    /// A reserved byte that must be zero is not.
    #[error("socks5 reserved byte is {0:#04x}, not 0")]
    Reserved(u8),
    /// An address type other than IPv4, domain or IPv6.
    #[error("socks5 address type {0} is unknown")]
    AddressType(u8),
    /// A domain name of length zero.
    #[error("socks5 domain name is empty")]
    EmptyDomain,
    /// `httparse` refused the head.
    #[error("malformed http head: {0}")]
    Http(String),
    /// A request to a proxy that is neither CONNECT nor carries an absolute URI.
    #[error("http proxy request for {0:?} is neither CONNECT nor an absolute http:// URI")]
    NotProxyRequest(String),
}

/// A complete SOCKS5 greeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Greeting {
    /// Its length in bytes.
    pub len: usize,
    /// Whether it offers "no authentication" (the only method the internal inbounds take).
    pub no_auth: bool,
}

/// A complete SOCKS5 request (or reply: the layout is the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocksMessage {
    /// Its length in bytes.
    pub len: usize,
    /// The command (request) or reply code (reply).
    pub code: u8,
}

/// A complete HTTP request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpRequestHead {
    /// Its length in bytes, through the blank line.
    pub len: usize,
    /// CONNECT (a tunnel: the core answers a status first) rather than a plain request.
    pub connect: bool,
}

/// A complete HTTP response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpResponseHead {
    /// Its length in bytes, through the blank line.
    pub len: usize,
    /// The status code.
    pub status: u16,
}

/// The client's SOCKS5 greeting: VER NMETHODS METHODS...
pub fn parse_greeting(buf: &[u8]) -> Result<Option<Greeting>, OpeningError> {
    let Some(&version) = buf.first() else {
        return Ok(None);
    };
    if version != SOCKS5 {
        return Err(OpeningError::Version(version));
    }
    let Some(&count) = buf.get(1) else {
        return Ok(None);
    };
    if count == 0 {
        return Err(OpeningError::NoMethods);
    }
    let len = 2 + count as usize;
    let Some(methods) = buf.get(2..len) else {
        return Ok(None);
    };
    Ok(Some(Greeting {
        len,
        no_auth: methods.contains(&SOCKS5_NO_AUTH),
    }))
}

/// The client's SOCKS5 request or the core's reply: VER CMD|REP RSV ATYP ADDR PORT.
pub fn parse_socks_message(buf: &[u8]) -> Result<Option<SocksMessage>, OpeningError> {
    let Some(&version) = buf.first() else {
        return Ok(None);
    };
    if version != SOCKS5 {
        return Err(OpeningError::Version(version));
    }
    if buf.len() < 4 {
        return Ok(None);
    }
    if buf[2] != 0 {
        return Err(OpeningError::Reserved(buf[2]));
    }
    let address = match buf[3] {
        ATYP_IPV4 => 4,
        ATYP_IPV6 => 16,
        ATYP_DOMAIN => match buf.get(4) {
            None => return Ok(None),
            Some(0) => return Err(OpeningError::EmptyDomain),
            Some(&n) => 1 + n as usize,
        },
        other => return Err(OpeningError::AddressType(other)),
    };
    let len = 4 + address + 2;
    if buf.len() < len {
        return Ok(None);
    }
    Ok(Some(SocksMessage { len, code: buf[1] }))
}

/// The core's SOCKS5 method reply: VER METHOD. Returns the method.
pub fn parse_method_reply(buf: &[u8]) -> Result<Option<u8>, OpeningError> {
    match buf {
        [] => Ok(None),
        [version, ..] if *version != SOCKS5 => Err(OpeningError::Version(*version)),
        [_] => Ok(None),
        [_, method, ..] => Ok(Some(*method)),
    }
}

/// The client's HTTP proxy request head: CONNECT host:port, or a request for an absolute URI.
pub fn parse_http_request(buf: &[u8]) -> Result<Option<HttpRequestHead>, OpeningError> {
    let mut headers = [httparse::EMPTY_HEADER; HTTP_HEADERS_MAX];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(buf) {
        Ok(httparse::Status::Partial) => return Ok(None),
        Ok(httparse::Status::Complete(len)) => len,
        Err(e) => return Err(OpeningError::Http(e.to_string())),
    };
    let connect = request.method == Some("CONNECT");
    let target = request.path.unwrap_or_default();
    let absolute = target.len() > 7 && target[..7].eq_ignore_ascii_case("http://");
    if !connect && !absolute {
        return Err(OpeningError::NotProxyRequest(target.to_string()));
    }
    Ok(Some(HttpRequestHead { len, connect }))
}

/// The core's HTTP response head (the answer to a CONNECT).
pub fn parse_http_response(buf: &[u8]) -> Result<Option<HttpResponseHead>, OpeningError> {
    let mut headers = [httparse::EMPTY_HEADER; HTTP_HEADERS_MAX];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(buf) {
        Ok(httparse::Status::Partial) => Ok(None),
        Ok(httparse::Status::Complete(len)) => Ok(Some(HttpResponseHead {
            len,
            status: response.code.unwrap_or(0),
        })),
        Err(e) => Err(OpeningError::Http(e.to_string())),
    }
}

/// A SOCKS5 reply with `code` and an unspecified (0.0.0.0:0) bound address.
pub fn socks_reply(code: u8) -> [u8; 10] {
    [SOCKS5, code, 0, ATYP_IPV4, 0, 0, 0, 0, 0, 0]
}

/// A complete HTTP response with a one-line plain-text body, closing the connection.
pub fn http_response(status: u16, reason: &str, line: &str) -> Vec<u8> {
    let body = format!("{line}\n");
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
#[path = "opening_tests.rs"]
mod tests;
