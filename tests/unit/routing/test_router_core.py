"""The router core without a server: fallback, deadline, breaker, cache, shadow, hot reload.

The arms here are small in-process doubles (allowed: this is a unit test of routing logic);
the integration tests run the same flows against real services.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import yaml

from serving.config.flags import FlagConfigError, parse_flag_config
from serving.errors import InvalidInput
from serving.routing.arms import ArmInfo
from serving.routing.breaker import BreakerState
from serving.routing.core import Arms, RouterCore
from serving.routing.flag_source import FlagSource, StaleFlags
from serving.store import StateStore
from tests.doubles import ROW, SCHEMA, StubArm


def make_core(tmp_path=None, store=None, **ensemble_flags) -> tuple[RouterCore, StubArm, StubArm]:
    flags = parse_flag_config(
        {
            "ensemble": {
                "rollout_percentage": 0,
                "allowed_users": ["vip"],
                "deadline_ms": 50,
                "breaker": {"failure_threshold": 2, "reset_timeout_s": 60},
                **ensemble_flags,
            }
        }
    )
    classic, ensemble = StubArm("classic", [0.8, 0.2]), StubArm("ensemble", [0.3, 0.7])
    path = None
    if tmp_path is not None:
        path = tmp_path / "flags.yaml"
        path.write_text(yaml.safe_dump({"ensemble": {"rollout_percentage": 0}}))
    source = FlagSource(store, path)
    return RouterCore(Arms(classic, ensemble), flags, flag_source=source), classic, ensemble


def run(coro):
    return asyncio.run(coro)


def test_split_and_allow_list():
    core, classic, ensemble = make_core()
    assert run(core.classify([ROW], user_id="anyone"))[0].model == "classic"
    answer = run(core.classify([ROW], user_id="vip"))[0]
    assert (answer.model, answer.label, answer.reason) == ("ensemble", "yes", "allow_list")


def test_invalid_rows_are_rejected_before_routing():
    core, classic, ensemble = make_core()
    with pytest.raises(InvalidInput) as err:
        run(core.classify([{"x": "nope", "colour": "green"}], user_id="vip"))
    assert {f["field"] for f in err.value.fields} == {"features.x", "features.colour"}
    assert classic.calls == ensemble.calls == 0


def test_failing_ensemble_falls_back_to_classic_then_breaker_opens():
    core, classic, ensemble = make_core()
    ensemble.fail = True
    answers = [run(core.classify([{**ROW, "x": float(i)}], user_id="vip"))[0] for i in range(4)]
    assert all(a.model == "classic" and a.fallback for a in answers)
    assert ensemble.calls == 2  # threshold 2: the breaker opened, later requests skip the ensemble
    assert core.breaker.state == BreakerState.OPEN
    assert answers[-1].reason == "breaker_open"


def test_slow_ensemble_misses_its_deadline_and_classic_answers():
    core, classic, ensemble = make_core()
    ensemble.delay_s = 1.0
    answer = run(asyncio.wait_for(core.classify([ROW], user_id="vip"), timeout=0.5))[0]
    assert answer.model == "classic" and answer.fallback is True


def test_kill_switch_and_header():
    core, classic, ensemble = make_core(enabled=False)
    assert run(core.classify([ROW], user_id="vip", header="ensemble"))[0].reason == "kill_switch"
    core, classic, ensemble = make_core()
    assert run(core.classify([ROW], user_id="vip", header="classic"))[0].model == "classic"


def test_cache_hit_is_reported_and_skips_the_model():
    core, classic, ensemble = make_core()
    first = run(core.classify([ROW], user_id="vip"))[0]
    second = run(core.classify([dict(reversed(list(ROW.items())))], user_id="vip"))[0]
    assert (first.cached, second.cached) == (False, True)
    assert ensemble.calls == 1
    assert second.probabilities == first.probabilities


def test_shadow_compares_without_changing_the_answer_and_stays_bounded():
    core, classic, ensemble = make_core(
        shadow={"enabled": True, "sample_rate": 1.0, "max_in_flight": 2}
    )

    async def go():
        answers = [
            (await core.classify([{**ROW, "x": float(i)}], user_id=f"u{i}"))[0] for i in range(5)
        ]
        await core.shadow.drain()
        return answers

    answers = run(go())
    assert {a.model for a in answers} == {"classic"}
    summary = core.shadow.stats.summary()
    # The stub answers without yielding, so the copies pile up: two run, three are dropped.
    assert (summary["compared"], summary["dropped"]) == (2, 3)
    assert summary["label_agreement_rate"] == 0.0
    assert summary["mean_abs_probability_diff"] == pytest.approx(0.5)


def test_bad_flag_update_keeps_the_old_config(tmp_path):
    core, _, _ = make_core(tmp_path)
    with pytest.raises(FlagConfigError):
        core.update_flags({"ensemble": {"rollout_percentage": 101}})
    assert core.flags.ensemble.rollout_percentage == 0
    core.update_flags({"ensemble": {"rollout_percentage": 50}})
    assert core.flags.ensemble.rollout_percentage == 50
    path = core.flag_source.path  # the shipped file is never rewritten
    assert yaml.safe_load(path.read_text())["ensemble"]["rollout_percentage"] == 0


def test_replicas_share_the_stored_flags_and_a_stale_write_is_refused(tmp_path):
    store = StateStore(f"sqlite:///{tmp_path}/state.db")
    first, _, _ = make_core(tmp_path, store=store)
    second, _, _ = make_core(tmp_path, store=store)
    assert first.flags_version == second.flags_version == 1  # seeded once, from the file's flags
    first.update_flags({"ensemble": {"rollout_percentage": 30}})
    assert first.flags_version == 2 and second.flags.ensemble.rollout_percentage == 0
    assert second.reload_flags_if_changed()  # the background poll
    assert second.flags.ensemble.rollout_percentage == 30 and second.flags_version == 2
    with pytest.raises(StaleFlags):  # based on version 1: someone changed them since
        second.update_flags({"ensemble": {"rollout_percentage": 99}}, expected_version=1)
    assert second.flags.ensemble.rollout_percentage == 30
    second.update_flags({"ensemble": {"rollout_percentage": 40}}, expected_version=2)
    restarted, _, _ = make_core(tmp_path, store=store)  # the store wins over the seed file
    assert restarted.flags.ensemble.rollout_percentage == 40


@pytest.mark.parametrize("shared", [False, True])
def test_flag_file_hot_reload_ignores_a_broken_file(tmp_path, shared):
    store = StateStore(f"sqlite:///{tmp_path}/state.db") if shared else None
    core, _, _ = make_core(tmp_path, store=store)
    path = core.flag_source.path
    path.write_text(yaml.safe_dump({"ensemble": {"rollout_percentage": 25}}))
    _touch_later(path)
    assert core.reload_flags_if_changed() and core.flags.ensemble.rollout_percentage == 25
    if shared:  # an edited file reaches every replica through the store
        assert store.get_versioned("flags")[0]["ensemble"]["rollout_percentage"] == 25
    path.write_text("ensemble: {rollout_percentage: [oops")
    _touch_later(path)
    assert not core.reload_flags_if_changed()
    assert core.flags.ensemble.rollout_percentage == 25


def _touch_later(path):
    import os

    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


def test_unready_ensemble_routes_to_classic_with_fallback():
    core, classic, ensemble = make_core()
    ensemble.info.ready = False
    answer = run(core.classify([ROW], user_id="vip"))[0]
    assert (answer.model, answer.fallback, answer.reason) == ("classic", True, "unhealthy")
    assert ensemble.calls == 0


class _Probs:
    """A model object for a LocalArm: fixed probabilities."""

    schema = SCHEMA

    def predict_proba(self, codes):
        return np.tile([0.6, 0.4], (len(codes), 1))


def test_direct_classic_answers_from_the_routers_own_copy_when_it_holds_one():
    from serving.routing.arms import LocalArm

    _, _, ensemble = make_core()
    service = StubArm("classic", [0.8, 0.2])
    local = LocalArm("classic", _Probs(), ArmInfo(name="classic", tag="classic:v1", schema=SCHEMA))
    core = RouterCore(Arms(local, ensemble, classic_direct=service), parse_flag_config({}))
    answer = run(core.classify_direct("classic", [ROW]))[0]
    assert (answer.model, answer.reason, answer.probabilities["no"]) == ("classic", "direct", 0.6)
    assert service.calls == 0  # no hop to the classic service
    remote_only = RouterCore(Arms(service, ensemble), parse_flag_config({}))
    assert run(remote_only.classify_direct("classic", [ROW]))[0].probabilities["no"] == 0.8
    assert service.calls == 1
