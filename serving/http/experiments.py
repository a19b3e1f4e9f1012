"""Experiment, trial and retraining routes: the variants' evaluation, the version on trial and the
retraining runs (operators); putting a version on trial, rejecting it, rolling back its promotion
and starting a retraining run (admin)."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query

from serving.control import ControlPlane
from serving.delivery.challenger import ChallengerController
from serving.delivery.retraining import RetrainingBusy, RetrainingJob
from serving.errors import Conflict, InvalidInput, NotFound
from serving.http.auth import require_admin, require_operator
from serving.http.dependencies import Control, JsonObject
from serving.http.errors import BODY, responses, unroutable_404

router = APIRouter(tags=["experiments"], responses=responses(503))
OPERATORS: dict[str, Any] = {
    "dependencies": [Depends(require_operator)],
    "responses": responses(401, 403, 404),
}
ADMIN: dict[str, Any] = {"dependencies": [Depends(require_admin)]}
Object = dict[str, Any]


def trials_of(control: Control) -> ChallengerController:
    if control.challenger is None:
        raise NotFound("no trials in this router (it has no shared store or no classic model)")
    return control.challenger


Trials = Annotated[ChallengerController, Depends(trials_of)]


async def experiment_status(control: ControlPlane) -> dict[str, Any] | None:
    """The flags' experiment report (LiveEvaluation.experiment_status) and the versions loaded
    here; None without an experiment."""
    if control.live is None:
        return None
    report = await asyncio.to_thread(control.live.experiment_status, control.served_versions())
    return None if report is None else {**report, "loaded": control.core.versions.status()}


async def trial_status(control: ControlPlane) -> dict[str, Any] | None:
    """The version on trial (or the last one) with its evidence; None without trials."""
    core, trials = control.core, control.challenger
    if trials is None:
        return None
    report = await asyncio.to_thread(trials.report, core.flags.challenger)
    return None if report is None else {**report, "loaded_here": core.versions.status()}


@router.get(
    "/api/experiment",
    response_model=Object,
    summary="The experiment's variants: accuracy, intervals, each challenger against the control",
    **OPERATORS,
)
async def get_experiment(control: Control) -> Any:
    report = await experiment_status(control)
    if report is None:
        raise NotFound("no experiment in the flags (set `experiment` with its variants)")
    return report


@router.get(
    "/api/challenger",
    response_model=Object,
    summary="The ensemble version on trial: stage, history, shadow agreement, A/B evidence",
    **OPERATORS,
)
async def get_challenger(control: Control) -> Any:
    report = await trial_status(control)
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
async def enter_trial(trials: Trials, data: JsonObject) -> Any:
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
    responses={
        **responses(*BODY, 401, 403, 409),
        **unroutable_404("No trial to act on, or an unknown action"),
    },
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


def retraining_of(control: Control) -> RetrainingJob:
    if control.retraining is None:
        raise NotFound("no retraining in this router (it has no shared store or no classic model)")
    return control.retraining


Retraining = Annotated[RetrainingJob, Depends(retraining_of)]


async def retraining_status(control: ControlPlane, limit: int = 10) -> dict[str, Any] | None:
    """The retraining job's status (None without one)."""
    job = control.retraining
    return None if job is None else await job.status(control.core.flags.retraining, limit)


@router.get(
    "/api/retraining",
    response_model=Object,
    summary="Retraining runs (outcome, new version, lineage metrics) and the schedule",
    dependencies=[Depends(require_operator)],
    responses=responses(401, 403, 404, 422),
)
async def get_retraining(control: Control, limit: Annotated[int, Query(ge=1, le=200)] = 20) -> Any:
    report = await retraining_status(control, limit)
    if report is None:
        raise NotFound("no retraining in this router")
    return report


@router.post(
    "/api/admin/retraining/run",
    response_model=Object,
    status_code=202,
    summary="Start a retraining run from the labelled feedback now (one at a time)",
    responses=responses(*BODY, 401, 403, 404, 409),
    **ADMIN,
)
async def run_retraining(control: Control, job: Retraining) -> Any:
    """Starts a run (niced and thread-limited beside serving) and answers at once: a run takes
    minutes, longer than a request may. Follow it at GET /api/retraining."""
    core = control.core
    parent = core.ensemble.info.version if core.ensemble.info else None
    try:
        await job.start(core.flags.retraining, parent)
    except RetrainingBusy as exc:
        raise Conflict(str(exc)) from None
    return {"status": "started", "requested_at": time.time(), "follow": "/api/retraining"}


"""Runs started without `wait` (kept referenced until they end)."""
