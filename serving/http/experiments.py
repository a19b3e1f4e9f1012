"""Experiment and trial routes: the variants' evaluation, the version on trial (operators), and
putting a version on trial, rejecting it or rolling back its promotion (admin)."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path

from serving.delivery import experiment_report
from serving.delivery.challenger import ChallengerController
from serving.errors import Conflict, InvalidInput, NotFound
from serving.http.auth import require_admin, require_operator
from serving.http.dependencies import Core, JsonObject
from serving.http.errors import BODY, responses
from serving.routing.core import RouterCore

router = APIRouter(tags=["experiments"], responses=responses(503))
OPERATORS = {"dependencies": [Depends(require_operator)], "responses": responses(401, 403)}
ADMIN = {"dependencies": [Depends(require_admin)]}
Object = dict[str, Any]


def trials_of(core: Core) -> ChallengerController:
    if core.trials is None:
        raise NotFound("no trials in this router (it has no shared store or no classic model)")
    return core.trials


Trials = Annotated[ChallengerController, Depends(trials_of)]


def served_versions(core: RouterCore) -> dict[str, str]:
    """The version each model's service serves now (what a follow-the-pin variant means)."""
    out = {}
    for name, arm in (("classic", core.classic_direct), ("ensemble", core.ensemble)):
        if arm.info is not None:
            out[name] = arm.info.version
    return out


async def experiment_status(core: RouterCore) -> dict[str, Any] | None:
    """Each variant of the flags' experiment on the labelled feedback of the evaluation window,
    each challenger against the control (Holm-corrected), or None without an experiment."""
    experiment = core.flags.experiment
    if experiment is None or core.live is None:
        return None
    since = time.time() - core.flags.evaluation.window_s
    rows = await asyncio.to_thread(core.live.store.feedback_since, since)
    report = experiment_report.experiment_report(
        rows, experiment, served_versions(core), core.flags.challenger
    )
    return {**report, "window_s": core.flags.evaluation.window_s, "loaded": core.versions.status()}


async def trial_status(core: RouterCore) -> dict[str, Any] | None:
    """The version on trial (or the last one) with its evidence; None without trials."""
    if core.trials is None:
        return None
    report = await asyncio.to_thread(core.trials.report, core.flags.challenger)
    return None if report is None else {**report, "loaded_here": core.versions.status()}


@router.get(
    "/api/experiment",
    response_model=Object,
    summary="The experiment's variants: accuracy, intervals, each challenger against the control",
    **OPERATORS,
)
async def get_experiment(core: Core) -> Any:
    report = await experiment_status(core)
    if report is None:
        raise NotFound("no experiment in the flags (set `experiment` with its variants)")
    return report


@router.get(
    "/api/challenger",
    response_model=Object,
    summary="The ensemble version on trial: stage, history, shadow agreement, A/B evidence",
    **OPERATORS,
)
async def get_challenger(core: Core) -> Any:
    report = await trial_status(core)
    if report is None:
        raise NotFound("no version has been on trial")
    return report


@router.post(
    "/api/admin/challenger",
    response_model=Object,
    summary="Put a stored ensemble version on trial (shadow first)",
    responses=responses(*BODY, 401, 403, 404, 409),
    **ADMIN,
)
async def enter_trial(core: Core, trials: Trials, data: JsonObject) -> Any:
    version = data.get("version")
    if not isinstance(version, str) or not version or len(version) > 64:
        raise InvalidInput("version must be a stored ensemble version")
    from models import store

    stored = await asyncio.to_thread(store.versions, "ensemble")
    if version not in {v["version"] for v in stored}:
        raise NotFound(f"ensemble:{version} is not in the model store")
    try:
        return await asyncio.to_thread(trials.enter, version, "manual")
    except ValueError as exc:
        raise Conflict(str(exc)) from None


@router.post(
    "/api/admin/challenger/{action}",
    response_model=Object,
    summary="reject the version on trial, or roll back its promotion",
    responses=responses(*BODY, 401, 403, 404, 409),
    **ADMIN,
)
async def act_on_trial(
    action: Annotated[str, Path(json_schema_extra={"enum": ["reject", "rollback"]})],
    trials: Trials,
) -> Any:
    try:
        if action == "reject":
            return await asyncio.to_thread(trials.reject, "rejected by an operator")
        if action == "rollback":
            return await trials.rollback("rolled back by an operator")
    except ValueError as exc:
        raise Conflict(str(exc)) from None
    raise NotFound(f"unknown action {action!r}: reject or rollback")
