"""Process trees from /proc: who descends from a server (BentoML's workers run in sessions of
their own), the CPU the whole tree used, and stopping it all. Linux only, stdlib only."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path


def _proc_table() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, CPU seconds user + system) for every live process."""
    table = {}
    tick = os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = (
                stat.read_text().rsplit(")", 1)[1].split()
            )  # after the name: state ppid pgrp ...
            table[int(stat.parent.name)] = (
                int(fields[1]),
                (int(fields[11]) + int(fields[12])) / tick,
            )
        except (OSError, ValueError, IndexError):
            continue
    return table


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it (BentoML's workers run in sessions of their own)."""
    table = _proc_table()
    out, frontier = [pid], [pid]
    while frontier:
        parent = frontier.pop()
        children = [p for p, (ppid, _) in table.items() if ppid == parent]
        out += children
        frontier += children
    return [p for p in out if p in table]


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds used so far by `pid` and its live descendants."""
    table = _proc_table()
    return sum(table[p][1] for p in descendants(pid) if p in table)


def stop_server(process: subprocess.Popen | None, timeout: float = 30) -> None:
    """SIGTERM a server started in its own session (graceful shutdown), SIGKILL it after `timeout`,
    then SIGKILL any worker that outlived its arbiter (BentoML's workers run in sessions of their
    own)."""
    if process is None or process.poll() is not None:
        return
    tree = descendants(process.pid)
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    for pid in tree[1:]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
