//! The bookkeeping of an opening, as pure state: what the core said so far and which of its
//! handshake messages the client already got ([`Observer`]), the client's bytes kept for a
//! replay ([`Replay`]), the next member to try ([`next_target`]), and the protocol's own answer
//! when the front refuses a client or gives up ([`Refusal`]). The relay (relay.rs) only moves
//! bytes and asks these what they mean.

use crate::supervisor::{CoreId, RelayFailure, RouteTarget};

use super::opening::{
    http_response, parse_greeting, parse_http_request, parse_http_response, parse_method_reply,
    parse_socks_message, socks_reply, OpeningError, SOCKS5, SOCKS5_GENERAL_FAILURE, SOCKS5_NO_AUTH,
    SOCKS5_NO_AUTH_REPLY,
};

/// Which front port a client came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrontPort {
    /// `runtime.socks_port`.
    Socks,
    /// `runtime.http_port`.
    Http,
}

/// Where the core is in its side of the handshake on this attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    MethodReply,
    ConnectReply,
    HttpHead,
    Done,
}

/// What the held core bytes mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Keep holding: the message is incomplete.
    More,
    /// The first `len` held bytes are a handshake message: give them to the client when
    /// `forward`, else drop them (the client already got this message from an earlier member).
    Handshake { len: usize, forward: bool },
    /// The handshake is over; every held byte is the remote's.
    Remote,
    /// The member failed the opening.
    Failed(RelayFailure),
    /// Not a handshake the front understands (another SOCKS method, a malformed head): pass
    /// everything through and stop observing; such a connection is never retried.
    PassThrough,
}

/// The core's side of the handshake, over every attempt of one connection.
#[derive(Debug, Clone)]
pub struct Observer {
    port: FrontPort,
    stage: Stage,
    /// Handshake messages the client already got, counted over all attempts.
    forwarded: u8,
    /// This attempt's next message.
    index: u8,
    /// The client's greeting was judged (answered by the front, or left to the core).
    greeting_judged: bool,
}

/// SOCKS5 reply codes that are the request's fault, not the member's: 2 (not allowed by the
/// ruleset), 7 (command not supported), 8 (address type not supported).
pub const SOCKS_CLIENT_ERRORS: [u8; 3] = [2, 7, 8];

impl Observer {
    /// A fresh observer for a client on `port`.
    pub fn new(port: FrontPort) -> Observer {
        Observer {
            port,
            stage: Observer::first_stage(port),
            forwarded: 0,
            index: 0,
            greeting_judged: false,
        }
    }

    fn first_stage(port: FrontPort) -> Stage {
        match port {
            FrontPort::Socks => Stage::MethodReply,
            FrontPort::Http => Stage::HttpHead,
        }
    }

    /// A new attempt on another member: its handshake starts over, and the messages the
    /// client already got are swallowed.
    pub fn restart(&mut self) {
        self.stage = Observer::first_stage(self.port);
        self.index = 0;
    }

    /// Reads the client's kept opening (`kept`, every byte it sent so far) on the SOCKS port:
    /// true once, when its greeting is complete and offers "no authentication". The caller
    /// then sends the method reply `[5, 0]` itself, and every member's own method reply
    /// counts as already forwarded (swallowed). The client's request no longer waits for the
    /// core to wake and answer the greeting; the internal inbounds take only "no
    /// authentication", so the front's answer is the one a member would give. A greeting that
    /// is malformed or offers other methods only is left to the core, which answers it in its
    /// own protocol.
    pub fn greet(&mut self, kept: &[u8]) -> bool {
        if self.port != FrontPort::Socks || self.greeting_judged || self.forwarded > 0 {
            return false;
        }
        let greeting = match parse_greeting(kept) {
            Ok(None) => return false,
            Ok(Some(greeting)) => greeting,
            Err(_) => {
                self.greeting_judged = true;
                return false;
            }
        };
        self.greeting_judged = true;
        if greeting.no_auth {
            self.forwarded = 1;
        }
        greeting.no_auth
    }

    /// The handshake messages the client already got.
    pub fn forwarded(&self) -> u8 {
        self.forwarded
    }

    /// The core's handshake succeeded (what follows is the remote's).
    pub fn done(&self) -> bool {
        self.stage == Stage::Done
    }

