"""Dynamic selection in the router: the cascade as a policy decision (flags target, the "auto"
preference, the header) and in the core with in-process doubles (fallback, breaker, deadline,
its own evaluation arm, feedback joins on any replica)."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from serving.config.flags import parse_flag_config
from serving.delivery.live import LiveEvaluation
from serving.delivery.request_ids import RequestIds
from serving.routing.arms import ArmInfo, CascadeArm
from serving.routing.breaker import BreakerState
from serving.routing.core import Arms, RouterCore
from serving.routing.flag_source import FlagSource
from serving.routing.policy import Decision, Health, Reason, RequestContext, decide, explain
from serving.store import StateStore
from tests.doubles import ROW, SCHEMA, FakeClock, StubArm
from tests.unit.routing.test_policy import MONDAY_NOON, config, configs, contexts, ctx

CASCADE_READY = Health(cascade_available=True)


# ---------------------------------------------------------------------------- the policy
@given(contexts, configs, st.booleans(), st.booleans(), st.booleans())
def test_target_cascade_serves_what_the_rules_send_to_the_ensemble(
    request_ctx, cfg, ready, breaker_open, available
):
    """With `target: cascade` every decision is the one `target: ensemble` makes, with the
    cascade in the ensemble's place when the model has one (the header still names an arm)."""
    if request_ctx.user_preference == "auto":
        request_ctx = replace(request_ctx, user_preference=None)
    health = Health(ready, breaker_open, available)
    plain = decide(request_ctx, cfg, health, MONDAY_NOON)
    cascade_cfg = cfg.model_copy(
        update={"ensemble": cfg.ensemble.model_copy(update={"target": "cascade"})}
    )
    decision = decide(request_ctx, cascade_cfg, health, MONDAY_NOON)
    header = cfg.ensemble.header_override and request_ctx.header_preference is not None
    swap = available and not header
    if swap and plain.arm == "ensemble":
        assert decision == replace(plain, arm="cascade")
    elif swap and plain.meant == "ensemble":  # a fallback: classic stands in for the cascade
        assert decision == replace(plain, meant="cascade")
    else:
        assert decision == plain


@given(contexts, configs, st.booleans(), st.booleans())
def test_the_default_target_never_routes_to_the_cascade_unasked(
    request_ctx, cfg, ready, breaker_open
):
    if request_ctx.user_preference == "auto":
        request_ctx = replace(request_ctx, user_preference=None)
    decision = decide(request_ctx, cfg, Health(ready, breaker_open, True), MONDAY_NOON)
    assert decision.arm != "cascade" and decision.meant != "cascade"


def test_auto_preference_is_the_cascade_when_it_can_answer():
    cfg = config(rollout_percentage=0)
    auto = ctx("dave", user_preference="auto")
    assert decide(auto, cfg, CASCADE_READY) == Decision("cascade", Reason.PREFERENCE, False, None)
    # no cascade in the served model, or the ensemble not ready: the rollout decides, as before
    assert decide(auto, cfg, Health()) == decide(ctx("dave"), cfg, Health())
    not_ready = Health(ensemble_ready=False, cascade_available=True)
    assert decide(auto, cfg, not_ready) == decide(ctx("dave"), cfg, not_ready)
    everyone = config(rollout_percentage=100)
    assert decide(auto, everyone, not_ready) == Decision(
        "classic",
        Reason.UNHEALTHY,
        True,
        decide(ctx("dave"), everyone, Health()).bucket,
        "ensemble",
    )
    # the breaker covers the cascade: classic answers, as a fallback for the cascade
    assert decide(auto, cfg, Health(breaker_open=True, cascade_available=True)) == Decision(
        "classic", Reason.BREAKER_OPEN, True, None, "cascade"
    )
    # the kill switch and the header still come first
    killed = config(enabled=False)
    assert decide(auto, killed, CASCADE_READY).reason is Reason.KILL_SWITCH
    header = ctx("dave", user_preference="auto", header_preference="classic")
    assert decide(header, cfg, CASCADE_READY).arm == "classic"


def test_header_names_the_cascade_and_gets_the_ensemble_without_one():
    cfg = config()
    asks = ctx("dave", header_preference="cascade")
    assert decide(asks, cfg, CASCADE_READY) == Decision("cascade", Reason.HEADER, False, None)
    assert decide(asks, cfg, Health()) == Decision("ensemble", Reason.HEADER, False, None)
    with pytest.raises(ValueError):
        RequestContext(user_id=None, request_key="k", header_preference="mystery")  # type: ignore[arg-type]


