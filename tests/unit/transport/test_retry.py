"""One retry policy: a model-service call on the API path is tried at most twice, end to end."""

from __future__ import annotations

import asyncio

import aiohttp
import numpy as np
import pytest

from serving.routing.arms import ArmCallError, CascadeArm, RemoteArm
from serving.transport.retry import MAX_ATTEMPTS, call_remote
from serving.wiring import api_call


class ClosedConnections:
    """A BentoML client whose every call meets a pooled connection closed under it."""

    def __init__(self, error: type[BaseException] = aiohttp.ServerDisconnectedError):
        self.error, self.calls = error, 0
        self.to_async = self  # also stands in for the service handle `api_call` receives

    async def call(self, name: str, **kwargs):
        self.calls += 1
        raise self.error()


def test_an_ensemble_predict_through_the_arm_is_tried_at_most_twice():
    client = ClosedConnections()
    arm = RemoteArm(
        "ensemble",
        lambda codes: call_remote(client, "predict", codes=codes),
        lambda: call_remote(client, "describe"),
    )
    with pytest.raises(ArmCallError):
        asyncio.run(arm.predict(np.zeros((1, 1))))
    assert client.calls == MAX_ATTEMPTS == 2
    client.calls = 0
    assert asyncio.run(arm.refresh()) is None and client.calls == 2


def test_the_cascade_api_is_tried_at_most_twice_too():
    client = ClosedConnections()
    ensemble = RemoteArm("ensemble", lambda codes: codes, lambda: call_remote(client, "describe"))
    cascade = CascadeArm(ensemble, api_call(client, "predict_cascade"))
    with pytest.raises(ArmCallError):
        asyncio.run(cascade.predict(np.zeros((1, 1))))
    assert client.calls == 2


def test_other_connection_errors_are_not_retried():
    client = ClosedConnections(aiohttp.ClientConnectionError)  # refused, reset: not a stale socket
    with pytest.raises(aiohttp.ClientConnectionError):
        asyncio.run(call_remote(client, "predict", codes=None))
    assert client.calls == 1
