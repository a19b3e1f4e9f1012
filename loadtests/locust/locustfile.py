"""Locust user classes for the serving API, and the selected load shape.

    locust -f loadtests/locust/locustfile.py --host http://127.0.0.1:3000 [UserClass ...]
    python -m loadtests run mixed --users 20 --duration 60s --host http://127.0.0.1:3000

User classes (pick with Locust's positional class names, LOCUST_USER_CLASSES, or --class-picker):

| class              | traffic                                                                 |
| ------------------ | ----------------------------------------------------------------------- |
| ClassicDirectUser  | POST /api/v1/classify/classic (the classic service, unrouted)           |
| EnsembleDirectUser | POST /api/v2/classify/ensemble (the ensemble service, unrouted)         |
| RoutedUser         | POST /api/classify as 10,000 users with Zipf-like reuse (sticky split)  |
| BatchUser          | POST /api/classify/batch, 8-32 instances per request                    |
| FeedbackUser       | POST /api/classify then POST /api/feedback {request_id, label}; stops   |
|                    | itself (with a message) while the server has no feedback endpoint       |

Rows come from the served model's schema (`GET /api/models`, fetched at test start) and are all
distinct, so the prediction cache does not flatter the figures. Every request uses
catch_response=True and fails on a wrong status or a wrong body (see loadtests/locust/payloads.py).

Environment: LOADTEST_SHAPE (steady|step|spike; none = Locust's plain -u/-t run),
LOADTEST_WAIT ("0.1-0.5" seconds of think time between tasks, "0" for none),
LOADTEST_USERS (population size, 10000), LOADTEST_ZIPF (exponent, 1.1),
LOADTEST_BATCH_SIZE ("8-32"), LOADTEST_SEED, LOADTEST_OUTPUT_DIR (where the run summary goes).
"""

from __future__ import annotations

import json
import logging
import os
import random
import sys
import threading
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run by Locust as a file: make `loadtests` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from locust import between, constant, events, task
from locust.contrib.fasthttp import FastHttpUser
from locust.exception import StopUser

from loadtests.harness.common import write_output_json
from loadtests.locust import payloads
from loadtests.locust.shapes import SHAPES

log = logging.getLogger("loadtests")

JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


def _wait_time():
    spec = os.environ.get("LOADTEST_WAIT", "0.1-0.5").strip()
    if "-" in spec:
        lo, hi = (float(x) for x in spec.split("-", 1))
        return between(lo, hi)
    return constant(float(spec or 0))


def _range(spec: str) -> tuple[int, int]:
    lo, _, hi = spec.partition("-")
    return int(lo), int(hi or lo)


# --------------------------------------------------------------------------- shared state
class Shared:
    """Schema, row generator and user population for the whole process, loaded once."""

    _lock = threading.Lock()
    schema: dict[str, Any] | None = None
    classes: list[str] = []
    population: payloads.UserPopulation | None = None
    seed = int(os.environ.get("LOADTEST_SEED", "0")) or random.SystemRandom().randrange(1 << 30)
    arms: Counter = Counter()
    user_arms: dict[str, set] = defaultdict(set)
    feedback_available: bool | None = None
    feedback_message = ""

    @classmethod
    def load(cls, host: str) -> None:
        with cls._lock:
            if cls.schema is not None:
                return
            models = payloads.fetch_models(host)
            cls.schema = payloads.schema_from_models(models)
            cls.classes = [str(c) for c in cls.schema["classes"]]
            cls.population = payloads.UserPopulation(
                size=int(os.environ.get("LOADTEST_USERS", "10000")),
                exponent=float(os.environ.get("LOADTEST_ZIPF", "1.1")),
            )
            log.info(
                "schema loaded from %s/api/models: %d features, classes %s",
                host,
                len(cls.schema["features"]),
                cls.classes,
            )


@events.test_start.add_listener
def _load_schema(environment, **_kwargs) -> None:
    if environment.host:
        try:
            Shared.load(environment.host)
        except Exception as exc:  # users retry in on_start; a persistent failure stops them there
            log.error("could not load the schema from %s/api/models: %s", environment.host, exc)


