"""The composition root without BentoML: services given as plain async calls."""

from __future__ import annotations

import asyncio

import numpy as np
import yaml

from models.schema import Feature, FeatureSchema
from serving.config.settings import ServingSettings
from serving.routing.arms import RemoteArm
from serving.routing.coalesce import Coalescer
from serving.wiring import ServiceCalls, Services, build_router

SCHEMA = FeatureSchema(
    features=[Feature(name="x", kind="numeric")],
    classes=["no", "yes"],
)


def fake_service(name: str, probs: list[float], calls: list[str]) -> ServiceCalls:
    async def predict(codes):
        calls.append(name)
        return np.tile(probs, (len(codes), 1))

    async def describe():
        return {"name": name, "tag": f"{name}:v1", "schema": SCHEMA.model_dump(), "ready": True}

    async def load_version(tag):
        return {"tag": tag}

    return ServiceCalls(predict=predict, describe=describe, load_version=load_version)


def test_core_from_settings_and_services(tmp_path):
    flags = tmp_path / "flags.yaml"
    flags.write_text(yaml.safe_dump({"ensemble": {"rollout_percentage": 100}}))
    settings = ServingSettings(flags_path=flags, state_url=f"sqlite:///{tmp_path}/state.db")
    calls: list[str] = []
    services = Services(
        classic=fake_service("classic", [0.9, 0.1], calls),
        ensemble=fake_service("ensemble", [0.2, 0.8], calls),
    )
    router = build_router(settings, services)
    core, control = router.core, router.control
    # no classic model in this process: classic is the remote service, no live evaluation
    assert isinstance(core.classic, RemoteArm) and core.classic is core.classic_direct
    assert core.live is None and core.flags.ensemble.rollout_percentage == 100
    assert control.core is core and control.live is None
    assert control.challenger is None and control.retraining is None  # both need live evidence
    assert isinstance(core.ensemble._predict, Coalescer)  # coalescing on by default

    async def routed():
        await core.refresh_health()
        return await core.classify([{"x": 1.0}], user_id="someone")

    answer = asyncio.run(routed())[0]
    assert (answer.model, answer.label, answer.fallback) == ("ensemble", "yes", False)
    assert calls == ["ensemble"]


def test_coalescing_off_calls_the_service_directly(tmp_path):
    settings = ServingSettings(
        flags_path=tmp_path / "missing.yaml",  # no file: default flags
        state_url=f"sqlite:///{tmp_path}/state.db",
        ensemble_coalesce_max_rows=0,
    )
    services = Services(
        classic=fake_service("classic", [0.9, 0.1], []),
        ensemble=fake_service("ensemble", [0.2, 0.8], []),
    )
    router = build_router(settings, services)
    assert router.core.ensemble._predict is services.ensemble.predict
    assert router.control.model_loaders["ensemble"] is services.ensemble.load_version


def test_a_failed_final_flush_is_counted_not_only_logged():
    """Shutdown with the store unreachable: what could not be written is counted as dropped."""
    from types import SimpleNamespace

    from prometheus_client import REGISTRY

    from serving.wiring import BackgroundWork

    def unreachable():
        raise ConnectionError("store down")

    async def drained():
        return None

    live = SimpleNamespace(flush_outcomes=unreachable, outcomes=SimpleNamespace(pending=7))
    core = SimpleNamespace(shadow=SimpleNamespace(drain=drained), live=live)
    router = SimpleNamespace(core=core, control=SimpleNamespace(live=live))
    lease = SimpleNamespace(release=lambda: None)
    work = BackgroundWork(router=router, settings=ServingSettings(), lease=lease)  # type: ignore[arg-type]
    name = "tabular_router_outcomes_dropped_total"
    before = REGISTRY.get_sample_value(name) or 0.0
    asyncio.run(work.stop())
    assert (REGISTRY.get_sample_value(name) or 0.0) - before == 7
