#!/usr/bin/env python3
"""What the front adds to a fresh connection, without the pool policy in the way.

A fresh SOCKS5 connection (connect, greeting, CONNECT, a 64-byte echo, close) through xrat's
front, against the same thing straight to a sing-box SOCKS inbound (direct outbound) that the
front routes to through `XRAT_TEST_FRONT_ROUTE` (test builds only). The daemon, sing-box and an
echo server run on CPU 1, the client on CPU 0; the two paths alternate connection by connection.

Reproduce (about 10 s; docs/BENCHMARKS.md "Where a fresh relayed connection's time goes"):

    cargo build --release --locked --features test-hooks --bin xrat
    python3 benches/front_fresh.py target/release/xrat 1000
    DAEMON_EXTRA="busy_poll_us = 0" python3 benches/front_fresh.py target/release/xrat 1000

sing-box comes from `.ci/install-cores` (`.cores/bin/sing-box`). Rebuild without the feature
afterwards: the hook must not ship.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SING_BOX = Path(__file__).resolve().parent.parent / ".cores" / "bin" / "sing-box"
TIMEOUT_S = 5.0
WARMUP = 50
ECHO = """
import os, socket
os.sched_setaffinity(0, {1})
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", PORT))
listener.listen(512)
while True:
    conn, _ = listener.accept()
    conn.settimeout(5)
    try:
        conn.sendall(conn.recv(64))
    except OSError:
        pass
    conn.close()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def on_cpu1() -> None:
    os.sched_setaffinity(0, {1})


def wait_listening(port: int) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on 127.0.0.1:{port} after {TIMEOUT_S} s")


def recv_exactly(s: socket.socket, n: int) -> bytes:
    got = b""
    while len(got) < n:
        chunk = s.recv(n - len(got))
        if not chunk:
            raise RuntimeError(f"closed after {len(got)} of {n} bytes")
        got += chunk
    return got


def one(port: int, echo_port: int) -> float:
    """One fresh connection through the SOCKS5 server at `port`; its wall time in seconds."""
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(b"\x05\x01\x00")
        if recv_exactly(s, 2) != b"\x05\x00":
            raise RuntimeError("the greeting was refused")
        s.sendall(b"\x05\x01\x00\x01" + socket.inet_aton("127.0.0.1") + struct.pack(">H", echo_port))
        reply = recv_exactly(s, 10)
        if reply[1] != 0:
            raise RuntimeError(f"CONNECT failed: {reply!r}")
        s.sendall(b"x" * 64)
        recv_exactly(s, 64)
    return time.perf_counter() - start


def main() -> None:
    exe, rounds = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    if not SING_BOX.exists():
        sys.exit(f"{SING_BOX} is missing; run .ci/install-cores")
    work = Path(tempfile.mkdtemp(prefix="xrat-front-fresh-"))
    echo_port, inbound, front = free_port(), free_port(), free_port()
    procs = [subprocess.Popen([sys.executable, "-c", ECHO.replace("PORT", str(echo_port))])]
    try:
        config = {
            "log": {"level": "error"},
            "inbounds": [{"type": "socks", "listen": "127.0.0.1", "listen_port": inbound}],
            "outbounds": [{"type": "direct"}],
        }
        (work / "sing-box.json").write_text(json.dumps(config))
        procs.append(subprocess.Popen([str(SING_BOX), "run", "-c", str(work / "sing-box.json")], preexec_fn=on_cpu1))
        root = work / "root"
        root.mkdir()
        extra = os.environ.get("DAEMON_EXTRA", "")
        (root / "config.toml").write_text(
            f'[daemon]\n{extra}\n[runtime]\nmode = "front"\nlisten = "127.0.0.1"\nsocks_port = {front}\n'
        )
        env = dict(os.environ, XRAT_ROOT=str(root), XRAT_TEST_FRONT_ROUTE=f"127.0.0.1:{inbound}")
        with open(work / "daemon.err", "w") as err:
            procs.append(subprocess.Popen([exe, "daemon", "run-server"], env=env, stderr=err, preexec_fn=on_cpu1))
        os.sched_setaffinity(0, {0})
        for port in (echo_port, inbound, front):
            wait_listening(port)
        for port in (front, inbound):
            for _ in range(WARMUP):
                one(port, echo_port)
        times: dict[str, list[float]] = {"front": [], "direct": []}
        for _ in range(rounds):
            times["front"].append(one(front, echo_port))
            times["direct"].append(one(inbound, echo_port))
        f, d = (statistics.median(times[k]) * 1e6 for k in ("front", "direct"))
        print(f"front p50 {f:.0f} us, direct p50 {d:.0f} us, added {f - d:+.0f} us ({rounds} each)")
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            p.wait(timeout=TIMEOUT_S)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
