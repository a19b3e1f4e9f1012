"""The retraining job: `due` (time-zone-aware windows, interval) and runs with a stand-in
training command (one at a time over replicas, outcomes, records, timeout)."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime

import pytest

from serving.config.experiments import RetrainingConfig
from serving.delivery.retraining import (
    THREAD_VARIABLES,
    RetrainingBusy,
    RetrainingJob,
    due,
    training_command,
    training_env,
)
from serving.store import StateStore

WINDOW = {"days": ["sat"], "from": "01:00", "to": "05:00", "timezone": "Europe/Amsterdam"}


def _cfg(**kw) -> RetrainingConfig:
    return RetrainingConfig.model_validate({"enabled": True, **kw})


def test_due_needs_enabled():
    ok, reason = due(datetime(2026, 1, 3, 2, tzinfo=UTC), RetrainingConfig(), None)
    assert not ok and "disabled" in reason


def test_due_never_starts_a_run_when_only_manual_runs_are_wanted():
    cfg = RetrainingConfig(enabled=True, schedule=False)
    ok, reason = due(datetime(2026, 1, 3, 2, tzinfo=UTC), cfg, None)
    assert not ok and "only when asked" in reason


def test_due_reads_the_window_in_its_time_zone():
    cfg = _cfg(window=WINDOW)
    # Saturday 02:00 in Amsterdam (winter, UTC+1) is Saturday 01:00 UTC.
    assert due(datetime(2026, 1, 3, 1, 0, tzinfo=UTC), cfg, None)[0]
    # Saturday 00:30 UTC is 01:30 in Amsterdam: inside; Friday 23:59 UTC is 00:59: outside.
    assert due(datetime(2026, 1, 3, 0, 30, tzinfo=UTC), cfg, None)[0]
    ok, reason = due(datetime(2026, 1, 2, 23, 59, tzinfo=UTC), cfg, None)
    assert not ok and "window" in reason
    # Summer (UTC+2): 03:30 UTC is 05:30 local, past the window.
    assert not due(datetime(2026, 7, 4, 3, 30, tzinfo=UTC), cfg, None)[0]
    assert due(datetime(2026, 7, 4, 2, 30, tzinfo=UTC), cfg, None)[0]
    # A naive time is UTC.
    assert due(datetime(2026, 1, 3, 1, 0), cfg, None)[0]


def test_due_overnight_window_in_another_zone():
    cfg = _cfg(
        window={"days": ["fri"], "from": "22:00", "to": "06:00", "timezone": "America/New_York"}
    )
    # Saturday 05:00 in New York (EST, UTC-5) = Saturday 10:00 UTC: in Friday's overnight window.
    assert due(datetime(2026, 1, 3, 10, 0, tzinfo=UTC), cfg, None)[0]
    assert not due(datetime(2026, 1, 3, 11, 0, tzinfo=UTC), cfg, None)[0]


def test_due_waits_the_min_interval():
    cfg = _cfg(min_interval_s=3600)
    now = datetime(2026, 1, 3, 12, tzinfo=UTC)
    ok, reason = due(now, cfg, now.timestamp() - 600)
    assert not ok and "min interval" in reason
    assert due(now, cfg, now.timestamp() - 3600)[0]


def test_command_and_environment_limit_the_run(tmp_path):
    cfg = _cfg(threads=1, quick=True, min_labelled=50)
    argv = training_command(cfg, "sqlite:///x.db", tmp_path / "r.json", "ensemble:abc")
    assert argv[:4] == [sys.executable, "-m", "training", "--from-feedback"]
    assert "--quick" in argv and argv[argv.index("--min-labelled") + 1] == "50"
    assert argv[argv.index("--parent") + 1] == "ensemble:abc"
    env = training_env(cfg, {})
    assert all(env[name] == "1" for name in THREAD_VARIABLES)


DB_PASSWORD = "pg-Pa55word-never-shown"
DB_URL = f"postgresql+psycopg://serving:{DB_PASSWORD}@db.example:5432/serving"


def test_the_state_url_goes_by_environment_and_other_secrets_stay_home(tmp_path):
    """`ps` shows argv to every user: the database password must not be on it; and training gets
    only the secrets it needs (the state store), not the admin token or signing secrets."""
    cfg = _cfg()
    argv = training_command(cfg, DB_URL, tmp_path / "r.json", None)
    assert not any(DB_PASSWORD in a for a in argv) and "--state-url" not in argv
    base = {
        "PATH": "/bin",
        "SERVING_ADMIN_TOKEN": "admin-token-value",
        "SERVING_VIEWER_TOKEN": "viewer-token-value",
        "SERVING_USER_TOKEN_SECRET": "user-token-secret-value",
        "SERVING_REQUEST_ID_SECRET": "request-id-secret-value",
        "SERVING_WEBHOOK_URL": "https://hooks.example/T000/secret-path",
        "SERVING_STATE_URL": "sqlite:///stale.db",
    }
    env = training_env(cfg, base, state_url=DB_URL)
    assert env["SERVING_STATE_URL"] == DB_URL and env["PATH"] == "/bin"
    leaked = [v for k, v in base.items() if k not in ("PATH", "SERVING_STATE_URL")]
    assert not any(value in str(env) for value in leaked)


def test_a_failed_run_records_no_database_password(store):
    """The run record is what the viewer token reads: a training failure that printed the URL
    (reasons and log tail) is recorded with the password replaced by ***."""

    def command(cfg, state_url, report_path, parent):
        script = (
            "import json,os,sys; url=os.environ['SERVING_STATE_URL']; print('cannot open', url); "
            f"open({str(report_path)!r},'w').write(json.dumps({{'reasons': ['no store ' + url]}}));"
            " sys.exit(2)"
        )
        return [sys.executable, "-c", script]

    job = RetrainingJob(store, DB_URL, "replica-a", command=command)
    record = asyncio.run(job.run_now(_cfg()))
    assert record["outcome"] == "failed"
    stored = json.dumps(store.retraining_runs(5), default=str)
    assert "db.example" in stored  # the URL's output did reach the record ...
    assert DB_PASSWORD not in stored and DB_PASSWORD not in json.dumps(record, default=str)


def _fake(exit_code: int, report: dict | None, sleep: float = 0.0):
    """A stand-in for the training CLI: writes `report` to --report and exits `exit_code`."""

    def command(cfg, state_url, report_path, parent):
        import json

        script = (
            f"import json,time,os; time.sleep({sleep}); "
            f"open({str(report_path)!r},'w').write({json.dumps(json.dumps(report))} or 'x'); "
            f"print('nice', os.nice(0)); raise SystemExit({exit_code})"
        )
        return [sys.executable, "-c", script]

    return command


@pytest.fixture
def store(tmp_path):
    s = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    yield s
    s.close()


def test_an_accepted_run_is_recorded_with_its_lineage(store):
    report = {
        "outcome": "accepted",
        "tag": "ensemble:child",
        "parent": "ensemble:parent",
        "reasons": [],
        "lineage": {"metrics": {"holdout": {}}, "rows": {"feedback_train": 10}},
    }
    job = RetrainingJob(store, "sqlite://", "replica-a", command=_fake(0, report))
    record = asyncio.run(job.run_now(_cfg(), "test"))
    assert record["outcome"] == "accepted" and record["tag"] == "ensemble:child"
    assert record["trigger"] == "manual" and record["parent"] == "ensemble:parent"
    assert record["rows"] == {"feedback_train": 10}
    assert store.retraining_runs()[0]["id"] == record["id"]
    assert store.lease("retraining")["expires_at"] == 0.0  # released


def test_refused_and_failed_runs(store):
    refused = {"outcome": "refused", "reasons": ["worse than its parent"], "parent": "p"}
    job = RetrainingJob(store, "sqlite://", "replica-a", command=_fake(3, refused))
    record = asyncio.run(job.run_now(_cfg()))
    assert record["outcome"] == "refused" and record["reasons"] == ["worse than its parent"]
    job = RetrainingJob(store, "sqlite://", "replica-a", command=_fake(1, None))
    record = asyncio.run(job.run_now(_cfg()))
    assert record["outcome"] == "failed" and "exited with code 1" in record["reasons"][0]
    assert [r["outcome"] for r in store.retraining_runs()] == ["failed", "refused"]


def test_a_run_past_its_timeout_is_killed(store):
    job = RetrainingJob(store, "sqlite://", "replica-a", command=_fake(0, {}, sleep=30))
    record = asyncio.run(job.run_now(_cfg(timeout_s=0.5)))
    assert record["outcome"] == "failed" and "timeout" in record["reasons"][-1]
    assert record["duration_s"] < 10


def test_one_run_at_a_time_over_replicas(store):
    slow = _fake(0, {"outcome": "accepted", "tag": "t"}, sleep=1.0)
    a = RetrainingJob(store, "sqlite://", "replica-a", command=slow)
    b = RetrainingJob(store, "sqlite://", "replica-b", command=slow)

    async def both():
        first = asyncio.create_task(a.run_now(_cfg()))
        await asyncio.sleep(0.3)
        with pytest.raises(RetrainingBusy):
            await b.run_now(_cfg())
        with pytest.raises(RetrainingBusy):
            await a.run_now(_cfg())
        assert await b.maybe_run(_cfg(min_interval_s=0)) is None
        return await first

    assert asyncio.run(both())["outcome"] == "accepted"
    assert len(store.retraining_runs()) == 1


def test_maybe_run_respects_the_schedule(store):
    clock = [datetime(2026, 1, 3, 1, 0, tzinfo=UTC).timestamp()]
    job = RetrainingJob(
        store, "sqlite://", "replica-a", clock=lambda: clock[0], command=_fake(3, {})
    )
    cfg = _cfg(window=WINDOW, min_interval_s=3600)
    assert asyncio.run(job.maybe_run(RetrainingConfig())) is None  # disabled
    record = asyncio.run(job.maybe_run(cfg))
    assert record is not None and record["trigger"] == "schedule"
    clock[0] += 600
    assert asyncio.run(job.maybe_run(cfg)) is None  # min interval
    clock[0] += 3600 * 5
    assert asyncio.run(job.maybe_run(cfg)) is None  # outside the window


def test_prune_keeps_retention_and_size(store):
    store.record_served(
        [
            {
                "request_id": f"r{i}",
                "created_at": float(i),
                "arm": "classic",
                "predicted": "low",
                "features": {},
            }
            for i in range(10)
        ]
    )
    job = RetrainingJob(store, "sqlite://", "replica-a", clock=lambda: 1000.0 + 5)
    cfg = _cfg(retention_s=1000.0, max_stored_requests=1000)
    assert job.prune(cfg) == 5
    assert store.served_count() == 5


def test_start_runs_in_the_background_and_refuses_a_second_run(store):
    """The admin route's entry point: starts at once, refuses while a run holds the lease, and
    the status then shows the run (the lease check lives in the job, not in the route)."""
    slow = _fake(0, {"outcome": "accepted", "tag": "t"}, sleep=1.0)
    a = RetrainingJob(store, "sqlite://", "replica-a", command=slow)
    b = RetrainingJob(store, "sqlite://", "replica-b", command=slow)

    async def scenario():
        await a.start(_cfg(), "ensemble:parent")
        await asyncio.sleep(0.3)
        assert a.running is not None and a.parent == "ensemble:parent"
        with pytest.raises(RetrainingBusy):
            await a.start(_cfg(), None)
        with pytest.raises(RetrainingBusy):  # another replica sees the lease
            await b.start(_cfg(), None)
        while a.running is not None:
            await asyncio.sleep(0.1)
        return await a.status(_cfg(), limit=5)

    status = asyncio.run(scenario())
    assert [r["outcome"] for r in status["runs"]] == ["accepted"]
    assert status["running_here"] is None and status["schedule"]["enabled"] is True


def test_tick_prunes_then_runs_when_due(store):
    job = RetrainingJob(store, "sqlite://", "replica-a", command=_fake(3, {}))
    asyncio.run(job.tick(_cfg(min_interval_s=0), "ensemble:p"))
    assert job.parent == "ensemble:p"
    assert [r["trigger"] for r in store.retraining_runs()] == ["schedule"]
    assert asyncio.run(job.tick(RetrainingConfig(), None)) is None  # disabled: no second run
    assert len(store.retraining_runs()) == 1
