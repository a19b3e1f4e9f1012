"""Status routes: the rollout at a glance and the dashboard page (operators only: the viewer or
admin token), and the served models (public)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse

from serving.control import ControlPlane
from serving.http.auth import require_operator
from serving.http.dependencies import Control, Core
from serving.http.errors import responses
from serving.http.experiments import experiment_status, retraining_status, trial_status
from serving.routing.core import RouterCore
from serving.store.lease import leader_of

STATIC = Path(__file__).parent / "static"

router = APIRouter(tags=["models"], responses=responses(503))


OPERATORS: dict[str, Any] = {
    "dependencies": [Depends(require_operator)],
    "responses": responses(401, 403),
}


@router.get(
    "/api/status",
    response_model=dict[str, Any],
    summary="Rollout stage, gates, split, shadow agreement, drift, recent decisions",
    **OPERATORS,
)
async def status(control: Control) -> Any:
    return await status_report(control)


@router.get(
    "/api/models",
    response_model=dict[str, Any],
    summary="Served models: versions, metadata, metrics, degraded state",
)
async def list_models(core: Core) -> Any:
    return await models_report(core)


@router.get("/dashboard", include_in_schema=False, dependencies=[Depends(require_operator)])
async def dashboard() -> Any:
    return FileResponse(STATIC / "dashboard.html", media_type="text/html")


async def status_report(control: ControlPlane) -> dict[str, Any]:
    """What the dashboard shows: split, health, shadow, and with live evaluation the arms,
    go/no-go, rollout stage, drift and the ten latest decisions."""
    core, live = control.core, control.live
    out: dict[str, Any] = {
        "split": {
            "enabled": core.flags.ensemble.enabled,
            "rollout_percentage": core.flags.ensemble.rollout_percentage,
        },
        "ensemble_ready": core.ensemble_ready(),
        "breaker": core.breaker.state.value,
        "shadow": {"enabled": core.flags.ensemble.shadow.enabled, **core.shadow.stats.summary()},
    }
    if live is not None:
        report = await asyncio.to_thread(live.report)
        drift = await asyncio.to_thread(live.drift_report)
        out.update(
            arms=report["arms"],
            go_no_go=report["go_no_go"],
            rollout=report["rollout"],
            drift={
                "enough_data": drift.get("enough_data"),
                "drifted": drift.get("drifted"),
                "features_drifted": drift.get("features_drifted", []),
            },
            decisions=await asyncio.to_thread(live.store.decisions, 10),
            replica=live.replica,
            evidence=report["evidence"],
        )
        out["challenger"] = await trial_status(control)
        out["experiment"] = await experiment_status(control)
        out["sample_ratio"] = sample_ratio_status(out["decisions"], out["experiment"])
        out["retraining"] = await retraining_status(control)
        try:  # which replica runs the controller (the lease holder), when the store answers
            out["controller"] = await asyncio.to_thread(leader_of, live.store)
        except Exception as exc:
            out["controller"] = {"leader": None, "error": f"{type(exc).__name__}: {exc}"[:200]}
    return out


def sample_ratio_status(
    decisions: list[dict[str, Any]], experiment: dict[str, Any] | None
) -> dict[str, Any]:
    """The split checked against itself: the rollout stage's sample-ratio test from the newest
    logged decision that ran it (the shared decision log, so every replica shows the same), and
    the experiment's. `mismatch` is true when either found one."""
    rollout = next(
        (
            d["evidence"]["sample_ratio"]
            for d in decisions
            if isinstance(d.get("evidence"), dict) and d["evidence"].get("sample_ratio")
        ),
        None,
    )
    trial = (experiment or {}).get("sample_ratio")
    mismatch = any(bool(r and r.get("mismatch")) for r in (rollout, trial))
    return {"rollout": rollout, "experiment": trial, "mismatch": mismatch}


async def models_report(core: RouterCore) -> dict[str, Any]:
    """Both models as their services describe them, with health, breaker and stored versions."""
    from models import store

    out: dict[str, Any] = {}
    for name, arm in (("classic", core.classic_direct), ("ensemble", core.ensemble)):
        info = arm.info
        entry: dict[str, Any] = info.details.copy() if info else {"name": name, "ready": False}
        if info is not None:
            entry["ready"] = info.ready
        if getattr(arm, "last_error", None):
            entry["error"] = arm.last_error
        if name == "ensemble":
            entry["routable"] = core.ensemble_ready()
            entry["breaker"] = core.breaker.snapshot()
        try:
            entry["versions"] = await asyncio.to_thread(store.versions, name)  # a slow listing
        except Exception:  # split deployment: the router may have no local model store
            entry["versions"] = []
        out[name] = entry
    if core.classic is not core.classic_direct and core.classic.info is not None:
        out["classic"]["router_local_version"] = core.classic.info.version
    return out
