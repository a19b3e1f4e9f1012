"""Variant assignment: sticky, in proportion to the weights, independent between experiments."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from serving.config.experiments import Experiment
from serving.routing.variants import assign

KEYS = [f"user-{i}" for i in range(20_000)]


def experiment(name: str = "exp", weights=(50, 30, 20), salt: str | None = None) -> Experiment:
    variants = [
        {"name": f"v{i}", "model": "ensemble", "version": f"v{i}", "weight": w, "control": i == 0}
        for i, w in enumerate(weights)
    ]
    return Experiment(name=name, salt=salt, variants=variants)


@st.composite
def weight_tables(draw) -> tuple[int, ...]:
    cuts = sorted(draw(st.lists(st.integers(0, 100), min_size=1, max_size=4)))
    edges = [0, *cuts, 100]
    return tuple(b - a for a, b in zip(edges, edges[1:], strict=False))


@settings(max_examples=25, deadline=None)
@given(weights=weight_tables(), salt=st.text(min_size=1, max_size=10))
def test_shares_match_the_weights_and_assignment_is_sticky(weights, salt):
    if len(weights) < 2:
        weights = (*weights, 0)
    exp = experiment(weights=weights, salt=salt)
    first = [assign(exp, k).name for k in KEYS]
    assert first == [assign(exp, k).name for k in KEYS]  # sticky
    for i, weight in enumerate(weights):
        share = first.count(f"v{i}") / len(KEYS) * 100
        assert abs(share - weight) <= 1.5, (weights, i, share)  # ±1.5 points over 20,000 keys
        if weight == 0:
            assert share == 0


def test_experiments_are_independent_of_each_other():
    a, b = experiment("exp-a"), experiment("exp-b")
    in_a = {k for k in KEYS if assign(a, k).name == "v0"}
    b_given_a = sum(assign(b, k).name == "v0" for k in in_a) / len(in_a)
    b_overall = sum(assign(b, k).name == "v0" for k in KEYS) / len(KEYS)
    assert abs(b_given_a - b_overall) < 0.02  # being in a's control says nothing about b
    changed = experiment("exp-a", weights=(40, 40, 20))
    assert [assign(b, k).name for k in KEYS[:500]] == [assign(b, k).name for k in KEYS[:500]]
    moved = sum(assign(a, k).name != assign(changed, k).name for k in KEYS) / len(KEYS)
    assert moved == pytest.approx(0.10, abs=0.02)  # only the 10 points that changed hands


@pytest.mark.parametrize(
    ("variants", "message"),
    [
        ([("a", 50, True, "1"), ("b", 40, False, "2")], "sum to 100"),
        ([("a", 50, False, "1"), ("b", 50, False, "2")], "exactly one variant must be the control"),
        ([("a", 50, True, "1"), ("b", 50, True, "2")], "exactly one variant must be the control"),
        ([("a", 50, True, "1"), ("a", 50, False, "2")], "unique"),
        ([("a", 50, True, "1"), ("b", 50, False, "1")], "same model and version"),
    ],
)
def test_a_bad_experiment_is_refused(variants, message):
    with pytest.raises(ValidationError, match=message):
        Experiment(
            name="x",
            variants=[
                {"name": n, "model": "ensemble", "weight": w, "control": c, "version": v}
                for n, w, c, v in variants
            ],
        )


@pytest.mark.parametrize("model", ["classic", "cascade"])
def test_only_ensemble_variants_name_a_version(model):
    with pytest.raises(ValidationError, match="only ensemble variants may name a version"):
        Experiment(
            name="x",
            variants=[
                {"name": "a", "model": model, "weight": 50, "control": True, "version": "1"},
                {"name": "b", "model": "ensemble", "weight": 50},
            ],
        )
