//! `run-server` under a seccomp filter that refuses io_uring, as Docker's default profile does.

use super::Root;

/// `run-server` under a seccomp filter that refuses io_uring_setup with EPERM (Docker's default
/// profile), with `XRAT_BACKEND` set to `backend` (None: unset, so config.toml decides).
pub fn run_server_under_seccomp(root: &Root, backend: Option<&str>) -> std::process::Command {
    run_server_refusing_io_uring(root, backend, libc::EPERM)
}

/// As [`run_server_under_seccomp`], io_uring_setup failing with `errno`.
pub fn run_server_refusing_io_uring(
    root: &Root,
    backend: Option<&str>,
    errno: i32,
) -> std::process::Command {
    use std::os::unix::process::CommandExt;
    let mut command = root.command(&["daemon", "run-server"]);
    match backend {
        Some(value) => command.env("XRAT_BACKEND", value),
        None => command.env_remove("XRAT_BACKEND"),
    };
    // SAFETY: pre_exec only makes async-signal-safe syscalls (prctl/seccomp) on its own stack.
    unsafe { command.pre_exec(move || deny_io_uring_setup(errno)) };
    command
}

/// Installs a seccomp filter that fails io_uring_setup with `errno` (EPERM: as Docker's default
/// profile does).
fn deny_io_uring_setup(errno: i32) -> std::io::Result<()> {
    const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
    const SYS_IO_URING_SETUP: u32 = 425;
    let stmt = |code: u16, k: u32| libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    };
    let jump = |code: u16, k: u32, jt: u8, jf: u8| libc::sock_filter { code, jt, jf, k };
    let ld = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    let jeq = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    let ret = (libc::BPF_RET | libc::BPF_K) as u16;
    let program = [
        stmt(ld, 4), // seccomp_data.arch
        jump(jeq, AUDIT_ARCH_X86_64, 0, 3),
        stmt(ld, 0), // seccomp_data.nr
        jump(jeq, SYS_IO_URING_SETUP, 0, 1),
        stmt(ret, libc::SECCOMP_RET_ERRNO | errno as u32),
        stmt(ret, libc::SECCOMP_RET_ALLOW),
    ];
    let fprog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: the filter program lives on this stack frame for the duration of the call.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            || libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &fprog) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