    /// Reads the held core bytes. `http_connect` is the client's head on the HTTP port: `None`
    /// while incomplete, else whether it is a CONNECT.
    pub fn step(&mut self, held: &[u8], http_connect: Option<bool>) -> Step {
        let parsed = match self.stage {
            Stage::Done if held.is_empty() => return Step::More,
            Stage::Done => return Step::Remote,
            Stage::MethodReply => self.method_reply(held),
            Stage::ConnectReply => self.connect_reply(held),
            Stage::HttpHead => match http_connect {
                // A core speaking before the client's head is complete is not an HTTP proxy
                // answer the front can judge.
                None if held.is_empty() => Ok(Step::More),
                None => Ok(Step::PassThrough),
                Some(false) => {
                    self.stage = Stage::Done;
                    return self.step(held, http_connect);
                }
                Some(true) => self.connect_status(held),
            },
        };
        parsed.unwrap_or_else(|_| {
            self.stage = Stage::Done;
            Step::PassThrough
        })
    }

    fn method_reply(&mut self, held: &[u8]) -> Result<Step, OpeningError> {
        // The client already has "no authentication" (from the front, or an earlier member):
        // a member that says anything else cannot be passed on, and failed the opening.
        let answered = self.forwarded > self.index;
        let method = match parse_method_reply(held) {
            Ok(None) => return Ok(Step::More),
            Ok(Some(method)) => method,
            Err(_) if answered => return Ok(Step::Failed(RelayFailure::Refused)),
            Err(e) => return Err(e),
        };
        if method != SOCKS5_NO_AUTH && answered {
            return Ok(Step::Failed(RelayFailure::Refused));
        }
        if method != SOCKS5_NO_AUTH {
            // The client offered only methods the internal inbound does not take: its problem.
            self.stage = Stage::Done;
            return Ok(Step::PassThrough);
        }
        self.stage = Stage::ConnectReply;
        Ok(self.message(2))
    }

    fn connect_reply(&mut self, held: &[u8]) -> Result<Step, OpeningError> {
        let Some(reply) = parse_socks_message(held)? else {
            return Ok(Step::More);
        };
        if SOCKS_CLIENT_ERRORS.contains(&reply.code) {
            // Not allowed, command or address type not supported: the request's fault, which
            // another member would answer the same. The client gets the core's answer.
            self.stage = Stage::Done;
            return Ok(Step::PassThrough);
        }
        if reply.code != 0 {
            return Ok(Step::Failed(RelayFailure::SocksReply(reply.code)));
        }
        self.stage = Stage::Done;
        Ok(self.message(reply.len))
    }

    fn connect_status(&mut self, held: &[u8]) -> Result<Step, OpeningError> {
        let Some(head) = parse_http_response(held)? else {
            return Ok(Step::More);
        };
        if (400..500).contains(&head.status) {
            // A client error (bad request, forbidden, auth required): passed on, not retried.
            self.stage = Stage::Done;
            return Ok(Step::PassThrough);
        }
        if !(200..300).contains(&head.status) {
            return Ok(Step::Failed(RelayFailure::HttpStatus(head.status)));
        }
        self.stage = Stage::Done;
        Ok(self.message(head.len))
    }

    /// The attempt's next handshake message, `len` bytes long.
    fn message(&mut self, len: usize) -> Step {
        let forward = self.index >= self.forwarded;
        self.index += 1;
        self.forwarded = self.forwarded.max(self.index);
        Step::Handshake { len, forward }
    }
}

/// The client's opening bytes, kept until the first byte from the remote so that a failed
/// opening can be replayed on another member.
#[derive(Debug, Clone, Default)]
pub struct Replay {
    kept: Vec<u8>,
    max: usize,
    overflowed: bool,
}

impl Replay {
    /// Keeps at most `max` bytes (`relay.replay_bytes_max`).
    pub fn new(max: usize) -> Replay {
        Replay {
            kept: Vec::new(),
            max,
            overflowed: false,
        }
    }

    /// Keeps `bytes`; false once the total passes the limit: from then on nothing more is kept
    /// and no replay may start, but the bytes kept so far stay (a replay under way still sends
    /// them, before the ones that did not fit).
    pub fn keep(&mut self, bytes: &[u8]) -> bool {
        if self.overflowed || self.kept.len() + bytes.len() > self.max {
            self.overflowed = true;
            return false;
        }
        self.kept.extend_from_slice(bytes);
        true
    }

    /// Every byte the client sent so far is kept.
    pub fn complete(&self) -> bool {
        !self.overflowed
    }

    /// The kept bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.kept
    }

    /// The remote spoke: nothing more is kept, and nothing will be replayed again.
    pub fn stop(&mut self) {
        self.overflowed = true;
    }

    /// Frees the kept bytes (never while a send from them is in flight).
    pub fn release(&mut self) {
        self.stop();
        self.kept = Vec::new();
    }
}

