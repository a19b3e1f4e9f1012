"""Load-test building blocks without a server: generated rows fit the schema, bad answers are
caught, the SLO gate passes and fails on the right figures. (No Locust import: it monkey-patches the
process.)"""

from __future__ import annotations

import random

import pytest

from loadtests.locust import payloads, slo
from models.schema import FeatureSchema

SCHEMA = {
    "classes": ["high", "low", "medium"],
    "features": [
        {
            "name": "age",
            "kind": "numeric",
            "min": 18.0,
            "max": 80.0,
            "mean": 48.7,
            "std": 17.9,
            "missing_rate": 0.0,
        },
        {
            "name": "income",
            "kind": "numeric",
            "min": 4730.13,
            "max": 393636.34,
            "mean": 46532.0,
            "std": 28129.4,
            "missing_rate": 0.05,
        },
        {
            "name": "signal",
            "kind": "numeric",
            "min": -3.8,
            "max": 3.4,
            "mean": 0.0,
            "std": 1.0,
            "missing_rate": 0.0,
        },
        {
            "name": "region",
            "kind": "categorical",
            "categories": ["east", "north", "south"],
            "missing_rate": 0.1,
        },
    ],
}


def test_generated_rows_are_valid_distinct_and_in_range():
    rows = payloads.RowGenerator(SCHEMA, random.Random(3)).rows(2000)
    FeatureSchema.model_validate(SCHEMA).encode_rows(rows)  # raises on any invalid row
    assert len({tuple(sorted(r.items(), key=lambda kv: kv[0])) for r in rows}) == len(rows)
    for feature in SCHEMA["features"]:
        values = [r[feature["name"]] for r in rows]
        missing = sum(v is None for v in values) / len(values)
        assert abs(missing - feature["missing_rate"]) < 0.03
        present = [v for v in values if v is not None]
        if feature["kind"] == "numeric":
            assert feature["min"] <= min(present) and max(present) <= feature["max"]
        else:
            assert set(present) == set(feature["categories"])
    assert all(float(r["age"]).is_integer() for r in rows)  # an integral range gives whole numbers


def test_user_population_reuses_a_few_ids_heavily():
    population = payloads.UserPopulation(size=10_000)
    rng = random.Random(1)
    picks = [population.pick(rng) for _ in range(20_000)]
    top = max(set(picks), key=picks.count)
    assert picks.count(top) > 1000 and 2000 < len(set(picks)) < 10_000


GOOD = {
    "label": "low",
    "probabilities": {"high": 0.1, "low": 0.7, "medium": 0.2},
    "model": "classic",
    "model_version": "v1",
    "request_id": "r1",
    "fallback": False,
    "cached": False,
    "reason": "split",
}


@pytest.mark.parametrize(
    "change, expect_model, problem",
    [
        ({"label": None}, None, "not in classes"),
        ({"probabilities": {"high": 0.1, "low": 0.7}}, None, "keys"),
        ({"probabilities": {"high": 0.3, "low": 0.7, "medium": 0.2}}, None, "sum to"),
        ({"label": "high"}, None, "not the most probable"),
        ({"model": "bert"}, None, "not in"),
        ({}, "ensemble", "expected 'ensemble'"),
        ({"model": "ensemble", "fallback": True}, None, "fallback"),
    ],
)
def test_check_prediction_catches_wrong_bodies(change, expect_model, problem):
    assert payloads.check_prediction(GOOD, SCHEMA["classes"]) is None
    found = payloads.check_prediction(
        {**GOOD, **change}, SCHEMA["classes"], expect_model=expect_model
    )
    assert found and problem in found
    body = dict(GOOD)
    del body["request_id"]
    assert "missing" in payloads.check_prediction(body, SCHEMA["classes"])
    assert (
        payloads.check_batch({"predictions": [GOOD]}, 2, SCHEMA["classes"])
        == "1 predictions for 2 instances"
    )


HEADER = (
    "Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,"
    "Min Response Time,Max Response Time,Average Content Size,Requests/s,Failures/s,"
    "50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,100%\n"
)


def write_stats(path, rows):
    path.write_text(
        HEADER
        + "".join(
            f"{t},{n},{c},{f},{p50},{p50},1,{p99},100,{rps},0,{p50},{p50},{p50},{p50},{p95},{p95},{p99},{p99},{p99},{p99},{p99}\n"
            for t, n, c, f, p50, p95, p99, rps in rows
        )
    )


def test_gate_passes_fails_and_refuses(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    write_stats(
        run / "locust_stats.csv",
        [
            ("POST", "/api/v1/classify/classic", 1000, 2, 20, 60, 90, 50.0),
            ("POST", "/api/v2/classify/ensemble", 500, 0, 150, 400, 700, 25.0),
            ("", "Aggregated", 1500, 2, 30, 300, 600, 75.0),
        ],
    )
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(
        "defaults: {max_error_rate: 0.01}\nendpoints:\n  /api/v1/*: {p95_ms: 100}\n"
        "  /api/v2/classify/ensemble: {p95_ms: 500}\n  /api/feedback: {p95_ms: 1000}\n"
        "aggregated: {p95_ms: 1000, min_rps: 10}\n"
    )
    assert slo.check(run, good) == 0
    assert "not measured" in capsys.readouterr().out
    bad.write_text(
        "endpoints:\n  /api/v2/classify/ensemble: {p99_ms: 500}\naggregated: {min_rps: 100}\n"
    )
    assert slo.check(run, bad) == 1
    out = capsys.readouterr().out
    assert out.count("MISS") == 2 and "FAIL" in out
    bad.write_text("endpoints:\n  /api/feedback: {p95_ms: 100, required: true}\n")
    assert slo.check(run, bad) == 1
    bad.write_text("aggregated: {p95: 100}\n")
    assert slo.check(run, bad) == 2  # unknown target: cannot judge
    assert slo.check(tmp_path / "missing", good) == 2
