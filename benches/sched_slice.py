#!/usr/bin/env python3
"""daemon_ping tail latency with CPU hogs on the daemon's CPU, per daemon.sched_slice_us.

Reproduce (after `cargo build --release`; about 40 s):

    python3 benches/sched_slice.py                 # slices 0 and 100, 1 and 2 hogs, 3 rounds
    python3 benches/sched_slice.py --slices 0,100,1000 --rounds 5

The daemon (target/release/xrat, a private root, no session) runs pinned to CPU 1 next to N busy
loops, the hogs, which stand in for a core saturated by bulk traffic. A client pinned to CPU 0 at
SCHED_FIFO (so that its own scheduling is not counted) sends one `daemon_ping` every 2 ms on a
persistent connection and times each round trip. Configurations are interleaved round by round,
so a noisy spell hits all of them. Prints p50/p90/p99/max per run and the median of each over
the rounds.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PINGS = 1500
GAP_S = 0.002
READY_TIMEOUT_S = 10.0


def normal_priority() -> None:
    """Children start on SCHED_OTHER: the pinger's SCHED_FIFO must not reach them."""
    os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


def start_daemon(exe: Path, root: Path, slice_us: int) -> subprocess.Popen:
    root.mkdir(parents=True)
    (root / "config.toml").write_text(f"[daemon]\nsched_slice_us = {slice_us}\n")
    env = dict(os.environ, XRAT_ROOT=str(root))
    proc = subprocess.Popen(
        ["taskset", "-c", "1", str(exe), "daemon", "run-server"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=normal_priority,
    )
    sock = root / "runtime" / "daemon.sock"
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not sock.exists():
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            sys.exit(f"the daemon at {root} did not come up; run it by hand to see why")
        time.sleep(0.02)
    return proc


def pings(sock: Path) -> list[float]:
    s = socket.socket(socket.AF_UNIX)
    s.connect(str(sock))
    f = s.makefile("rb")
    out = []
    for i in range(PINGS):
        t = time.perf_counter()
        s.sendall(b'{"type":"daemon_ping","id":%d}\n' % i)
        if not f.readline():
            sys.exit("the daemon closed the connection")
        out.append((time.perf_counter() - t) * 1e6)
        time.sleep(GAP_S)
    s.close()
    return out


def quantiles(v: list[float]) -> dict[str, float]:
    v = sorted(v)
    n = len(v)
    return {"p50": v[n // 2], "p90": v[n * 9 // 10], "p99": v[n * 99 // 100], "max": v[-1]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--slices", default="0,100")
    ap.add_argument("--hogs", default="1,2")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    repo = Path(__file__).resolve().parent.parent
    exe = repo / "target" / "release" / "xrat"
    if not exe.exists():
        sys.exit(f"{exe} is missing; build it with `cargo build --release --locked`")
    os.sched_setaffinity(0, {0})
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
        fifo = True
    except PermissionError:
        fifo = False
    results: dict[tuple[int, int], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="xrat-slice-") as tmp:
        for rnd in range(args.rounds):
            for hogs in map(int, args.hogs.split(",")):
                for slice_us in map(int, args.slices.split(",")):
                    root = Path(tmp) / f"r{rnd}-h{hogs}-s{slice_us}"
                    daemon = start_daemon(exe, root, slice_us)
                    loops = [
                        subprocess.Popen(
                            ["taskset", "-c", "1", "sh", "-c", "while :; do :; done"],
                            preexec_fn=normal_priority,
                        )
                        for _ in range(hogs)
                    ]
                    try:
                        time.sleep(0.3)
                        q = quantiles(pings(root / "runtime" / "daemon.sock"))
                    finally:
                        for h in loops:
                            h.kill()
                        daemon.terminate()
                        daemon.wait()
                    results.setdefault((hogs, slice_us), []).append(q)
                    print(
                        f"round {rnd + 1} hogs {hogs} slice {slice_us} µs: "
                        + " ".join(f"{k} {v:.0f} µs" for k, v in q.items()),
                        flush=True,
                    )
    print(f"\npinger SCHED_FIFO: {fifo}; {PINGS} pings per run, medians over {args.rounds} rounds\n")
    print("| hogs on the daemon's CPU | daemon.sched_slice_us | p50 | p90 | p99 | max |")
    print("|---:|---:|---:|---:|---:|---:|")
    for (hogs, slice_us), runs in sorted(results.items()):
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(
            f"| {hogs} | {slice_us} | {med['p50']:.0f} µs | {med['p90']:.0f} µs | "
            f"{med['p99']:.0f} µs | {med['max']:.0f} µs |"
        )


if __name__ == "__main__":
    main()
