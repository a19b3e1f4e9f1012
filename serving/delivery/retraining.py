"""The retraining job: `python -m training --from-feedback` off-peak, at most one at a time.

- `due(now, cfg, last_started_at)`: the pure rule for the scheduled run (enabled, inside the
  off-peak `cfg.window` in its time zone, `cfg.min_interval_s` since the last run started).
- `RetrainingJob.maybe_run(cfg)`: what the leader's background loop calls every tick; takes the
  store lease "retraining" (so one run over all replicas, even when leadership moves mid-run),
  re-checks `due` against the last recorded run, runs.
- `RetrainingJob.run_now(cfg, reason)`: a manual run (admin endpoint); refused with
  `RetrainingBusy` while another runs anywhere.
- A run is a subprocess `sys.executable -m training --from-feedback ...`, niced (`cfg.nice`) and
  thread-limited (`cfg.threads` for OpenMP/MKL/OpenBLAS/TensorFlow/XGBoost/LightGBM/CatBoost via
  TRAINING_THREADS), stopped after `cfg.timeout_s`. Its record (`record_retraining_run`) says
  accepted | refused | failed, with the new tag, the parent, the reasons and the lineage metrics;
  Prometheus counts runs by outcome and their duration.
- `RetrainingJob.prune()`: served requests' features past `cfg.retention_s` or beyond
  `cfg.max_stored_requests` are deleted (call it from the background loop, e.g. hourly).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from serving.config.experiments import RetrainingConfig
from serving.config.secrets import redact, url_password
from serving.config.settings import SECRET_FIELDS
from serving.observability import metrics

log = logging.getLogger(__name__)

LEASE = "retraining"
"""The store lease a run holds (renewed while it runs), so runs never overlap across replicas."""
EXIT_ACCEPTED, EXIT_ERROR, EXIT_REFUSED = 0, 2, 3
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "TF_NUM_INTRAOP_THREADS",
    "TF_NUM_INTEROP_THREADS",
    "TRAINING_THREADS",  # training/members.py: forests, XGBoost, LightGBM, CatBoost
)
ROOT = Path(__file__).resolve().parents[2]


PRUNE_EVERY_S = 3600.0
"""How often the leader prunes served requests past their retention."""


class RetrainingStore(Protocol):
    def acquire_lease(self, name: str, holder: str, ttl_s: float) -> int | None: ...

    def release_lease(self, name: str, holder: str) -> None: ...

    def record_retraining_run(self, run: Any) -> None: ...

    def retraining_runs(self, limit: int = 50) -> list[dict]: ...

    def prune_served(self, before: float, max_rows: int) -> int: ...

    def lease(self, name: str) -> dict | None: ...


class RetrainingBusy(RuntimeError):
    """A run is already going (on this replica or another): the manual run is refused."""


def due(now: datetime, cfg: RetrainingConfig, last_started_at: float | None) -> tuple[bool, str]:
    """Whether the scheduled job should start at `now` (time-zone aware; naive means UTC), and
    why (or why not)."""
    if not cfg.enabled:
        return False, "retraining is disabled"
    if not cfg.schedule:
        return False, "runs only when asked (retraining.schedule is false)"
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    if cfg.window is not None and not cfg.window.contains(now):
        w = cfg.window
        return False, (
            f"outside the off-peak window ({','.join(w.days)} {w.from_}-{w.to} {w.timezone})"
        )
    if last_started_at is not None:
        elapsed = now.timestamp() - float(last_started_at)
        if elapsed < cfg.min_interval_s:
            return False, (
                f"last run started {elapsed:.0f} s ago (min interval {cfg.min_interval_s:.0f} s)"
            )
    return True, "due: enabled, inside the window, min interval elapsed"


def training_command(
    cfg: RetrainingConfig, state_url: str, report: Path, parent: str | None = None
) -> list[str]:
    """The subprocess's argv: the CLI with the flags' thresholds."""
    argv = [
        sys.executable,
        "-m",
        "training",
        "--from-feedback",  # the state URL (with its password) goes by environment, never argv
        "--since",
        repr(float(cfg.feedback_window_s)),
        "--holdout",
        repr(float(cfg.holdout_fraction)),
        "--tolerance",
        repr(float(cfg.tolerance)),
        "--original-tolerance",
        repr(float(cfg.original_tolerance)),
        "--min-labelled",
        str(int(cfg.min_labelled)),
        "--report",
        str(report),
    ]
    if parent:
        argv += ["--parent", parent]
    if cfg.quick:
        argv.append("--quick")
    return argv


STATE_URL_VARIABLE = "SERVING_STATE_URL"
"""How the subprocess learns the state store: the environment (not `ps`-visible like argv)."""
WITHHELD = frozenset(f"SERVING_{name.upper()}" for name in SECRET_FIELDS) | {"SERVING_WEBHOOK_URL"}
"""Secrets training never needs (tokens, request-id and user-token secrets, the webhook)."""


def training_env(
    cfg: RetrainingConfig, base: dict[str, str] | None = None, state_url: str | None = None
) -> dict[str, str]:
    """The subprocess's environment: `base` (default os.environ) without the secrets training
    does not need, with the state store's URL and the thread limits."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if k not in WITHHELD}
    if state_url is not None:
        env[STATE_URL_VARIABLE] = state_url
    for name in THREAD_VARIABLES:
        env[name] = str(int(cfg.threads))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env.setdefault("BENTOML_DO_NOT_TRACK", "true")
    return env


