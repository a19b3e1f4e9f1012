"""RemoteArm: it never retries (the transport does, once); failures count towards not ready."""

from __future__ import annotations

import asyncio
from http import HTTPStatus

import numpy as np
import pytest

from serving.routing.arms import NOT_READY_AFTER, ArmCallError, ArmOverloaded, RemoteArm


class Dropped(ConnectionError):
    """Stands in for aiohttp's ServerDisconnectedError (a pooled socket the server had closed)."""


DESCRIPTION = {
    "name": "classic",
    "tag": "classic:v1",
    "ready": True,
    "classes": ["a", "b"],
    "schema": {
        "features": [{"name": "x", "kind": "numeric"}],
        "target": "y",
        "classes": ["a", "b"],
    },
}


class Flaky:
    """An async call that raises the queued errors first, then answers."""

    def __init__(self, answer, *errors: BaseException):
        self.answer, self.errors, self.calls = answer, list(errors), 0

    async def __call__(self, *args):
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return self.answer


def arm(predict=None, describe=None) -> RemoteArm:
    return RemoteArm(
        "classic",
        predict or Flaky([[0.5, 0.5]]),
        describe or Flaky(DESCRIPTION),
    )


def test_a_failed_health_refresh_is_counted_once_and_not_retried_by_the_arm():
    describe = Flaky(DESCRIPTION, Dropped("Server disconnected"))
    remote = arm(describe=describe)
    assert asyncio.run(remote.refresh()) is None
    assert remote.failed_refreshes == 1 and describe.calls == 1
    assert asyncio.run(remote.refresh()).ready and remote.failed_refreshes == 0


def test_refreshes_that_keep_failing_mark_the_arm_not_ready_then_a_success_restores_it():
    remote = arm()
    assert asyncio.run(remote.refresh()).ready
    remote._describe = Flaky(DESCRIPTION, *[Dropped("down")] * NOT_READY_AFTER)
    for _ in range(NOT_READY_AFTER):
        asyncio.run(remote.refresh())
    assert remote.failed_refreshes == NOT_READY_AFTER and not remote.info.ready
    assert asyncio.run(remote.refresh()).ready and remote.failed_refreshes == 0


def test_predict_is_called_once_whatever_the_error():
    predict = Flaky([[0.25, 0.75]], Dropped("Server disconnected"))
    with pytest.raises(ArmCallError):
        asyncio.run(arm(predict=predict).predict(np.zeros((1, 1))))
    assert predict.calls == 1
    broken = Flaky([[0.25, 0.75]], ValueError("bad model"))
    with pytest.raises(ArmCallError) as failed:
        asyncio.run(arm(predict=broken).predict(np.zeros((1, 1))))
    assert broken.calls == 1 and failed.value.cause == "error"


class StatusError(Exception):
    """Like BentoML's client exceptions: the HTTP status in `error_code`."""

    def __init__(self, message: str, error_code: HTTPStatus):
        super().__init__(message)
        self.error_code = error_code


@pytest.mark.parametrize(
    ("status", "cause"),
    [
        (HTTPStatus.SERVICE_UNAVAILABLE, "overloaded"),
        (HTTPStatus.TOO_MANY_REQUESTS, "overloaded"),
        (HTTPStatus.INTERNAL_SERVER_ERROR, "error"),
    ],
)
def test_failures_are_classified_by_status_not_by_message(status, cause):
    # the message says 503 either way: only the status decides
    predict = Flaky([[0.25, 0.75]], StatusError("upstream said 503 overload", status))
    with pytest.raises(ArmCallError) as failed:
        asyncio.run(arm(predict=predict).predict(np.zeros((1, 1))))
    assert failed.value.cause == cause
    assert isinstance(failed.value, ArmOverloaded) == (cause == "overloaded")
