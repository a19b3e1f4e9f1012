"""Model versions: swap and roll back under traffic without a failed request; a corrupt version is
refused while the current one keeps serving; missing models at start-up degrade or un-ready."""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.support import HOME, Server, clone_version

pytestmark = pytest.mark.integration


class Traffic:
    """Steady routed traffic in a background thread, counting every non-200."""

    def __init__(self, url: str, row: dict):
        self.url, self.row = url, row
        self.sent, self.failures, self.models = 0, [], set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                i = self.sent
                response = client.post(
                    f"{self.url}/api/classify",
                    json={
                        "features": {**self.row, "age": float(18 + i % 60)},
                        "user_id": f"swap-{i}",
                    },
                    headers={"X-Model-Preference": "ensemble"},
                )
                self.sent += 1
                if response.status_code != 200:
                    self.failures.append(response.status_code)
                else:
                    self.models.add((response.json()["model"], response.json()["model_version"]))

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def swap(server, admin_headers, name: str, version: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}/api/admin/models/{name}/version",
        json={"version": version},
        headers=admin_headers,
        timeout=60,
    )


def served_version(server, name: str) -> str:
    return httpx.get(f"{server.url}/api/models", timeout=10).json()[name]["version"]


def test_swap_and_roll_back_under_traffic_and_refuse_a_corrupt_version(
    server, admin_headers, example_row
):
    original = served_version(server, "ensemble")
    corrupt = clone_version(f"ensemble:{original}", corrupt=True)
    newer = clone_version(
        f"ensemble:{original}"
    )  # newest, so "latest" stays a good model for later tests
    with Traffic(server.url, example_row) as traffic:
        time.sleep(1)
        refused = swap(server, admin_headers, "ensemble", corrupt)
        assert refused.status_code == 422 and "failed to load" in refused.text, refused.text
        assert served_version(server, "ensemble") == original
        swapped = swap(server, admin_headers, "ensemble", newer)
        assert swapped.status_code == 200, swapped.text
        assert served_version(server, "ensemble") == newer
        time.sleep(1)
        back = swap(
            server, admin_headers, "ensemble", "previous"
        )  # the version before `newer`: the corrupt one
        assert back.status_code == 422 and served_version(server, "ensemble") == newer
        restored = swap(server, admin_headers, "ensemble", original)
        assert restored.status_code == 200, restored.text
        time.sleep(1)
    assert traffic.sent > 20 and traffic.failures == []
    assert {("ensemble", original), ("ensemble", newer)} <= traffic.models
    assert swap(server, admin_headers, "ensemble", "latest").status_code == 200


def test_classic_version_swap_reaches_the_router_local_copy(server, admin_headers, example_row):
    before = served_version(server, "classic")
    newer = clone_version(f"classic:{before}")
    assert swap(server, admin_headers, "classic", newer).status_code == 200
    routed = httpx.post(
        f"{server.url}/api/classify", json={"features": example_row, "user_id": "nobody"}
    ).json()
    assert (routed["model"], routed["model_version"]) == ("classic", newer)
    assert swap(server, admin_headers, "classic", "previous").json()["to"] == f"classic:{before}"


def _home_with(*names: str) -> Path:
    home = Path(tempfile.mkdtemp(prefix="bentoml-partial-"))
    for name in names:
        shutil.copytree(HOME / "models" / name, home / "models" / name, symlinks=True)
    return home


def test_missing_ensemble_model_serves_everything_on_classic(trained_store, example_row):
    srv = Server({"BENTOML_HOME": str(_home_with("classic"))}).start()
    try:
        answer = httpx.post(
            f"{srv.url}/api/classify",
            json={"features": example_row},
            headers={"X-Model-Preference": "ensemble"},
        ).json()
        assert (answer["model"], answer["fallback"]) == ("classic", True)
        models = httpx.get(f"{srv.url}/api/models").json()
        assert (
            models["ensemble"]["ready"] is False
            and "not in the model store" in models["ensemble"]["error"]
        )
        assert httpx.get(f"{srv.url}/metrics").text.count("tabular_router_ensemble_ready 0.0") == 1
    finally:
        srv.stop()


def test_missing_classic_model_is_never_ready_and_says_why(trained_store):
    srv = Server({"BENTOML_HOME": str(_home_with("ensemble"))})
    with pytest.raises(RuntimeError):
        srv.start(timeout=25)
    assert "model classic:latest is not in the model store" in srv.log()
