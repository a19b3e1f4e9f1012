"""The router -> ensemble transport of encoded rows: raw float64 bytes, no framework in between.

The router has already validated and encoded each request into a float64 code matrix; what the
ensemble service needs is that matrix, and what it returns is a float64 probability matrix. Through
BentoML's API each call also paid for BentoML's client (an IO model per call, its serde, a new
connection every 100 calls), the server's middleware, IO model validation, serde and batching
dispatcher, and a thread hop: profiled with py-spy at one client, several times the prediction's own
CPU (README "Performance"). Here the matrix travels as its bytes (C order, little-endian float64,
NaN for a missing value) with its shape beside it, and the answer comes back the same way:

- **socket** (`RowsSocketServer` / `SocketClient`): length-prefixed frames over a Unix socket the
  ensemble worker listens on beside BentoML's own (`<BentoML's socket>.rows`, in BentoML's private
  0700 directory), for a service of the same `bentoml serve`: no HTTP at all;
- **http** (`RowsEndpoint` / `HttpClient`): POST /rows/predict on the service's HTTP port (the
  service mounts it), for a service behind a URL (another container);
- the BentoML API, when the service has neither (an older version during a rolling update).

`Transports` tries them in that order; one that is not there is skipped for a while, not for good
(the service may be restarting). Both endpoints share one `RowsPredictor`: calls that arrive while
a prediction runs share the next one (`Coalescer`: natural batching, no waiting window, so it pays
at one client too); small batches run inline on the event loop (a thread hop costs about as much
CPU as a one-row prediction), large ones on a thread of their own.

Errors keep an HTTP status (429/503: overloaded; 400: the codes do not fit the model), so the
router's breaker and fallback treat them as they treat the BentoML API's.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import struct
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from typing import Any
from urllib.parse import urlparse

import numpy as np

from serving.routing.coalesce import Coalescer

log = logging.getLogger(__name__)

MOUNT = "/rows"
PATH = MOUNT + "/predict"
MEDIA_TYPE = "application/octet-stream"
COLUMNS = "x-columns"
"""HTTP header: the matrix's column count (features in a request, classes in an answer)."""
DTYPE = np.dtype("<f8")
SOCKET_SUFFIX = ".rows"
REQUEST = struct.Struct("<II")
"""Socket request frame: rows, columns; then rows * columns float64."""
RESPONSE = struct.Struct("<IIII")
"""Socket response frame: status (200 or an HTTP error status), rows, columns, payload bytes; then
the payload: rows * columns float64, or a UTF-8 message for an error."""


def pack(matrix: np.ndarray) -> tuple[bytes, int]:
    """A 2-D matrix as (bytes, columns): C order, little-endian float64 (NaN kept as NaN)."""
    matrix = np.ascontiguousarray(matrix, dtype=DTYPE)
    if matrix.ndim != 2:
        raise ValueError(f"expected a 2-D matrix, got shape {matrix.shape}")
    return matrix.tobytes(), matrix.shape[1]


def unpack(body: bytes, columns: int) -> np.ndarray:
    """The matrix `pack` made (a read-only view of `body`, no copy); ValueError if it cannot be."""
    if columns < 1 or not body or len(body) % (DTYPE.itemsize * columns):
        raise ValueError(f"{len(body)} bytes are not rows of {columns} float64 columns")
    return np.frombuffer(body, dtype=DTYPE).reshape(-1, columns)


def socket_path(url: str | None) -> str | None:
    """The rows socket beside a service's BentoML Unix socket (`file:///…/N.sock`), else None."""
    if not url:
        return None
    parsed = urlparse(url)
    return parsed.path + SOCKET_SUFFIX if parsed.scheme == "file" and parsed.path else None


def own_socket_path(service_name: str) -> str | None:
    """The rows socket of this worker's service: BentoML tells every worker of a `bentoml serve`
    the Unix socket of each service (BENTOML_RUNNER_MAP); None when served otherwise."""
    try:
        mapping = json.loads(os.environ.get("BENTOML_RUNNER_MAP") or "{}")
    except ValueError:
        return None
    return socket_path(mapping.get(service_name)) if isinstance(mapping, dict) else None


class RowsError(Exception):
    """The service answered an error; `error_code` is its HTTP status (as BentoML's errors)."""

    def __init__(self, status: int, message: str):
        super().__init__(f"{status}: {message}")
        self.error_code = HTTPStatus(status)


class TransportUnavailable(ConnectionError):
    """This transport is not there (no socket, no endpoint): try the next one."""