@events.test_stop.add_listener
def _summary(environment, **_kwargs) -> None:
    total = sum(Shared.arms.values())
    switched = sum(1 for arms in Shared.user_arms.values() if len(arms) > 1)
    summary = {
        "answers": dict(Shared.arms),
        "ensemble_share_routed": round(
            Shared.arms["routed:ensemble"]
            / max(1, Shared.arms["routed:ensemble"] + Shared.arms["routed:classic"]),
            4,
        ),
        "fallback_share": round(Shared.arms["fallback"] / total, 4) if total else None,
        "cached_share": round(Shared.arms["cached"] / total, 4) if total else None,
        "distinct_routed_users": len(Shared.user_arms),
        # > 0 means the split was not sticky (or the flags changed during the run)
        "users_on_both_arms": switched,
        "feedback_available": Shared.feedback_available,
        "feedback_message": Shared.feedback_message or None,
        "seed": Shared.seed,
    }
    write_output_json("answers.json", summary)
    if total:
        print("[answers] " + json.dumps(summary), flush=True)


def _record(body: dict[str, Any], routed_user: str | None = None) -> None:
    Shared.arms[body["model"]] += 1
    if body.get("fallback"):
        Shared.arms["fallback"] += 1
    if body.get("cached"):
        Shared.arms["cached"] += 1
    if routed_user is not None and not body.get("fallback") and body.get("reason") == "split":
        Shared.arms[f"routed:{body['model']}"] += 1
        Shared.user_arms[routed_user].add(body["model"])


# --------------------------------------------------------------------------- users
class ApiUser(FastHttpUser):
    """Common parts: schema, a per-user random stream, validated POSTs."""

    abstract = True
    wait_time = _wait_time()
    network_timeout = 30.0
    connection_timeout = 10.0

    def on_start(self) -> None:
        try:
            Shared.load(self.host)
        except Exception as exc:
            log.error(
                "%s: no schema from %s/api/models (%s); stopping this user",
                type(self).__name__,
                self.host,
                exc,
            )
            raise StopUser() from exc
        self.rng = random.Random(Shared.seed ^ id(self))
        self.rows = payloads.RowGenerator(Shared.schema, self.rng)

    def post_json(
        self,
        path: str,
        body: dict[str, Any],
        name: str | None = None,
        headers: dict[str, str] | None = None,
        expect_status: int = 200,
        check=None,
    ) -> dict[str, Any] | None:
        """POST, then fail the request on a wrong status, non-JSON body or `check(body)` problem."""
        with self.client.post(
            path,
            data=json.dumps(body),
            headers={**JSON_HEADERS, **(headers or {})},
            name=name or path,
            catch_response=True,
        ) as response:
            if response.status_code != expect_status:
                text = (
                    (response.text or "")[:200]
                    if response.status_code
                    else str(response.error)[:200]
                )
                response.failure(f"HTTP {response.status_code} (expected {expect_status}): {text}")
                return None
            try:
                data = response.json()
            except Exception:
                response.failure(f"body is not JSON: {(response.text or '')[:120]!r}")
                return None
            problem = check(data) if check else None
            if problem:
                response.failure(problem)
                return None
            response.success()
            return data


class DirectUser(ApiUser):
    """A model service directly (no router, no fallback): every answer must come from
    `expect_model`, at `endpoint`."""

    abstract = True
    endpoint = ""
    expect_model = ""

    @task
    def classify_direct(self) -> None:
        body = self.post_json(
            self.endpoint,
            {"features": self.rows.row()},
            check=lambda b: payloads.check_prediction(
                b, Shared.classes, expect_model=self.expect_model
            ),
        )
        if body:
            _record(body)


class ClassicDirectUser(DirectUser):
    """The classic service directly: every answer must come from classic."""

    weight = 2
    endpoint, expect_model = "/api/v1/classify/classic", "classic"


class EnsembleDirectUser(DirectUser):
    """The ensemble service directly (no fallback): every answer must come from the ensemble."""

    weight = 1
    endpoint, expect_model = "/api/v2/classify/ensemble", "ensemble"


class RoutedUser(ApiUser):
    """Organic traffic through the router: a realistic population of users, sticky split."""

    weight = 6

    @task
    def classify(self) -> None:
        user_id = Shared.population.pick(self.rng)
        request = {
            "features": self.rows.row(),
            "user_id": user_id,
            "context": {"tier": Shared.population.tier(user_id)},
        }
        body = self.post_json(
            "/api/classify", request, check=lambda b: payloads.check_prediction(b, Shared.classes)
        )
        if body:
            _record(body, routed_user=user_id)


