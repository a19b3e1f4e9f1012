"""Helpers shared by the load tests, the benchmark, the soak test and tests/support.py.

Stdlib only, and nothing is run at import: loadtests/baselines/mlserver/launch.py imports it
too, and that module must run under either venv (the project's, or .venv-mlserver's).
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
"""The repository's root: the working directory of every server and Locust run, and the
PYTHONPATH entry that makes `service`, `serving`, `models` and `loadtests` importable."""


# --------------------------------------------------------------------------- processes, files
def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def temp_dir(prefix: str) -> Path:
    """A new directory under the system's temp dir (kept: the caller owns it)."""
    return Path(tempfile.mkdtemp(prefix=prefix))


def bentoml_home(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Path:
    """The BentoML home `path`, else $BENTOML_HOME of `env` (default os.environ), else ~/bentoml,
    resolved."""
    env = os.environ if env is None else env
    return Path(path or env.get("BENTOML_HOME") or Path.home() / "bentoml").expanduser().resolve()


def with_root_on_pythonpath(env: Mapping[str, str]) -> str:
    """The PYTHONPATH for a child process: ROOT first, then `env`'s own PYTHONPATH (if any)."""
    return os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))


def git_commit(checkout: Path | None = None) -> str | None:
    """The checkout's short commit hash (None when git cannot tell)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=checkout or ROOT,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit(143), so `finally` blocks run (stop Locust and the servers)."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def parse_env_pairs(items: Iterable[str]) -> dict[str, str]:
    """{KEY: VALUE} from the KEY=VALUE strings of a repeated --server-env option."""
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--server-env {item!r}: expected KEY=VALUE")
        pairs[key] = value
    return pairs


# --------------------------------------------------------------------------- durations
_NUMBER = r"(?:\d+\.?\d*|\.\d+)"
_DURATION = re.compile(rf"(?:{_NUMBER}\s*[hms]\s*)*(?:{_NUMBER})?")
_DURATION_PART = re.compile(rf"({_NUMBER})\s*([hms]?)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "": 1.0}


def parse_duration(text: str | float) -> float:
    """Seconds in a duration as the CLIs take it (Locust's --run-time syntax and plain seconds).

    '10m', '90s', '1m30s', '1h', '1.5m', '600' (plain numbers are seconds), '1m30' (a trailing
    number without a unit is seconds too), '1m 30s' (spaces between parts), any case. A number is
    taken as seconds. Anything else ('10 minutes', '', '5d') is a ValueError."""
    if isinstance(text, int | float):
        return float(text)
    cleaned = text.strip().lower()
    if not cleaned or not _DURATION.fullmatch(cleaned):
        raise ValueError(f"not a duration: {text!r} (use e.g. 10m, 90s, 1m30s)")
    return sum(
        float(number) * _UNIT_SECONDS[unit] for number, unit in _DURATION_PART.findall(cleaned)
    )


# --------------------------------------------------------------------------- percentiles
def histogram_percentile(histogram: Mapping[float, int], q: float) -> float | None:
    """Nearest-rank q-quantile (0..1) of a {value: count} histogram (None when it counts nothing).

    The smallest value whose cumulative count reaches ceil(q x total) (at least 1): the rule of
    `percentile` below, over a histogram such as Locust's {rounded ms: count} response times."""
    total = sum(histogram.values())
    if total <= 0:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for value in sorted(histogram):
        seen += histogram[value]
        if seen >= rank:
            return float(value)
    return float(max(histogram))


def percentile(values: Iterable[float], q: float) -> float | None:
    """Nearest-rank q-quantile (0..1) of `values` (None when empty): the value at rank
    ceil(q x n) of the sorted values."""
    return histogram_percentile(Counter(values), q)


# --------------------------------------------------------------------------- Locust's files
def write_output_json(name: str, data: object, indent: int | None = 2) -> Path | None:
    """Write `data` as JSON to $LOADTEST_OUTPUT_DIR/name (the run directory the runner gives the
    Locust process); nothing without that variable. Returns the path written."""
    out = os.environ.get("LOADTEST_OUTPUT_DIR")
    if not out:
        return None
    path = Path(out) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=indent))
    return path


def locust_stats_row(stats_csv: Path, name: str) -> dict[str, str] | None:
    """The row of Locust's *_stats.csv whose Name is `name` ("Aggregated": the totals), or None."""
    with open(stats_csv, newline="") as f:
        for row in csv.DictReader(f):
            if row.get("Name") == name:
                return row
    return None


def markdown_row(*cells: object) -> str:
    """A row of a markdown table: | a | b | c |."""
    return "| " + " | ".join(str(c) for c in cells) + " |"


def fmt(value: float | None, digits: int = 0) -> str:
    """A figure for a report's table: thousands separated, `digits` decimals, "–" when missing."""
    return "–" if value is None else f"{value:,.{digits}f}"


def ratio(a: float | None, b: float | None) -> str:
    """A / B for a report's ratio column ("1.23×"), "–" when either is missing or zero."""
    return f"{a / b:.2f}×" if a and b else "–"


def load_average() -> list[float]:
    """The 1/5/15-minute load average, rounded: a report's note of how busy the machine was."""
    return [round(x, 1) for x in os.getloadavg()]


def run_facts(prog: str, argv: Iterable[str]) -> dict[str, object]:
    """Where and how a benchmark ran, for its report's header: start time, the command, the
    machine, the commit and the load average at the start."""
    import platform
    from datetime import datetime

    return {
        "started": datetime.now().isoformat(timespec="seconds"),
        "command": " ".join([prog, *argv]),
        "machine": f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}",
        "commit": git_commit(),
        "load_average_start": load_average(),
    }
