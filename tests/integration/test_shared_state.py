"""Two router replicas on one PostgreSQL agree on one rollout stage."""

from __future__ import annotations

import copy
import os
import uuid

import httpx
import pytest

from tests.integration.test_progressive_delivery import ADMIN, FAST_ROLLOUT
from tests.support import Server, require_infrastructure

pytestmark = pytest.mark.integration


@pytest.fixture
def shared_database() -> str:
    base = os.environ.get("TEST_POSTGRES_URL")
    if not base:
        require_infrastructure(
            "no PostgreSQL: install Debian's postgresql package (the test set-up starts it) "
            "or set TEST_POSTGRES_URL"
        )
    from sqlalchemy import create_engine, text

    name = f"replicas_{uuid.uuid4().hex[:8]}"
    engine = create_engine(base, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    engine.dispose()
    return base.rsplit("/", 1)[0] + f"/{name}"


def stage(server: Server) -> float:
    return httpx.get(f"{server.url}/api/status", headers=ADMIN, timeout=10).json()["rollout"][
        "state"
    ]["percentage"]


def split(server: Server) -> float:
    return httpx.get(f"{server.url}/api/status", headers=ADMIN, timeout=10).json()["split"][
        "rollout_percentage"
    ]


def test_two_routers_share_one_rollout_stage(trained_store, shared_database):
    flags = copy.deepcopy(FAST_ROLLOUT)
    flags["rollout"]["min_labelled_samples"] = 100_000  # nothing promotes by itself here
    first = Server({"SERVING_STATE_URL": shared_database}, flags=flags).start()
    second = None
    try:
        second = Server({"SERVING_STATE_URL": shared_database}, flags=flags).start()
        assert stage(first) == stage(second) == 10
        promoted = httpx.post(f"{first.url}/api/admin/rollout/promote", headers=ADMIN, timeout=30)
        assert promoted.status_code == 200 and promoted.json()["state"]["percentage"] == 50
        assert second.wait_until(lambda: stage(second) == 50 and split(second) == 50, timeout=15)
        rolled = httpx.post(f"{second.url}/api/admin/rollout/rollback", headers=ADMIN, timeout=30)
        assert rolled.status_code == 200
        assert first.wait_until(
            lambda: (
                not httpx.get(f"{first.url}/api/status", headers=ADMIN).json()["split"]["enabled"]
            ),
            timeout=15,
        )
        decisions = httpx.get(f"{first.url}/api/admin/rollout/decisions", headers=ADMIN).json()[
            "decisions"
        ]
        actions = [d["action"] for d in decisions]  # newest first; holds are logged too
        assert actions[0] == "rollback" and "promote" in actions
    finally:
        for srv in (second, first):
            if srv is not None:
                srv.stop()
