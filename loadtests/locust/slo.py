"""SLO gate: compare a Locust run's *_stats.csv with the targets in a YAML file.

    python -m loadtests check results/<run>/ [--slo loadtests/locust/slo.yaml]

Prints one line per (endpoint, target) and exits 1 when any target is missed, 2 when the run
cannot be judged (no stats file, no requests, a bad SLO file), 0 otherwise.

SLO file (times in milliseconds, rates as fractions):

    defaults:                 # applied to every endpoint row of the run
      max_error_rate: 0.01
    endpoints:                # keyed by Locust's request name (exact, or a glob like "/api/v*")
      /api/v1/classify/classic: {p95_ms: 100}
    aggregated:               # Locust's "Aggregated" row
      p95_ms: 1000
      min_rps: 5
      min_requests: 50

Targets: p50_ms, p66_ms, p75_ms, p80_ms, p90_ms, p95_ms, p98_ms, p99_ms, p999_ms, max_ms,
avg_ms (each must be strictly below), max_error_rate (failures / requests, at most), min_rps
(Requests/s, at least), min_goodput (successful responses/s, at least), min_requests (at least).
An endpoint named in the file but absent from the run is reported as "not measured" (a miss only
with `required: true`). Locust rounds response times above 100 ms to 2 significant digits.
"""

from __future__ import annotations

import csv
import fnmatch
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

PERCENTILE_COLUMNS = {
    "p50_ms": "50%",
    "p66_ms": "66%",
    "p75_ms": "75%",
    "p80_ms": "80%",
    "p90_ms": "90%",
    "p95_ms": "95%",
    "p98_ms": "98%",
    "p99_ms": "99%",
    "p999_ms": "99.9%",
    "max_ms": "100%",
    "avg_ms": "Average Response Time",
}
RATE_TARGETS = {"max_error_rate", "min_rps", "min_goodput", "min_requests"}
KNOWN = set(PERCENTILE_COLUMNS) | RATE_TARGETS | {"required"}
AGGREGATED = "Aggregated"


class GateError(Exception):
    """The run or the SLO file cannot be judged (exit code 2)."""


@dataclass
class Row:
    method: str
    name: str
    requests: int
    failures: int
    rps: float
    values: dict[str, float | None]

    @property
    def error_rate(self) -> float:
        return self.failures / self.requests if self.requests else 0.0

    @property
    def goodput(self) -> float:
        return self.rps * (1 - self.error_rate)

    def metric(self, target: str) -> float | None:
        if target in PERCENTILE_COLUMNS:
            return self.values.get(target)
        return {
            "max_error_rate": self.error_rate,
            "min_rps": self.rps,
            "min_goodput": self.goodput,
            "min_requests": float(self.requests),
        }[target]


@dataclass
class Result:
    endpoint: str
    target: str
    limit: float
    actual: float | None
    ok: bool
    note: str = ""


def _num(value: str | None) -> float | None:
    if value in (None, "", "N/A"):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return None if math.isnan(number) else number


def find_stats(path: Path) -> Path:
    """The *_stats.csv of a run directory (or the file itself)."""
    path = Path(path)
    if path.is_file():
        return path
    found = sorted(p for p in path.glob("*_stats.csv"))
    if not found:
        raise GateError(f"no *_stats.csv in {path}")
    if len(found) > 1:
        raise GateError(f"several *_stats.csv in {path}: {[p.name for p in found]}; name one")
    return found[0]


def read_stats(path: Path) -> dict[str, Row]:
    """Locust's stats CSV as rows keyed by request name ('Aggregated' for the total)."""
    rows: dict[str, Row] = {}
    with open(path, newline="") as f:
        for record in csv.DictReader(f):
            name = record["Name"]
            row = Row(
                method=record.get("Type", ""),
                name=name,
                requests=int(_num(record.get("Request Count")) or 0),
                failures=int(_num(record.get("Failure Count")) or 0),
                rps=_num(record.get("Requests/s")) or 0.0,
                values={k: _num(record.get(column)) for k, column in PERCENTILE_COLUMNS.items()},
            )
            key = name if name == AGGREGATED or name not in rows else f"{row.method} {name}"
            rows[key] = row
    return rows


