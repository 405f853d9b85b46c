//! The epoll backend's op semantics, checked against what io_uring posts for the same ops.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};

use io_uring::cqueue;

use super::super::bufring::{BufRing, RECV_BUFFERS, RECV_BUFFER_BYTES};
use super::super::ring::{Completion, Op};
use super::super::setup;
use super::Epoll;
use crate::reactor::epoll_ops::{CQE_BUFFER_SHIFT, CQE_F_BUFFER, CQE_F_MORE};

const GROUP: u16 = 0;

fn epoll() -> Epoll {
    Epoll::new().expect("epoll_create1")
}

fn push(e: &mut Epoll, op: Op, user_data: u64) {
    // SAFETY: every test keeps the memory its ops name alive until their completions.
    unsafe { e.push(op, user_data, GROUP) }.expect("push");
}

/// One wait: every completion it brought.
fn turn(e: &mut Epoll) -> Vec<Completion> {
    e.submit_and_wait().expect("wait");
    let mut batch = Vec::new();
    e.drain_into(&mut batch);
    batch
}

/// Waits until `n` completions arrived.
fn collect(e: &mut Epoll, n: usize) -> Vec<Completion> {
    let mut all = Vec::new();
    while all.len() < n {
        all.extend(turn(e));
    }
    all
}

fn pair() -> (UnixStream, UnixStream) {
    UnixStream::pair().expect("socketpair")
}

fn close(fd: RawFd) {
    // SAFETY: the test owns `fd` and drops it here.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
}

#[test]
fn flags_decode_as_io_uring_flags() {
    let flags = CQE_F_BUFFER | (7 << CQE_BUFFER_SHIFT) | CQE_F_MORE;
    assert!(cqueue::more(flags));
    assert_eq!(cqueue::buffer_select(flags), Some(7));
    assert!(!cqueue::more(CQE_F_BUFFER));
    assert_eq!(cqueue::buffer_select(CQE_F_MORE), None);
}

#[test]
fn nop_completes_at_once() {
    let mut e = epoll();
    push(&mut e, Op::Nop, 9);
    let got = turn(&mut e);
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].user_data, got[0].result, got[0].flags), (9, 0, 0));
}

#[test]
fn multishot_accept_goes_on_with_more() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.sock");
    let listener = UnixListener::bind(&path).unwrap();
    listener.set_nonblocking(true).unwrap();
    let mut e = epoll();
    push(
        &mut e,
        Op::AcceptMulti {
            fd: listener.as_raw_fd(),
        },
        1,
    );
    let _a = UnixStream::connect(&path).unwrap();
    let _b = UnixStream::connect(&path).unwrap();
    let got = collect(&mut e, 2);
    for c in &got {
        assert_eq!(c.user_data, 1);
        assert!(c.result >= 0, "{c:?}");
        assert!(c.more(), "multishot accept goes on: {c:?}");
        // SAFETY: a plain fcntl query on the fd the accept produced.
        let fd_flags = unsafe { libc::fcntl(c.result, libc::F_GETFD) };
        assert_ne!(
            fd_flags & libc::FD_CLOEXEC,
            0,
            "accepted fds are close-on-exec"
        );
        close(c.result);
    }
    // Later clients are still accepted by the same op.
    let _c = UnixStream::connect(&path).unwrap();
    let got = collect(&mut e, 1);
    assert!(got[0].result >= 0 && got[0].more());
    close(got[0].result);
    // Cancel ends it with ECANCELED and no "more"; the cancel itself counts one.
    push(
        &mut e,
        Op::CancelFd {
            fd: listener.as_raw_fd(),
        },
        2,
    );
    let got = collect(&mut e, 2);
    assert_eq!((got[0].user_data, got[0].result), (1, -libc::ECANCELED));
    assert!(!got[0].more());
    assert_eq!((got[1].user_data, got[1].result), (2, 1));
}