# --------------------------------------------------------------------------- ensemble side
class RowsPredictor:
    """`await predictor(codes)` -> probabilities, through `predict` (set by the service once its
    model host exists), coalesced: at most one prediction at a time, requests that arrive during
    it merged into the next, at most `max_rows` rows each.

    A batch of fewer than `inline_below` rows runs inline on the event loop (no thread hop) while
    `inline_ok()` says so (the service turns it off while a test injects a delay); larger ones
    run on a thread of their own, so the loop keeps reading requests meanwhile.
    """

    def __init__(
        self,
        max_rows: int = 64,
        observe: Callable[[int], None] | None = None,
        inline_below: int = 32,
    ):
        self.max_rows = max_rows
        self.observe = observe
        self.inline_below = inline_below
        self.predict: Callable[[np.ndarray], np.ndarray] | None = None
        self.inline_ok: Callable[[], bool] = lambda: True
        self._coalescer: Coalescer | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def _run(self, codes: np.ndarray) -> np.ndarray:
        if self.predict is None:
            raise RowsError(503, "the model host has not started")
        if len(codes) < self.inline_below and self.inline_ok():
            return self.predict(codes)
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rows")
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.predict, codes)

    async def __call__(self, codes: np.ndarray) -> np.ndarray:
        if self._coalescer is None:
            self._coalescer = Coalescer(self._run, self.max_rows, 1, observe=self.observe)
        return await self._coalescer(codes)


def _status(exc: BaseException) -> int:
    """BentoML's errors (and RowsError) carry their HTTP status; anything else is a 500."""
    status = int(getattr(exc, "error_code", 500))
    if status >= 500 and status != 503:
        log.warning("rows: %s: %s", type(exc).__name__, exc)
    return status


class RowsEndpoint:
    """ASGI app (mounted at /rows): POST /rows/predict with a packed code matrix and its column
    count in `x-columns`; answers the packed probability matrix the same way."""

    def __init__(self, predictor: RowsPredictor):
        self.predictor = predictor

    async def __call__(self, scope: dict, receive, send) -> None:
        if scope["type"] != "http":
            return
        if scope["method"] != "POST" or not scope["path"].endswith("/predict"):
            return await _respond(send, 404, b"POST /rows/predict", b"text/plain")
        headers = dict(scope.get("headers") or ())
        try:
            codes = unpack(await _body(receive), int(headers.get(COLUMNS.encode(), b"0")))
        except ValueError as exc:
            return await _respond(send, 400, str(exc).encode(), b"text/plain")
        try:
            probabilities = await self.predictor(codes)
        except Exception as exc:
            return await _respond(send, _status(exc), str(exc).encode()[:2000], b"text/plain")
        body, width = pack(probabilities)
        await _respond(send, 200, body, MEDIA_TYPE.encode(), [(COLUMNS.encode(), b"%d" % width)])