def test_explain_names_the_target_and_the_auto_rule():
    report = explain(ctx("dave", user_preference="auto"), config(target="cascade"), CASCADE_READY)
    assert report["decision"]["arm"] == "cascade" and report["decision"]["reason"] == "preference"
    assert report["target"] == {"configured": "cascade", "cascade_available": True}
    rule = next(r for r in report["rules"] if r["rule"] == "preference")
    assert rule["applies"] and "cascade available: True" in rule["detail"]


def test_flags_accept_only_known_targets():
    assert parse_flag_config(None).ensemble.target == "ensemble"
    assert parse_flag_config({"ensemble": {"target": "cascade"}}).ensemble.target == "cascade"
    with pytest.raises(ValueError, match="ensemble.target"):
        parse_flag_config({"ensemble": {"target": "fastest"}})


# ---------------------------------------------------------------------------- the core
def make_core(store=None, live=None, request_ids=None, cascade_info=True, **ensemble_flags):
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
    classic = StubArm("classic", [0.8, 0.2])
    ensemble = StubArm("ensemble", [0.3, 0.7])
    cascade = StubArm("cascade", [0.1, 0.9])
    if not cascade_info:
        cascade.info = None  # the served ensemble has no cascade
    core = RouterCore(
        Arms(classic, ensemble, cascade=cascade),
        flags,
        flag_source=FlagSource(store, None),
        live=live,
        request_ids=request_ids,
    )
    return core, classic, ensemble, cascade


def run(coro):
    return asyncio.run(coro)


def test_auto_and_the_target_route_to_the_cascade():
    core, classic, ensemble, cascade = make_core()
    answer = run(core.classify([ROW], user_id="dave", user_preference="auto"))[0]
    assert (answer.model, answer.reason, answer.label) == ("cascade", "preference", "yes")
    assert answer.probabilities == {"no": 0.1, "yes": 0.9} and not answer.fallback
    assert run(core.classify([ROW], user_id="vip"))[0].model == "ensemble"  # target: ensemble
    target = core.flags.ensemble.model_copy(update={"target": "cascade"})
    core.apply_flags(core.flags.model_copy(update={"ensemble": target}), "test")
    answer = run(core.classify([{**ROW, "x": 2.0}], user_id="vip"))[0]
    assert (answer.model, answer.reason) == ("cascade", "allow_list")
    header = run(core.classify([{**ROW, "x": 3.0}], user_id="vip", header="ensemble"))[0]
    assert (header.model, header.reason) == ("ensemble", "header")  # the header names an arm
    assert (classic.calls, ensemble.calls, cascade.calls) == (0, 2, 2)


def test_without_a_cascade_auto_follows_the_rollout_and_the_target_is_the_ensemble():
    core, classic, ensemble, cascade = make_core(cascade_info=False, target="cascade")
    assert core.health().cascade_available is False
    assert run(core.classify([ROW], user_id="dave", user_preference="auto"))[0].model == "classic"
    assert run(core.classify([ROW], user_id="vip"))[0].model == "ensemble"
    assert cascade.calls == 0


def test_a_failing_cascade_falls_back_to_classic_and_opens_the_shared_breaker():
    core, classic, ensemble, cascade = make_core(target="cascade")
    cascade.fail = True
    answers = [run(core.classify([{**ROW, "x": float(i)}], user_id="vip"))[0] for i in range(3)]
    assert all(a.model == "classic" and a.fallback for a in answers)
    assert cascade.calls == 2 and core.breaker.state == BreakerState.OPEN
    assert answers[-1].reason == "breaker_open"
    # one service, one breaker: the plain ensemble is held off too
    assert run(core.classify([ROW], user_id="vip", header="ensemble"))[0].fallback
    assert ensemble.calls == 0


def test_a_slow_cascade_misses_the_deadline():
    core, classic, ensemble, cascade = make_core()
    cascade.delay_s = 1.0
    answer = run(asyncio.wait_for(core.classify([ROW], header="cascade"), timeout=0.5))[0]
    assert answer.model == "classic" and answer.fallback


def test_the_cascade_is_cached_apart_from_the_ensemble():
    core, classic, ensemble, cascade = make_core()
    assert not run(core.classify([ROW], header="cascade"))[0].cached
    assert run(core.classify([ROW], header="cascade"))[0].cached
    assert run(core.classify([ROW], header="ensemble"))[0].model == "ensemble"
    assert (ensemble.calls, cascade.calls) == (1, 1)