def load_slo(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise GateError(f"cannot read SLO file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise GateError(f"{path}: top level must be a mapping")
    unknown_sections = set(data) - {"defaults", "endpoints", "aggregated", "description"}
    if unknown_sections:
        raise GateError(f"{path}: unknown section(s) {sorted(unknown_sections)}")
    sections = {"defaults": data.get("defaults") or {}, "aggregated": data.get("aggregated") or {}}
    for name, targets in (data.get("endpoints") or {}).items():
        sections[f"endpoints.{name}"] = targets or {}
    for where, targets in sections.items():
        if not isinstance(targets, dict):
            raise GateError(f"{path}: {where} must be a mapping of targets")
        unknown = set(targets) - KNOWN
        if unknown:
            raise GateError(
                f"{path}: {where}: unknown target(s) {sorted(unknown)}; known: {sorted(KNOWN)}"
            )
        for key, value in targets.items():
            if key != "required" and (
                isinstance(value, bool) or not isinstance(value, (int, float))
            ):
                raise GateError(f"{path}: {where}.{key} must be a number, got {value!r}")
    return {
        "defaults": sections["defaults"],
        "aggregated": sections["aggregated"],
        "endpoints": {k: v or {} for k, v in (data.get("endpoints") or {}).items()},
    }


def _judge(endpoint: str, row: Row, target: str, limit: float) -> Result:
    actual = row.metric(target)
    if actual is None:
        return Result(endpoint, target, limit, None, False, "no value")
    if target.startswith("min_"):
        ok = actual >= limit
    elif target == "max_error_rate":
        ok = actual <= limit
    else:
        ok = actual < limit
    return Result(endpoint, target, limit, actual, ok)


def evaluate(rows: dict[str, Row], slo: dict[str, Any]) -> list[Result]:
    results: list[Result] = []
    total = rows.get(AGGREGATED)
    if total is None or total.requests == 0:
        raise GateError("the run has no requests (Aggregated row missing or empty)")
    endpoint_rows = {k: r for k, r in rows.items() if k != AGGREGATED}
    matched: dict[str, dict[str, Any]] = {k: dict(slo["defaults"]) for k in endpoint_rows}
    for pattern, targets in slo["endpoints"].items():
        hits = [
            k
            for k in endpoint_rows
            if k == pattern
            or fnmatch.fnmatchcase(k, pattern)
            or fnmatch.fnmatchcase(endpoint_rows[k].name, pattern)
        ]
        if not hits:
            results.append(
                Result(
                    pattern, "-", math.nan, None, not targets.get("required", False), "not measured"
                )
            )
        for key in hits:
            matched[key].update(targets)
    for key, targets in matched.items():
        for target, limit in targets.items():
            if target != "required":
                results.append(_judge(key, endpoint_rows[key], target, float(limit)))
    for target, limit in {"min_requests": 1, **slo["aggregated"]}.items():
        if target != "required":
            results.append(_judge(AGGREGATED, total, target, float(limit)))
    return results


def _fmt(target: str, value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if target == "max_error_rate":
        return f"{value:.2%}"
    if target == "min_requests":
        return f"{value:.0f}"
    if target in ("min_rps", "min_goodput"):
        return f"{value:.1f}/s"
    return f"{value:.3g} ms" if value < 1 else f"{value:.0f} ms"


def render(results: list[Result], rows: dict[str, Row]) -> str:
    lines = [f"{'endpoint':<34} {'reqs':>7} {'target':<15} {'limit':>10} {'actual':>10}  result"]
    for r in results:
        row = rows.get(r.endpoint)
        if r.ok:
            verdict = f"skip ({r.note})" if r.note else "ok"
        else:
            verdict = f"MISS ({r.note})" if r.note else "MISS"
        lines.append(
            f"{r.endpoint[:34]:<34} {row.requests if row else 0:>7} {r.target:<15} "
            f"{_fmt(r.target, r.limit):>10} {_fmt(r.target, r.actual):>10}  {verdict}"
        )
    return "\n".join(lines)


def check(run: Path, slo_path: Path) -> int:
    """Print the gate's table for a run; 0 pass, 1 miss, 2 cannot judge."""
    try:
        stats = find_stats(run)
        rows = read_stats(stats)
        slo = load_slo(slo_path)
        skipped = Path(run) / "skipped.json" if Path(run).is_dir() else None
        total = rows.get(AGGREGATED)
        if skipped is not None and skipped.exists() and (total is None or total.requests == 0):
            print(f"SLO gate: SKIPPED - {json.loads(skipped.read_text()).get('reason')}")
            return 0
        results = evaluate(rows, slo)
    except GateError as exc:
        print(f"SLO gate: cannot judge: {exc}")
        return 2
    print(f"SLO gate: {stats} against {slo_path}")
    print(render(results, rows))
    misses = [r for r in results if not r.ok]
    if misses:
        print(f"SLO gate: FAIL - {len(misses)} target(s) missed")
        return 1
    print("SLO gate: PASS")
    return 0
