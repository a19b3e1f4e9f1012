"""nginx in front of router replicas, run as our own process (Debian's `nginx` package): round robin
over the upstreams on a free loopback port, retrying another replica when one fails, as an ingress
does. Used by `python -m loadtests.replicas` and by the replica tests (tests/support.py).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
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
    access_log off;
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
            proxy_next_upstream error timeout http_502 http_503 non_idempotent;
            proxy_next_upstream_tries 3;
            proxy_connect_timeout 2s;
            proxy_read_timeout 30s;
        }}
    }}
}}
"""
"""One worker process, no access log, HTTP/1.1 keep-alive to the upstreams (32 idle connections
kept), a failed or 502/503 answer retried on the next replica (up to 3 tries; POSTs too), a replica
that failed once skipped for 2 s."""


def nginx_binary() -> str | None:
    """The nginx executable (PATH, else Debian's /usr/sbin/nginx), or None when not installed."""
    found = shutil.which("nginx") or "/usr/sbin/nginx"
    return found if Path(found).exists() else None


class Nginx:
    """Debian's nginx as our own process: round robin over `upstreams` ("127.0.0.1:PORT") on a free
    loopback port, retrying another replica when one fails (as an ingress does).

    Its config, pid and logs live in `workdir` (default: a new temp dir, removed by stop(); a
    given workdir is kept, logs included)."""

    def __init__(self, upstreams: list[str], workdir: Path | None = None):
        self._own_dir = workdir is None
        self.dir = Path(workdir) if workdir is not None else temp_dir("nginx-")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.upstreams = list(upstreams)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        servers = "\n".join(f"        server {u} max_fails=1 fail_timeout=2s;" for u in upstreams)
        (self.dir / "nginx.conf").write_text(
            NGINX_CONF.format(dir=self.dir, port=self.port, servers=servers)
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
