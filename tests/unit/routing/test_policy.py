"""The routing policy: sticky, monotonic, accurate split, and one precedence that always holds."""

from datetime import datetime
from zoneinfo import ZoneInfo

import mmh3
import pytest
from hypothesis import given
from hypothesis import strategies as st

from serving.config.flags import FlagConfig, parse_flag_config
from serving.routing.policy import (
    PRECEDENCE,
    Decision,
    Health,
    Reason,
    RequestContext,
    bucket,
    decide,
    explain,
)

USERS = ["alice", "bob", "carol", "dave"]
MONDAY_NOON = datetime(2025, 11, 3, 12, 0, tzinfo=ZoneInfo("UTC"))


def config(**ensemble) -> FlagConfig:
    return parse_flag_config({"ensemble": ensemble})


def ctx(user_id="someone", **fields) -> RequestContext:
    return RequestContext(user_id=user_id, request_key=fields.pop("request_key", "req-1"), **fields)


HEALTHY = Health()

contexts = st.builds(
    RequestContext,
    user_id=st.none() | st.sampled_from(USERS) | st.text(max_size=12),
    request_key=st.text(max_size=12),
    header_preference=st.sampled_from([None, "classic", "ensemble"]),
    user_preference=st.sampled_from([None, "classic", "ensemble", "auto"]),
    attributes=st.fixed_dictionaries({}, optional={"tier": st.sampled_from(["free", "paid"])}),
)
configs = st.builds(
    lambda percentage, allowed, header_override, gated: config(
        rollout_percentage=percentage,
        allowed_users=allowed,
        groups={"beta": ["carol"]},
        header_override=header_override,
        eligibility=[{"attribute": "tier", "in": ["paid"]}] if gated else [],
    ),
    st.floats(0, 100),
    st.lists(st.sampled_from(["alice", "beta"]), unique=True),
    st.booleans(),
    st.booleans(),
)
healths = st.builds(Health, ensemble_ready=st.booleans(), breaker_open=st.booleans())


def test_bucket_is_reproducible_from_the_published_formula():
    # Any system with murmur3_32 (seed 0, unsigned) must get these numbers.
    assert mmh3.hash("ensemble:alice", signed=False) == 1855294875
    assert bucket("ensemble", "alice") == 1855294875 % 100 + 1 == 76
    assert bucket("ensemble", "alice") <= 76 and not bucket("ensemble", "alice") <= 75.9


@given(st.text(), st.text())
def test_bucket_is_between_1_and_100(flag, key):
    assert 1 <= bucket(flag, key) <= 100


@given(st.text(), st.floats(0, 100), st.floats(0, 100))
def test_raising_the_percentage_only_adds_keys(key, p, q):
    low, high = sorted((p, q))
    if bucket("ensemble", key) <= low:
        assert bucket("ensemble", key) <= high


def test_zero_and_hundred_percent_are_exact():
    keys = [f"user-{i}" for i in range(1000)]
    assert not any(bucket("ensemble", key) <= 0 for key in keys)
    assert all(bucket("ensemble", key) <= 100 for key in keys)


@pytest.mark.parametrize("percentage", [1, 5, 10, 25, 50, 75, 90])
def test_observed_split_matches_the_configured_percentage(percentage):
    cfg = config(rollout_percentage=percentage)
    decisions = [decide(ctx(f"user-{i}"), cfg, HEALTHY) for i in range(10_000)]
    assert {d.reason for d in decisions} == {Reason.SPLIT}
    share = 100 * sum(d.arm == "ensemble" for d in decisions) / len(decisions)
    assert abs(share - percentage) <= 3


@given(contexts, configs, healths)
def test_same_request_gets_the_same_decision(request_ctx, cfg, health):
    again = RequestContext(**vars(request_ctx))
    copy = parse_flag_config(cfg.model_dump(by_alias=True))
    assert decide(request_ctx, cfg, health, MONDAY_NOON) == decide(again, copy, health, MONDAY_NOON)


def test_split_keys_on_user_id_else_request_key():
    cfg = config(rollout_percentage=50)
    assert decide(ctx("alice", request_key="r1"), cfg, HEALTHY).bucket == bucket(
        "ensemble", "alice"
    )
    assert decide(ctx(None, request_key="r1"), cfg, HEALTHY).bucket == bucket("ensemble", "r1")
    assert decide(ctx("", request_key="r1"), cfg, HEALTHY).bucket == bucket("ensemble", "r1")


def test_flag_name_is_part_of_the_hash():
    cfg = parse_flag_config({"flag": "ensemble-v2"})
    assert decide(ctx("alice"), cfg, HEALTHY).bucket == bucket("ensemble-v2", "alice")


