#!/usr/bin/env python3
"""Runs the IPC benches and prints their medians as a markdown table.

Reproduce (from anywhere in the repo):

    python3 benches/report.py                 # cargo bench --bench ipc, then the table
    python3 benches/report.py --no-run        # table from the results already in target/
    python3 benches/report.py -- ping_rtt     # arguments after -- go to criterion

Environment knobs of the bench itself pass through: XRAT_BENCH_QUICK=1 (smoke run),
XRAT_BENCH_PIN=split|same|off (CPU layout; see benches/ipc.rs).

Each median is criterion's point estimate from
target/criterion/<group>/<server>/new/estimates.json. Ratios are time / peer time, so below 1.00
means faster than that peer. After a run, only results written by that run are shown: a server
skipped this time does not reappear with an old number.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

GROUPS = ["ping_rtt", "connect_request_close", "pipelined_16x16"]
SERVERS = ["xrat-uring", "xrat-epoll", "tokio", "tokio-uring", "blocking"]
BASELINES = ["tokio", "tokio-uring"]


def target_dir(repo: Path) -> Path:
    """Cargo's target directory, wherever CARGO_TARGET_DIR or config put it."""
    out = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--no-deps"],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return Path(json.loads(out)["target_directory"])


def load(criterion: Path, since: float | None) -> dict:
    """{(group, server): (median_ns, elements_per_iteration or None)}."""
    results = {}
    for group in GROUPS:
        for server in SERVERS:
            new = criterion / group / server / "new"
            estimates = new / "estimates.json"
            if not estimates.is_file():
                continue
            if since is not None and estimates.stat().st_mtime < since:
                continue
            median = json.loads(estimates.read_text())["median"]["point_estimate"]
            elements = None
            benchmark = new / "benchmark.json"
            if benchmark.is_file():
                throughput = json.loads(benchmark.read_text()).get("throughput") or {}
                elements = throughput.get("Elements")
            results[(group, server)] = (median, elements)
    return results


def fmt_time(ns: float) -> str:
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns:.0f} ns"


def table(results: dict) -> str:
    lines = [
        "| group | server | median | req/s | vs tokio | vs tokio-uring |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for group in GROUPS:
        for server in SERVERS:
            if (group, server) not in results:
                continue
            median, elements = results[(group, server)]
            per_iteration = elements or 1
            rate = per_iteration * 1e9 / median
            ratios = []
            for base in BASELINES:
                other = results.get((group, base))
                ratios.append(f"{median / other[0]:.2f}" if other else "–")
            lines.append(
                f"| {group} | {server} | {fmt_time(median)} | {rate:,.0f} | "
                + " | ".join(ratios)
                + " |"
            )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--no-run", action="store_true", help="only read existing results"
    )
    parser.add_argument("criterion_args", nargs="*", help="passed to criterion")
    args = parser.parse_args()

    # abspath, not resolve: a symlinked benches/ still reports on the tree it was run from.
    repo = Path(os.path.abspath(__file__)).parent.parent
    since = None
    if not args.no_run:
        # Coarse filesystem timestamps: allow a second of slack.
        since = time.time() - 1
        command = ["cargo", "bench", "--bench", "ipc"]
        if args.criterion_args:
            command += ["--", *args.criterion_args]
        print("$ " + " ".join(command), file=sys.stderr)
        status = subprocess.run(command, cwd=repo).returncode
        if status != 0:
            print(f"cargo bench failed with status {status}", file=sys.stderr)
            return status

    criterion = target_dir(repo) / "criterion"
    results = load(criterion, since)
    if not results:
        print(f"no results under {criterion}", file=sys.stderr)
        return 1
    layout = "as last run" if args.no_run else os.environ.get("XRAT_BENCH_PIN") or "split"
    print(f"IPC medians (CPU layout: {layout}; ratio = time / peer time, lower is faster)\n")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
