"""Versions on trial in the router core: an experiment variant pinned to a version and a
challenger's A/B share are answered by the version loaded in the router (its version in the
answer); a shadow-stage challenger only counts agreements; a version that cannot answer leaves
the champion answering."""

from __future__ import annotations

import asyncio

import numpy as np

from serving.config.flags import parse_flag_config
from serving.control import ControlPlane
from serving.delivery.challenger import ChallengerView
from serving.routing.arms import ArmInfo
from serving.routing.core import Arms, RouterCore
from serving.routing.versions import VersionArms
from tests.doubles import ROW, SCHEMA, StubArm

USERS = [f"user-{i}" for i in range(200)]


class TrialModel:
    """An in-process 'ensemble version' (a unit-test double of the loaded model)."""

    def __init__(self, probs, fail=False):
        self.probs, self.fail, self.calls = np.array(probs), fail, 0

    def predict_proba(self, codes):
        self.calls += 1
        if self.fail:
            raise RuntimeError("broken version")
        return np.tile(self.probs, (len(codes), 1))


def versions_with(**models) -> VersionArms:
    from serving.routing.versions import VersionArm

    def load(version: str) -> VersionArm:
        info = ArmInfo(name="ensemble", tag=f"ensemble:{version}", schema=SCHEMA, details={})
        return VersionArm(models[version], info)

    return VersionArms(loader=load)


def core_with(flags: dict, versions: VersionArms) -> RouterCore:
    classic, champion = StubArm("classic", [0.8, 0.2]), StubArm("ensemble", [0.3, 0.7], "v1")
    return RouterCore(Arms(classic, champion, versions=versions), parse_flag_config(flags))


def classify_all(core: RouterCore) -> list:
    async def go():
        await core.versions.sync(ControlPlane(core).wanted_versions())
        return [(await core.classify([ROW], user_id=u))[0] for u in USERS]

    return asyncio.run(go())


def test_an_experiment_variant_pinned_to_a_version_answers_from_the_router():
    flags = {
        "experiment": {
            "name": "x",
            "variants": [
                {"name": "control", "model": "classic", "weight": 50, "control": True},
                {"name": "trial", "model": "ensemble", "version": "v2", "weight": 50},
            ],
        }
    }
    core = core_with(flags, versions_with(v2=TrialModel([0.1, 0.9])))
    answers = classify_all(core)
    served = {(a.model, a.model_version) for a in answers}
    assert served == {("classic", "v1"), ("ensemble", "v2")}
    trial = [a for a in answers if a.model_version == "v2"]
    assert trial and all(a.probabilities["yes"] == 0.9 for a in trial)
    assert core.ensemble.calls == 0  # nobody was sent to the champion


def test_a_challenger_in_ab_takes_its_share_and_a_broken_one_leaves_the_champion():
    core = core_with(
        {"ensemble": {"rollout_percentage": 100}}, versions_with(v2=TrialModel([0.1, 0.9]))
    )
    core.challenger = ChallengerView("v2", "ab", weight=30, shadow_sample_rate=0.0)
    answers = classify_all(core)
    share = sum(a.model_version == "v2" for a in answers) / len(answers)
    assert 0.15 < share < 0.45 and {a.model for a in answers} == {"ensemble"}
    broken = core_with(
        {"ensemble": {"rollout_percentage": 100}}, versions_with(v2=TrialModel([0.1, 0.9], True))
    )
    broken.challenger = ChallengerView("v2", "ab", weight=30, shadow_sample_rate=0.0)
    answers = classify_all(broken)
    assert {(a.model, a.model_version, a.fallback) for a in answers} == {("ensemble", "v1", False)}


def test_a_challenger_in_shadow_never_answers_but_counts_agreements():
    model = TrialModel([0.6, 0.4])  # disagrees with the champion's "yes"
    core = core_with({"ensemble": {"rollout_percentage": 100}}, versions_with(v2=model))
    core.challenger = ChallengerView("v2", "shadow", weight=30, shadow_sample_rate=1.0)

    async def go():
        await core.versions.sync(ControlPlane(core).wanted_versions())
        out = []
        for user in USERS[:20]:
            out.append((await core.classify([ROW], user_id=user))[0])
            # at most 8 comparisons at once: let them end
            await asyncio.gather(*core.challenger_shadow.tasks)
        return out

    answers = asyncio.run(go())
    assert {a.model_version for a in answers} == {"v1"}
    shadow = core.challenger_shadow
    assert shadow.take_counts() == {"v2": [20, 0]} and shadow.take_counts() == {}