class BatchUser(ApiUser):
    """Batches of LOADTEST_BATCH_SIZE (default 8-32) rows for one user."""

    weight = 1

    @task
    def classify_batch(self) -> None:
        lo, hi = _range(os.environ.get("LOADTEST_BATCH_SIZE", "8-32"))
        n = self.rng.randint(lo, hi)
        user_id = Shared.population.pick(self.rng)
        request = {
            "instances": [{"features": row} for row in self.rows.rows(n)],
            "user_id": user_id,
        }
        body = self.post_json(
            "/api/classify/batch",
            request,
            check=lambda b: payloads.check_batch(b, n, Shared.classes),
        )
        if body:
            for prediction in body["predictions"]:
                _record(prediction)


class FeedbackUser(ApiUser):
    """Classify, then send a label for that request_id to POST /api/feedback (70 % confirm, 30 %
    correct; half with a 1..10 rating). The answer must be for that request, `recorded` (or
    `duplicate`), with the served label as `predicted` and `correct` telling whether it matches.

    Until the server has the endpoint (POST /api/feedback answers 404/405), the class logs why and
    stops its users; a run of FeedbackUser alone then ends at once and is reported as skipped.
    """

    weight = 1

    def on_start(self) -> None:
        super().on_start()
        with Shared._lock:
            if Shared.feedback_available is None:
                Shared.feedback_available = self._probe()
        if not Shared.feedback_available:
            if set(self.environment.user_classes) <= {FeedbackUser}:
                self.environment.runner.quit()  # nothing else to run: end the test now
            raise StopUser()

    def _probe(self) -> bool:
        """Is there a feedback endpoint? Asked outside the statistics, with a real request_id."""
        import urllib.error
        import urllib.request

        def post(path: str, body: dict) -> tuple[int, Any]:
            request = urllib.request.Request(
                self.host.rstrip("/") + path,
                data=json.dumps(body).encode(),
                headers=JSON_HEADERS,
                method="POST",
            )
            try:
                with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                    raw = response.read()
                    return response.status, json.loads(raw) if raw else None
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read()[:300].decode(errors="replace")

        status, body = post("/api/classify", {"features": self.rows.row()})
        if status != 200 or not isinstance(body, dict) or "request_id" not in body:
            Shared.feedback_message = (
                f"FeedbackUser: could not get a request_id (POST /api/classify answered {status})"
            )
        else:
            status, answer = post(
                "/api/feedback", {"request_id": body["request_id"], "label": body["label"]}
            )
            if status in (404, 405):
                Shared.feedback_message = (
                    f"FeedbackUser skipped: POST /api/feedback answered {status} for a fresh "
                    "request_id - this server has no (working) feedback endpoint; FeedbackUser "
                    "users stop themselves and send no traffic. Server said: "
                    f"{str(answer)[:200]}"
                )
            else:
                return True
        log.warning(Shared.feedback_message)
        print(Shared.feedback_message, file=sys.stderr, flush=True)
        write_output_json(
            "skipped.json",
            {"user_class": "FeedbackUser", "reason": Shared.feedback_message},
            indent=None,
        )
        return False

    @task
    def classify_and_feedback(self) -> None:
        user_id = Shared.population.pick(self.rng)
        body = self.post_json(
            "/api/classify",
            {"features": self.rows.row(), "user_id": user_id},
            check=lambda b: payloads.check_prediction(b, Shared.classes),
        )
        if not body:
            return
        _record(body)
        label = body["label"]
        if self.rng.random() < 0.3 and len(Shared.classes) > 1:
            label = self.rng.choice([c for c in Shared.classes if c != body["label"]])
        feedback = {"request_id": body["request_id"], "label": label}
        if self.rng.random() < 0.5:
            feedback["rating"] = self.rng.randint(1, 10)
        self.post_json(
            "/api/feedback",
            feedback,
            check=lambda answer: payloads.check_feedback(
                answer, body["request_id"], body["label"], label
            ),
        )


# --------------------------------------------------------------------------- shape
# Locust runs the first shape class it finds here, so only the selected one is exposed.
_SHAPE = os.environ.get("LOADTEST_SHAPE", "").strip().lower()
if "--class-picker" in sys.argv:
    globals().update({cls.__name__: cls for cls in SHAPES.values()})
elif _SHAPE and _SHAPE != "none":
    if _SHAPE not in SHAPES:
        raise SystemExit(f"LOADTEST_SHAPE={_SHAPE!r}: choose one of {', '.join(SHAPES)} (or none)")
    globals()[SHAPES[_SHAPE].__name__] = SHAPES[_SHAPE]
