"""Opt-in beta preferences: user tokens, the hot-path cache, the HTTP routes, and routing by
preference.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import threading
from types import SimpleNamespace

import httpx
import pytest

from serving.routing.preferences import (
    PreferenceCache,
    sign_user_token,
    valid_user_id,
    verify_user_token,
)
from serving.store import StateStore
from tests.clock import FakeClock

SECRET = "unit-test-secret-0123456789"


class CountingStore:
    """A StateStore in memory that counts reads (and can fail them)."""

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


# ---------------------------------------------------------------------- tokens
def test_token_is_the_hmac_sha256_of_the_user_id_and_verifies_for_that_user_only():
    token = sign_user_token(SECRET, "alice")
    mac = hmac.new(SECRET.encode(), b"v1:alice", hashlib.sha256).digest()
    assert token == base64.urlsafe_b64encode(mac).rstrip(b"=").decode()  # the documented format
    assert verify_user_token(SECRET, "alice", token)
    assert verify_user_token(SECRET, "alice", f"  {token} ")
    assert not verify_user_token(SECRET, "bob", token)
    assert not verify_user_token("another-secret-0123456789", "alice", token)  # rotated secret
    assert not verify_user_token(SECRET, "alice", token[:-1] + ("A" if token[-1] != "A" else "B"))
    assert not verify_user_token(SECRET, "alice", "")
    assert not verify_user_token(SECRET, "alice", None)
    assert not verify_user_token(SECRET, "bad id!", token)


def test_tokens_refuse_short_secrets_and_malformed_user_ids():
    with pytest.raises(ValueError, match="at least 16"):
        sign_user_token("short", "alice")
    for bad in ("", "a b", "a/b", "ü", "x" * 129, None):
        assert not valid_user_id(bad)
        with pytest.raises(ValueError):
            sign_user_token(SECRET, bad)
    assert valid_user_id("user_1.a:b@c-d") and valid_user_id("x" * 128)


# ---------------------------------------------------------------------- cache
def test_a_fresh_snapshot_answers_users_it_has_never_seen_without_a_store_read():
    store, clock = CountingStore(), FakeClock()
    store.set_preference("alice", "ensemble")
    store.set_preference("bob", "classic")
    cache = PreferenceCache(store, ttl_s=2.0, clock=clock)
    assert cache.sync() and store.reads == 1
    assert [cache.get(u) for u in ("alice", "bob", "carol", "dave")] == [
        "ensemble",
        "classic",
        None,
        None,
    ]
    assert store.reads == 1  # four users, one query in all
    store.set_preference("carol", "ensemble")  # another replica's write
    assert cache.get("carol") is None  # not yet: within the sync period
    cache.sync()
    assert cache.get("carol") == "ensemble"


def test_syncs_after_the_first_fetch_only_what_changed():
    store, clock = CountingStore(), FakeClock()
    for i in range(50):
        store.set_preference(f"u{i}", "ensemble")
    cache = PreferenceCache(store, ttl_s=2.0, clock=clock)
    assert cache.sync() and store.rows_read == 50
    store.set_preference("u7", "classic")  # two writes by other replicas
    store.set_preference("new", "auto")
    assert cache.sync() and store.rows_read == 52  # the two changed rows, not the table
    assert (cache.get("u7"), cache.get("new"), cache.get("u8")) == ("classic", "auto", "ensemble")
    assert cache.sync() and store.rows_read == 52  # nothing changed: nothing read


def test_a_stale_snapshot_falls_back_to_per_user_reads_and_writes_update_it():
    store, clock = CountingStore(), FakeClock()
    cache = PreferenceCache(store, ttl_s=2.0, clock=clock)
    cache.sync()
    cache.set("erin", "classic")
    assert cache.get("erin") == "classic"
    clock.now += (
        2.5  # the per-user entry expired; the snapshot (2.5 s old) still answers, with the write
    )
    assert cache.get("erin") == "classic" and store.reads == 1
    clock.now += 10  # syncs stopped: the snapshot is too old to trust
    assert cache.get("zoe") is None and store.reads == 2  # read the store for zoe


def test_snapshot_gives_way_to_per_user_reads_past_max_entries_and_survives_a_failing_store():
    store, clock = CountingStore(), FakeClock()
    for i in range(5):
        store.set_preference(f"u{i}", "ensemble")
    cache = PreferenceCache(store, ttl_s=2.0, max_entries=3, clock=clock)
    assert not cache.sync()
    reads = store.reads
    assert cache.get("u1") == "ensemble" and store.reads == reads + 1  # per-user read
    small = PreferenceCache(CountingStore(), ttl_s=2.0, clock=clock)
    small.store.fail = True
    assert not small.sync() and small.errors == 1


def test_state_store_lists_all_preferences_up_to_a_limit(tmp_path):
    store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    store.set_preference("alice", "ensemble")
    store.set_preference("bob", "classic")
    assert store.all_preferences(10) == {"alice": "ensemble", "bob": "classic"}
    assert store.all_preferences(1) is None


def test_cache_answers_from_memory_within_the_ttl_then_rereads_the_store():
    store, clock = CountingStore(), FakeClock()
    store.data["alice"] = "ensemble"
    cache = PreferenceCache(store, ttl_s=2.0, clock=clock)
    assert cache.get("alice") == "ensemble" and store.reads == 1
    store.data["alice"] = "classic"  # another replica writes
    clock.now += 1.9
    assert cache.get("alice") == "ensemble" and store.reads == 1  # still fresh: no read
    clock.now += 0.2
    assert cache.get("alice") == "classic" and store.reads == 2  # expired: the other write shows


def test_cache_remembers_users_who_never_chose_and_skips_anonymous_requests():
    store, clock = CountingStore(), FakeClock()
    cache = PreferenceCache(store, ttl_s=2.0, clock=clock)
    assert [cache.get("nobody") for _ in range(100)] == [None] * 100
    assert store.reads == 1
    assert cache.get(None) is None and cache.get("") is None and store.reads == 1


def test_writes_go_through_to_the_store_and_are_seen_at_once():
    store, clock = CountingStore(), FakeClock()
    cache = PreferenceCache(store, ttl_s=60.0, clock=clock)
    assert cache.get("alice") is None
    cache.set("alice", "ensemble")
    assert store.data["alice"] == "ensemble"
    assert cache.get("alice") == "ensemble" and store.reads == 1
    with pytest.raises(ValueError):
        cache.set("alice", "fastest")
    assert store.data["alice"] == "ensemble" and cache.get("alice") == "ensemble"


def test_a_failing_write_leaves_the_cache_as_it_was():
    class Broken(CountingStore):
        def set_preference(self, user_id, model):
            raise ConnectionError("read-only")

    cache = PreferenceCache(Broken(), clock=FakeClock())
    with pytest.raises(ConnectionError):
        cache.set("alice", "ensemble")
    assert cache.get("alice") is None


def test_two_replicas_on_one_database_agree_within_the_ttl(tmp_path):
    store_a = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    store_b = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    clock = FakeClock()
    a, b = (
        PreferenceCache(store_a, ttl_s=2.0, clock=clock),
        PreferenceCache(store_b, ttl_s=2.0, clock=clock),
    )
    assert b.get("alice") is None
    a.set("alice", "ensemble")
    assert a.get("alice") == "ensemble"
    assert b.get("alice") is None  # B's cached "never chose" is still fresh
    clock.now += 2.01
    assert b.get("alice") == "ensemble"
    # and the choice survives a restart (a new store and cache on the same file)
    assert (
        PreferenceCache(StateStore(f"sqlite:///{tmp_path / 'state.db'}")).get("alice") == "ensemble"
    )


def test_store_errors_keep_the_last_value_instead_of_failing_routing():
    store, clock = CountingStore(), FakeClock()
    store.data["alice"] = "ensemble"
    cache = PreferenceCache(store, ttl_s=2.0, clock=clock)
    assert cache.get("alice") == "ensemble"
    store.fail = True
    clock.now += 5
    assert cache.get("alice") == "ensemble"  # stale but safe
    assert cache.get("bob") is None  # never seen: follow the rollout
    reads = store.reads
    assert (
        cache.get("bob") is None and store.reads == reads
    )  # the failure is cached, not retried per request
    with pytest.raises(ConnectionError):
        cache.refresh("alice")  # the explicit read (settings page) reports it


def test_the_cache_is_bounded_least_recently_used_first():
    store = CountingStore()
    cache = PreferenceCache(store, ttl_s=60.0, max_entries=2, clock=FakeClock())
    cache.get("a"), cache.get("b"), cache.get("a"), cache.get("c")
    assert len(cache) == 2
    reads = store.reads
    cache.get("a"), cache.get("c")
    assert store.reads == reads  # kept
    cache.get("b")
    assert store.reads == reads + 1  # evicted


def test_a_write_during_a_slow_read_is_not_overwritten_by_the_stale_read():
    started, release = threading.Event(), threading.Event()

    class Slow(CountingStore):
        def get_preference(self, user_id):
            value = super().get_preference(user_id)  # reads the old value...
            started.set()
            release.wait(5)  # ...and returns it after the write below
            return value

    store = Slow()
    cache = PreferenceCache(store, ttl_s=60.0, clock=FakeClock())
    reader = threading.Thread(target=cache.get, args=("alice",))
    reader.start()
    assert started.wait(5)
    cache.set("alice", "ensemble")
    release.set()
    reader.join(5)
    assert cache.get("alice") == "ensemble"


def test_aget_reads_in_a_thread_once_then_answers_inline():
    store = CountingStore()
    store.data["alice"] = "classic"
    cache = PreferenceCache(store, ttl_s=60.0, clock=FakeClock())

    async def main():
        return [await cache.aget("alice") for _ in range(5)]

    assert asyncio.run(main()) == ["classic"] * 5 and store.reads == 1


def test_cache_rejects_nonsense_settings():
    with pytest.raises(ValueError):
        PreferenceCache(CountingStore(), ttl_s=-1)
    with pytest.raises(ValueError):
        PreferenceCache(CountingStore(), max_entries=0)


# ---------------------------------------------------------------------- HTTP routes
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


def make_client(secret: str | None = SECRET) -> tuple[AppClient, PreferenceCache]:
    from serving.config.settings import ServingSettings
    from serving.http.app import create_app

    settings = ServingSettings(admin_token="admin-token", user_token_secret=secret)
    app = create_app(settings)
    cache = PreferenceCache(StateStore("sqlite://"))
    app.state.core = SimpleNamespace(preferences=cache)
    return AppClient(app), cache


def auth(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {sign_user_token(SECRET, user)}"}


def test_a_user_reads_and_writes_their_own_preference():
    client, cache = make_client()
    assert client.get("/api/users/alice/preference", headers=auth("alice")).json() == {
        "user_id": "alice",
        "model": "auto",
    }
    response = client.put(
        "/api/users/alice/preference", json={"model": "ensemble"}, headers=auth("alice")
    )
    assert response.status_code == 200 and response.json() == {
        "user_id": "alice",
        "model": "ensemble",
    }
    assert cache.get("alice") == "ensemble" and cache.store.get_preference("alice") == "ensemble"
    token = {"X-User-Token": sign_user_token(SECRET, "alice")}
    assert client.get("/api/users/alice/preference", headers=token).json()["model"] == "ensemble"
    client.put("/api/users/alice/preference", json={"model": "auto"}, headers=token)
    assert client.get("/api/users/alice/preference", headers=token).json()["model"] == "auto"


def test_preference_routes_need_the_users_own_token():
    client, cache = make_client()
    missing = client.get("/api/users/alice/preference")
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "unauthorized"
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    assert client.put("/api/users/alice/preference", json={"model": "ensemble"}).status_code == 401
    other = client.put(
        "/api/users/alice/preference", json={"model": "ensemble"}, headers=auth("bob")
    )
    assert other.status_code == 403 and other.json()["error"]["code"] == "forbidden"
    assert (
        client.get(
            "/api/users/alice/preference", headers={"Authorization": "Bearer nonsense"}
        ).status_code
        == 403
    )
    admin = client.get(
        "/api/users/alice/preference", headers={"Authorization": "Bearer admin-token"}
    )
    assert admin.status_code == 403  # the admin token is not a user token
    assert cache.store.get_preference("alice") is None


def test_malformed_user_ids_and_values_are_4xx_json():
    client, _ = make_client()
    bad_id = client.get("/api/users/bad%20id/preference", headers=auth("alice"))
    assert bad_id.status_code == 422 and bad_id.json()["error"]["fields"][0]["field"] == "user_id"
    assert (
        client.get(f"/api/users/{'x' * 129}/preference", headers=auth("alice")).status_code == 422
    )
    for body in ({"model": "fastest"}, {"model": None}, {}, {"model": "ensemble", "extra": 1}):
        response = client.put("/api/users/alice/preference", json=body, headers=auth("alice"))
        assert response.status_code == 422, body
        assert response.json()["error"]["code"] == "invalid_input"
    not_json = client.put(
        "/api/users/alice/preference",
        content=b"{",
        headers={**auth("alice"), "Content-Type": "application/json"},
    )
    assert not_json.status_code == 400 and not_json.json()["error"]["code"] == "bad_request"
    form = client.put(
        "/api/users/alice/preference",
        content=b"model=ensemble",
        headers={**auth("alice"), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert form.status_code == 415


def test_without_a_secret_the_routes_say_how_to_enable_them():
    client, _ = make_client(secret=None)
    response = client.get("/api/users/alice/preference", headers=auth("alice"))
    assert (
        response.status_code == 403
        and "SERVING_USER_TOKEN_SECRET" in response.json()["error"]["message"]
    )
    minted = client.post(
        "/api/admin/users/alice/token", headers={"Authorization": "Bearer admin-token"}
    )
    assert (
        minted.status_code == 403
        and "SERVING_USER_TOKEN_SECRET" in minted.json()["error"]["message"]
    )


def test_a_short_secret_is_refused_at_start_up():
    with pytest.raises(ValueError, match="at least 16"):
        make_client(secret="short")


def test_admins_mint_user_tokens():
    client, _ = make_client()
    assert client.post("/api/admin/users/alice/token").status_code == 401
    assert client.post("/api/admin/users/alice/token", headers=auth("alice")).status_code == 403
    minted = client.post(
        "/api/admin/users/alice/token", headers={"Authorization": "Bearer admin-token"}
    )
    assert minted.status_code == 200
    body = minted.json()
    assert body["token"] == sign_user_token(SECRET, "alice")
    assert body["settings_url"] == f"/settings?user_id=alice&token={body['token']}"
    assert (
        client.post(
            "/api/admin/users/a%20b/token", headers={"Authorization": "Bearer admin-token"}
        ).status_code
        == 422
    )


def test_settings_page_is_served_with_a_strict_policy():
    client, _ = make_client()
    page = client.get(
        "/settings", params={"user_id": "alice", "token": sign_user_token(SECRET, "alice")}
    )
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for text in (
        "Ensemble ML (beta)",
        "Classic",
        "Automatic (follow the rollout)",
        "slightly longer response times",
    ):
        assert text in page.text
    assert (
        page.headers["Referrer-Policy"] == "no-referrer"
        and page.headers["Cache-Control"] == "no-store"
    )
    csp = page.headers["Content-Security-Policy"]
    assert (
        "script-src 'sha256-" in csp
        and "connect-src 'self'" in csp
        and "frame-ancestors 'none'" in csp
    )


def test_routes_answer_404_when_the_router_has_no_preference_store():
    from serving.config.settings import ServingSettings
    from serving.http.app import create_app

    app = create_app(ServingSettings(user_token_secret=SECRET))
    app.state.core = SimpleNamespace(preferences=None)
    assert (
        AppClient(app).get("/api/users/alice/preference", headers=auth("alice")).status_code == 404
    )


# ---------------------------------------------------------------------- routing by preference
def make_routed_core(**ensemble_flags):
    """A RouterCore over two in-process stub arms, rollout 0% (everyone on classic), "vip"
    allow-listed."""
    import numpy as np

    from models.schema import Feature, FeatureSchema
    from serving.config.flags import parse_flag_config
    from serving.routing.arms import ArmInfo
    from serving.routing.core import Arms, RouterCore

    schema = FeatureSchema(features=[Feature(name="x", kind="numeric")], classes=["no", "yes"])

    class Arm:
        def __init__(self, name, probs):
            self.name, self.probs = name, np.array(probs)
            self.info = ArmInfo(name=name, tag=f"{name}:v1", schema=schema, details={})

        async def predict(self, codes):
            return np.tile(self.probs, (len(codes), 1))

        async def refresh(self):
            return self.info

    flags = parse_flag_config(
        {"ensemble": {"rollout_percentage": 0, "allowed_users": ["vip"], **ensemble_flags}}
    )
    core = RouterCore(Arms(Arm("classic", [0.8, 0.2]), Arm("ensemble", [0.3, 0.7])), flags)
    core.preferences = PreferenceCache(CountingStore(), clock=FakeClock())
    return core


def classify(core, user_id, header=None):
    return asyncio.run(core.classify([{"x": 1.0}], user_id=user_id, header=header))[0]


def test_the_router_honours_a_stored_preference_below_the_header():
    core = make_routed_core()  # rollout 0%: alice would get classic
    assert (classify(core, "alice").model, classify(core, "alice").reason) == (
        "classic",
        "split",
    )
    core.preferences.set("alice", "ensemble")
    answer = classify(core, "alice")
    assert (answer.model, answer.reason, answer.fallback) == (
        "ensemble",
        "preference",
        False,
    )
    assert classify(core, "alice", header="classic").reason == "header"
    core.preferences.set("vip", "classic")  # opting out beats the allow-list
    assert (classify(core, "vip").model, classify(core, "vip").reason) == (
        "classic",
        "preference",
    )
    core.preferences.set("alice", "auto")
    assert classify(core, "alice").reason == "split"


def test_the_kill_switch_beats_the_preference():
    core = make_routed_core(enabled=False)
    core.preferences.set("alice", "ensemble")
    answer = classify(core, "alice")
    assert (answer.model, answer.reason, answer.fallback) == (
        "classic",
        "kill_switch",
        False,
    )
