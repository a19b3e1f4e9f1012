"""Load shapes: steady, step (find the knee) and spike.

Locust runs the first LoadTestShape it finds in the locustfile, so the locustfile exposes only the
one named by LOADTEST_SHAPE (or all of them with --class-picker, to choose in the web UI). All
three read Locust's own --users / --spawn-rate / --run-time (`use_common_options`); their other
knobs are environment variables (set by `python -m loadtests run`):

| shape  | variable                        | default            |
| ------ | ------------------------------- | ------------------ |
| step   | LOADTEST_STEP_USERS             | users / 8 (>= 1)   |
| step   | LOADTEST_STEP_SECONDS           | 10                 |
| step   | LOADTEST_STEP_P95_MS            | 1000               |
| step   | LOADTEST_STEP_MAX_ERROR_RATE    | 0.01               |
| spike  | LOADTEST_SPIKE_BASE_USERS       | users / 5 (>= 1)   |

Each shape writes what it saw per phase/step (requests/s, p50/p95/p99, error rate) to
`$LOADTEST_OUTPUT_DIR/shape.json` when the test stops.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

from locust import LoadTestShape

from loadtests.harness.common import histogram_percentile, write_output_json

log = logging.getLogger("loadtests.locust.shapes")


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value not in (None, "") else default


class Window:
    """Aggregated stats between two moments of a run, from differences of Locust's running
    totals."""

    def __init__(self, runner) -> None:
        self.runner = runner
        self.t0 = time.monotonic()
        self.snapshot = self._read()

    def _read(self) -> tuple[dict[int, int], int, int]:
        total = self.runner.stats.total
        return dict(total.response_times), total.num_requests, total.num_failures

    def close(self) -> dict[str, Any]:
        times, requests, failures = self._read()
        old_times, old_requests, old_failures = self.snapshot
        histogram = {
            k: v - old_times.get(k, 0) for k, v in times.items() if v - old_times.get(k, 0) > 0
        }
        n, f = requests - old_requests, failures - old_failures
        seconds = max(time.monotonic() - self.t0, 1e-9)
        return {
            "seconds": round(seconds, 1),
            "requests": n,
            "failures": f,
            "rps": round(n / seconds, 1),
            "goodput": round((n - f) / seconds, 1),
            "error_rate": round(f / n, 4) if n else None,
            "p50_ms": histogram_percentile(histogram, 0.50),
            "p95_ms": histogram_percentile(histogram, 0.95),
            "p99_ms": histogram_percentile(histogram, 0.99),
        }


class RecordingShape(LoadTestShape):
    """Common parts: common options, per-phase windows, the report file."""

    abstract = True
    use_common_options = True
    name = "shape"

    def __init__(self) -> None:
        super().__init__()
        self.phases: list[dict[str, Any]] = []
        self.verdict: dict[str, Any] = {}
        self._window: Window | None = None
        self._phase: dict[str, Any] | None = None
        self._written = False

    # Locust's parsed options (None in unit use)
    def option(self, name: str, default):
        options = getattr(getattr(self.runner, "environment", None), "parsed_options", None)
        value = getattr(options, name, None) if options is not None else None
        return default if value in (None, 0) else value

    @property
    def users(self) -> int:
        return int(self.option("num_users", 10))

    @property
    def spawn_rate(self) -> float:
        return float(self.option("spawn_rate", max(self.users / 5, 1)))

    @property
    def run_time(self) -> float:
        return float(self.option("run_time", 60))

    def enter(self, label: str, users: int, settle_s: float = 0.0, **extra: Any) -> None:
        """Start a phase; its measurement window opens `settle_s` later (after the ramp)."""
        self.leave()
        self._phase = {
            "phase": label,
            "users": users,
            "start_s": round(self.get_run_time(), 1),
            **extra,
        }
        self._settle_until = self.get_run_time() + settle_s
        self._window = None

    def measure(self) -> None:
        """Open the phase's window once settled (call every tick)."""
        if (
            self._phase is not None
            and self._window is None
            and self.get_run_time() >= self._settle_until
        ):
            self._window = Window(self.runner)

    def leave(self) -> dict[str, Any] | None:
        if self._phase is None:
            return None
        phase = {**self._phase, **(self._window.close() if self._window else {"requests": 0})}
        self.phases.append(phase)
        self._phase, self._window = None, None
        log.info("%s: %s", self.name, phase)
        return phase

    def finish(self) -> None:
        self.leave()
        if self._written:
            return
        self._written = True
        report = {
            "shape": self.name,
            "users": self.users,
            "run_time_s": self.run_time,
            **self.verdict,
            "phases": self.phases,
        }
        write_output_json("shape.json", report)
        print(
            f"[{self.name}] " + json.dumps({k: v for k, v in report.items() if k != "phases"}),
            flush=True,
        )


