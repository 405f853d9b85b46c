//! Probes, run in the ring: a readiness check (does a starting core's inbound accept a TCP
//! connection?) or a health probe through a SOCKS inbound (connect, then the byte exchange that
//! [`crate::probe::Probe`] dictates). One table, one token scheme, and whole-probe deadlines in the
//! executor's deadline table (DESIGN §3a rule 9); an expired probe has its in-flight op cancelled.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use slab::Slab;

use crate::probe::{Action, Event, Probe, ProbeTarget, PROBE_RESPONSE_BYTES_MAX};
use crate::supervisor::{CoreId, Input, Now, ProbeId};

use super::deadlines::Due;
use super::ring::{Completion, Op};
use super::token::{Kind, Token, GENERATION_MASK};
use super::Reactor;

/// Probes in flight at once; a batch asks for at most `test_concurrency` of them, readiness
/// checks one per starting core.
pub const PROBES_MAX: usize = 512;
const _: () = assert!(PROBES_MAX <= u32::MAX as usize);
// A full batch of probes leaves room for the health probe and readiness checks.
const _: () = assert!(PROBES_MAX >= 2 * crate::settings::TEST_CONCURRENCY_MAX as usize);

/// Who hears a probe's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// The supervisor asked (health, batch or verification probe).
    Supervisor(ProbeId),
    /// The readiness wait of a starting core.
    Ready(CoreId),
}

/// What the probe does after connecting.
enum Machine {
    /// Nothing: the connect's result is the verdict.
    Accept,
    /// SOCKS5 + HTTP through the inbound.
    Http(Box<Probe>),
}

struct Slot {
    serial: u32,
    socket: OwnedFd,
    machine: Machine,
    connected: bool,
    owner: Owner,
    started_ms: u64,
    deadline_ms: u64,
    timeout_ms: u64,
    /// Kernel-visible memory: the address, the bytes being sent, the receive buffer. All boxed
    /// or heap-owned, and kept until the slot is freed after its last completion.
    addr: Box<libc::sockaddr_storage>,
    out: Vec<u8>,
    out_sent: usize,
    inbuf: Box<[u8; PROBE_RESPONSE_BYTES_MAX]>,
    expired: bool,
}

/// The probe table.
pub struct Probes {
    slots: Slab<Slot>,
    next_serial: u32,
    target: ProbeTarget,
}

/// A probe's verdict: latency in ms, or why it failed.
pub type ProbeResult = Result<u64, String>;

impl Probes {
    /// An empty table probing `target` through SOCKS inbounds.
    pub fn new(target: ProbeTarget) -> Probes {
        Probes {
            slots: Slab::new(),
            next_serial: 0,
            target,
        }
    }

    /// Probes started from now on use `target` (a reload changed `health.probe_url`).
    /// The probe target of `health.probe_url`.
    pub fn target(&self) -> &ProbeTarget {
        &self.target
    }

    pub fn set_target(&mut self, target: ProbeTarget) {
        self.target = target;
    }
}

