"""Load-test smoke: the Locust suite runs headless against a real server and the SLO gate judges it.

Uses the session `server` (a real `bentoml serve` of the quick models, tests/conftest.py). Runs
`python -m loadtests run mixed` for a few seconds with seven users (the first seven Locust spawns
cover every class of the mix), then the gate with the generous CI targets (must pass) and with an
impossible target (must fail), so the gate is known to be able to fail. About 30 s.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.support import ROOT, run_module

pytestmark = pytest.mark.integration


def loadtests(*args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    return run_module("loadtests", *args, timeout=timeout)


@pytest.fixture(scope="module")
def smoke_run(server, tmp_path_factory) -> Path:
    results = tmp_path_factory.mktemp("loadtests")
    result = loadtests(
        "run",
        "mixed",
        "--users",
        "7",
        "--spawn-rate",
        "7",
        "--duration",
        "15s",
        "--wait",
        "0.05-0.2",
        "--host",
        server.url,
        "--results",
        str(results),
        "--name",
        "smoke",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return results / "smoke"


def test_mixed_run_passes_the_ci_slo(smoke_run):
    for name in (
        "locust_stats.csv",
        "locust_failures.csv",
        "report.html",
        "run.json",
        "answers.json",
    ):
        assert (smoke_run / name).exists(), name
    stats = (smoke_run / "locust_stats.csv").read_text()
    for endpoint in ("/api/classify", "/api/v1/classify/classic", "/api/v2/classify/ensemble"):
        assert endpoint in stats
    answers = json.loads((smoke_run / "answers.json").read_text())
    assert answers["users_on_both_arms"] == 0  # the split is sticky

    gate = loadtests(
        "check", str(smoke_run), "--slo", str(ROOT / "loadtests" / "locust" / "slo-ci.yaml")
    )
    assert gate.returncode == 0, gate.stdout + gate.stderr
    assert "SLO gate: PASS" in gate.stdout


def test_gate_fails_on_an_impossible_slo(smoke_run, tmp_path):
    impossible = tmp_path / "impossible.yaml"
    impossible.write_text(
        "endpoints:\n  /api/v1/classify/classic: {p50_ms: 0.001}\n"
        "aggregated: {max_error_rate: 0.01}\n"
    )
    gate = loadtests("check", str(smoke_run), "--slo", str(impossible))
    assert gate.returncode == 1, gate.stdout + gate.stderr
    assert "MISS" in gate.stdout and "SLO gate: FAIL" in gate.stdout
