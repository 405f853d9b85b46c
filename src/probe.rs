//! The health probe's protocol, sans-IO: SOCKS5 (no auth) CONNECT to the probe URL's host, then
//! an HTTP/1.1 GET whose status line decides. The reactor feeds it events (connected, sent,
//! received bytes, end of stream) and carries out the actions it returns, so every byte of the
//! exchange is unit-tested without sockets.

use thiserror::Error;

/// Longest HTTP status line (and SOCKS reply) the probe waits for before giving up.
pub const PROBE_RESPONSE_BYTES_MAX: usize = 4096;

/// Probe URL problems.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ProbeUrlError {
    /// Not parseable, or not http.
    #[error("health.probe_url {url:?} is not usable: {reason}")]
    Invalid {
        /// The URL.
        url: String,
        /// What is wrong and what is expected.
        reason: String,
    },
}

/// Where a probe goes, parsed once from `health.probe_url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeTarget {
    /// Host name or address, as the SOCKS5 request carries it.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Path and query of the GET.
    pub path: String,
}

impl ProbeTarget {
    /// Parses an `http://` URL; https would need TLS inside the probe, which it does not speak.
    pub fn parse(url: &str) -> Result<ProbeTarget, ProbeUrlError> {
        let invalid = |reason: &str| ProbeUrlError::Invalid {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let parsed = url::Url::parse(url)
            .map_err(|e| invalid(&format!("{e}; expected http://host/path")))?;
        if parsed.scheme() != "http" {
            return Err(invalid(
                "only http:// probe URLs are supported (the probe does not speak TLS)",
            ));
        }
        let host = match parsed.host() {
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            Some(host) => host.to_string(),
            None => return Err(invalid("it has no host")),
        };
        let mut path = parsed.path().to_string();
        if let Some(query) = parsed.query() {
            path.push('?');
            path.push_str(query);
        }
        Ok(ProbeTarget {
            host,
            port: parsed.port_or_known_default().unwrap_or(80),
            path,
        })
    }
}

impl ProbeTarget {
    /// The URL as a probe fetches it: `http://host[:port]/path`.
    pub fn url(&self) -> String {
        format!("http://{}{}", host_header(self), self.path)
    }
}

/// A probe's failure as the session's health and the rotation history show it: names the probe
/// URL and, when the probe got through to the proxy, the setting to change if this machine
/// cannot reach that URL (offline, or a network that blocks it).
pub fn describe_failure(target: &ProbeTarget, why: &str, reached_proxy: bool) -> String {
    let url = target.url();
    if reached_proxy {
        format!(
            "probe {url} through the tunnel failed: {why}; if this machine cannot reach it, \
             set health.probe_url (see docs/SETTINGS.md)"
        )
    } else {
        format!("probe {url} failed: {why}")
    }
}

/// What happened on the probe's socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// The TCP connect to the SOCKS inbound succeeded.
    Connected,
    /// The last `Send` was written completely.
    Sent,
    /// Bytes arrived.
    Received(&'a [u8]),
    /// The peer closed.
    Eof,
}

/// What the reactor must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write these bytes, then report `Sent`.
    Send(Vec<u8>),
    /// Read, then report `Received` or `Eof`.
    Recv,
    /// The probe is over: the HTTP status, or why it failed.
    Finished(Result<u16, String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Start,
    Greeting,
    Method,
    Request,
    Reply,
    Get,
    Status,
    Done,
}

/// One probe's progress.
#[derive(Debug)]
pub struct Probe {
    target: ProbeTarget,
    stage: Stage,
    buf: Vec<u8>,
}

impl Probe {
    /// Where this probe goes.
    pub fn target(&self) -> &ProbeTarget {
        &self.target
    }

    /// A probe of `target`, before connecting.
    pub fn new(target: ProbeTarget) -> Probe {
        Probe {
            target,
            stage: Stage::Start,
            buf: Vec::new(),
        }
    }

    /// True once the TCP connect to the SOCKS inbound succeeded.
    pub fn is_connected(&self) -> bool {
        self.stage != Stage::Start
    }

    /// Advances on `event`.
    pub fn on_event(&mut self, event: Event<'_>) -> Action {
        match (self.stage, event) {
            (Stage::Start, Event::Connected) => self.send(Stage::Greeting, vec![5, 1, 0]),
            (Stage::Greeting, Event::Sent) => self.recv(Stage::Method),
            (Stage::Request, Event::Sent) => self.recv(Stage::Reply),
            (Stage::Get, Event::Sent) => self.recv(Stage::Status),
            (_, Event::Received(bytes)) => {
                self.buf.extend_from_slice(bytes);
                self.parse()
            }
            (stage, Event::Eof) => self.fail(format!(
                "the proxy closed the connection {}",
                stage_name(stage)
            )),
            (stage, event) => self.fail(format!("unexpected {event:?} {}", stage_name(stage))),
        }
    }

