"""Prometheus metrics, structured access logs, request IDs and the request body limit.

One pure-ASGI middleware (cheaper than Starlette's BaseHTTPMiddleware) times every
request and labels it by route *template* (`/creators/{creator_id}/goods`, never the
raw path, so label cardinality stays bounded), counts it by status, writes one JSON
access-log line, echoes or assigns `X-Request-ID`, and stops bodies larger than
`serve.max_body_bytes` (declared or streamed) with a 413. With several workers,
`PROMETHEUS_MULTIPROC_DIR` (set by `haowu serve`) makes /metrics add up every worker.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sys
import time
import uuid
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.online.bundle import Bundle

ACCESS_LOGGER = "haowu.access"
access_log = logging.getLogger(ACCESS_LOGGER)
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    10.0,
)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")


class BodyTooLargeError(Exception):
    """The request body is over the limit: 413."""


class BodyTimeoutError(Exception):
    """The client stopped sending its body (shorter than its Content-Length): 408."""


class Metrics:
    """The service's Prometheus metrics, in their own registry (one per app)."""

    def __init__(self) -> None:
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        reg = None if self.multiprocess else CollectorRegistry()
        self.registry = reg
        self.requests = Counter(
            "haowu_http_requests",
            "HTTP requests answered",
            ["method", "route", "status"],
            registry=reg,
        )
        self.latency = Histogram(
            "haowu_http_request_duration_seconds",
            "time to answer, by route",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.in_flight = Gauge(
            "haowu_http_requests_in_flight",
            "requests being answered",
            registry=reg,
            multiprocess_mode="livesum",
        )
        self.answers = Counter(
            "haowu_answers",
            "list answers by where they came from",
            ["endpoint", "source"],
            registry=reg,
        )
        self.model_info = Gauge(
            "haowu_model_info",
            "the model being served (value 1)",
            ["name", "version", "run_id"],  # no host paths in a public scrape
            registry=reg,
            multiprocess_mode="liveall",
        )
        self.loaded_at = Gauge(
            "haowu_model_loaded_timestamp_seconds",
            "when the served model was loaded",
            registry=reg,
            multiprocess_mode="livemax",
        )
        self.load_seconds = Gauge(
            "haowu_model_load_seconds",
            "how long the served model took to load",
            registry=reg,
            multiprocess_mode="livemax",
        )
        self.reloads = Counter(
            "haowu_model_loads", "model (re)loads by outcome", ["result"], registry=reg
        )
        self.batch_lists = Gauge(
            "haowu_batch_lists_in_use",
            "1 when the served model's batch lists answer this direction, 0 when answers "
            "are live (no lists, or lists written by another model)",
            ["direction"],
            registry=reg,
            multiprocess_mode="liveall",
        )

    def model_swapped(self, bundle: Bundle) -> None:
        info = bundle.info
        self.model_info.clear()
        self.model_info.labels(info.name or "", info.version or "", info.run_id or "").set(1)
        self.loaded_at.set(info.loaded_at)
        self.load_seconds.set(info.load_seconds)
        for direction in ("creator", "product"):
            in_use = bundle.lists_status.get(direction) == "batch"
            self.batch_lists.labels(direction).set(1 if in_use else 0)

    def render(self) -> tuple[bytes, str]:
        registry = self.registry
        if registry is None:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST


def configure_access_log() -> None:
    """Access lines go to stderr as bare JSON (one object a line), not through the root
    logger's text format."""
    if access_log.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access_log.addHandler(handler)
    access_log.setLevel(logging.INFO)
    access_log.propagate = False


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


def _json_response(status: int, body: dict[str, Any], request_id: str) -> list[Message]:
    payload = json.dumps(body).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        (b"x-request-id", request_id.encode()),
    ]
    return [
        {"type": "http.response.start", "status": status, "headers": headers},
        {"type": "http.response.body", "body": payload},
    ]


class ObservabilityMiddleware:
    """Timing, metrics, access log, request ID and body limit for every HTTP request."""

    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        max_body_bytes: int,
        log_access: bool = True,
        body_timeout_s: float = 10.0,
    ) -> None:
        self.app, self.metrics = app, metrics
        self.max_body, self.log_access = max_body_bytes, log_access
        self.body_timeout = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        given = _header(scope, b"x-request-id")
        request_id = given if given and _REQUEST_ID.match(given) else uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = request_id
        outcome: dict[str, Any] = {"status": 500, "bytes": 0, "refusal": None}
        received = 0
        too_large = {
            "error": "body_too_large",
            "detail": f"request body over {self.max_body} bytes",
            "request_id": request_id,
        }

        body_done = False

        async def limited_receive() -> Message:
            nonlocal received, body_done
            if body_done:  # after the body: e.g. waiting for a disconnect, no deadline
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.body_timeout)
            except TimeoutError:
                detail = f"request body not received within {self.body_timeout:g}s"
                outcome["refusal"] = (
                    408,
                    {"error": "body_timeout", "detail": detail, "request_id": request_id},
                )
                raise BodyTimeoutError(detail) from None
            body_done = message["type"] != "http.request" or not message.get("more_body")
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    outcome["refusal"] = (413, too_large)
                    raise BodyTooLargeError(too_large["detail"])
            return message

        async def tracked_send(message: Message) -> None:
            refusal = outcome["refusal"]
            if refusal is not None:  # whatever the app made of the cut body: 413 or 408
                if message["type"] == "http.response.start":
                    outcome["refusal"] = None
                    for own in _json_response(*refusal, request_id):
                        await tracked_send(own)
                    outcome["refusal"] = refusal
                return
            if message["type"] == "http.response.start":
                outcome["status"] = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            elif message["type"] == "http.response.body":
                outcome["bytes"] += len(message.get("body", b""))
            await send(message)

        self.metrics.in_flight.inc()
        try:
            declared = _header(scope, b"content-length")
            if declared is not None and (not declared.isdigit() or int(declared) > self.max_body):
                for message in _json_response(413, too_large, request_id):
                    await tracked_send(message)
                return
            await self.app(scope, limited_receive, tracked_send)
        finally:
            self.metrics.in_flight.dec()
            self._record(scope, start, request_id, outcome)

    def _record(self, scope: Scope, start: float, request_id: str, outcome: dict[str, Any]) -> None:
        elapsed = time.perf_counter() - start
        route = scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        method, status = scope["method"], outcome["status"]
        self.metrics.requests.labels(method, template, str(status)).inc()
        self.metrics.latency.labels(method, template).observe(elapsed)
        if self.log_access:
            client = scope.get("client")
            access_log.info(
                json.dumps(
                    {
                        "ts": round(time.time(), 3),
                        "request_id": request_id,
                        "method": method,
                        "path": scope.get("path"),
                        "route": template,
                        "status": status,
                        "ms": round(elapsed * 1000, 3),
                        "bytes": outcome["bytes"],
                        "client": client[0] if client else None,
                    }
                )
            )
