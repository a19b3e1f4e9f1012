"""Shared fixtures: an isolated BentoML home with quick-trained models, and a real `bentoml serve`.

tests/support.py sets the BentoML home before anything imports bentoml, so no test touches
~/bentoml. Only the integration fixtures start servers, each on a free loopback port.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator

import pytest

from tests.support import ADMIN_TOKEN, HOME, Server, run_training


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(HOME, ignore_errors=True)


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


@pytest.fixture(scope="session")
def server(trained_store) -> Iterator[Server]:
    """The full graph (router + classic + ensemble) with fault injection enabled, shared by a module."""
    srv = Server({"SERVING_FAULTS_ENABLED": "true"}).start()
    yield srv
    srv.stop()


@pytest.fixture
def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}
