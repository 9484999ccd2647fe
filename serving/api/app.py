"""The online lookup service: wires settings, state, security, observability and routes.

`create_app(cfg, sources)` builds the FastAPI app; its lifespan starts loading the model
(a run folder or `models:/haowu-matching@champion`) in the background, so /healthz
answers at once and /readyz says 503 until the model is in. SIGHUP and
`POST /admin/reload` load the current champion again and swap it in atomically. With
several workers each loads before it serves and a reload is uvicorn's rolling restart
(`app_from_env` is the factory those worker processes import).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import signal
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import multiprocess
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from features.settings import Settings, load_settings
from serving.api.broker_routes import brokers
from serving.api.creator_routes import creators
from serving.api.observability import (
    BodyTimeoutError,
    BodyTooLargeError,
    Metrics,
    ObservabilityMiddleware,
    configure_access_log,
)
from serving.api.ops_routes import admin, ops
from serving.api.product_routes import products
from serving.api.security import AuthError, Secrets
from serving.online.bundle import Bundle, load_bundle
from serving.online.lookup import InvalidRequestError, NotFoundError, UnsupportedError, warm_up
from serving.online.sources import ServeSources
from serving.online.state import NotReadyError, ServingState

log = logging.getLogger(__name__)

ENV_CONFIG = "HAOWU_SERVE_CONFIG"  # JSON handed to worker processes by `haowu serve`


def _json_safe(value: Any) -> Any:
    """`value` with every non-finite float spelled as the JSON text a client sends for it
    ("NaN", "Infinity", "-Infinity"): a validation error echoes the input, and strict
    JSON cannot carry those numbers (the answer would fail as a 500 instead of a 422)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    return value


def _error(
    request: Request, status: int, code: str, detail: object, **headers: str
) -> JSONResponse:
    body = {
        "error": code,
        "detail": detail,
        "request_id": request.scope.get("state", {}).get("request_id"),
    }
    return JSONResponse(
        _json_safe(jsonable_encoder(body)), status_code=status, headers=headers or None
    )


def _add_error_handlers(app: FastAPI) -> None:
    """Every error is JSON with a stable code; none carries a stack trace."""

    async def not_found(request: Request, exc: NotFoundError) -> JSONResponse:
        return _error(request, 404, exc.code, str(exc))

    async def invalid(request: Request, exc: InvalidRequestError) -> JSONResponse:
        return _error(request, 422, "invalid_request", str(exc))

    async def validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {k: ({n: str(x) for n, x in v.items()} if k == "ctx" else v) for k, v in e.items()}
            for e in exc.errors()
        ]
        return _error(request, 422, "invalid_request", errors)

    async def unsupported(request: Request, exc: UnsupportedError) -> JSONResponse:
        return _error(request, 409, "unsupported", str(exc))

    async def not_ready(request: Request, exc: NotReadyError) -> JSONResponse:
        return _error(request, 503, "not_ready", str(exc), **{"Retry-After": "1"})

    async def auth(request: Request, exc: AuthError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
        return _error(request, exc.status, exc.code, str(exc), **headers)

    async def too_large(request: Request, exc: BodyTooLargeError) -> JSONResponse:
        return _error(request, 413, "body_too_large", str(exc))

    async def body_timeout(request: Request, exc: BodyTimeoutError) -> JSONResponse:
        return _error(request, 408, "body_timeout", str(exc), Connection="close")

    async def http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(request, exc.status_code, code, exc.detail, **(exc.headers or {}))

    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _error(request, 500, "internal_error", "internal error; see the server log")

    handlers = {
        NotFoundError: not_found,
        InvalidRequestError: invalid,
        RequestValidationError: validation,
        UnsupportedError: unsupported,
        NotReadyError: not_ready,
        AuthError: auth,
        BodyTooLargeError: too_large,
        BodyTimeoutError: body_timeout,
        StarletteHTTPException: http,
        Exception: crashed,
    }
    for exc_class, handler in handlers.items():
        app.add_exception_handler(exc_class, handler)  # type: ignore[arg-type]


def install_sighup(state: ServingState, loop: asyncio.AbstractEventLoop) -> bool:
    """SIGHUP starts a background reload; only possible from the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return False
    loop.add_signal_handler(signal.SIGHUP, state.start_reload)
    return True


def create_app(
    cfg: Settings,
    sources: ServeSources | None = None,
    bundle: Bundle | None = None,
    loader: Callable[[], Bundle] | None = None,
) -> FastAPI:
    """The service over `sources` (loaded by the lifespan), or over an already loaded
    `bundle`, which serves until the first reload. `loader` replaces how a (re)load gets
    its bundle (embedding the service elsewhere; tests)."""
    if sources is None and bundle is None:
        raise ValueError("create_app needs sources to load from, or a loaded bundle")
    serve = cfg.serve
    metrics = Metrics()
    load_from = sources or bundle.sources  # type: ignore[union-attr]
    state = ServingState(
        loader or (lambda: warm_up(load_bundle(load_from, cfg, previous=state.bundle))),
        on_swap=metrics.model_swapped,
        on_done=lambda record: metrics.reloads.labels(record.status).inc(),
    )
    if bundle is not None:
        state.install(bundle)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        if state.bundle is None:
            if serve.workers > 1:  # load before taking traffic: the rolling restart waits
                record = await run_in_threadpool(state.reload)
                if record.status != "ok":
                    raise RuntimeError(f"model load failed: {record.error}")
            else:
                state.start_reload()
        hup = serve.reload_on_sighup and install_sighup(state, loop)
        try:
            yield
        finally:
            if hup:
                loop.remove_signal_handler(signal.SIGHUP)
            if metrics.multiprocess:  # a replaced worker's gauges leave /metrics
                multiprocess.mark_process_dead(os.getpid())

    app = FastAPI(
        title="haowu lookup service",
        summary="Goods for creators, creators for goods, tiers and broker matches.",
        version="1",
        lifespan=lifespan,
    )
    app.state.cfg, app.state.serving, app.state.metrics = cfg, state, metrics
    app.state.secrets = Secrets.from_env(serve)
    _add_error_handlers(app)
    for router in (creators, products, brokers, ops, admin):
        app.include_router(router)
    if serve.access_log:
        configure_access_log()
    app.add_middleware(
        ObservabilityMiddleware,
        metrics=metrics,
        max_body_bytes=serve.max_body_bytes,
        log_access=serve.access_log,
        body_timeout_s=serve.body_timeout_s,
    )
    return app


def app_from_env() -> FastAPI:
    """Factory for uvicorn worker processes: `haowu serve` passes its choices as JSON."""
    spec = json.loads(os.environ[ENV_CONFIG])
    cfg = load_settings(
        spec["preset"],
        Path(spec["config"]) if spec.get("config") else None,
        spec.get("overrides", []),
    )
    values = {k: Path(v) if v and k != "model" else v for k, v in spec["sources"].items()}
    return create_app(cfg, ServeSources(**values))
