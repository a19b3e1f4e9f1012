"""The BentoML adapters: a call on a connection the service had just closed is sent once more."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from serving.transport.adapters import call_remote


class FlakyClient:
    """A client whose first `failures` calls meet a connection closed under them."""

    def __init__(self, failures: int):
        self.failures, self.calls = failures, []

    async def call(self, name: str, **kwargs):
        self.calls.append((name, kwargs))
        if len(self.calls) <= self.failures:
            raise aiohttp.ServerDisconnectedError()
        return {"called": name, **kwargs}


def test_a_call_on_a_closed_keepalive_connection_is_sent_once_more():
    client = FlakyClient(failures=1)
    answer = asyncio.run(call_remote(client, "load_version", tag="ensemble:v2"))
    assert answer == {"called": "load_version", "tag": "ensemble:v2"}
    assert client.calls == [("load_version", {"tag": "ensemble:v2"})] * 2


def test_a_service_that_stays_gone_is_reported_not_retried_forever():
    client = FlakyClient(failures=2)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        asyncio.run(call_remote(client, "describe"))
    assert len(client.calls) == 2
