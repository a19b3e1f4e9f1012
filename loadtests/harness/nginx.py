"""nginx in front of router replicas, run as our own process (Debian's `nginx` package): round robin
over the upstreams on a free loopback port, retrying another replica only where that is safe, and
logging every upstream attempt's status so a test can count upstream failures. Used by
`python -m loadtests.replicas` and by the replica tests (tests/support.py).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from loadtests.harness.common import free_port, temp_dir
from loadtests.harness.process import tree_cpu_seconds

NGINX_CONF = """
daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    log_format upstreams '$msec|$request_time|$request_method|$uri|$status|'
                         '$upstream_addr|$upstream_status';
    access_log {dir}/access.log upstreams;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    upstream routers {{
{servers}
        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://routers;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_next_upstream {next_upstream};
            proxy_next_upstream_tries 3;
            proxy_connect_timeout 2s;
            proxy_read_timeout 30s;
        }}
    }}
}}
"""
"""One worker process, an access log with every upstream attempt's status, HTTP/1.1 keep-alive to
the upstreams (32 idle connections kept), a failed or 502/503 answer retried on the next replica (up
to 3 tries), a replica that failed once skipped for 2 s. A POST already sent to a replica is retried
only with `non_idempotent` (Nginx(retry_non_idempotent=True)): classify and feedback are not built
to be repeated, and a retry there hides the upstream failure from the client."""
NEXT_UPSTREAM = "error timeout http_502 http_503"


@dataclass(frozen=True)
class LogEntry:
    """One request as nginx's access log saw it: when it ended (epoch seconds), how long it took,
    its final status, and the replica and status of every upstream attempt, in order ("502",
    "200"; "-" when none)."""

    end: float
    duration: float
    method: str
    uri: str
    status: int
    replicas: tuple[str, ...]
    upstream: tuple[str, ...]

    @property
    def start(self) -> float:
        return self.end - self.duration

    @property
    def upstream_failures(self) -> int:
        """Attempts that did not get an answer below 500 from a replica (a retried one included)."""
        return sum(1 for s in self.upstream if not s.isdigit() or int(s) >= 500)


def parse_log_line(line: str) -> LogEntry:
    """One line of the `upstreams` log format above."""
    end, duration, method, uri, status, replicas, upstream = line.rstrip("\n").split("|")

    def attempts(field: str) -> tuple[str, ...]:  # "a, b" per retry, "a : b" per internal redirect
        return tuple(field.replace(" : ", ", ").split(", "))

    return LogEntry(
        float(end),
        float(duration),
        method,
        uri,
        int(status),
        attempts(replicas),
        attempts(upstream),
    )


def nginx_binary() -> str | None:
    """The nginx executable (PATH, else Debian's /usr/sbin/nginx), or None when not installed."""
    found = shutil.which("nginx") or "/usr/sbin/nginx"
    return found if Path(found).exists() else None


class Nginx:
    """Debian's nginx as our own process: round robin over `upstreams` ("127.0.0.1:PORT") on a free
    loopback port, retrying another replica when one fails (as an ingress does; a POST already sent
    only when `retry_non_idempotent`).

    Its config, pid and logs live in `workdir` (default: a new temp dir, removed by stop(); a
    given workdir is kept, logs included)."""

    def __init__(
        self,
        upstreams: list[str],
        workdir: Path | None = None,
        retry_non_idempotent: bool = False,
    ):
        self._own_dir = workdir is None
        self.dir = Path(workdir) if workdir is not None else temp_dir("nginx-")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.upstreams = list(upstreams)
        self.retry_non_idempotent = retry_non_idempotent
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        servers = "\n".join(f"        server {u} max_fails=1 fail_timeout=2s;" for u in upstreams)
        (self.dir / "nginx.conf").write_text(
            NGINX_CONF.format(
                dir=self.dir,
                port=self.port,
                servers=servers,
                next_upstream=NEXT_UPSTREAM + (" non_idempotent" if retry_non_idempotent else ""),
            )
        )
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 15) -> Nginx:
        """Start nginx and wait until its port accepts connections (RuntimeError with its stderr
        if it does not within `timeout` seconds)."""
        binary = nginx_binary() or "nginx"
        with open(self.dir / "stderr.log", "w") as stderr:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                [binary, "-p", str(self.dir), "-c", str(self.dir / "nginx.conf")],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.1)
        self.stop(remove=False)
        raise RuntimeError(f"nginx did not start: {(self.dir / 'stderr.log').read_text()}")

    def log(self) -> list[LogEntry]:
        """Every request nginx has finished so far, from its access log (written as each ends)."""
        path = self.dir / "access.log"
        if not path.exists():
            return []
        return [parse_log_line(line) for line in path.read_text().splitlines() if line.strip()]

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def cpu_seconds(self) -> float:
        """CPU seconds used so far by nginx's master and worker processes."""
        return tree_cpu_seconds(self.process.pid) if self.alive() else 0.0

    def stop(self, remove: bool | None = None) -> None:
        """Stop nginx (SIGTERM: fast shutdown); remove its directory if it made it (or `remove`)."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(10)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(10)
            self.process = None
        if self._own_dir if remove is None else remove:
            shutil.rmtree(self.dir, ignore_errors=True)
