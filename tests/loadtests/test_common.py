"""loadtests/harness/common.py: durations as every CLI takes them, the two nearest-rank
percentiles (over values and over a histogram) agreeing, and the small
process/environment helpers."""

from __future__ import annotations

import math
import random
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from loadtests.harness import common


@pytest.mark.parametrize(
    "text, seconds",
    [
        # the soak's syntax
        ("10m", 600),
        ("90s", 90),
        ("1m30s", 90),
        ("600", 600),
        ("1h", 3600),
        ("1m 30s", 90),
        ("10M", 600),
        (" 2m ", 120),
        # the benchmark's syntax: fractions and a trailing number of seconds without a unit
        ("20s", 20),
        ("1.5m", 90),
        (".5m", 30),
        ("1m30", 90),
        ("1h2m3s", 3723),
        # numbers are seconds
        (45, 45),
        (2.5, 2.5),
    ],
)
def test_parse_duration(text, seconds):
    assert common.parse_duration(text) == seconds


@pytest.mark.parametrize("junk", ["10 minutes", "", "m", "5d", "1.2.3s", "s10", "-5s"])
def test_parse_duration_rejects_junk(junk):
    with pytest.raises(ValueError, match="not a duration"):
        common.parse_duration(junk)


def test_percentile_edge_cases():
    assert common.percentile([], 0.99) is None
    assert common.percentile([5.0], 0.99) == 5.0
    assert common.percentile([1, 2, 3, 4], 0.5) == 2
    assert common.percentile([4, 1, 3, 2], 0.0) == 1  # rank at least 1: the smallest
    assert common.percentile(range(1, 101), 0.99) == 99
    assert common.histogram_percentile({}, 0.5) is None


def test_percentile_over_values_equals_the_histogram_one():
    rng = random.Random(7)
    values = [rng.choice(range(1, 400)) for _ in range(1003)]
    ordered = sorted(values)
    for q in (0.0, 0.01, 0.29, 0.5, 0.95, 0.99, 1.0):
        nearest_rank = ordered[max(1, math.ceil(q * len(values))) - 1]
        assert common.percentile(values, q) == nearest_rank
        assert common.histogram_percentile(Counter(values), q) == nearest_rank


def test_free_port_is_bindable():
    port = common.free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_parse_env_pairs():
    assert common.parse_env_pairs(["A=1", "B=x=y", "C="]) == {"A": "1", "B": "x=y", "C": ""}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        common.parse_env_pairs(["NOEQUALS"])


def test_pythonpath_and_home(tmp_path):
    assert common.with_root_on_pythonpath({}) == str(common.ROOT)
    assert common.with_root_on_pythonpath({"PYTHONPATH": "/x"}).split(":") == [
        str(common.ROOT),
        "/x",
    ]
    assert common.bentoml_home(tmp_path / "h") == (tmp_path / "h").resolve()
    assert common.bentoml_home(env={"BENTOML_HOME": str(tmp_path)}) == tmp_path.resolve()
    assert common.bentoml_home(env={}) == (Path.home() / "bentoml").resolve()


def test_common_is_stdlib_only():
    """loadtests/baselines/mlserver/launch.py imports it and runs under either venv: no
    third-party import."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import loadtests.harness.common, "
        "loadtests.baselines.mlserver.launch; print('ok')"
    )
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code, str(common.ROOT)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.strip() == "ok", result.stderr


def test_write_output_json(tmp_path, monkeypatch):
    monkeypatch.delenv("LOADTEST_OUTPUT_DIR", raising=False)
    assert common.write_output_json("a.json", {"x": 1}) is None
    monkeypatch.setenv("LOADTEST_OUTPUT_DIR", str(tmp_path / "run"))
    path = common.write_output_json("a.json", {"x": 1}, indent=None)
    assert path == tmp_path / "run" / "a.json" and path.read_text() == '{"x": 1}'


def test_markdown_row():
    assert common.markdown_row("a", 1, None, "") == "| a | 1 | None |  |"