#[test]
fn multishot_recv_names_provided_buffers_and_ends_at_eof() {
    let bufs = BufRing::new();
    let mut e = epoll();
    e.register_buf_ring(&bufs, GROUP).unwrap();
    let (mut peer, conn) = pair();
    push(
        &mut e,
        Op::RecvMulti {
            fd: conn.as_raw_fd(),
        },
        3,
    );
    peer.write_all(b"hello").unwrap();
    let got = collect(&mut e, 1);
    assert_eq!(got[0].result, 5);
    assert!(got[0].more());
    let bid = got[0].buffer_id().expect("a buffer is named");
    assert_eq!(bufs.filled(bid, 5), b"hello");
    peer.write_all(b"again").unwrap();
    let got = collect(&mut e, 1);
    let second = got[0].buffer_id().unwrap();
    assert_ne!(second, bid, "the next buffer of the ring");
    assert_eq!(bufs.filled(second, 5), b"again");
    drop(peer);
    let got = collect(&mut e, 1);
    assert_eq!(
        (got[0].result, got[0].flags),
        (0, 0),
        "EOF: final, no buffer"
    );
}

#[test]
fn an_empty_buffer_ring_ends_the_receive_with_enobufs() {
    let mut bufs = BufRing::new();
    let mut e = epoll();
    e.register_buf_ring(&bufs, GROUP).unwrap();
    let (mut peer, conn) = pair();
    let chunk = vec![b'x'; RECV_BUFFER_BYTES as usize];
    push(
        &mut e,
        Op::RecvMulti {
            fd: conn.as_raw_fd(),
        },
        4,
    );
    let mut taken = Vec::new();
    while taken.len() < RECV_BUFFERS as usize {
        peer.write_all(&chunk).unwrap();
        for c in collect(&mut e, 1) {
            assert!(c.result > 0 && c.more(), "{c:?}");
            taken.push(c.buffer_id().unwrap());
        }
    }
    peer.write_all(b"one more").unwrap();
    let got = collect(&mut e, 1);
    assert_eq!(got[0].result, -libc::ENOBUFS);
    assert!(!got[0].more(), "ENOBUFS ends the multishot receive");
    assert_eq!(got[0].buffer_id(), None);
    // Buffers handed back and published: a re-armed receive gets the waiting bytes.
    bufs.recycle(taken[0]);
    bufs.publish();
    push(
        &mut e,
        Op::RecvMulti {
            fd: conn.as_raw_fd(),
        },
        5,
    );
    let got = collect(&mut e, 1);
    assert_eq!(got[0].result, 8);
    assert_eq!(got[0].buffer_id(), Some(taken[0]));
    assert_eq!(bufs.filled(taken[0], 8), b"one more");
}

#[test]
fn cancel_by_user_data_ends_the_target_and_reports_itself() {
    let (_peer, conn) = pair();
    let mut buf = [0u8; 16];
    let mut e = epoll();
    let recv = Op::Recv {
        fd: conn.as_raw_fd(),
        ptr: buf.as_mut_ptr(),
        len: buf.len() as u32,
    };
    push(&mut e, recv, 6);
    push(&mut e, Op::Cancel { user_data: 6 }, 7);
    let got = collect(&mut e, 2);
    assert_eq!((got[0].user_data, got[0].result), (6, -libc::ECANCELED));
    assert_eq!((got[1].user_data, got[1].result), (7, 0));
    // Nothing left to cancel.
    push(&mut e, Op::Cancel { user_data: 6 }, 8);
    let got = collect(&mut e, 1);
    assert_eq!((got[0].user_data, got[0].result), (8, -libc::ENOENT));
}