    fn send(&mut self, stage: Stage, bytes: Vec<u8>) -> Action {
        self.stage = stage;
        Action::Send(bytes)
    }

    fn recv(&mut self, stage: Stage) -> Action {
        self.stage = stage;
        Action::Recv
    }

    fn fail(&mut self, why: String) -> Action {
        self.stage = Stage::Done;
        Action::Finished(Err(why))
    }

    fn parse(&mut self) -> Action {
        if self.buf.len() > PROBE_RESPONSE_BYTES_MAX {
            return self.fail(format!(
                "response longer than {PROBE_RESPONSE_BYTES_MAX} bytes {}",
                stage_name(self.stage)
            ));
        }
        match self.stage {
            Stage::Method => self.parse_method(),
            Stage::Reply => self.parse_reply(),
            Stage::Status => self.parse_status(),
            stage => self.fail(format!("unexpected data {}", stage_name(stage))),
        }
    }

    fn parse_method(&mut self) -> Action {
        if self.buf.len() < 2 {
            return Action::Recv;
        }
        if self.buf[..2] != [5, 0] {
            return self.fail(format!(
                "the SOCKS inbound refused no-auth (answered {:?})",
                &self.buf[..2]
            ));
        }
        self.buf.drain(..2);
        let host = self.target.host.as_bytes();
        let Ok(len) = u8::try_from(host.len()) else {
            return self.fail("the probe host name is longer than 255 bytes".into());
        };
        let mut request = vec![5, 1, 0, 3, len];
        request.extend_from_slice(host);
        request.extend_from_slice(&self.target.port.to_be_bytes());
        self.send(Stage::Request, request)
    }

    fn parse_reply(&mut self) -> Action {
        if self.buf.len() < 5 {
            return Action::Recv;
        }
        if self.buf[1] != 0 {
            let why = socks_reply_meaning(self.buf[1]);
            return self.fail(format!(
                "SOCKS5 CONNECT to {}:{} failed: {why}",
                self.target.host, self.target.port
            ));
        }
        let total = match self.buf[3] {
            1 => 10,
            3 => 7 + self.buf[4] as usize,
            4 => 22,
            other => return self.fail(format!("SOCKS5 reply has unknown address type {other}")),
        };
        if self.buf.len() < total {
            return Action::Recv;
        }
        self.buf.drain(..total);
        let get = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: xrat-probe\r\nConnection: close\r\n\r\n",
            self.target.path,
            host_header(&self.target)
        );
        self.send(Stage::Get, get.into_bytes())
    }

    fn parse_status(&mut self) -> Action {
        let Some(end) = self.buf.windows(2).position(|w| w == b"\r\n") else {
            return Action::Recv;
        };
        let line = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        let status = line
            .strip_prefix("HTTP/1.")
            .and_then(|rest| rest.get(2..5))
            .and_then(|code| code.parse::<u16>().ok());
        self.stage = Stage::Done;
        match status {
            Some(code) if (200..400).contains(&code) => Action::Finished(Ok(code)),
            Some(code) => {
                Action::Finished(Err(format!("{} answered HTTP {code}", self.target.host)))
            }
            None => Action::Finished(Err(format!(
                "not an HTTP status line: {:?}",
                line.chars().take(60).collect::<String>()
            ))),
        }
    }
}

fn host_header(target: &ProbeTarget) -> String {
    let host = if target.host.contains(':') {
        format!("[{}]", target.host)
    } else {
        target.host.clone()
    };
    if target.port == 80 {
        host
    } else {
        format!("{host}:{}", target.port)
    }
}

fn stage_name(stage: Stage) -> &'static str {
    match stage {
        Stage::Start => "before connecting",
        Stage::Greeting | Stage::Method => "during the SOCKS5 greeting",
        Stage::Request | Stage::Reply => "during the SOCKS5 CONNECT",
        Stage::Get | Stage::Status => "before the HTTP status line",
        Stage::Done => "after the probe ended",
    }
}