impl Reactor {
    /// Starts a probe of `addr`; with `http`, a SOCKS5 + HTTP probe, else a readiness connect.
    /// The result goes to `owner`, never before this returns.
    pub(super) fn start_probe(
        &mut self,
        now: Now,
        addr: SocketAddr,
        http: Option<ProbeTarget>,
        owner: Owner,
        timeout_ms: u64,
    ) {
        if self.probes.slots.len() >= PROBES_MAX {
            return self.probe_failed_at_start(
                now,
                owner,
                format!("{PROBES_MAX} probes already in flight"),
            );
        }
        let (storage, len) = super::prepare::sockaddr(addr);
        let family = if addr.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        };
        // SAFETY: plain socket(2); checked before being owned.
        let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            return self.probe_failed_at_start(
                now,
                owner,
                format!("cannot create a probe socket: {e}"),
            );
        }
        self.probes.next_serial = self.probes.next_serial.wrapping_add(1);
        let machine = match http {
            Some(target) => Machine::Http(Box::new(Probe::new(target))),
            None => Machine::Accept,
        };
        let slot = Slot {
            serial: self.probes.next_serial,
            // SAFETY: a fresh socket owned by nobody else.
            socket: unsafe { OwnedFd::from_raw_fd(fd) },
            machine,
            connected: false,
            owner,
            started_ms: now.monotonic_ms,
            deadline_ms: now.monotonic_ms + timeout_ms,
            timeout_ms,
            addr: Box::new(storage),
            out: Vec::new(),
            out_sent: 0,
            inbuf: Box::new([0; PROBE_RESPONSE_BYTES_MAX]),
            expired: false,
        };
        let addr = (&*slot.addr as *const libc::sockaddr_storage).cast();
        let (serial, deadline_ms) = (slot.serial, slot.deadline_ms);
        let index = self.probes.slots.insert(slot);
        self.deadlines.add(deadline_ms, Due::Probe(index, serial));
        // SAFETY: the socket and the boxed address live in the slot, which is freed only after
        // this op's completion (end_probe runs from that completion).
        unsafe { self.push(Op::Connect { fd, addr, len }, probe_token(index, serial)) };
    }

    /// A probe that could not even start: its owner hears it like any other result (through the
    /// input queue, or a readiness retry later), so nobody is re-entered.
    fn probe_failed_at_start(&mut self, now: Now, owner: Owner, why: String) {
        self.probe_finished(now, owner, Err(why));
    }

    /// Routes a finished probe to its owner.
    fn probe_finished(&mut self, now: Now, owner: Owner, result: ProbeResult) {
        match owner {
            Owner::Supervisor(probe) => self.inputs.push_back(Input::ProbeDone { probe, result }),
            Owner::Ready(core) => self.ready_answer(now, core, result.is_ok()),
        }
    }

    /// A probe op completed.
    pub(super) fn on_probe_io(&mut self, now: Now, token: Token, c: &Completion) {
        let index = token.slot as usize;
        let Some(slot) = self.probes.slots.get_mut(index) else {
            return;
        };
        if slot.serial & GENERATION_MASK != token.generation {
            return;
        }
        if slot.expired {
            let why = format!("no answer within {} ms", slot.timeout_ms);
            return self.end_probe(now, index, Err(why));
        }
        if c.result < 0 {
            let e = std::io::Error::from_raw_os_error(-c.result);
            let why = format!("{e} {}", step_name(slot));
            return self.end_probe(now, index, Err(why));
        }
        let event = if !slot.out.is_empty() {
            slot.out_sent += c.result as usize;
            if slot.out_sent < slot.out.len() {
                // Short send: the rest goes from the offset.
                return self.push_probe_send(index);
            }
            slot.out.clear();
            slot.out_sent = 0;
            Event::Sent
        } else if slot.connected {
            if c.result == 0 {
                Event::Eof
            } else {
                // Copy out: the machine may keep bytes while the buffer is reused for the next read.
                let bytes = slot.inbuf[..c.result as usize].to_vec();
                return self.feed_probe(now, index, &bytes);
            }
        } else {
            slot.connected = true;
            Event::Connected
        };
        let action = match &mut self.probes.slots[index].machine {
            Machine::Accept => Action::Finished(Ok(0)),
            Machine::Http(machine) => machine.on_event(event),
        };
        self.probe_act(now, index, action);
    }

    fn feed_probe(&mut self, now: Now, index: usize, bytes: &[u8]) {
        let action = match &mut self.probes.slots[index].machine {
            Machine::Accept => Action::Finished(Ok(0)),
            Machine::Http(machine) => machine.on_event(Event::Received(bytes)),
        };
        self.probe_act(now, index, action);
    }

    fn probe_act(&mut self, now: Now, index: usize, action: Action) {
        match action {
            Action::Send(bytes) => {
                let slot = &mut self.probes.slots[index];
                slot.out = bytes;
                slot.out_sent = 0;
                self.push_probe_send(index);
            }
            Action::Recv => {
                let slot = &mut self.probes.slots[index];
                let op = Op::Read {
                    fd: slot.socket.as_raw_fd(),
                    ptr: slot.inbuf.as_mut_ptr(),
                    len: slot.inbuf.len() as u32,
                };
                let token = probe_token(index, slot.serial);
                // SAFETY: `inbuf` is boxed in the slot, which lives until this op completes.
                unsafe { self.push(op, token) };
            }
            Action::Finished(result) => {
                let started = self.probes.slots[index].started_ms;
                let latency = now.monotonic_ms.saturating_sub(started);
                self.end_probe(now, index, result.map(|_| latency));
            }
        }
    }

    fn push_probe_send(&mut self, index: usize) {
        let slot = &self.probes.slots[index];
        let rest = &slot.out[slot.out_sent..];
        let op = Op::Send {
            fd: slot.socket.as_raw_fd(),
            ptr: rest.as_ptr(),
            len: rest.len() as u32,
        };
        let token = probe_token(index, slot.serial);
        // SAFETY: `out` is owned by the slot and not touched until this send completes.
        unsafe { self.push(op, token) };
    }

    fn end_probe(&mut self, now: Now, index: usize, result: ProbeResult) {
        let slot = self.probes.slots.remove(index);
        if !slot.expired {
            self.deadlines
                .remove(slot.deadline_ms, Due::Probe(index, slot.serial));
        }
        // A failed HTTP probe names its URL (the reason alone does not say what was fetched).
        let result = match (&slot.machine, result) {
            (Machine::Http(probe), Err(why)) => Err(crate::probe::describe_failure(
                probe.target(),
                &why,
                slot.connected,
            )),
            (_, result) => result,
        };
        self.probe_finished(now, slot.owner, result);
    }

    /// A probe's deadline passed: cancel its in-flight op; the cancelled completion ends it.
    pub(super) fn expire_probe(&mut self, index: usize, serial: u32) {
        let Some(slot) = self
            .probes
            .slots
            .get_mut(index)
            .filter(|s| s.serial == serial)
        else {
            return;
        };
        slot.expired = true;
        let fd = slot.socket.as_raw_fd();
        // SAFETY: a cancel carries no buffer.
        unsafe { self.push(Op::CancelFd { fd }, Token::singleton(Kind::Cancel).encode()) };
    }
}

fn step_name(slot: &Slot) -> &'static str {
    match (&slot.machine, slot.connected) {
        (Machine::Accept, _) => "connecting",
        (Machine::Http(_), true) => "while talking to the proxy",
        (Machine::Http(_), false) => "connecting to the SOCKS inbound",
    }
}

fn probe_token(index: usize, serial: u32) -> u64 {
    Token {
        kind: Kind::ProbeIo,
        generation: serial & GENERATION_MASK,
        slot: index as u32,
    }
    .encode()
}
