"""Operations endpoints: liveness, readiness, Prometheus metrics and the admin reload."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse

from serving.api.security import AdminAuth, is_admin, require_api_key
from serving.online.bundle import Bundle
from serving.online.schemas import ErrorBody, Health, ModelStatus, Readiness, ReloadAnswer
from serving.online.state import ServingState

log = logging.getLogger(__name__)

HIDDEN = "(shown with the admin token)"

ops = APIRouter(tags=["operations"])
admin = APIRouter(
    prefix="/admin",
    tags=["admin"],
    responses={
        401: {"model": ErrorBody, "description": "missing or wrong admin token"},
        403: {"model": ErrorBody, "description": "admin disabled (no token set)"},
    },
)


def _state(request: Request) -> ServingState:
    return request.app.state.serving


def model_status(bundle: Bundle | None) -> ModelStatus | None:
    if bundle is None:
        return None
    info = bundle.info
    return ModelStatus(
        label=info.label,
        uri=info.uri,
        folder=str(info.folder),
        name=info.name,
        version=info.version,
        run_id=info.run_id,
        digest=bundle.model_digest,
        loaded_at=info.loaded_at,
        load_seconds=info.load_seconds,
    )


@ops.get("/healthz")
async def healthz() -> Health:
    """Liveness: the process answers (whether or not a model is loaded)."""
    return Health()


@ops.get(
    "/readyz",
    responses={503: {"model": Readiness, "description": "no model loaded yet"}},
)
async def readyz(request: Request) -> Readiness:
    """Readiness: 200 once a model is loaded and serving, 503 before."""
    state = _state(request)
    bundle = state.bundle
    answer = Readiness(
        ready=bundle is not None,
        loading=state.loading,
        model=model_status(bundle),
        reloads=state.loads_ok + state.loads_failed,
        last_error=state.last.error,
    )
    if not is_admin(request):  # paths and errors tell an outsider how the host is laid out
        answer = _without_details(answer)
    if bundle is not None:
        answer.parts = {
            "tiers": bundle.tiers is not None,
            "creator_lists": bundle.lists is not None,
            "product_lists": bundle.product_lists is not None,
            "brokers": bundle.brokers is not None,
            "towers": bundle.embedder is not None,
        }
        answer.lists = dict(bundle.lists_status)
        answer.memory_bytes = bundle.memory()
        return answer
    return JSONResponse(answer.model_dump(), status_code=503)  # type: ignore[return-value]


def _without_details(answer: Readiness) -> Readiness:
    model = answer.model
    if model is not None:
        model = model.model_copy(update={"uri": HIDDEN, "folder": HIDDEN})
    error = HIDDEN if answer.last_error else None
    return answer.model_copy(update={"model": model, "last_error": error})


@ops.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
async def metrics(request: Request) -> Response:
    """Prometheus metrics: requests and latency by route and status, the model loaded,
    (re)loads by outcome."""
    if request.app.state.cfg.serve.protect_metrics:
        await require_api_key(request, request.headers.get("x-api-key"))
    body, content_type = request.app.state.metrics.render()
    return Response(body, media_type=content_type)


def _answer(state: ServingState) -> ReloadAnswer:
    record = state.last
    return ReloadAnswer(
        status=record.status,  # type: ignore[arg-type]
        model=model_status(state.bundle),
        error=record.error,
        started_at=record.started_at,
        seconds=record.seconds,
    )


@admin.post(
    "/reload",
    status_code=202,
    responses={
        200: {"model": ReloadAnswer, "description": "wait=true: the reload finished"},
        503: {"model": ReloadAnswer, "description": "wait=true: the load failed; old model serves"},
    },
)
async def reload(
    request: Request,
    _: AdminAuth,
    wait: Annotated[bool, Query(description="answer when the load has finished")] = False,
) -> ReloadAnswer:
    """Load the current champion (or the run folder again) and swap it in atomically.

    In-flight requests finish on the old model; a failed load keeps the old one serving.
    With several workers this asks the supervisor for a rolling restart instead.
    """
    if request.app.state.cfg.serve.workers > 1:
        os.kill(os.getppid(), signal.SIGHUP)  # uvicorn replaces workers one by one
        return ReloadAnswer(status="restarting", model=model_status(_state(request).bundle))
    state = _state(request)
    record, started = state.start_reload()
    if not wait:
        answer = _answer(state)
        answer.status = "started" if started else "already_running"
        return answer
    await asyncio.get_running_loop().run_in_executor(None, record.finished.wait)
    answer = _answer(state)
    status = 200 if record.status == "ok" else 503
    return JSONResponse(answer.model_dump(), status_code=status)  # type: ignore[return-value]


@admin.get("/reload")
async def reload_status(request: Request, _: AdminAuth) -> ReloadAnswer:
    """The outcome of the last (re)load and the model serving now."""
    return _answer(_state(request))