async def _body(receive) -> bytes:
    chunks, more = [], True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            raise ValueError("client disconnected")
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _respond(send, status: int, body: bytes, media_type: bytes, extra=()) -> None:
    headers = [(b"content-type", media_type), (b"content-length", b"%d" % len(body)), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class RowsSocketServer:
    """Serves `predictor` on a Unix socket: request and response frames (REQUEST, RESPONSE), one
    call at a time per connection, any number of connections (the client pools them)."""

    def __init__(self, predictor: RowsPredictor, path: str, max_rows: int = 4096):
        self.predictor = predictor
        self.path = path
        self.max_rows = max_rows
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> bool:
        """Listen; False (logged) when the socket cannot be created (e.g. a second worker)."""
        try:
            if os.path.exists(self.path):
                os.unlink(self.path)  # a stale one from a crashed worker
            self._server = await asyncio.start_unix_server(self._serve, path=self.path)
            os.chmod(self.path, 0o600)
        except OSError as exc:
            log.warning("rows socket %s not served: %s", self.path, exc)
            return False
        log.info("rows socket listening at %s", self.path)
        return True

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
            if os.path.exists(self.path):
                os.unlink(self.path)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    rows, columns = REQUEST.unpack(await reader.readexactly(REQUEST.size))
                except asyncio.IncompleteReadError:
                    return  # the client closed the connection
                if not (0 < rows <= self.max_rows and 0 < columns <= 4096):
                    writer.write(_error_frame(400, f"bad frame: {rows} x {columns}"))
                    return  # the stream cannot be trusted after a bad frame
                data = await reader.readexactly(rows * columns * DTYPE.itemsize)
                try:
                    probabilities = await self.predictor(unpack(data, columns))
                except Exception as exc:
                    writer.write(_error_frame(_status(exc), str(exc)))
                    continue
                body, width = pack(probabilities)
                writer.write(RESPONSE.pack(200, len(probabilities), width, len(body)) + body)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


def _error_frame(status: int, message: str) -> bytes:
    text = message.encode()[:2000]
    return RESPONSE.pack(status, 0, 0, len(text)) + text


# --------------------------------------------------------------------------- router side
class SocketClient:
    """`await client(codes)` -> probabilities over the rows socket at `path`; a small pool of
    connections, each carrying one call at a time. A pooled connection that turns out closed (the
    service restarted) is replaced once; no socket at all is TransportUnavailable."""

    def __init__(self, path: str, max_idle: int = 4):
        self.path = path
        self.max_idle = max_idle
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            return await asyncio.open_unix_connection(self.path)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise TransportUnavailable(f"no rows socket at {self.path}: {exc}") from None

    async def __call__(self, codes: np.ndarray) -> np.ndarray:
        body, columns = pack(codes)
        frame = REQUEST.pack(len(codes), columns) + body
        for attempt in range(2):
            pooled = bool(self._idle)
            reader, writer = self._idle.pop() if pooled else await self._connect()
            try:
                writer.write(frame)
                status, rows, width, size = RESPONSE.unpack(await reader.readexactly(RESPONSE.size))
                payload = await reader.readexactly(size)
            except (ConnectionError, asyncio.IncompleteReadError) as exc:
                writer.close()
                if pooled and attempt == 0:
                    continue  # a connection the service closed while idle: once more, afresh
                raise ConnectionError(f"rows socket: {type(exc).__name__}: {exc}") from None
            except BaseException:  # cancelled (deadline): the answer would desync the stream
                writer.close()
                raise
            if len(self._idle) < self.max_idle:
                self._idle.append((reader, writer))
            else:
                writer.close()
            if status != 200:
                raise RowsError(status, payload.decode(errors="replace"))
            return unpack(payload, width)
        raise AssertionError("unreachable")

    async def close(self) -> None:
        while self._idle:
            self._idle.pop()[1].close()


class HttpClient:
    """POST packed rows to a service's /rows/predict; `await client(codes)` -> probabilities.

    `url` is the service's address as BentoML names it: `file:///path.sock` (its Unix socket),
    `tcp://host:port`, or `http(s)://host[:port][/prefix]`. A 404/405 (no such endpoint) is
    TransportUnavailable.
    """

    def __init__(self, url: str, timeout_s: float = 30.0, keepalive_s: float = 3.0):
        parsed = urlparse(url)
        self.unix_path: str | None = None
        if parsed.scheme == "file":
            self.unix_path, base = parsed.path, "http://localhost"
        elif parsed.scheme == "tcp":
            base = f"http://{parsed.netloc}"
        else:
            base = url.rstrip("/")
        self.url = base + PATH
        self.timeout_s = timeout_s
        self.keepalive_s = keepalive_s
        """Idle connections are closed before the server's keep-alive (uvicorn: 5 s) drops them."""
        self._session: Any = None

    def _get_session(self):
        if self._session is None or self._session.closed:
            import aiohttp

            if self.unix_path is not None:
                connector = aiohttp.UnixConnector(
                    path=self.unix_path, keepalive_timeout=self.keepalive_s
                )
            else:
                connector = aiohttp.TCPConnector(keepalive_timeout=self.keepalive_s)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                skip_auto_headers=("User-Agent", "Accept-Encoding"),
            )
        return self._session

    async def __call__(self, codes: np.ndarray) -> np.ndarray:
        body, columns = pack(codes)
        headers = {"content-type": MEDIA_TYPE, COLUMNS: str(columns)}
        async with self._get_session().post(self.url, data=body, headers=headers) as response:
            payload = await response.read()
            if response.status in (404, 405):
                raise TransportUnavailable(f"{self.url}: HTTP {response.status}")
            if response.status != 200:
                raise RowsError(response.status, payload[:300].decode(errors="replace"))
            return unpack(payload, int(response.headers.get(COLUMNS, "0")))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


Call = Callable[[np.ndarray], Awaitable[Any]]


class Transports:
    """The first transport that is there answers; one that raised TransportUnavailable is skipped
    for `retry_after_s` (the service may be restarting, or an older version without it). The last
    one (BentoML's API) is always tried."""

    def __init__(
        self,
        calls: Sequence[tuple[str, Call]],
        retry_after_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        if not calls:
            raise ValueError("at least one transport")
        self.calls = list(calls)
        self.retry_after_s = retry_after_s
        self.clock = clock
        self.skipped_until: dict[str, float] = {}
        self.used: str | None = None
        """The transport of the last successful call (for tests and logs)."""

    async def __call__(self, codes: np.ndarray) -> Any:
        now = self.clock()
        for index, (name, call) in enumerate(self.calls):
            last = index == len(self.calls) - 1
            if not last and self.skipped_until.get(name, 0.0) > now:
                continue
            try:
                result = await call(codes)
            except TransportUnavailable as exc:
                if last:
                    raise
                level = logging.DEBUG if name in self.skipped_until else logging.WARNING
                log.log(level, "%s transport unavailable (%s): the next one for now", name, exc)
                self.skipped_until[name] = now + self.retry_after_s
                continue
            if self.used != name:  # the first call, or a change of transport: say so once
                log.info("calls go over the %s transport", name)
                self.used = name
            return result
        raise AssertionError("unreachable")
