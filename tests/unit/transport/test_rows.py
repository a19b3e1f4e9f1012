"""serving/transport/rows.py: the router -> ensemble transport of encoded rows (a Unix socket, an
HTTP endpoint, BentoML's API as the last resort) answers exactly what the model
answers in process."""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading
from http import HTTPStatus

import httpx
import numpy as np
import pytest

from serving.routing.arms import ArmOverloaded, arm_error
from serving.transport.rows import (
    COLUMNS,
    MEDIA_TYPE,
    PATH,
    RowsEndpoint,
    RowsError,
    RowsPredictor,
    RowsSocketServer,
    SocketClient,
    Transports,
    TransportUnavailable,
    own_socket_path,
    pack,
    socket_path,
    unpack,
)


def softmaxish(codes: np.ndarray) -> np.ndarray:
    """A deterministic stand-in model: 3 classes from the row's values (NaN counts as 0)."""
    x = np.nan_to_num(np.asarray(codes, dtype=np.float64))
    logits = np.stack([x.sum(1), x[:, 0] * 2, -x[:, -1]], axis=1)
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def rows(n: int, columns: int = 5, seed: int = 0) -> np.ndarray:
    codes = np.random.default_rng(seed).normal(size=(n, columns))
    codes[::3, 1] = np.nan  # missing values travel as NaN
    return codes


def predictor(model=softmaxish, **kwargs) -> RowsPredictor:
    p = RowsPredictor(**kwargs)
    p.predict = model
    return p


@pytest.fixture
def sock_dir():
    with tempfile.TemporaryDirectory(prefix="rows-") as d:
        yield d


async def serve(p: RowsPredictor, path: str) -> RowsSocketServer:
    server = RowsSocketServer(p, path)
    assert await server.start()
    return server


def test_pack_and_unpack_round_trip_exactly_nan_included():
    codes = rows(7)
    body, columns = pack(codes)
    back = unpack(body, columns)
    assert columns == 5 and len(body) == 7 * 5 * 8
    np.testing.assert_array_equal(back, codes)  # NaN == NaN for assert_array_equal
    with pytest.raises(ValueError):
        unpack(body[:-1], 5)
    with pytest.raises(ValueError):
        unpack(b"", 5)
    with pytest.raises(ValueError):
        pack(np.zeros(3))


def test_socket_paths_sit_beside_bentomls_unix_sockets(monkeypatch):
    assert socket_path("file:///tmp/bentoml-uds-x/1.sock") == "/tmp/bentoml-uds-x/1.sock.rows"
    assert socket_path("http://10.0.0.1:3000") is None and socket_path(None) is None
    monkeypatch.setenv(
        "BENTOML_RUNNER_MAP",
        '{"ensemble": "file:///tmp/u/2.sock", "router": "http://127.0.0.1:3000"}',
    )
    assert own_socket_path("ensemble") == "/tmp/u/2.sock.rows"
    assert own_socket_path("router") is None
    monkeypatch.delenv("BENTOML_RUNNER_MAP")
    assert own_socket_path("ensemble") is None


def test_the_socket_answers_what_the_model_answers_and_concurrent_calls_share_predictions(
    sock_dir,
):
    calls = []

    def model(codes):
        calls.append(len(codes))
        return softmaxish(codes)

    async def main():
        path = os.path.join(sock_dir, "e.sock.rows")
        server = await serve(predictor(model), path)
        client = SocketClient(path)
        try:
            batches = [rows(n, seed=n) for n in (1, 3, 2, 1, 5)]
            answers = await asyncio.gather(*(client(b) for b in batches))
            for codes, answer in zip(batches, answers, strict=True):
                np.testing.assert_array_equal(answer, softmaxish(codes))
            again = await client(rows(4))  # a pooled connection is reused
            np.testing.assert_array_equal(again, softmaxish(rows(4)))
        finally:
            await client.close()
            await server.stop()
        assert not os.path.exists(path)

    asyncio.run(main())
    assert sum(calls) == 1 + 3 + 2 + 1 + 5 + 4
    assert len(calls) < 6  # the five concurrent requests did not make five predictions


def test_the_new_transports_return_the_probabilities_of_the_old_path(trained_store, sock_dir):
    """The quick-trained ensemble: the BentoML API path (its pickle serde, then predict_proba)
    and the rows socket and HTTP endpoint give the same probabilities (to 1e-5; in fact exactly)."""
    import random

    from _bentoml_impl.serde import PickleSerde

    from loadtests.locust.payloads import RowGenerator
    from models import store

    model, _ = store.load("ensemble:latest")
    generator = RowGenerator(model.schema.model_dump(), random.Random(3))
    codes = model.schema.encode_rows(generator.rows(40))
    serde = PickleSerde()
    sent = serde.deserialize_value(serde.serialize_value({"codes": codes}))["codes"]
    old = serde.deserialize_value(serde.serialize_value(model.predict_proba(sent)))

    async def main():
        p = predictor(model.predict_proba)
        path = os.path.join(sock_dir, "e.sock.rows")
        server = await serve(p, path)
        client = SocketClient(path)
        try:
            by_socket = [await client(codes[i : i + 1]) for i in range(5)]
            by_socket.append(await client(codes[5:]))
            transport = httpx.ASGITransport(app=RowsEndpoint(p))
            async with httpx.AsyncClient(transport=transport, base_url="http://e") as http:
                body, columns = pack(codes)
                response = await http.post(
                    PATH,
                    content=body,
                    headers={"content-type": MEDIA_TYPE, COLUMNS: str(columns)},
                )
                by_http = unpack(response.content, int(response.headers[COLUMNS]))
        finally:
            await client.close()
            await server.stop()
        return np.vstack(by_socket), by_http

    by_socket, by_http = asyncio.run(main())
    assert by_socket.shape == old.shape == (40, len(model.classes))
    assert np.abs(by_socket - old).max() <= 1e-5
    assert np.abs(by_http - old).max() <= 1e-5


