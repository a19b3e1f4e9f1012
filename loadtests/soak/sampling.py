"""Samples of the server's process tree while the soak runs (psutil, imported when used): RSS,
open file descriptors, threads and CPU seconds per process, each process named from its command line
(router / classic / ensemble workers, the arbiter, helper processes).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

WORKER_MODULE = "_bentoml_impl.worker.service"


def process_role(cmdline: Sequence[str], name: str = "") -> str:
    """A stable label for a server process from its command line: 'router#1', 'classic#1' (BentoML
    service workers, by --service-name and --worker-id), 'arbiter' (`bentoml serve`), else its
    name."""
    args = list(cmdline)
    if WORKER_MODULE in args:
        service = (
            args[args.index("--service-name") + 1] if "--service-name" in args[:-1] else "service"
        )
        worker = args[args.index("--worker-id") + 1] if "--worker-id" in args[:-1] else "?"
        return f"{service}#{worker}"
    if "bentoml" in args and "serve" in args:
        return "arbiter"
    if "-c" in args:  # a helper started by multiprocessing/joblib: name it by what it imports
        code = " ".join(args[args.index("-c") + 1 :])
        for helper in ("resource_tracker", "semaphore_tracker", "loky", "multiprocessing"):
            if helper in code:
                return helper
    return name or (Path(args[0]).name if args else "process")


def label_processes(processes: Iterable[tuple[int, str]]) -> dict[int, str]:
    """pid -> label for (pid, role) pairs; repeated roles get '~2', '~3' in pid order."""
    labels: dict[int, str] = {}
    seen: dict[str, int] = {}
    for pid, role in sorted(processes):
        seen[role] = seen.get(role, 0) + 1
        labels[pid] = role if seen[role] == 1 else f"{role}~{seen[role]}"
    return labels


def find_server_root(port: int) -> int | None:
    """The top-most process of ours listening on `port` (BentoML's arbiter owns the sockets)."""
    import psutil

    try:
        listeners = {
            c.pid
            for c in psutil.net_connections(kind="tcp")
            if c.pid and c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
        }
    except (psutil.AccessDenied, OSError):
        return None
    for pid in sorted(listeners):
        try:
            if not any(p.pid in listeners for p in psutil.Process(pid).parents()):
                return pid
        except psutil.NoSuchProcess:
            continue
    return None


def sample_tree(root_pid: int) -> dict[str, Any] | None:
    """One memory sample of `root_pid` and its descendants (None when the root is gone)."""
    import psutil

    try:
        root = psutil.Process(root_pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return None
    rows = []
    for proc in procs:
        try:
            with proc.oneshot():
                cpu = proc.cpu_times()
                rows.append(
                    (
                        proc.pid,
                        process_role(proc.cmdline(), proc.name()),
                        {
                            "pid": proc.pid,
                            "rss_mb": round(proc.memory_info().rss / 2**20, 2),
                            "fds": proc.num_fds(),
                            "threads": proc.num_threads(),
                            "cpu_s": round(cpu.user + cpu.system, 2),
                        },
                    )
                )
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    labels = label_processes((pid, role) for pid, role, _ in rows)
    processes = {labels[pid]: info for pid, _, info in rows}
    return {
        "epoch": round(time.time(), 3),
        "processes": processes,
        "total_rss_mb": round(sum(p["rss_mb"] for p in processes.values()), 2),
    }