def _outcome(returncode: int | None, timed_out: bool) -> str:
    if timed_out:
        return "failed"
    if returncode is None:
        return "failed"
    return {EXIT_ACCEPTED: "accepted", EXIT_REFUSED: "refused"}.get(returncode, "failed")


class RetrainingJob:
    """Runs retraining for one replica; `state` is the shared StateStore (leases, run records)."""

    def __init__(
        self,
        state: RetrainingStore,
        state_url: str,
        holder: str,
        *,
        clock: Callable[[], float] = time.time,
        lease_ttl_s: float = 60.0,
        parent: str | None = None,
        cwd: Path = ROOT,
        command: Callable[[RetrainingConfig, str, Path, str | None], list[str]] = (
            training_command
        ),
    ):
        """`state_url` is what the training subprocess opens (the same store: it reads the
        labelled requests); `holder` names this replica in the lease; `parent` a fixed parent
        version (None: the CLI's default, the pinned version). `command` is replaceable in tests."""
        self.state = state
        self.state_url = state_url
        self.holder = holder
        self.clock = clock
        self.lease_ttl_s = lease_ttl_s
        self.parent = parent
        self.cwd = cwd
        self.command = command
        self.running: dict[str, Any] | None = None
        """The run in progress on this replica ({id, trigger, started_at}), else None."""
        self._local = asyncio.Lock()
        self._started: set[asyncio.Task] = set()
        self._pruned_at = float("-inf")

    # ------------------------------------------------------------------ entry points
    async def maybe_run(self, cfg: RetrainingConfig) -> dict | None:
        """Run if due (the leader's loop calls this each tick); the run's record, or None."""
        if not cfg.enabled or self._local.locked():
            return None
        try:
            last = await asyncio.to_thread(self._last_started_at)
        except Exception:
            return None  # the store is down: try again next tick
        ok, _ = due(self._now(), cfg, last)
        if not ok:
            return None
        if not await asyncio.to_thread(self._take_lease):
            return None
        # Another replica may have run while we read: check again under the lease.
        try:
            last = await asyncio.to_thread(self._last_started_at)
        except Exception:
            last = float("inf")  # cannot tell: not due
        ok, reason = due(self._now(), cfg, last)
        if not ok:
            await asyncio.to_thread(self._release_lease)
            return None
        return await self._run(cfg, "schedule", reason, lease_held=True)

    async def run_now(self, cfg: RetrainingConfig, reason: str = "manual") -> dict:
        """A manual run, whatever the window and interval (not `enabled` either); raises
        RetrainingBusy while another run is going here or on another replica."""
        if self._local.locked():
            raise RetrainingBusy(f"a retraining run is already going here: {self.running}")
        if not await asyncio.to_thread(self._take_lease):
            lease = await asyncio.to_thread(self._lease_info)
            raise RetrainingBusy(f"a retraining run is already going on another replica: {lease}")
        return await self._run(cfg, "manual", reason, lease_held=True)

    def prune(self, cfg: RetrainingConfig) -> int:
        """Delete served requests older than `retention_s` or beyond `max_stored_requests`."""
        deleted = self.state.prune_served(self.clock() - cfg.retention_s, cfg.max_stored_requests)
        if deleted:
            log.info("retraining: pruned %d served requests", deleted)
        return deleted

    def runs(self, limit: int = 50) -> list[dict]:
        return self.state.retraining_runs(limit)

    async def tick(self, cfg: RetrainingConfig, parent: str | None) -> None:
        """The leader's loop, every few seconds: prune served requests past their retention (at
        most every `PRUNE_EVERY_S`), then start the scheduled run when it is due (minutes when it
        runs: the caller's loop waits, the other loops go on)."""
        now = time.monotonic()
        if now - self._pruned_at >= PRUNE_EVERY_S:
            self._pruned_at = now
            await asyncio.to_thread(self.prune, cfg)
        self.parent = parent
        await self.maybe_run(cfg)

    async def start(self, cfg: RetrainingConfig, parent: str | None) -> None:
        """The admin's run, started in the background (a run takes minutes, longer than a request
        may); RetrainingBusy while one is going here or another replica holds the lease."""
        lease = await asyncio.to_thread(self.state.lease, LEASE)
        if self.running is not None or (lease and lease.get("expires_at", 0) > time.time()):
            raise RetrainingBusy(f"a retraining run is already going: {self.running or lease}")
        self.parent = parent
        task = asyncio.create_task(self.run_now(cfg, "admin"))
        self._started.add(task)
        task.add_done_callback(self._started.discard)

    async def status(self, cfg: RetrainingConfig, limit: int = 10) -> dict[str, Any]:
        """The latest runs (all replicas'), the run going here, whether the schedule is due."""
        runs = await asyncio.to_thread(self.runs, limit)
        last = float(runs[0]["started_at"]) if runs else None
        is_due, reason = due(datetime.now(UTC), cfg, last)
        window = cfg.window.model_dump(by_alias=True) if cfg.window is not None else None
        return {
            "runs": runs,
            "running_here": self.running,
            "schedule": {"enabled": cfg.enabled, "window": window, "due": is_due, "reason": reason},
        }

    # ------------------------------------------------------------------ the run
    async def _run(
        self, cfg: RetrainingConfig, trigger: str, reason: str, lease_held: bool
    ) -> dict:
        async with self._local:
            started_at = self.clock()
            run_id = uuid.uuid4().hex[:12]
            self.running = {"id": run_id, "trigger": trigger, "started_at": started_at}
            renew = asyncio.create_task(self._renew_lease())
            record: dict[str, Any] = {
                "id": run_id,
                "trigger": trigger,
                "reason": reason,
                "replica": self.holder,
                "started_at": started_at,
            }
            try:
                record.update(await self._subprocess(cfg))
            except Exception as exc:  # the job must never take the loop down
                log.exception("retraining run %s failed to run", run_id)
                reason = redact(f"{type(exc).__name__}: {exc}", [url_password(self.state_url)])
                record.update({"outcome": "failed", "reasons": [reason]})
            finally:
                renew.cancel()
                finished_at = self.clock()
                record["finished_at"] = finished_at
                record["duration_s"] = round(finished_at - started_at, 3)
                self.running = None
                try:
                    await asyncio.to_thread(self.state.record_retraining_run, record)
                except Exception as exc:
                    log.error("retraining run %s: cannot record it (%s)", run_id, exc)
                if lease_held:
                    await asyncio.to_thread(self._release_lease)
            metrics.RETRAINING_RUNS.labels(outcome=record["outcome"]).inc()
            metrics.RETRAINING_DURATION.observe(record["duration_s"])
            metrics.RETRAINING_LAST_RUN.set(record["finished_at"])
            log.info(
                "retraining run %s (%s): %s%s in %.0f s",
                run_id,
                trigger,
                record["outcome"],
                f", saved {record['tag']}" if record.get("tag") else "",
                record["duration_s"],
            )
            return record

    async def _subprocess(self, cfg: RetrainingConfig) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="retraining-") as tmp:
            report_path = Path(tmp) / "report.json"
            argv = self.command(cfg, self.state_url, report_path, self.parent)
            nice = int(cfg.nice)

            def lower_priority() -> None:  # in the child, before exec
                if nice:
                    os.nice(nice)

            process = await asyncio.create_subprocess_exec(
                *argv,
                cwd=str(self.cwd),
                env=training_env(cfg, state_url=self.state_url),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                preexec_fn=lower_priority,
                start_new_session=True,  # its own process group: a timeout kills all of it
            )
            timed_out = False
            try:
                output, _ = await asyncio.wait_for(process.communicate(), timeout=cfg.timeout_s)
            except TimeoutError:
                timed_out = True
                _kill_group(process.pid)
                output, _ = await process.communicate()
            except asyncio.CancelledError:  # shutting down: do not leave training behind
                _kill_group(process.pid)
                raise
            tail = output.decode(errors="replace")[-4000:] if output else ""
            report: dict[str, Any] = {}
            if report_path.exists():
                try:
                    loaded = json.loads(report_path.read_text())
                except ValueError:
                    loaded = None
                report = loaded if isinstance(loaded, dict) else {}
        outcome = _outcome(process.returncode, timed_out)
        reasons = list(report.get("reasons") or [])
        if timed_out:
            reasons.append(f"stopped after the timeout of {cfg.timeout_s:g} s")
        elif outcome == "failed" and not reasons:
            reasons.append(f"training exited with code {process.returncode}: {tail[-500:]}")
        lineage = report.get("lineage") or {}
        secret = url_password(self.state_url)
        reasons = [redact(str(r), [secret]) for r in reasons]  # the viewer token reads runs
        tail = redact(tail, [secret])
        return {
            "outcome": outcome,
            "exit_code": process.returncode,
            "tag": report.get("tag"),
            "parent": report.get("parent"),
            "reasons": reasons,
            "checks": report.get("checks", []),
            "metrics": lineage.get("metrics") or report.get("metrics"),
            "rows": lineage.get("rows"),
            "data_window": lineage.get("data_window") or report.get("data_window"),
            "training_seconds": report.get("seconds"),
            "log_tail": tail[-1500:] if outcome == "failed" else None,
        }

    # ------------------------------------------------------------------ plumbing
    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), tz=UTC)

    def _last_started_at(self) -> float | None:
        try:
            runs = self.state.retraining_runs(1)
        except Exception as exc:
            log.warning("retraining: cannot read past runs (%s)", exc)
            raise
        return float(runs[0]["started_at"]) if runs else None

    def _take_lease(self) -> bool:
        try:
            return self.state.acquire_lease(LEASE, self.holder, self.lease_ttl_s) is not None
        except Exception as exc:
            log.warning("retraining: cannot take the lease (%s)", exc)
            return False

    def _release_lease(self) -> None:
        try:
            self.state.release_lease(LEASE, self.holder)
        except Exception as exc:
            log.warning("retraining: cannot release the lease (%s); it expires", exc)

    def _lease_info(self) -> dict | None:
        lease = getattr(self.state, "lease", None)
        try:
            return lease(LEASE) if lease else None
        except Exception:
            return None

    async def _renew_lease(self) -> None:
        while True:
            await asyncio.sleep(max(self.lease_ttl_s / 3.0, 0.05))
            await asyncio.to_thread(self._take_lease)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
