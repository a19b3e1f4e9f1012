"""A throwaway PostgreSQL cluster (Debian's package) on a loopback port, run as our own processes:
the shared state store of the replica benchmark's nginx configurations and of the test suite.

PostgreSQL refuses to run as root, so as root every command runs as the `postgres` user
(`runuser`); otherwise as ourselves."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

from loadtests.harness.common import free_port, temp_dir
from loadtests.harness.process import tree_cpu_seconds


def postgres_binaries() -> Path | None:
    """Debian's PostgreSQL binaries (the newest version installed), or None."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


def postgres_available() -> str | None:
    """None when a throwaway PostgreSQL can be started here, else why not."""
    if postgres_binaries() is None:
        return "PostgreSQL is not installed (/usr/lib/postgresql/*/bin)"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser (PostgreSQL refuses to run as root)"
    return None


class Postgres:
    """A cluster holding one database, `serving`, its data in a temp dir removed by stop().

    `durable=False` (the tests): initdb --no-sync, fsync off and an immediate stop, for speed; the
    benchmark keeps the defaults, so the store's cost is what a deployment pays."""

    def __init__(self, durable: bool = True) -> None:
        self.bin = postgres_binaries()
        self.durable = durable
        self.dir: Path | None = None
        self.port = 0
        self.url: str | None = None

    @property
    def available(self) -> bool:
        return postgres_available() is None

    def _run(self, *args: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        result = subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"{Path(args[0]).name} failed: {result.stdout}{result.stderr}")

    def _pg_ctl(self, *args: str) -> None:
        assert self.bin is not None and self.dir is not None
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), *args)

    def _options(self) -> str:
        fsync = "" if self.durable else " -c fsync=off"
        return f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1{fsync}"

    def _createdb(self, name: str) -> None:
        assert self.bin is not None
        host = ["-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"]
        self._run(str(self.bin / "createdb"), *host, name)

    def start(self) -> str:
        """initdb, start, create `serving`; its SQLAlchemy URL."""
        if self.bin is None:
            raise RuntimeError(postgres_available())
        self.dir = temp_dir("pg-")
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self.port = free_port()
        initdb = [str(self.bin / "initdb"), "-D", str(self.dir / "data"), "-A", "trust"]
        self._run(*initdb, "-U", "postgres", *([] if self.durable else ["--no-sync"]))
        self.resume()
        self._createdb("serving")
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/serving"
        return self.url

    def pause(self) -> None:
        """Stop the server (connections drop at once), keeping its data for `resume`."""
        self._pg_ctl("-m", "fast", "-w", "stop")

    def resume(self) -> None:
        """Start the server (again) on its port and data."""
        assert self.dir is not None
        self._pg_ctl("-l", str(self.dir / "log"), "-w", "start", "-o", self._options())

    def create_database(self) -> str:
        """A fresh, empty database on this cluster; its URL."""
        assert self.url is not None
        name = f"t_{uuid.uuid4().hex[:10]}"
        self._createdb(name)
        return self.url.rsplit("/", 1)[0] + f"/{name}"

    def pid(self) -> int | None:
        """The postmaster's pid (its backends are its children)."""
        try:
            return int((self.dir / "data" / "postmaster.pid").read_text().split()[0])  # type: ignore[operator]
        except (OSError, ValueError, IndexError, TypeError):
            return None

    def cpu_seconds(self) -> float:
        """CPU seconds used so far by the postmaster and its backends."""
        pid = self.pid()
        return tree_cpu_seconds(pid) if pid else 0.0

    def stop(self) -> None:
        """Stop the cluster and remove its data."""
        if self.dir is None:
            return
        try:
            self._pg_ctl("-m", "fast" if self.durable else "immediate", "stop")
        except (RuntimeError, subprocess.SubprocessError) as exc:
            print(f"  PostgreSQL stop: {exc}", file=sys.stderr)
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None