class SteadyShape(RecordingShape):
    """--users users (ramped at --spawn-rate), held until --run-time."""

    name = "steady"

    def tick(self):
        t = self.get_run_time()
        if t >= self.run_time:
            self.finish()
            return None
        if self._phase is None and not self.phases:
            self.enter("steady", self.users, settle_s=self.users / self.spawn_rate)
        self.measure()
        return self.users, self.spawn_rate


class StepShape(RecordingShape):
    """Add LOADTEST_STEP_USERS users every LOADTEST_STEP_SECONDS until the SLO breaks: the knee.

    A step breaks the SLO when its p95 exceeds LOADTEST_STEP_P95_MS or its error rate exceeds
    LOADTEST_STEP_MAX_ERROR_RATE (measured over the step after its first 30 %, the ramp). The knee
    is the last step that met the SLO; the test stops at the first breach, at --users, or at
    --run-time, whichever comes first.
    """

    name = "step"

    def __init__(self) -> None:
        super().__init__()
        self.level = 0

    @property
    def step_users(self) -> int:
        return int(_env_float("LOADTEST_STEP_USERS", max(1, round(self.users / 8))))

    @property
    def step_seconds(self) -> float:
        return _env_float("LOADTEST_STEP_SECONDS", 10.0)

    def tick(self):
        t = self.get_run_time()
        level = int(t // self.step_seconds) + 1
        users = min(level * self.step_users, self.users)
        if level != self.level:
            if self.level:
                phase = self.leave()
                if phase is not None and self._breached(phase):
                    return self._stop(f"SLO broken at {phase['users']} users")
                if self.level * self.step_users >= self.users:
                    return self._stop(f"reached --users {self.users} without breaking the SLO")
            if t >= self.run_time:
                return self._stop("reached --run-time")
            self.level = level
            self.enter(f"step {level}", users, settle_s=0.3 * self.step_seconds)
        self.measure()
        return users, max(self.spawn_rate, self.step_users)

    def _breached(self, phase: dict[str, Any]) -> bool:
        p95_budget = _env_float("LOADTEST_STEP_P95_MS", 1000.0)
        max_errors = _env_float("LOADTEST_STEP_MAX_ERROR_RATE", 0.01)
        reasons = []
        if phase.get("p95_ms") is not None and phase["p95_ms"] > p95_budget:
            reasons.append(f"p95 {phase['p95_ms']:.0f} ms > {p95_budget:.0f} ms")
        if phase.get("error_rate") is not None and phase["error_rate"] > max_errors:
            reasons.append(f"error rate {phase['error_rate']:.2%} > {max_errors:.2%}")
        phase["slo_ok"] = not reasons
        if reasons:
            phase["breach"] = "; ".join(reasons)
        return bool(reasons)

    def _stop(self, why: str):
        ok = [p for p in self.phases if p.get("slo_ok")]
        knee = max(ok, key=lambda p: p["users"]) if ok else None
        self.verdict = {
            "stopped_because": why,
            "slo": {
                "p95_ms": _env_float("LOADTEST_STEP_P95_MS", 1000.0),
                "max_error_rate": _env_float("LOADTEST_STEP_MAX_ERROR_RATE", 0.01),
            },
            "knee_users": knee["users"] if knee else None,
            "knee_rps": knee["rps"] if knee else None,
            "knee_goodput": knee["goodput"] if knee else None,
            "knee_p95_ms": knee["p95_ms"] if knee else None,
            "slo_broken": any(p.get("slo_ok") is False for p in self.phases),
        }
        self.finish()
        return None


class SpikeShape(RecordingShape):
    """Baseline load, a sudden spike to --users, then baseline again (recovery).

    Phases: 40 % of --run-time at LOADTEST_SPIKE_BASE_USERS, 20 % at --users (all spawned within
    about a second), 40 % back at the baseline. shape.json has each phase's figures, so the
    recovery phase can be compared with the first.
    """

    name = "spike"

    def tick(self):
        t, total = self.get_run_time(), self.run_time
        base = int(_env_float("LOADTEST_SPIKE_BASE_USERS", max(1, self.users // 5)))
        if t >= total:
            self.finish()
            return None
        if t < 0.4 * total:
            label, users, rate = "baseline", base, self.spawn_rate
        elif t < 0.6 * total:
            label, users, rate = "spike", self.users, float(self.users)
        else:
            label, users, rate = "recovery", base, float(self.users)
        if (
            self._phase is None or self._phase["phase"] != label
        ):  # spike and recovery: measured from their start
            self.enter(
                label, users, settle_s=users / self.spawn_rate if label == "baseline" else 0.0
            )
        self.measure()
        return users, rate


SHAPES: dict[str, type[RecordingShape]] = {
    "steady": SteadyShape,
    "step": StepShape,
    "spike": SpikeShape,
}