#[test]
fn cancel_by_fd_ends_every_op_on_it() {
    let (_peer, conn) = pair();
    let (other_peer, other) = pair();
    let mut buf = [0u8; 16];
    let mut e = epoll();
    let fd = conn.as_raw_fd();
    let recv = Op::Recv {
        fd,
        ptr: buf.as_mut_ptr(),
        len: buf.len() as u32,
    };
    push(&mut e, recv, 10);
    push(&mut e, Op::PollIn { fd }, 11);
    push(
        &mut e,
        Op::PollIn {
            fd: other.as_raw_fd(),
        },
        12,
    );
    push(&mut e, Op::CancelFd { fd }, 13);
    let got = collect(&mut e, 3);
    let results: Vec<(u64, i32)> = got.iter().map(|c| (c.user_data, c.result)).collect();
    assert_eq!(
        results,
        [(10, -libc::ECANCELED), (11, -libc::ECANCELED), (13, 2)]
    );
    // The other descriptor's op still waits, and completes once it is readable.
    drop(other_peer);
    let got = collect(&mut e, 1);
    assert_eq!(got[0].user_data, 12);
    assert_ne!(got[0].result & libc::POLLIN as i32, 0);
}

#[test]
fn send_and_recv_complete_with_their_counts() {
    let (a, b) = pair();
    let out = b"ping\n";
    let mut inbuf = [0u8; 64];
    let mut e = epoll();
    let send = Op::Send {
        fd: a.as_raw_fd(),
        ptr: out.as_ptr(),
        len: out.len() as u32,
    };
    let recv = Op::Recv {
        fd: b.as_raw_fd(),
        ptr: inbuf.as_mut_ptr(),
        len: inbuf.len() as u32,
    };
    push(&mut e, recv, 20);
    push(&mut e, send, 21);
    let got = collect(&mut e, 2);
    let by = |ud| got.iter().find(|c| c.user_data == ud).unwrap().result;
    assert_eq!(by(21), 5);
    assert_eq!(by(20), 5, "a receive completes with what arrived");
    assert_eq!(&inbuf[..5], out);
}

#[test]
fn a_send_to_a_full_socket_waits_then_completes_short_or_whole() {
    let (a, mut b) = pair();
    a.set_nonblocking(true).unwrap();
    // Fill the socket until it refuses more.
    let block = vec![1u8; 65536];
    let mut stuffed = 0usize;
    while let Ok(n) = (&a).write(&block) {
        stuffed += n;
    }
    let out = vec![2u8; 4096];
    let mut e = epoll();
    let send = Op::Send {
        fd: a.as_raw_fd(),
        ptr: out.as_ptr(),
        len: out.len() as u32,
    };
    push(&mut e, send, 22);
    e.submit_and_poll(50);
    assert!(e.ready.is_empty(), "a full socket makes the send wait");
    let mut sink = vec![0u8; stuffed];
    b.read_exact(&mut sink).unwrap();
    let got = collect(&mut e, 1);
    assert!(got[0].result > 0 && got[0].result <= 4096, "{:?}", got[0]);
}

#[test]
fn a_send_to_a_closed_peer_fails_with_epipe() {
    let (a, b) = pair();
    drop(b);
    let out = b"x";
    let mut e = epoll();
    let send = Op::Send {
        fd: a.as_raw_fd(),
        ptr: out.as_ptr(),
        len: 1,
    };
    push(&mut e, send, 23);
    let got = collect(&mut e, 1);
    assert_eq!(
        got[0].result,
        -libc::EPIPE,
        "MSG_NOSIGNAL: an error, no SIGPIPE"
    );
}

fn tcp_socket() -> RawFd {
    // SAFETY: plain socket(2), blocking as the reactor creates them; checked below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0);
    fd
}

fn sockaddr_of(port: u16) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(),
        },
        sin_zero: [0; 8],
    }
}

fn connect_op(fd: RawFd, addr: &libc::sockaddr_in) -> Op {
    Op::Connect {
        fd,
        addr: (addr as *const libc::sockaddr_in).cast(),
        len: std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
    }
}

#[test]
fn connect_succeeds_and_a_refused_connect_says_so() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let open = sockaddr_of(listener.local_addr().unwrap().port());
    let closed_port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let closed = sockaddr_of(closed_port);
    let (good, bad) = (tcp_socket(), tcp_socket());
    let mut e = epoll();
    push(&mut e, connect_op(good, &open), 30);
    push(&mut e, connect_op(bad, &closed), 31);
    let got = collect(&mut e, 2);
    let by = |ud| got.iter().find(|c| c.user_data == ud).unwrap().result;
    assert_eq!(by(30), 0);
    assert_eq!(by(31), -libc::ECONNREFUSED);
    assert!(listener.accept().is_ok());
    close(good);
    close(bad);
}

