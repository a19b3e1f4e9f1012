"""More than two arms in the policy: the experiment's variant split, a challenger's A/B share."""

from __future__ import annotations

from serving.config.flags import parse_flag_config
from serving.routing.policy import ChallengerSplit, Health, Reason, RequestContext, decide, explain

USERS = [f"user-{i}" for i in range(6_000)]
THREE_VARIANTS = {
    "name": "three-way",
    "variants": [
        {"name": "control", "model": "classic", "weight": 40, "control": True},
        {"name": "champion", "model": "ensemble", "weight": 30},
        {"name": "retrained", "model": "ensemble", "version": "v2", "weight": 30},
    ],
}


def ctx(user: str, **fields) -> RequestContext:
    return RequestContext(user_id=user, request_key="r", **fields)


def test_three_variants_route_by_their_weights_and_name_the_variant():
    cfg = parse_flag_config({"experiment": THREE_VARIANTS})
    health = Health(versions=frozenset({"v2"}))
    decisions = [decide(ctx(u), cfg, health) for u in USERS]
    assert {d.reason for d in decisions} == {Reason.VARIANT}
    shares = {
        name: sum(d.variant == name for d in decisions) / len(USERS)
        for name in ("control", "champion", "retrained")
    }
    assert abs(shares["control"] - 0.40) < 0.03 and abs(shares["retrained"] - 0.30) < 0.03
    for d in decisions:
        expected = {"control": ("classic", None), "champion": ("ensemble", None)}.get(
            d.variant, ("ensemble", "v2")
        )
        assert (d.arm, d.version) == expected


def test_a_variant_whose_version_is_not_loaded_is_answered_by_the_champion():
    cfg = parse_flag_config({"experiment": THREE_VARIANTS})
    retrained = [
        u for u in USERS if decide(ctx(u), cfg, Health(versions=frozenset({"v2"}))).version
    ]
    for user in retrained[:50]:
        d = decide(ctx(user), cfg, Health())
        assert (d.arm, d.version, d.variant) == ("ensemble", None, "retrained")


def test_the_precedence_still_comes_first_with_an_experiment():
    cfg = parse_flag_config({"experiment": THREE_VARIANTS, "ensemble": {"allowed_users": ["vip"]}})
    health = Health(versions=frozenset({"v2"}))
    assert decide(ctx("vip"), cfg, health).reason is Reason.ALLOW_LIST
    assert decide(ctx("x", header_preference="classic"), cfg, health).reason is Reason.HEADER
    off = parse_flag_config({"experiment": THREE_VARIANTS, "ensemble": {"enabled": False}})
    assert decide(ctx("x"), off, health).reason is Reason.KILL_SWITCH
    pinned = [u for u in USERS[:300] if decide(ctx(u), cfg, health).version == "v2"]
    broken = Health(versions=frozenset({"v2"}), breaker_open=True)
    # a loaded challenger runs in the router: the champion service's breaker does not stop it
    assert all(decide(ctx(u), cfg, broken).version == "v2" for u in pinned)
    champions = [u for u in USERS[:300] if decide(ctx(u), cfg, health).variant == "champion"]
    assert {decide(ctx(u), cfg, broken).reason for u in champions} == {Reason.BREAKER_OPEN}


def test_explain_names_the_variant():
    cfg = parse_flag_config({"experiment": THREE_VARIANTS})
    report = explain(ctx("user-7"), cfg, Health(versions=frozenset({"v2"})))
    rules = {r["rule"]: r for r in report["rules"]}
    assert rules["variant"]["applies"] and not rules["split"]["applies"]
    assert report["decision"]["variant"] in rules["variant"]["detail"]


def test_a_challenger_takes_its_sticky_share_of_the_champion_traffic_only():
    cfg = parse_flag_config({"ensemble": {"rollout_percentage": 50}})
    split = ChallengerSplit(version="v9", weight=30, salt="challenger:v9")
    health = Health(versions=frozenset({"v9"}), challenger=split)
    decisions = {u: decide(ctx(u), cfg, health) for u in USERS}
    to_ensemble = [d for d in decisions.values() if d.arm == "ensemble"]
    taken = [d for d in to_ensemble if d.version == "v9"]
    assert abs(len(taken) / len(to_ensemble) - 0.30) < 0.03
    assert all(d.variant in ("champion", "challenger") for d in to_ensemble)
    assert all(
        d.version is None and d.variant is None for d in decisions.values() if d.arm == "classic"
    )
    # sticky, and the same users as before the challenger for everything else
    plain = Health()
    assert all(decide(ctx(u), cfg, plain).arm == d.arm for u, d in decisions.items())
    assert decisions == {u: decide(ctx(u), cfg, health) for u in USERS}
    # not loaded here: nobody gets it
    assert all(decide(ctx(u), cfg, Health(challenger=split)).version is None for u in USERS[:500])
