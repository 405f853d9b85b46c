#!/usr/bin/env python3
"""The interleaved harness of docs/BENCHMARKS.md: the loop client (ccr.c) run in turn against each
daemon, ROUNDS times, N connections (connect, daemon_ping, reply, close) per turn, pinned with
taskset to CLIENT_CPU. Prints each turn's p50 and the daemon's context switches per connection
(from /proc/PID/status), then the median p50 of each daemon and the ratios to the last one.

    python3 benches/startup/interleave.py ROUNDS N CLIENT_CPU NAME=PID:SOCKET... [-- persistent]

Start the daemons first with `taskset -c 1`, for example an xrat root's `xrat daemon run-server`
and the tokio peer (`XRAT_BENCH_PEER=tokio XRAT_BENCH_SOCKET=<path> target/release/deps/ipc-<hash>`);
build the client with `gcc -O2 -o /tmp/ccr benches/startup/ccr.c` (or set CCR to its path).
"""
import os
import statistics
import subprocess
import sys


def switches(pid):
    with open(f"/proc/{pid}/status") as status:
        return sum(int(line.split()[1]) for line in status if "ctxt_switches" in line)


def main():
    args = sys.argv[1:]
    persistent = ["persistent"] if args[-1:] == ["persistent"] else []
    rounds, n, cpu = int(args[0]), args[1], args[2]
    servers = []
    for spec in args[3:]:
        if spec in ("--", "persistent"):
            continue
        name, rest = spec.split("=", 1)
        pid, socket = rest.split(":", 1)
        servers.append((name, pid, socket))
    ccr = os.environ.get("CCR", "/tmp/ccr")
    p50s = {name: [] for name, _, _ in servers}
    for _ in range(rounds):
        row = []
        for name, pid, socket in servers:
            before = switches(pid)
            command = ["taskset", "-c", cpu, ccr, socket, n] + persistent
            out = subprocess.run(command, capture_output=True, text=True, check=True).stdout.split()
            per = (switches(pid) - before) / int(n)
            p50s[name].append(float(out[3]))
            row.append(f"{name} p50 {out[3]} us, {per:.2f} switches")
        print(" | ".join(row), flush=True)
    medians = {name: statistics.median(values) for name, values in p50s.items()}
    last = servers[-1][0]
    print("median p50 (us):", ", ".join(f"{k} {v:.1f}" for k, v in medians.items()))
    print(f"ratio to {last}:", ", ".join(f"{k} {v / medians[last]:.2f}" for k, v in medians.items()))


if __name__ == "__main__":
    main()
