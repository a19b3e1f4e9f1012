"""Shared fixtures: an isolated BentoML home with quick-trained models, and a real `bentoml serve`.

tests/support.py sets the BentoML home before anything imports bentoml, so no test touches
~/bentoml. Only the integration fixtures start servers, each on a free loopback port.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from tests.support import (
    ADMIN_TOKEN,
    HOME,
    Postgres,
    Server,
    require_infrastructure,
    run_training,
)

_postgres = Postgres()


def pytest_configure(config):
    """Start a real PostgreSQL on loopback for the shared-store tests (unless one is given)."""
    if not os.environ.get("TEST_POSTGRES_URL") and _postgres.available and os.geteuid() == 0:
        try:
            os.environ["TEST_POSTGRES_URL"] = _postgres.start()
        except (
            OSError,
            RuntimeError,
            subprocess.SubprocessError,
        ) as exc:  # the PostgreSQL tests then skip, saying why
            print(f"PostgreSQL not started: {exc}")


def pytest_unconfigure(config):
    _postgres.stop()


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_cluster() -> Postgres:
    """The PostgreSQL cluster the test set-up started (skips when there is none)."""
    if _postgres.url is None:
        require_infrastructure(
            "no PostgreSQL: install Debian's postgresql package (the set-up starts it)"
        )
    return _postgres


@pytest.fixture(scope="session")
def trained_store() -> dict:
    """Quick-train both models once per session into the isolated store; returns the report."""
    report_path = HOME / "report.json"
    if not report_path.exists():
        result = run_training("--quick", "--report", str(report_path))
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return json.loads(report_path.read_text())


@pytest.fixture(scope="session")
def example_row(trained_store) -> dict:
    from models import store

    model, _ = store.load("classic:latest")
    return model.schema.example()


BASELINE_FLAGS = {
    "ensemble": {
        "enabled": True,
        "rollout_percentage": 0,
        "allowed_users": ["beta_testers"],
        "groups": {"beta_testers": ["beta_bob"]},
        "deadline_ms": 500,
        "breaker": {"failure_threshold": 3, "reset_timeout_s": 1.0},
    },
    "cache": {"enabled": True, "max_entries": 1000, "ttl_s": 300},
}


@pytest.fixture(scope="session")
def server(trained_store) -> Iterator[Server]:
    """The full graph (router + classic + ensemble) with fault injection enabled, shared by the
    session."""
    srv = Server({"SERVING_FAULTS_ENABLED": "true"}, flags=BASELINE_FLAGS).start()
    yield srv
    srv.stop()


@pytest.fixture
def set_flags(server, admin_headers):
    """PUT a flag config for one test; the baseline (and no injected faults) is restored
    afterwards."""
    import httpx

    def put(config: dict) -> httpx.Response:
        return httpx.put(
            f"{server.url}/api/admin/flags", json=config, headers=admin_headers, timeout=10
        )

    yield put
    assert put(BASELINE_FLAGS).status_code == 200
    httpx.put(
        f"{server.url}/api/admin/faults",
        json={"delay_ms": 0, "error_rate": 0},
        headers=admin_headers,
        timeout=10,
    )


@pytest.fixture
def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}