/// The next member to try: the first of the current route not tried yet for this connection,
/// and not on `refused_core` (whose inbound refused it: the core is going, see route_wait.rs).
pub fn next_target(
    route: &[RouteTarget],
    tried: &[(CoreId, i64)],
    refused_core: Option<CoreId>,
) -> Option<RouteTarget> {
    route
        .iter()
        .find(|t| Some(t.core) != refused_core && !tried.contains(&(t.core, t.config_id)))
        .copied()
}

/// The client's head on the HTTP port: `None` while incomplete, else whether it is a CONNECT
/// (a malformed head is treated as a plain request: whatever the core says is passed on).
pub fn http_connect(kept: &[u8]) -> Option<bool> {
    match parse_http_request(kept) {
        Ok(None) => None,
        Ok(Some(head)) => Some(head.connect),
        Err(_) => Some(false),
    }
}

/// How many of the client's bytes are its opening (SOCKS5 greeting + request, or a CONNECT's
/// head); the rest is payload for the remote. `None` while incomplete. A plain HTTP request is
/// all payload.
pub fn client_opening_len(port: FrontPort, kept: &[u8]) -> Option<usize> {
    match port {
        FrontPort::Socks => {
            let greeting = parse_greeting(kept).ok()??;
            let request = parse_socks_message(&kept[greeting.len..]).ok()??;
            Some(greeting.len + request.len)
        }
        FrontPort::Http => match parse_http_request(kept) {
            Ok(Some(head)) if head.connect => Some(head.len),
            Ok(Some(_)) | Err(_) => Some(0),
            Ok(None) => None,
        },
    }
}

/// The SOCKS5 reply code a client gets when the front gives up after `failure`.
pub fn socks_code_for(failure: RelayFailure) -> u8 {
    match failure {
        RelayFailure::SocksReply(code) => code,
        _ => SOCKS5_GENERAL_FAILURE,
    }
}

/// The front's own answer to a client it will not relay: SOCKS5 (the greeting answered with
/// "no authentication", then the request with `socks_code`) or one HTTP response. The client's
/// opening is read first, so it is answered in its protocol rather than reset.
#[derive(Debug, Clone)]
pub struct Refusal {
    port: FrontPort,
    socks_code: u8,
    http: Vec<u8>,
    /// The client already got a method reply (from a member, or from here).
    greeted: bool,
}

impl Refusal {
    /// A refusal for a client on `port`; `greeted` when a member already answered its greeting.
    pub fn new(port: FrontPort, socks_code: u8, http: Vec<u8>, greeted: bool) -> Refusal {
        Refusal {
            port,
            socks_code,
            http,
            greeted,
        }
    }

    /// Reads everything the client sent so far and appends what it is owed to `out`. True when
    /// the answer is complete (close once it is written). A malformed SOCKS opening is closed
    /// without an answer; a malformed HTTP head still gets the response (it says why).
    pub fn step(&mut self, received: &[u8], out: &mut Vec<u8>) -> Result<bool, OpeningError> {
        if self.port == FrontPort::Http {
            return match parse_http_request(received) {
                Ok(None) => Ok(false),
                Ok(Some(_)) | Err(_) => {
                    out.extend_from_slice(&self.http);
                    Ok(true)
                }
            };
        }
        let Some(greeting) = parse_greeting(received)? else {
            return Ok(false);
        };
        if !self.greeted {
            self.greeted = true;
            if !greeting.no_auth {
                out.extend_from_slice(&[SOCKS5, 0xFF]);
                return Ok(true);
            }
            out.extend_from_slice(&SOCKS5_NO_AUTH_REPLY);
        }
        match parse_socks_message(&received[greeting.len..])? {
            None => Ok(false),
            Some(_) => {
                out.extend_from_slice(&socks_reply(self.socks_code));
                Ok(true)
            }
        }
    }
}

/// The 503 answer on the HTTP port when there is no session.
pub fn http_no_session() -> Vec<u8> {
    http_response(
        503,
        "Service Unavailable",
        "xrat: no session is running; connect one with xrat connect <id>",
    )
}

/// The 503 answer on the HTTP port at the relay connection limit.
pub fn http_at_limit(max: u32) -> Vec<u8> {
    http_response(
        503,
        "Service Unavailable",
        &format!("xrat: {max} relayed connections are open (daemon.relay_connections_max); close some or raise the limit in config.toml"),
    )
}

/// The 502 answer on the HTTP port when every member failed the opening.
pub fn http_gave_up(failure: RelayFailure) -> Vec<u8> {
    http_response(
        502,
        "Bad Gateway",
        &format!(
            "xrat: no pool member could open this connection; the last: {}",
            failure.describe()
        ),
    )
}

#[cfg(test)]
#[path = "retry_tests.rs"]
mod tests;