@pytest.mark.parametrize("user", ["alice", "bob", "carol"])
def test_allow_list_and_group_membership_beat_the_split(user):
    cfg = config(
        rollout_percentage=0,
        allowed_users=["alice", "beta_testers"],
        groups={"beta_testers": ["bob", "carol"]},
    )
    assert decide(ctx(user), cfg, HEALTHY) == Decision(
        "ensemble", Reason.ALLOW_LIST, fallback=False, bucket=None
    )
    assert decide(ctx("dave"), cfg, HEALTHY).reason is Reason.SPLIT


def test_anonymous_requests_are_never_allow_listed():
    cfg = config(rollout_percentage=0, allowed_users=["req-1"])
    assert decide(ctx(None, request_key="req-1"), cfg, HEALTHY).reason is Reason.SPLIT


def test_header_beats_preference_and_allow_list():
    cfg = config(rollout_percentage=100, allowed_users=["alice"])
    decision = decide(
        ctx("alice", header_preference="classic", user_preference="ensemble"), cfg, HEALTHY
    )
    assert (decision.arm, decision.reason) == ("classic", Reason.HEADER)
    decision = decide(
        ctx("dave", header_preference="ensemble", user_preference="classic"),
        config(rollout_percentage=0),
        HEALTHY,
    )
    assert (decision.arm, decision.reason) == ("ensemble", Reason.HEADER)


def test_header_is_ignored_when_override_is_off():
    cfg = config(rollout_percentage=0, header_override=False)
    assert decide(ctx(header_preference="ensemble"), cfg, HEALTHY).reason is Reason.SPLIT


def test_preference_beats_allow_list_and_auto_follows_the_rollout():
    cfg = config(rollout_percentage=0, allowed_users=["alice"])
    assert decide(ctx("alice", user_preference="classic"), cfg, HEALTHY) == Decision(
        "classic", Reason.PREFERENCE, False, None
    )
    assert decide(ctx("dave", user_preference="ensemble"), cfg, HEALTHY) == Decision(
        "ensemble", Reason.PREFERENCE, False, None
    )
    assert decide(ctx("alice", user_preference="auto"), cfg, HEALTHY).reason is Reason.ALLOW_LIST
    assert decide(ctx("dave", user_preference="auto"), cfg, HEALTHY).reason is Reason.SPLIT


@given(contexts, configs, healths)
def test_kill_switch_beats_everything(request_ctx, cfg, health):
    cfg.ensemble.enabled = False
    assert decide(request_ctx, cfg, health, MONDAY_NOON) == Decision(
        "classic", Reason.KILL_SWITCH, False, None
    )


@given(contexts, configs, healths)
def test_unhealthy_ensemble_falls_back_only_when_the_ensemble_was_meant(request_ctx, cfg, health):
    intended = decide(request_ctx, cfg, HEALTHY, MONDAY_NOON)
    decision = decide(request_ctx, cfg, health, MONDAY_NOON)
    degraded = health.breaker_open or not health.ensemble_ready
    if intended.arm == "ensemble" and degraded:
        reason = Reason.BREAKER_OPEN if health.breaker_open else Reason.UNHEALTHY
        assert decision == Decision("classic", reason, True, intended.bucket, meant="ensemble")
    else:
        assert decision == intended


def test_header_asking_for_the_ensemble_still_falls_back_when_its_breaker_is_open():
    decision = decide(ctx(header_preference="ensemble"), config(), Health(breaker_open=True))
    assert decision == Decision("classic", Reason.BREAKER_OPEN, True, None, meant="ensemble")


def test_attribute_rule_gates_the_split_only():
    cfg = config(
        rollout_percentage=100,
        allowed_users=["alice"],
        eligibility=[{"attribute": "tier", "in": ["paid", "enterprise"]}],
    )
    assert decide(ctx("dave", attributes={"tier": "paid"}), cfg, HEALTHY).reason is Reason.SPLIT
    for attributes in ({"tier": "free"}, {}, {"region": "eu"}):
        assert decide(ctx("dave", attributes=attributes), cfg, HEALTHY) == Decision(
            "classic", Reason.NOT_ELIGIBLE, False, None
        )
    assert decide(ctx("alice"), cfg, HEALTHY).reason is Reason.ALLOW_LIST
    assert decide(ctx("dave", user_preference="ensemble"), cfg, HEALTHY).arm == "ensemble"
    assert decide(ctx("dave", header_preference="ensemble"), cfg, HEALTHY).arm == "ensemble"


def test_all_eligibility_rules_must_hold():
    cfg = config(
        rollout_percentage=100,
        eligibility=[{"attribute": "tier", "in": ["paid"]}, {"attribute": "region", "in": ["eu"]}],
    )
    assert decide(ctx(attributes={"tier": "paid", "region": "eu"}), cfg, HEALTHY).arm == "ensemble"
    assert (
        decide(ctx(attributes={"tier": "paid", "region": "us"}), cfg, HEALTHY).reason
        is Reason.NOT_ELIGIBLE
    )


