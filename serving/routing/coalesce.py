"""Request coalescing: concurrent requests for a remote arm share one call to its service.

A call from the router to the ensemble service costs about 4 ms of CPU in each process (HTTP,
serialisation, BentoML's batching dispatcher) whatever its row count, while the prediction itself
costs a fraction of a millisecond per row in a batch (profiled, see README "Performance"). So the
router sends the rows that arrive while a call is in flight together in the next one: natural
batching, with no waiting window (a lone request goes at once), at most `max_rows` rows per call
and `max_in_flight` calls at a time. The service's own adaptive batching still merges the calls of
several router replicas.

A caller that gives up (its deadline passed) is dropped from the queue before its rows are sent;
a failed call fails every request in it, and each of those falls back on its own.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable

import numpy as np

Call = Callable[[np.ndarray], Awaitable[np.ndarray]]


class Coalescer:
    """Wrap `call(codes) -> probabilities` so that concurrent callers share calls.

    Use the instance as the call: ``probabilities = await coalescer(codes)``. Row order is kept:
    each caller gets exactly the rows of its own request back.
    """

    def __init__(
        self,
        call: Call,
        max_rows: int = 64,
        max_in_flight: int = 2,
        observe: Callable[[int], None] | None = None,
    ):
        if max_rows < 1 or max_in_flight < 1:
            raise ValueError("max_rows and max_in_flight must be >= 1")
        self.call = call
        self.max_rows = max_rows
        self.max_in_flight = max_in_flight
        self.observe = observe
        """Called with the row count of every call sent (e.g. a Prometheus histogram)."""
        self._queue: deque[tuple[np.ndarray, asyncio.Future]] = deque()
        self._in_flight = 0
        self._tasks: set[asyncio.Task] = set()
        self.calls = 0
        self.requests = 0

    async def __call__(self, codes: np.ndarray) -> np.ndarray:
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._queue.append((codes, future))
        self.requests += 1
        self._dispatch()
        return await future

    @property
    def queued(self) -> int:
        return len(self._queue)

    def _dispatch(self) -> None:
        while self._in_flight < self.max_in_flight:
            batch = self._take()
            if not batch:
                return
            self._in_flight += 1
            task = asyncio.create_task(self._send(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _take(self) -> list[tuple[np.ndarray, asyncio.Future]]:
        """The oldest waiting requests, up to max_rows rows (a single larger request goes alone)."""
        batch: list[tuple[np.ndarray, asyncio.Future]] = []
        rows = 0
        while self._queue:
            codes, future = self._queue[0]
            if future.done():  # its caller gave up (deadline): do not send its rows
                self._queue.popleft()
                continue
            if batch and rows + len(codes) > self.max_rows:
                break
            self._queue.popleft()
            batch.append((codes, future))
            rows += len(codes)
        return batch

    async def _send(self, batch: list[tuple[np.ndarray, asyncio.Future]]) -> None:
        try:
            codes = batch[0][0] if len(batch) == 1 else np.concatenate([c for c, _ in batch])
            if self.observe is not None:
                self.observe(len(codes))
            self.calls += 1
            result = np.asarray(await self.call(codes))
            if result.shape[0] != codes.shape[0]:
                raise RuntimeError(
                    f"the service answered {result.shape[0]} rows for {codes.shape[0]}"
                )
            start = 0
            for rows, future in batch:
                if not future.done():
                    future.set_result(result[start : start + len(rows)])
                start += len(rows)
        except BaseException as exc:  # noqa: BLE001 - every waiter must hear of it, cancellation included
            for _, future in batch:
                if not future.done():
                    future.set_exception(
                        exc if isinstance(exc, Exception) else RuntimeError("call cancelled")
                    )
            if not isinstance(exc, Exception):
                raise
        finally:
            self._in_flight -= 1
            self._dispatch()