def test_errors_keep_their_status_and_the_router_reads_overload_from_it(sock_dir):
    class Busy(Exception):
        error_code = HTTPStatus.SERVICE_UNAVAILABLE

    def model(codes):
        if codes[0, 0] > 100:
            raise Busy("queue full")
        if codes[0, 0] < -100:
            raise RuntimeError("boom")
        return softmaxish(codes)

    async def main():
        path = os.path.join(sock_dir, "e.sock.rows")
        server = await serve(predictor(model), path)
        client = SocketClient(path)
        try:
            with pytest.raises(RowsError) as busy:
                await client(np.full((1, 5), 1000.0))
            with pytest.raises(RowsError) as boom:
                await client(np.full((1, 5), -1000.0))
            ok = await client(rows(2))  # the connection is still in step after errors
        finally:
            await client.close()
            await server.stop()
        return busy.value, boom.value, ok

    busy, boom, ok = asyncio.run(main())
    assert busy.error_code == 503 and isinstance(arm_error(busy), ArmOverloaded)
    assert boom.error_code == 500 and not isinstance(arm_error(boom), ArmOverloaded)
    np.testing.assert_array_equal(ok, softmaxish(rows(2)))


def test_http_endpoint_refuses_a_body_that_is_not_rows():
    async def main():
        transport = httpx.ASGITransport(app=RowsEndpoint(predictor()))
        async with httpx.AsyncClient(transport=transport, base_url="http://e") as http:
            bad = await http.post(PATH, content=b"\x00" * 12, headers={COLUMNS: "5"})
            get = await http.get(PATH)
            body, columns = pack(rows(3))
            ok = await http.post(PATH, content=body, headers={COLUMNS: str(columns)})
        return bad, get, ok

    bad, get, ok = asyncio.run(main())
    assert bad.status_code == 400 and get.status_code == 404
    assert ok.status_code == 200 and ok.headers["content-type"] == MEDIA_TYPE


def test_small_batches_run_inline_large_ones_on_a_thread_and_a_delay_never_inline():
    seen = []

    def model(codes):
        seen.append((len(codes), threading.current_thread().name))
        return softmaxish(codes)

    p = predictor(model, inline_below=4)

    async def main():
        await p(rows(2))
        await p(rows(8))
        p.inline_ok = lambda: False
        await p(rows(1))

    asyncio.run(main())
    assert seen[0] == (2, "MainThread")
    assert seen[1][0] == 8 and seen[1][1].startswith("rows")
    assert seen[2][1].startswith("rows")


def test_a_pooled_connection_the_service_closed_is_replaced_once(sock_dir):
    async def main():
        path = os.path.join(sock_dir, "e.sock.rows")
        server = await serve(predictor(), path)
        client = SocketClient(path)
        await client(rows(1))  # one pooled connection
        await server.stop()  # the service restarts: the pooled socket is dead
        server = await serve(predictor(), path)
        try:
            answer = await client(rows(2))
        finally:
            await client.close()
            await server.stop()
        return answer

    np.testing.assert_array_equal(asyncio.run(main()), softmaxish(rows(2)))


def test_a_call_cut_off_by_its_deadline_does_not_leave_its_answer_on_the_stream(sock_dir):
    def slow(codes):
        import time

        time.sleep(0.2)
        return softmaxish(codes)

    async def main():
        path = os.path.join(sock_dir, "e.sock.rows")
        server = await serve(predictor(slow, inline_below=0), path)
        client = SocketClient(path)
        try:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(client(rows(1, seed=1)), 0.05)
            answer = await client(rows(2, seed=2))  # not the late answer of the first call
        finally:
            await client.close()
            await server.stop()
        return answer

    np.testing.assert_array_equal(asyncio.run(main()), softmaxish(rows(2, seed=2)))


def test_no_socket_falls_back_to_the_next_transport_and_is_tried_again_later():
    now = [0.0]
    used = []

    def transport(name, fail=False):
        async def call(codes):
            used.append(name)
            if fail:
                raise TransportUnavailable(f"no {name}")
            return name

        return call

    chain = Transports(
        [("socket", transport("socket", fail=True)), ("http", transport("http"))],
        retry_after_s=10,
        clock=lambda: now[0],
    )
    assert asyncio.run(chain(rows(1))) == "http" and chain.used == "http"
    assert asyncio.run(chain(rows(1))) == "http"
    assert used == ["socket", "http", "http"]  # skipped while it is known to be missing
    now[0] = 11.0
    asyncio.run(chain(rows(1)))
    assert used[-2:] == ["socket", "http"]  # tried again after retry_after_s


def test_real_errors_are_not_mistaken_for_a_missing_transport():
    async def broken(codes):
        raise RowsError(503, "busy")

    async def never(codes):
        raise AssertionError("the API must not be called for a real error")

    chain = Transports([("socket", broken), ("api", never)])
    with pytest.raises(RowsError):
        asyncio.run(chain(rows(1)))


def test_no_socket_at_all_is_transport_unavailable(sock_dir):
    client = SocketClient(os.path.join(sock_dir, "missing.rows"))
    with pytest.raises(TransportUnavailable):
        asyncio.run(client(rows(1)))
