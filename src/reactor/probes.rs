//! Health probes through a SOCKS inbound, run in the ring: connect, then the byte exchange that
//! [`crate::probe::Probe`] dictates, under one whole-probe deadline (DESIGN §3a rule 9) kept in
//! the slot and checked after every batch; an expired probe has its in-flight op cancelled.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use slab::Slab;

use crate::probe::{Action, Event, Probe, ProbeTarget, PROBE_RESPONSE_BYTES_MAX};
use crate::supervisor::{Now, OpId};

use super::ring::{Completion, Op};
use super::token::{Kind, Token, GENERATION_MASK};
use super::Reactor;

/// Probes in flight at once; a batch asks for at most `test_concurrency` of them.
pub const PROBES_MAX: usize = 512;

/// Who asked for a probe, and so who hears its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The periodic health check of the active session.
    Health {
        /// The session probed.
        session_id: i64,
    },
    /// A candidate in a batch test.
    Candidate {
        /// The replace operation.
        op: OpId,
        /// The candidate's config.
        config_id: i64,
    },
    /// The one probe a freshly switched session must pass.
    Verify {
        /// The replace operation.
        op: OpId,
    },
}

struct Slot {
    serial: u32,
    socket: OwnedFd,
    machine: Probe,
    purpose: Purpose,
    started_ms: u64,
    deadline_ms: u64,
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
    timeout_ms: u64,
    /// Probes that failed before any op was issued; reported after the batch so that a caller
    /// never hears of its probe while still starting it.
    failed_at_start: Vec<(Purpose, ProbeResult)>,
}

/// A probe's verdict: latency in ms, or why it failed.
pub type ProbeResult = Result<u64, String>;

impl Probes {
    /// An empty table probing `target` with `timeout_ms` per probe.
    pub fn new(target: ProbeTarget, timeout_ms: u64) -> Probes {
        Probes {
            slots: Slab::new(),
            next_serial: 0,
            target,
            timeout_ms,
            failed_at_start: Vec::new(),
        }
    }

    /// The earliest probe deadline.
    pub fn next_deadline(&self) -> Option<u64> {
        self.slots
            .iter()
            .filter(|(_, s)| !s.expired)
            .map(|(_, s)| s.deadline_ms)
            .min()
    }
}

impl Reactor {
    /// Starts a probe through the SOCKS inbound at `socks`; the result arrives through
    /// [`Reactor::probe_finished`], possibly right away.
    pub(super) fn start_health_probe(&mut self, now: Now, socks: SocketAddr, purpose: Purpose) {
        if self.probes.slots.len() >= PROBES_MAX {
            return self.probe_finished(
                now,
                purpose,
                Err(format!("{PROBES_MAX} probes already in flight")),
            );
        }
        let (storage, len) = super::runtime::sockaddr(socks);
        let family = if socks.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        };
        // SAFETY: plain socket(2); checked before being owned.
        let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            return self.probe_finished(
                now,
                purpose,
                Err(format!("cannot create a probe socket: {e}")),
            );
        }
        self.probes.next_serial = self.probes.next_serial.wrapping_add(1);
        let slot = Slot {
            serial: self.probes.next_serial,
            // SAFETY: a fresh socket owned by nobody else.
            socket: unsafe { OwnedFd::from_raw_fd(fd) },
            machine: Probe::new(self.probes.target.clone()),
            purpose,
            started_ms: now.monotonic_ms,
            deadline_ms: now.monotonic_ms + self.probes.timeout_ms,
            addr: Box::new(storage),
            out: Vec::new(),
            out_sent: 0,
            inbuf: Box::new([0; PROBE_RESPONSE_BYTES_MAX]),
            expired: false,
        };
        let addr = (&*slot.addr as *const libc::sockaddr_storage).cast();
        let serial = slot.serial;
        let index = self.probes.slots.insert(slot);
        self.push(Op::Connect { fd, addr, len }, probe_token(index, serial));
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
            return self.end_probe(
                now,
                index,
                Err(format!(
                    "no answer within {} ms (health.timeout_ms)",
                    self.probes.timeout_ms
                )),
            );
        }
        let event = if c.result < 0 {
            let e = std::io::Error::from_raw_os_error(-c.result);
            let why = format!("{e} {}", step_name(slot));
            return self.end_probe(now, index, Err(why));
        } else if !slot.out.is_empty() {
            slot.out_sent += c.result as usize;
            if slot.out_sent < slot.out.len() {
                // Short send: the rest goes from the offset.
                return self.push_probe_send(index);
            }
            slot.out.clear();
            slot.out_sent = 0;
            Event::Sent
        } else if slot.machine_connected() {
            if c.result == 0 {
                Event::Eof
            } else {
                // Copy out: the machine may keep bytes while the buffer is reused for the next read.
                let bytes = slot.inbuf[..c.result as usize].to_vec();
                return self.feed_probe(now, index, &bytes);
            }
        } else {
            Event::Connected
        };
        let action = self.probes.slots[index].machine.on_event(event);
        self.probe_act(now, index, action);
    }

    fn feed_probe(&mut self, now: Now, index: usize, bytes: &[u8]) {
        let action = self.probes.slots[index]
            .machine
            .on_event(Event::Received(bytes));
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
                self.push(op, token);
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
        self.push(op, token);
    }

    fn end_probe(&mut self, now: Now, index: usize, result: Result<u64, String>) {
        let slot = self.probes.slots.remove(index);
        self.probe_finished(now, slot.purpose, result);
    }

    /// Reports the probes that could not start.
    pub(super) fn report_failed_probes(&mut self, now: Now) {
        for (purpose, result) in std::mem::take(&mut self.probes.failed_at_start) {
            self.probe_finished(now, purpose, result);
        }
    }

    /// Cancels the in-flight op of every probe past its deadline; its completion ends it.
    pub(super) fn expire_probes(&mut self, now: Now) {
        let expired: Vec<(i32, u64)> = self
            .probes
            .slots
            .iter_mut()
            .filter(|(_, s)| !s.expired && now.monotonic_ms >= s.deadline_ms)
            .map(|(index, s)| {
                s.expired = true;
                (s.socket.as_raw_fd(), probe_token(index, s.serial))
            })
            .collect();
        for (fd, _) in expired {
            self.push(Op::CancelFd { fd }, Token::singleton(Kind::Cancel).encode());
        }
    }
}

impl Slot {
    /// True once the TCP connect completed (the machine has moved past its start).
    fn machine_connected(&self) -> bool {
        self.machine.is_connected()
    }
}

fn step_name(slot: &Slot) -> &'static str {
    if slot.machine.is_connected() {
        "while talking to the proxy"
    } else {
        "connecting to the SOCKS inbound"
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