#[test]
fn timerfd_read_completes_when_it_fires() {
    let timer = setup::timerfd().unwrap();
    let mut buf = Box::new([0u8; 8]);
    let mut e = epoll();
    let read = Op::Read {
        fd: timer.as_raw_fd(),
        ptr: buf.as_mut_ptr(),
        len: 8,
    };
    push(&mut e, read, 40);
    setup::arm_timer(timer.as_raw_fd(), setup::monotonic_ms() + 20).unwrap();
    let got = collect(&mut e, 1);
    assert_eq!((got[0].user_data, got[0].result), (40, 8));
    assert_eq!(u64::from_ne_bytes(*buf), 1, "one expiration");
}

#[test]
fn pidfd_poll_completes_when_the_child_exits() {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    // SAFETY: pidfd_open on our own child; the result is checked.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id() as libc::c_int, 0) };
    assert!(pidfd >= 0);
    // SAFETY: a fresh descriptor owned by the test.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) };
    let mut e = epoll();
    push(
        &mut e,
        Op::PollIn {
            fd: pidfd.as_raw_fd(),
        },
        50,
    );
    let got = collect(&mut e, 1);
    assert_ne!(got[0].result & libc::POLLIN as i32, 0, "{:?}", got[0]);
    child.wait().unwrap();
}

#[test]
fn close_completes_and_a_bad_descriptor_fails() {
    let (a, _b) = pair();
    let fd = a.into_raw_fd();
    let mut e = epoll();
    push(&mut e, Op::Close { fd }, 60);
    let got = collect(&mut e, 1);
    assert_eq!((got[0].user_data, got[0].result), (60, 0));
    push(&mut e, Op::Close { fd }, 61);
    let got = collect(&mut e, 1);
    assert_eq!((got[0].user_data, got[0].result), (61, -libc::EBADF));
}

#[test]
fn ops_on_one_descriptor_share_its_registration() {
    let bufs = BufRing::new();
    let (mut peer, conn) = pair();
    let mut e = epoll();
    e.register_buf_ring(&bufs, GROUP).unwrap();
    let fd = conn.as_raw_fd();
    push(&mut e, Op::RecvMulti { fd }, 70);
    let out = b"reply\n";
    push(
        &mut e,
        Op::Send {
            fd,
            ptr: out.as_ptr(),
            len: out.len() as u32,
        },
        71,
    );
    let got = collect(&mut e, 1);
    assert_eq!((got[0].user_data, got[0].result), (71, 6));
    let mut back = [0u8; 6];
    peer.read_exact(&mut back).unwrap();
    peer.write_all(b"req\n").unwrap();
    let got = collect(&mut e, 1);
    assert_eq!((got[0].user_data, got[0].result), (70, 4));
    assert!(got[0].more());
    assert_eq!(e.watches.len(), 1, "the receive still waits");
    push(&mut e, Op::CancelFd { fd }, 72);
    collect(&mut e, 2);
    assert!(e.watches.is_empty(), "no op left: deregistered");
}

#[test]
fn a_completion_posted_at_once_does_not_starve_readiness() {
    let (mut peer, conn) = pair();
    let mut buf = [0u8; 8];
    let mut e = epoll();
    let recv = Op::Recv {
        fd: conn.as_raw_fd(),
        ptr: buf.as_mut_ptr(),
        len: buf.len() as u32,
    };
    push(&mut e, recv, 80);
    e.submit_and_poll(0);
    assert!(e.ready.is_empty(), "nothing to read yet");
    peer.write_all(b"hi").unwrap();
    // A Nop every turn (the relay's wake) still lets the ready receive through in that turn.
    push(&mut e, Op::Nop, 81);
    let got = turn(&mut e);
    let ids: Vec<u64> = got.iter().map(|c| c.user_data).collect();
    assert_eq!(ids, [81, 80]);
    assert_eq!(got[1].result, 2);
}
