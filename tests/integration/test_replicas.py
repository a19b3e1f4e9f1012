"""Many replicas, one truth: three router replicas (separate `bentoml serve` graphs) behind nginx,
sharing one real PostgreSQL. Everything goes through nginx unless a test is about one replica.

The cluster is shared by the tests of this module, in file order; each test sets the flags it
needs through the API (with If-Match, as an operator would).
"""

from __future__ import annotations

import math
import os
import signal
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from loadtests.harness.nginx import nginx_binary
from loadtests.harness.process import descendants
from serving.routing.preferences import sign_user_token
from tests.integration.test_progressive_delivery import FAST_ROLLOUT as DELIVERY_ROLLOUT
from tests.support import (
    ADMIN_TOKEN,
    Nginx,
    Server,
    WebhookReceiver,
    clone_version,
    require_infrastructure,
)
from training.data import DEFAULT_TARGET, make_default_dataset

pytestmark = [pytest.mark.integration, pytest.mark.replicas]
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
VIEWER_TOKEN = "viewer-token-for-the-replica-tests"
USER_SECRET = "user-secret-for-the-replica-tests"
LEASE_TTL_S = 3.0
BASE_FLAGS = {
    "ensemble": {"rollout_percentage": 0, "allowed_users": [], "shadow": {"enabled": False}},
    "cache": {"enabled": False},
}


class Cluster:
    def __init__(self, replicas: list[Server], nginx: Nginx, webhook: WebhookReceiver, pg):
        self.replicas, self.nginx, self.webhook, self.pg = replicas, nginx, webhook, pg
        self.url = nginx.url
        self.nginx_retries = nginx.retry_non_idempotent


def start_all(servers: list[Server]) -> None:
    errors: list[BaseException] = []

    def start(server: Server) -> None:
        try:
            server.start(timeout=240)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(s,)) for s in servers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


@pytest.fixture(scope="module")
def cluster(trained_store, postgres_cluster):
    if nginx_binary() is None:
        require_infrastructure("no nginx: apt-get install -y nginx (as .ci/run does)")
    database = postgres_cluster.create_database()
    webhook = WebhookReceiver()
    env = {
        "SERVING_STATE_URL": database,
        "SERVING_LEASE_TTL_S": str(LEASE_TTL_S),
        "SERVING_WEBHOOK_URL": webhook.url,
        "SERVING_VIEWER_TOKEN": VIEWER_TOKEN,
        "SERVING_USER_TOKEN_SECRET": USER_SECRET,
        "SERVING_PREFERENCE_TTL_S": "0.5",
        "SERVING_OUTCOME_FLUSH_S": "0.5",
    }
    replicas = [Server({**env, "SERVING_REPLICA_ID": f"r{i}"}, flags=BASE_FLAGS) for i in (1, 2, 3)]
    nginx = None
    try:
        start_all(replicas)
        # POSTs already sent are not retried (classify and feedback are not safe to repeat);
        # TEST_NGINX_RETRY_POSTS=1 turns it on to compare the fault figures ad hoc.
        retry = os.environ.get("TEST_NGINX_RETRY_POSTS") == "1"
        upstreams = [f"127.0.0.1:{r.port}" for r in replicas]
        nginx = Nginx(upstreams, retry_non_idempotent=retry).start()
        yield Cluster(replicas, nginx, webhook, postgres_cluster)
    finally:
        if nginx is not None:
            nginx.stop()
        for replica in replicas:
            replica.stop()
        webhook.close()


def rows(n: int, seed: int) -> list[tuple[dict, str]]:
    frame = make_default_dataset(n, seed=seed)
    labels = frame.pop(DEFAULT_TARGET)
    clean = [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
        for r in frame.to_dict("records")
    ]
    return list(zip(clean, labels, strict=True))


def put_flags(url: str, flags: dict) -> httpx.Response:
    """Read the flags (and their ETag) from `url`, then replace them with If-Match."""
    current = httpx.get(f"{url}/api/admin/flags", headers=ADMIN, timeout=10)
    assert current.status_code == 200 and current.headers.get("ETag"), current.text
    headers = {**ADMIN, "If-Match": current.headers["ETag"]}
    return httpx.put(f"{url}/api/admin/flags", json=flags, headers=headers, timeout=10)