def test_the_cascade_has_its_own_arm_in_the_evaluation_and_joins_anywhere(tmp_path):
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    clock = FakeClock(1_800_000_000.0)

    def live(name: str) -> LiveEvaluation:
        return LiveEvaluation(
            store,
            parse_flag_config(None),
            None,
            SCHEMA.classes,
            clock=clock,
            in_process_arms=("classic",),
            cpu_clock=FakeClock(1.0),
            replica=name,
            request_ids=RequestIds("a-secret-shared-by-replicas", 3600, clock=clock),
        )

    here, elsewhere = live("a"), live("b")
    core, classic, ensemble, cascade = make_core(
        store, live=here, request_ids=here.request_ids, target="cascade"
    )
    answer = run(core.classify([ROW], user_id="vip"))[0]
    assert answer.model == "cascade"
    joined = elsewhere.feedback(answer.request_id, "yes", 9)  # a replica that never saw it
    assert (joined["arm"], joined["correct"], joined["status"]) == ("cascade", True, "recorded")
    cascade.fail = True
    assert run(core.classify([{**ROW, "x": 5.0}], user_id="vip"))[0].fallback
    snap = here.windows.snapshot()
    assert snap["cascade"]["count"] == 2 and snap["cascade"]["errors"] == 1
    assert snap["cascade"]["fallbacks"] == 1 and snap["ensemble"]["count"] == 0
    here.flush_outcomes()
    shared = elsewhere.shared_windows(max_age_s=0).snapshot()
    # "vip" is allow-listed: the label is reported, not A/B evidence (not randomised)
    assert (shared["cascade"]["count"], shared["cascade"]["labelled"]) == (2, 0)
    assert shared["cascade"]["forced_labelled"] == 1
    report = elsewhere.report()
    assert report["cascade_comparison"]["candidate"] == "cascade"
    assert report["comparison"]["candidate"] == "ensemble"  # the go/no-go compares as before
    assert report["go_no_go"]["inputs"]["ensemble_labelled"] == 0


# ---------------------------------------------------------------------------- the arm
class FakeEnsembleArm:
    """The parts of a RemoteArm a CascadeArm uses."""

    name = "ensemble"

    def __init__(self, details: dict):
        self.info = ArmInfo("ensemble", "ensemble:v7", SCHEMA, details=details)

    async def _call(self, call, *args):
        return await call(*args)


def test_cascade_arm_is_the_ensemble_service_under_its_own_name():
    cascade = {"available": True, "cpu_seconds_per_row": 0.0005}
    details = {"cpu_seconds_per_row": 0.002, "cascade": cascade}
    remote = FakeEnsembleArm(details)

    async def predict_cascade(codes):
        return np.column_stack([np.tile([0.4, 0.6], (len(codes), 1)), np.arange(len(codes)) % 2])

    arm = CascadeArm(remote, predict_cascade)
    info = arm.info
    assert (info.name, info.tag, info.version) == ("cascade", "ensemble:v7", "v7")
    assert info.details["cpu_seconds_per_row"] == 0.0005 and arm.info is info  # derived once
    np.testing.assert_allclose(run(arm.predict(np.zeros((3, 2)))), [[0.4, 0.6]] * 3)
    remote.info.ready = False
    assert arm.info.ready is False
    remote.info = ArmInfo("ensemble", "ensemble:v8", SCHEMA, details={"cascade": None})
    assert arm.info is None  # a model without a cascade
    remote.info = None
    assert arm.info is None and run(arm.refresh()) is None


def test_cascade_call_takes_its_own_rows_socket_then_the_api():
    from serving.transport.rows import SocketClient, Transports
    from serving.wiring import cascade_call

    class Client:
        url = "file:///tmp/bento/7.sock"

        async def call(self, name, **kwargs):
            return (name, kwargs["codes"])

    class Remote:
        to_async = Client()

    chained = cascade_call(Remote(), "socket")
    assert isinstance(chained, Transports)
    (first, socket), (last, api) = chained.calls
    assert (first, last) == ("socket", "api") and isinstance(socket, SocketClient)
    assert socket.path == "/tmp/bento/7.sock.rows.cascade"  # beside the ensemble's rows socket
    assert run(api("codes")) == ("predict_cascade", "codes")
    assert run(cascade_call(Remote(), "http")("codes")) == ("predict_cascade", "codes")

    class InProcess:
        def predict_cascade(self, codes):
            return codes * 2

    assert run(cascade_call(InProcess(), "socket")(3)) == 6
