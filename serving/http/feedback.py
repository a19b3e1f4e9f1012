"""Feedback routes: join the true label (and a 1..10 rating) to served predictions."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter

from serving.errors import ServingError
from serving.http.dependencies import Control, live_of
from serving.http.errors import BODY, responses
from serving.http.schemas import Feedback, FeedbackBatch, FeedbackResult, FeedbackResults

if TYPE_CHECKING:
    from serving.delivery.live import LiveEvaluation

router = APIRouter(tags=["feedback"], responses=responses(*BODY, 404, 503))


@router.post(
    "/api/feedback",
    response_model=FeedbackResult,
    summary="Join the true label (and a 1..10 rating) to a served prediction",
    responses=responses(
        404,
        422,
        notes={
            404: "Unknown or expired request_id, or no live evaluation in this router",
            422: "Not a class of the model, or the body does not fit the schema",
        },
    ),
)
async def feedback(body: Feedback, control: Control) -> Any:
    live = live_of(control)
    return await asyncio.to_thread(live.feedback, body.request_id, body.label, body.rating)


@router.post(
    "/api/feedback/batch",
    response_model=FeedbackResults,
    response_model_exclude_unset=True,
    summary="Many feedback items; each answered in order",
)
async def feedback_batch(body: FeedbackBatch, control: Control) -> Any:
    live = live_of(control)
    return {"results": await asyncio.to_thread(_join_all, live, body)}


def _join_all(live: LiveEvaluation, body: FeedbackBatch) -> list[dict[str, Any]]:
    """Each item joined, or its error in place: one bad item does not fail the batch."""
    out = []
    for item in body.items:
        try:
            out.append(live.feedback(item.request_id, item.label, item.rating))
        except ServingError as exc:
            out.append(
                {"request_id": item.request_id, "status": "error", "error": exc.body()["error"]}
            )
    return out
