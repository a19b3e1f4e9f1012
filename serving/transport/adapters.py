"""Small adapters between BentoML 1.4 and the BentoML-free code in serving/ (used by service.py).

Every call to a model service's API goes through `call_remote` (serving/transport/retry.py), the
one retry policy.
"""

from __future__ import annotations

import asyncio
from typing import Any

import bentoml

from serving.transport.retry import call_remote
from serving.transport.rows import HttpClient, SocketClient, Transports, socket_path
from serving.wiring import ServiceCalls


def declared_model(tag: str) -> bentoml.models.BentoModel | None:
    """The model reference if the store has it, else None.

    A declared model is bundled by `bentoml build`, but `bentoml serve` refuses to start when a
    declared model is missing; declaring only what exists lets a missing ensemble degrade the
    graph (everything on classic) and a missing classic model keep the router unready with a
    clear message, instead of a refusal to start or a silent serve.
    """
    ref = bentoml.models.BentoModel(tag)
    return ref if ref.stored is not None else None


def stored_tag(ref: bentoml.models.BentoModel | None) -> str | None:
    """The tag of a declared model in the local store (never reaches out to a remote store)."""
    stored = ref.stored if ref is not None else None
    return str(stored.tag) if stored is not None else None


def fix_media_types(*services: Any) -> None:
    """BentoML 1.4 derives each response's media type from the output's JSON schema, rebuilt for
    every response (a tenth of the ensemble worker's CPU, profiled with py-spy). It never changes:
    work it out once."""
    for service in services:
        for method in service.apis.values():
            if method.output_spec.media_type is None:
                method.output_spec.media_type = method.output_spec.mime_type()


def service_calls(
    dependency: Any, with_fault: bool = False, transport: str = "api"
) -> ServiceCalls:
    """Awaitable calls to a model service, whether it runs in its own process or in this one.

    `transport` (SERVING_ENSEMBLE_TRANSPORT) for predict when the service runs in another process:
    `socket` (raw rows over a Unix socket, same `bentoml serve` only), then `http` (raw rows to its
    POST /rows/predict), then its BentoML API (`api`); see serving/transport/rows.py.
    """

    def call(name: str):
        if hasattr(dependency, "to_async"):  # a client; its endpoints are known once connected
            return lambda **kwargs: call_remote(dependency.to_async, name, **kwargs)
        method = getattr(dependency, name)
        return lambda **kwargs: asyncio.to_thread(method, **kwargs)

    predict, describe, load = call("predict"), call("describe"), call("load_version")
    predict_codes: Any = lambda codes: predict(codes=codes)  # noqa: E731
    if transport != "api" and hasattr(dependency, "to_async"):
        url = dependency.to_async.url
        chain: list[tuple[str, Any]] = [("http", HttpClient(url)), ("api", predict_codes)]
        if transport == "socket" and (path := socket_path(url)) is not None:
            chain.insert(0, ("socket", SocketClient(path)))
        predict_codes = Transports(chain)
    return ServiceCalls(
        predict=predict_codes,
        describe=describe,
        load_version=lambda tag: load(tag=tag),
        set_fault=call("set_fault") if with_fault else None,
    )
