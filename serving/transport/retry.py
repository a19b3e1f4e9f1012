"""The one retry policy of calls to the model services (BentoML-free, so the wiring can use it).

A call that meets a closed pooled keep-alive connection is sent once more, on a fresh one; nothing
else is retried anywhere on the request path (the router's arms, coalescer and breaker never
retry), so a model-service call is tried at most twice.
"""

from __future__ import annotations

from typing import Any

MAX_ATTEMPTS = 2
"""Attempts of one call: the first, and one more after a closed pooled connection."""


async def call_remote(client: Any, name: str, **kwargs: Any) -> Any:
    """One call to a model service's API, once more on a fresh connection if the pooled one was
    closed under it.

    BentoML's client keeps idle connections longer than the service's server does
    (bentoml/BentoML#4971), so a call that reuses one just as the server closes it fails with
    "Server disconnected" before the service saw it (a version swap was refused this way in CI).
    Every call made here is idempotent (predict, predict_cascade, describe, load a version, set a
    fault), so sending it again is safe. Any other error (refused, reset, timeout) is the
    caller's to handle: the breaker counts it and classic answers.
    """
    import aiohttp

    try:
        return await client.call(name, **kwargs)
    except aiohttp.ServerDisconnectedError:
        return await client.call(name, **kwargs)
