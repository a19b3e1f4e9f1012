"""Request coalescing (serving/routing/coalesce.py): concurrent requests share calls, rows stay with
their caller.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from serving.routing.coalesce import Coalescer


class FakeService:
    """Answers each row with [row id, 2 * row id], after a pause; records the rows per call."""

    def __init__(self, pause: float = 0.01, fail: bool = False):
        self.pause, self.fail, self.calls = pause, fail, []

    async def __call__(self, codes: np.ndarray) -> np.ndarray:
        self.calls.append(len(codes))
        await asyncio.sleep(self.pause)
        if self.fail:
            raise ConnectionError("service down")
        return np.column_stack([codes[:, 0], 2 * codes[:, 0]])


def rows(*ids: int) -> np.ndarray:
    return np.array([[i, 0.0] for i in ids], dtype=float)


def test_requests_arriving_during_a_call_share_the_next_call_and_get_their_own_rows_back():
    service = FakeService()
    coalescer = Coalescer(service, max_rows=64, max_in_flight=1)

    async def main():
        return await asyncio.gather(*(coalescer(rows(i, 100 + i)) for i in range(10)))

    results = asyncio.run(main())
    assert service.calls == [
        2,
        18,
    ]  # the first goes alone at once; the other nine wait and go together
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result, [[i, 2 * i], [100 + i, 2 * (100 + i)]])
    assert coalescer.calls == 2 and coalescer.requests == 10


def test_calls_hold_at_most_max_rows_and_at_most_max_in_flight_run_at_once():
    service = FakeService()
    seen: list[int] = []
    coalescer = Coalescer(service, max_rows=4, max_in_flight=2, observe=seen.append)

    async def main():
        return await asyncio.gather(*(coalescer(rows(i)) for i in range(11)))

    results = asyncio.run(main())
    assert [int(r[0, 0]) for r in results] == list(range(11))
    assert max(service.calls) <= 4 and sum(service.calls) == 11
    assert service.calls[:2] == [
        1,
        1,
    ]  # two calls start at once, then the queue drains 4 rows at a time
    assert seen == service.calls


def test_a_request_larger_than_max_rows_goes_alone():
    service = FakeService()
    coalescer = Coalescer(service, max_rows=2, max_in_flight=1)
    result = asyncio.run(coalescer(rows(1, 2, 3)))
    assert result.shape == (3, 2) and service.calls == [3]


def test_a_caller_that_gave_up_is_not_sent():
    service = FakeService(pause=0.05)
    coalescer = Coalescer(service, max_rows=64, max_in_flight=1)

    async def main():
        first = asyncio.create_task(coalescer(rows(1)))
        await asyncio.sleep(0)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(
                coalescer(rows(2)), 0.01
            )  # waits behind the first call, then gives up
        third = asyncio.create_task(coalescer(rows(3)))
        return await first, await third

    first, third = asyncio.run(main())
    assert service.calls == [1, 1]  # the abandoned row 2 never reached the service
    assert first[0, 0] == 1 and third[0, 0] == 3


def test_a_failed_call_fails_every_request_in_it_and_later_calls_still_run():
    service = FakeService(fail=True)
    coalescer = Coalescer(service, max_rows=64, max_in_flight=1)

    async def main():
        out = await asyncio.gather(*(coalescer(rows(i)) for i in range(5)), return_exceptions=True)
        service.fail = False
        return out, await coalescer(rows(7))

    failed, later = asyncio.run(main())
    assert all(isinstance(e, ConnectionError) for e in failed)
    assert later[0, 0] == 7


def test_an_answer_with_the_wrong_row_count_is_an_error_not_misattributed_rows():
    async def short(codes):
        return np.zeros((len(codes) - 1, 2))

    coalescer = Coalescer(short, max_in_flight=1)

    async def main():
        return await asyncio.gather(coalescer(rows(1)), coalescer(rows(2)), return_exceptions=True)

    assert all(isinstance(e, RuntimeError) for e in asyncio.run(main()))


def test_limits_must_be_positive():
    with pytest.raises(ValueError):
        Coalescer(FakeService(), max_rows=0)
    with pytest.raises(ValueError):
        Coalescer(FakeService(), max_in_flight=0)