AMSTERDAM_OFFICE_HOURS = config(
    rollout_percentage=100,
    allowed_users=["alice"],
    eligibility=[
        {
            "time_window": {
                "days": ["mon", "tue", "wed", "thu", "fri"],
                "from": "08:00",
                "to": "18:00",
                "timezone": "Europe/Amsterdam",
            }
        }
    ],
)


@pytest.mark.parametrize(
    ("now", "eligible"),
    [
        (datetime(2025, 11, 3, 7, 0, tzinfo=ZoneInfo("UTC")), True),  # Monday 08:00 CET
        (datetime(2025, 11, 3, 6, 59, tzinfo=ZoneInfo("UTC")), False),  # Monday 07:59 CET
        (datetime(2025, 11, 3, 17, 0, tzinfo=ZoneInfo("UTC")), False),  # Monday 18:00 CET
        (datetime(2025, 7, 7, 16, 30, tzinfo=ZoneInfo("UTC")), False),  # Monday 18:30 CEST
        (datetime(2025, 7, 7, 6, 0, tzinfo=ZoneInfo("UTC")), True),  # Monday 08:00 CEST
        (datetime(2025, 11, 3, 9, 0, tzinfo=ZoneInfo("America/New_York")), True),  # 15:00 CET
        (
            datetime(2025, 11, 7, 23, 30, tzinfo=ZoneInfo("America/New_York")),
            False,
        ),  # Saturday 05:30 CET
        (datetime(2025, 11, 8, 12, 0, tzinfo=ZoneInfo("UTC")), False),  # Saturday
    ],
)
def test_time_window_is_read_in_its_own_time_zone(now, eligible):
    decision = decide(ctx("dave"), AMSTERDAM_OFFICE_HOURS, HEALTHY, now)
    assert decision.reason is (Reason.SPLIT if eligible else Reason.NOT_ELIGIBLE)
    assert decide(ctx("alice"), AMSTERDAM_OFFICE_HOURS, HEALTHY, now).reason is Reason.ALLOW_LIST


def test_request_context_rejects_unknown_arms():
    with pytest.raises(ValueError, match="header preference"):
        RequestContext(user_id="a", request_key="r", header_preference="turbo")
    with pytest.raises(ValueError, match="user preference"):
        RequestContext(user_id="a", request_key="r", user_preference="fast")


def test_precedence_lists_every_reason_in_order():
    assert [reason for reason, _ in PRECEDENCE] == list(Reason)


@given(contexts, configs, healths)
def test_explain_agrees_with_decide_and_lists_every_rule(request_ctx, cfg, health):
    report = explain(request_ctx, cfg, health, MONDAY_NOON)
    assert report["decision"] == decide(request_ctx, cfg, health, MONDAY_NOON).as_dict()
    assert [rule["rule"] for rule in report["rules"]] == [reason.value for reason, _ in PRECEDENCE]
    assert report["decision"]["reason"] in {
        rule["rule"] for rule in report["rules"] if rule["applies"]
    }


def test_explain_shows_why():
    cfg = config(
        rollout_percentage=0,
        allowed_users=["beta"],
        groups={"beta": ["bob"]},
        eligibility=[{"attribute": "tier", "in": ["paid"]}],
    )
    report = explain(
        ctx("bob", attributes={"tier": "free"}), cfg, Health(breaker_open=True), MONDAY_NOON
    )
    assert report["decision"] == {
        "arm": "classic",
        "reason": "breaker_open",
        "randomised": False,
        "fallback": True,
        "bucket": None,
        "meant": "ensemble",
        "version": None,
        "variant": None,
    }
    assert report["intended"]["reason"] == "allow_list"
    rules = {rule["rule"]: rule for rule in report["rules"]}
    assert rules["allow_list"]["detail"] == "user 'bob' allow-listed via group beta"
    assert rules["not_eligible"]["checks"] == [
        {"rule": {"attribute": "tier", "in": ["paid"]}, "holds": False}
    ]
    assert rules["split"]["detail"].startswith(
        f"bucket('ensemble', 'bob') = {bucket('ensemble', 'bob')} >"
    )


def test_only_the_split_and_variants_are_randomised():
    """A/B evidence comes only from arms a hash assigned; chosen or forced arms never."""
    split = decide(ctx("someone"), config(rollout_percentage=100), Health(), MONDAY_NOON)
    assert split.reason == Reason.SPLIT and split.randomised
    header = decide(
        ctx("someone", header_preference="ensemble"),
        config(header_override=True),
        Health(),
        MONDAY_NOON,
    )
    assert header.reason == Reason.HEADER and not header.randomised
    listed = decide(ctx("bob"), config(allowed_users=["bob"]), Health(), MONDAY_NOON)
    assert listed.reason == Reason.ALLOW_LIST and not listed.randomised
    fallen = decide(
        ctx("someone"), config(rollout_percentage=100), Health(breaker_open=True), MONDAY_NOON
    )
    assert fallen.fallback and not fallen.randomised
