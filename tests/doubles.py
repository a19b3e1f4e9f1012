"""Test doubles shared by the unit tests: a hand-moved clock, stub arms and the schema they
answer for, an in-memory preference store, an in-process HTTP client, and a router core over stub
arms. Allowed in unit tests of logic only; the integration tests run the real parts."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np

from models.schema import Feature, FeatureSchema
from serving.routing.arms import ArmInfo

SCHEMA = FeatureSchema(
    features=[
        Feature(name="x", kind="numeric"),
        Feature(name="colour", kind="categorical", categories=["blue", "red"]),
    ],
    classes=["no", "yes"],
)
"""A numeric and a categorical feature, two classes: the schema the stub arms answer for."""

ROW = {"x": 1.0, "colour": "red"}
"""One valid row of `SCHEMA`."""


class FakeClock:
    """Stands in for time.monotonic / time.time: clock() returns `now`; tests set `now` or
    advance() it (no sleeping)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class StubArm:
    """Answers fixed probabilities; can fail or stall on demand; counts calls."""

    def __init__(
        self, name: str, probs: list[float], tag: str = "v1", schema: FeatureSchema = SCHEMA
    ):
        self.name = name
        self.probs = np.array(probs)
        self.info: ArmInfo | None = ArmInfo(
            name=name, tag=f"{name}:{tag}", schema=schema, details={}
        )
        self.calls = 0
        self.fail = False
        self.delay_s = 0.0

    async def predict(self, codes):
        self.calls += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail:
            raise RuntimeError("boom")
        return np.tile(self.probs, (len(codes), 1))

    async def refresh(self):
        return self.info


class CountingStore:
    """The preference tables of a StateStore, in memory, counting reads (and able to fail them)."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.changed: dict[str, int] = {}  # user -> change number of their last write
        self.reads = 0
        self.rows_read = 0
        self.fail = False

    def get_preference(self, user_id: str) -> str | None:
        self.reads += 1
        if self.fail:
            raise ConnectionError("database is down")
        return self.data.get(user_id)

    def set_preference(self, user_id: str, model: str) -> None:
        self.data[user_id] = model
        self.changed[user_id] = max(self.changed.values(), default=0) + 1

    def _read(self, users: list[str], limit: int) -> tuple[dict[str, str] | None, int]:
        self.reads += 1
        if self.fail:
            raise ConnectionError("database is down")
        self.rows_read += len(users)
        found = None if len(users) > limit else {u: self.data[u] for u in users}
        return found, max(self.changed.values(), default=0)

    def preference_snapshot(self, limit: int) -> tuple[dict[str, str] | None, int]:
        return self._read(list(self.data), limit)

    def preference_changes(self, since: int, limit: int) -> tuple[dict[str, str] | None, int]:
        return self._read([u for u, c in self.changed.items() if c > since], limit)


class AppClient:
    """Requests to an ASGI app in this process (httpx's ASGI transport; no server, no network)."""

    def __init__(self, app):
        self.app = app

    def request(self, method: str, url: str, **kwargs) -> httpx.Response:
        async def send():
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://testserver"
            ) as client:
                return await client.request(method, url, **kwargs)

        return asyncio.run(send())

    def get(self, url, **kwargs):
        return self.request("GET", url, **kwargs)

    def put(self, url, **kwargs):
        return self.request("PUT", url, **kwargs)

    def post(self, url, **kwargs):
        return self.request("POST", url, **kwargs)


def make_routed_core(**ensemble_flags):
    """A RouterCore over two stub arms answering for a one-feature schema ({"x": number}),
    rollout 0% (everyone on classic), "vip" allow-listed, preferences from a `CountingStore`."""
    from serving.config.flags import parse_flag_config
    from serving.routing.core import Arms, RouterCore
    from serving.routing.preferences import PreferenceCache

    schema = FeatureSchema(features=[Feature(name="x", kind="numeric")], classes=["no", "yes"])
    flags = parse_flag_config(
        {"ensemble": {"rollout_percentage": 0, "allowed_users": ["vip"], **ensemble_flags}}
    )
    classic = StubArm("classic", [0.8, 0.2], schema=schema)
    ensemble = StubArm("ensemble", [0.3, 0.7], schema=schema)
    preferences = PreferenceCache(CountingStore(), clock=FakeClock())
    return RouterCore(Arms(classic, ensemble), flags, preferences=preferences)