def evaluation(url: str) -> dict:
    answer = httpx.get(f"{url}/api/admin/evaluation", headers=ADMIN, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()


def counts(url: str) -> dict[str, tuple[int, int]]:
    arms = evaluation(url)["arms"]
    return {arm: (snap["count"], snap["labelled"]) for arm, snap in arms.items()}


def status(url: str) -> dict:
    answer = httpx.get(f"{url}/api/status", headers=ADMIN, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()


def wait_for(check, timeout: float, interval: float = 0.05) -> float | None:
    """Seconds until `check()` holds, or None after `timeout`."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            if check():
                return time.monotonic() - start
        except (httpx.HTTPError, KeyError, AssertionError):
            pass
        time.sleep(interval)
    return None


class _Answers(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


def _dying_upstream() -> tuple[socket.socket, threading.Thread]:
    """A replica that reads each request and dies without answering (as a SIGKILLed one does)."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.recv(65536)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener, thread


@pytest.mark.parametrize("retry", [False, True], ids=["retries-off", "retries-on"])
def test_nginx_logs_every_upstream_failure_and_retries_a_sent_post_only_when_told(retry, tmp_path):
    if nginx_binary() is None:
        require_infrastructure("no nginx: apt-get install -y nginx (as .ci/run does)")
    healthy = ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    threading.Thread(target=healthy.serve_forever, daemon=True).start()
    dying, _ = _dying_upstream()
    upstreams = [f"127.0.0.1:{dying.getsockname()[1]}", f"127.0.0.1:{healthy.server_port}"]
    nginx = Nginx(upstreams, workdir=tmp_path / "nginx", retry_non_idempotent=retry).start()
    try:
        codes = [httpx.post(f"{nginx.url}/api/classify", json={}).status_code for _ in range(4)]
        deadline = time.monotonic() + 5
        while len(nginx.log()) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        log = nginx.log()
    finally:
        nginx.stop()
        healthy.shutdown()
        dying.close()
    assert [e.status for e in log] == codes
    assert sum(e.upstream_failures for e in log) == 1  # the dying replica, then skipped for 2 s
    failed = next(e for e in log if e.upstream_failures)
    assert failed.replicas[0] == upstreams[0] and failed.upstream[0] == "502"
    if retry:  # the client never sees it: the POST went to the healthy replica a second time
        assert codes == [200] * 4 and failed.upstream == ("502", "200")
    else:
        assert codes.count(502) == 1 and failed.status == 502 and failed.upstream == ("502",)


def test_feedback_joins_through_nginx_and_every_replica_counts_the_same(cluster):
    assert put_flags(cluster.replicas[0].url, BASE_FLAGS).status_code == 200
    before = counts(cluster.replicas[0].url)
    served: list[tuple[str, str]] = []
    with httpx.Client(base_url=cluster.url, timeout=30) as client:
        for i, (row, label) in enumerate(rows(1000, seed=11)):
            answer = client.post("/api/classify", json={"features": row, "user_id": f"j{i}"})
            assert answer.status_code == 200, answer.text
            served.append((answer.json()["request_id"], label))
        joined = 0
        for request_id, label in served:
            feedback = client.post("/api/feedback", json={"request_id": request_id, "label": label})
            assert feedback.status_code == 200, feedback.text
            joined += feedback.json()["status"] == "recorded"
    assert joined == 1000  # 100 % joined, whichever replica served or received
    classic = before["classic"]

    def same_everywhere() -> bool:
        seen = [counts(r.url) for r in cluster.replicas]
        done = seen[0]["classic"] == (classic[0] + 1000, classic[1] + 1000)
        return done and seen[0] == seen[1] == seen[2]

    took = wait_for(same_everywhere, timeout=10, interval=0.25)
    assert took is not None, [counts(r.url) for r in cluster.replicas]
    print(f"\n1000/1000 joined through nginx; counts equal on 3 replicas after {took:.2f} s")


def test_a_flag_change_through_one_replica_routes_on_another_within_2s(cluster):
    first, third = cluster.replicas[0], cluster.replicas[2]
    assert put_flags(first.url, BASE_FLAGS).status_code == 200
    etag = httpx.get(f"{first.url}/api/admin/flags", headers=ADMIN).headers["ETag"]
    everyone = {**BASE_FLAGS, "ensemble": {**BASE_FLAGS["ensemble"], "rollout_percentage": 100}}
    changed = httpx.put(
        f"{first.url}/api/admin/flags", json=everyone, headers={**ADMIN, "If-Match": etag}
    )
    assert changed.status_code == 200, changed.text
    row = rows(1, seed=3)[0][0]

    def routed_to_ensemble() -> bool:
        answer = httpx.post(f"{third.url}/api/classify", json={"features": row, "user_id": "u1"})
        return answer.json()["model"] == "ensemble"

    took = wait_for(routed_to_ensemble, timeout=2.0)
    assert took is not None, "replica 3 did not route by the new flags within 2 s"
    stale = httpx.put(
        f"{third.url}/api/admin/flags", json=BASE_FLAGS, headers={**ADMIN, "If-Match": etag}
    )
    assert stale.status_code == 409 and stale.json()["error"]["code"] == "conflict", stale.text
    print(f"\nflag change in force on another replica after {took:.2f} s")
    assert put_flags(third.url, BASE_FLAGS).status_code == 200


def test_a_preference_set_through_one_replica_is_honoured_by_all(cluster):
    token = {"X-User-Token": sign_user_token(USER_SECRET, "alice")}
    chose = httpx.put(
        f"{cluster.replicas[0].url}/api/users/alice/preference",
        json={"model": "ensemble"},
        headers=token,
    )
    assert chose.status_code == 200, chose.text
    row = rows(1, seed=4)[0][0]

    def honoured_everywhere() -> bool:
        for replica in cluster.replicas:
            body = {"features": row, "user_id": "alice"}
            answer = httpx.post(f"{replica.url}/api/classify", json=body).json()
            if (answer["model"], answer["reason"]) != ("ensemble", "preference"):
                return False
        return True

    assert wait_for(honoured_everywhere, timeout=5) is not None


def test_a_version_pin_through_one_replica_names_that_version_in_every_response(cluster):
    import bentoml

    current = httpx.get(f"{cluster.url}/api/models", timeout=30).json()["classic"]["tag"]
    clone = clone_version(current)
    try:
        swapped = httpx.post(
            f"{cluster.replicas[1].url}/api/admin/models/classic/version",
            json={"version": clone},
            headers=ADMIN,
            timeout=60,
        )
        assert swapped.status_code == 200, swapped.text
        row = rows(1, seed=5)[0][0]

        def all_pinned() -> bool:
            with httpx.Client(base_url=cluster.url, timeout=10) as client:
                answers = [
                    client.post("/api/classify", json={"features": row, "user_id": f"p{i}"})
                    for i in range(12)  # four rounds of the three replicas
                ]
            return all(a.json()["model_version"] == clone for a in answers)

        assert wait_for(all_pinned, timeout=15, interval=0.5) is not None
    finally:
        bentoml.models.delete(f"classic:{clone}")


def kill_hard(server: Server) -> None:
    """SIGKILL the whole replica (arbiter and workers): no graceful hand-over."""
    tree = descendants(server.process.pid)
    os.killpg(server.process.pid, signal.SIGKILL)
    for pid in tree:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    server.process.wait(10)


class Traffic:
    """Labelled classify + feedback through nginx in a thread, counting every failure."""

    def __init__(self, url: str, seed: int):
        self.url, self.rows = url, rows(4000, seed=seed)
        self.sent = self.failed = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self._stop.is_set():
                row, label = self.rows[self.sent % len(self.rows)]
                body = {"features": row, "user_id": f"t{self.sent}"}
                self.sent += 1
                try:
                    answer = client.post("/api/classify", json=body)
                    if answer.status_code != 200:
                        raise RuntimeError(f"classify {answer.status_code}: {answer.text[:200]}")
                    rid = answer.json()["request_id"]
                    joined = client.post(
                        "/api/feedback", json={"request_id": rid, "label": label, "rating": 8}
                    )
                    if joined.status_code != 200:
                        raise RuntimeError(f"feedback {joined.status_code}: {joined.text[:200]}")
                except Exception as exc:  # counted: the test asserts there are none
                    self.failed += 1
                    self.errors.append(str(exc))


FAST_ROLLOUT = {  # the progressive-delivery test's accelerated rollout, without shadow copies
    **BASE_FLAGS,
    "ensemble": {**BASE_FLAGS["ensemble"], "rollout_percentage": 10},
    "rollout": DELIVERY_ROLLOUT["rollout"],
}


def upstream_failures(nginx: Nginx, since: float, uri: str = "") -> tuple[list, int]:
    """nginx's own count, from its access log, of the requests (to `uri`, else any) that ended after
    `since` (epoch s): those answered with a 5xx, and every upstream attempt that failed (a retried
    one included)."""
    window = [e for e in nginx.log() if e.end >= since and uri in ("", e.uri)]
    return [e for e in window if e.status >= 500], sum(e.upstream_failures for e in window)


def leader(url: str) -> str | None:
    return status(url)["controller"]["leader"]


def test_rollout_promotes_once_per_stage_and_survives_killing_the_leader(cluster):
    assert put_flags(cluster.replicas[0].url, FAST_ROLLOUT).status_code == 200
    by_id = {f"r{i}": r for i, r in enumerate(cluster.replicas, 1)}
    assert wait_for(lambda: leader(cluster.url) in by_id, timeout=10) is not None
    first_leader = leader(cluster.url)
    began = time.time()
    with Traffic(cluster.url, seed=21) as traffic:
        promoted_once = wait_for(
            lambda: status(cluster.url)["rollout"]["state"]["percentage"] >= 50, timeout=120
        )
        assert promoted_once is not None, status(cluster.url)["go_no_go"]
        killed_at, kill_began = time.monotonic(), time.time()
        kill_hard(by_id[first_leader])
        kill_ended = time.time()
        survivor = next(r for rid, r in by_id.items() if rid != first_leader)
        took_over = wait_for(
            lambda: leader(survivor.url) not in (None, first_leader), timeout=LEASE_TTL_S + 5
        )
        assert took_over is not None
        reached = wait_for(
            lambda: status(survivor.url)["rollout"]["state"]["percentage"] >= 100, timeout=120
        )
        assert reached is not None, status(survivor.url)["go_no_go"]
    by_id[first_leader].start(timeout=240)  # back for the tests after this one
    failed, attempts = upstream_failures(cluster.nginx, since=began)
    killed = f"127.0.0.1:{by_id[first_leader].port}"
    # The SIGKILL may fail what the killed replica was answering, nothing else: a few 502s, each
    # sent to it before the kill and ended after it; the client saw exactly those.
    assert len(failed) <= 3, failed
    assert all(e.status == 502 and e.replicas[-1] == killed for e in failed), failed
    assert all(e.start <= kill_ended and e.end >= kill_began for e in failed), [
        (e.start - kill_began, e.end - kill_began) for e in failed
    ]
    assert traffic.failed == len(failed), traffic.errors[:5]
    log = httpx.get(
        f"{survivor.url}/api/admin/rollout/decisions", headers=ADMIN, params={"limit": 500}
    ).json()["decisions"]
    promotions = [d["to"]["percentage"] for d in reversed(log) if d["action"] == "promote"]
    assert promotions == [50, 100], promotions  # each stage once: none lost, none doubled
    print(
        f"\nleader {first_leader} killed; another led after {took_over:.2f} s "
        f"(lease TTL {LEASE_TTL_S:g} s); 100 % after {time.monotonic() - killed_at:.1f} s; "
        f"{traffic.sent} labelled requests; {traffic.failed} failed "
        f"({[e.status for e in failed]}, in flight at the kill); nginx counted {attempts} failed "
        f"upstream attempts (POST retries {'on' if cluster.nginx_retries else 'off'})"
    )


def test_a_rollback_is_announced_once_and_operators_only_see_the_dashboard(cluster):
    before = len(cluster.webhook.received)
    rolled = httpx.post(
        f"{cluster.replicas[2].url}/api/admin/rollout/rollback", headers=ADMIN, timeout=30
    )
    assert rolled.status_code == 200, rolled.text
    assert wait_for(lambda: "rollback" in cluster.webhook.actions()[before:], timeout=10)
    time.sleep(3)  # nothing else announces it: not the leader, not the other replicas
    assert cluster.webhook.actions()[before:].count("rollback") == 1
    assert "rollback" in cluster.webhook.received[-1]["text"]
    assert httpx.get(f"{cluster.url}/dashboard").status_code == 401
    assert httpx.get(f"{cluster.url}/api/status").status_code == 401
    viewer = {"Authorization": f"Bearer {VIEWER_TOKEN}"}
    assert httpx.get(f"{cluster.url}/dashboard", headers=viewer).status_code == 200
    assert httpx.get(f"{cluster.url}/api/status", headers=viewer).status_code == 200
    wrong = {"Authorization": "Bearer not-the-token"}
    assert httpx.get(f"{cluster.url}/dashboard", headers=wrong).status_code == 403
    # the viewer token reads; it does not operate
    assert httpx.get(f"{cluster.url}/api/admin/flags", headers=viewer).status_code == 403


def test_every_replica_restarted_keeps_stage_decisions_flags_preferences_and_joins(cluster):
    url = cluster.replicas[0].url
    flags = httpx.get(f"{url}/api/admin/flags", headers=ADMIN).json()
    state = status(url)["rollout"]["state"]
    decisions = len(
        httpx.get(
            f"{url}/api/admin/rollout/decisions", headers=ADMIN, params={"limit": 500}
        ).json()["decisions"]
    )
    pending = []
    with httpx.Client(base_url=cluster.url, timeout=30) as client:
        for i, (row, label) in enumerate(rows(30, seed=31)):
            answer = client.post("/api/classify", json={"features": row, "user_id": f"k{i}"})
            pending.append((answer.json()["request_id"], label))
    for replica in cluster.replicas:
        replica.stop()
    start_all(cluster.replicas)
    assert httpx.get(f"{url}/api/admin/flags", headers=ADMIN).json() == flags
    assert status(url)["rollout"]["state"] == state
    after = httpx.get(f"{url}/api/admin/rollout/decisions", headers=ADMIN, params={"limit": 500})
    assert len(after.json()["decisions"]) >= decisions
    token = {"X-User-Token": sign_user_token(USER_SECRET, "alice")}
    chosen = httpx.get(f"{cluster.url}/api/users/alice/preference", headers=token).json()
    assert chosen["model"] == "ensemble"
    with httpx.Client(base_url=cluster.url, timeout=30) as client:
        for request_id, label in pending:  # joins asked for before the restart still join
            joined = client.post("/api/feedback", json={"request_id": request_id, "label": label})
            assert joined.status_code == 200 and joined.json()["status"] == "recorded", joined.text


def test_classify_keeps_answering_while_postgres_is_down_and_nothing_is_lost(cluster):
    url = cluster.replicas[0].url
    assert put_flags(url, BASE_FLAGS).status_code == 200
    assert wait_for(lambda: counts(url) == counts(cluster.replicas[1].url), timeout=10)
    before = counts(url)["classic"][0]
    answered, failed = 0, 0
    began = time.time()
    cluster.pg.pause()
    try:
        with httpx.Client(base_url=cluster.url, timeout=30) as client:
            deadline = time.monotonic() + 8
            i = 0
            while time.monotonic() < deadline:
                row = rows(200, seed=41)[i % 200][0]
                answer = client.post("/api/classify", json={"features": row, "user_id": f"d{i}"})
                i += 1
                answered += answer.status_code == 200
                failed += answer.status_code != 200
            feedback = client.post("/api/feedback", json={"request_id": "x" * 80, "label": "x"})
            assert feedback.status_code in (404, 422, 503), feedback.text  # never a silent 200
    finally:
        cluster.pg.resume()
    assert failed == 0 and answered > 0
    nginx_failed, attempts = upstream_failures(cluster.nginx, since=began, uri="/api/classify")
    assert nginx_failed == [] and attempts == 0, nginx_failed  # nothing retried away either
    # every answer given while the database was down reaches the shared evidence afterwards
    took = wait_for(lambda: counts(url)["classic"][0] == before + answered, timeout=30, interval=1)
    assert took is not None, (before, answered, counts(url))
    print(
        f"\nPostgreSQL down 8 s: {answered} answered, 0 failed, {attempts} failed upstream "
        f"attempts in nginx's log; all written {took:.1f} s after"
    )
