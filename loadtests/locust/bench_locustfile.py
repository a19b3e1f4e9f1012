"""One closed-loop Locust user class for the benchmark (python -m loadtests.benchmark).

Each user sends the next request as soon as the previous answer arrives (no think time), one
distinct row per request, to the endpoint named by the environment:

    LOADTEST_BENCH_PATH    /api/v1/classify/classic, /classify/ensemble, ...
    LOADTEST_BENCH_NAME    request name in the statistics (default: the path)
    LOADTEST_BENCH_HEADER  optional "Header: value", e.g. "X-Model-Preference: classic"
    LOADTEST_BENCH_MODEL   the model every answer must come from (classic|ensemble)

Answers are validated like the load tests' (loadtests/locust/payloads.py).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from locust import constant, task

from loadtests.locust import payloads
from loadtests.locust.locustfile import ApiUser, Shared

PATH = os.environ.get("LOADTEST_BENCH_PATH", "/api/v1/classify/classic")
NAME = os.environ.get("LOADTEST_BENCH_NAME") or PATH
MODEL = os.environ.get("LOADTEST_BENCH_MODEL") or None
_header = os.environ.get("LOADTEST_BENCH_HEADER", "")
HEADERS = dict([tuple(part.strip() for part in _header.split(":", 1))]) if ":" in _header else {}


class BenchUser(ApiUser):
    wait_time = constant(0)

    @task
    def classify(self) -> None:
        request = {"features": self.rows.row()}
        if HEADERS:  # a routed call: give it a user like real routed traffic
            request["user_id"] = Shared.population.pick(self.rng)
        self.post_json(
            PATH,
            request,
            name=NAME,
            headers=HEADERS,
            check=lambda b: payloads.check_prediction(b, Shared.classes, expect_model=MODEL),
        )