fn socks_reply_meaning(code: u8) -> &'static str {
    match code {
        1 => "general failure",
        2 => "not allowed by ruleset",
        3 => "network unreachable",
        4 => "host unreachable",
        5 => "connection refused",
        6 => "TTL expired",
        7 => "command not supported",
        8 => "address type not supported",
        _ => "unknown error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> ProbeTarget {
        ProbeTarget::parse("http://cp.example.com/generate_204?x=1").unwrap()
    }

    #[test]
    fn failures_name_the_url_and_the_setting() {
        let t = ProbeTarget::parse("http://[::1]:8080/x").unwrap();
        assert_eq!(t.url(), "http://[::1]:8080/x");
        assert_eq!(
            describe_failure(&target(), "the proxy closed the connection", true),
            "probe http://cp.example.com/generate_204?x=1 through the tunnel failed: the proxy \
             closed the connection; if this machine cannot reach it, set health.probe_url (see \
             docs/SETTINGS.md)"
        );
        assert_eq!(
            describe_failure(&target(), "connection refused", false),
            "probe http://cp.example.com/generate_204?x=1 failed: connection refused"
        );
    }

    #[test]
    fn parses_probe_urls() {
        assert_eq!(
            target(),
            ProbeTarget {
                host: "cp.example.com".into(),
                port: 80,
                path: "/generate_204?x=1".into()
            }
        );
        let v6 = ProbeTarget::parse("http://[::1]:8080/").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 8080));
        let err = ProbeTarget::parse("https://example.com/")
            .unwrap_err()
            .to_string();
        assert_eq!(err, "health.probe_url \"https://example.com/\" is not usable: only http:// probe URLs are supported (the probe does not speak TLS)");
    }

    #[test]
    fn a_full_exchange_succeeds_even_with_split_and_merged_reads() {
        let mut p = Probe::new(target());
        assert_eq!(p.on_event(Event::Connected), Action::Send(vec![5, 1, 0]));
        assert_eq!(p.on_event(Event::Sent), Action::Recv);
        assert_eq!(p.on_event(Event::Received(&[5])), Action::Recv);
        let Action::Send(connect) = p.on_event(Event::Received(&[0])) else {
            panic!()
        };
        assert_eq!(&connect[..5], &[5, 1, 0, 3, 14]);
        assert_eq!(&connect[5..19], b"cp.example.com");
        assert_eq!(&connect[19..], &80u16.to_be_bytes());
        assert_eq!(p.on_event(Event::Sent), Action::Recv);
        let Action::Send(get) = p.on_event(Event::Received(&[5, 0, 0, 1, 127, 0, 0, 1, 0, 80]))
        else {
            panic!()
        };
        assert!(String::from_utf8(get)
            .unwrap()
            .starts_with("GET /generate_204?x=1 HTTP/1.1\r\nHost: cp.example.com\r\n"));
        assert_eq!(p.on_event(Event::Sent), Action::Recv);
        assert_eq!(p.on_event(Event::Received(b"HTTP/1.1 20")), Action::Recv);
        assert_eq!(
            p.on_event(Event::Received(b"4 No Content\r\n\r\n")),
            Action::Finished(Ok(204))
        );
    }

    #[test]
    fn failures_say_where_they_happened() {
        let mut p = Probe::new(target());
        p.on_event(Event::Connected);
        p.on_event(Event::Sent);
        p.on_event(Event::Received(&[5, 0]));
        p.on_event(Event::Sent);
        assert_eq!(
            p.on_event(Event::Received(&[5, 5, 0, 1, 0])),
            Action::Finished(Err(
                "SOCKS5 CONNECT to cp.example.com:80 failed: connection refused".into()
            ))
        );
        let mut p = Probe::new(target());
        p.on_event(Event::Connected);
        p.on_event(Event::Sent);
        assert_eq!(
            p.on_event(Event::Eof),
            Action::Finished(Err(
                "the proxy closed the connection during the SOCKS5 greeting".into()
            ))
        );
    }

    #[test]
    fn http_errors_fail_and_redirects_pass() {
        for (line, want) in [
            ("HTTP/1.1 302 Found\r\n", Ok(302)),
            (
                "HTTP/1.0 503 Busy\r\n",
                Err("cp.example.com answered HTTP 503".to_string()),
            ),
        ] {
            let mut p = Probe::new(target());
            p.on_event(Event::Connected);
            p.on_event(Event::Sent);
            p.on_event(Event::Received(&[5, 0]));
            p.on_event(Event::Sent);
            p.on_event(Event::Received(&[5, 0, 0, 1, 1, 2, 3, 4, 0, 80]));
            p.on_event(Event::Sent);
            assert_eq!(
                p.on_event(Event::Received(line.as_bytes())),
                Action::Finished(want)
            );
        }
    }
}
