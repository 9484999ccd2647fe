"""What every read endpoint shares: the served bundle, k, the policy filters from the
query string, ID path parameters, the documented error answers and the answer counter.

The endpoints live by resource (serving/api/{creator,product,broker}_routes.py). Each reads
the bundle once (see serving/online/state.py). Cheap answers (a batch list, a tier row, a
broker's matches) run on the event loop; answers that search the index or run a tower go
to the thread pool, so one slow live query never holds up the cheap ones behind it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from features.idmap import ID_PATTERN
from serving.online.bundle import Bundle
from serving.online.schemas import (
    K_MAX,
    ErrorBody,
    GoodsFilters,
)


async def current_bundle(request: Request) -> Bundle:
    return request.app.state.serving.current()


async def default_k(
    request: Request, k: Annotated[int | None, Query(ge=1, le=K_MAX)] = None
) -> int:
    return k if k is not None else request.app.state.cfg.serve.default_k


FILTER_FIELDS = tuple(GoodsFilters.model_fields)
LIST_FIELDS = {"category_l1", "category_l2", "category_l3"}


async def goods_filters(request: Request) -> GoodsFilters | None:
    """The policy filters from the query string (parsed here, not by FastAPI's query-model
    machinery, which re-inspects every field's annotation on every request; they are
    documented through `FILTER_PARAMETERS`)."""
    query = request.query_params
    present = [name for name in FILTER_FIELDS if name in query]
    if not present:
        return None
    values = {name: query.getlist(name) if name in LIST_FIELDS else query[name] for name in present}
    try:
        return GoodsFilters.model_validate(values)
    except ValidationError as exc:
        errors = [{**e, "loc": ("query", *e["loc"])} for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from None


def _filter_parameters() -> list[dict]:
    properties = GoodsFilters.model_json_schema()["properties"]
    return [
        {"name": name, "in": "query", "required": False, "schema": schema}
        | ({"style": "form", "explode": True} if name in LIST_FIELDS else {})
        for name, schema in properties.items()
    ]


FILTER_PARAMETERS = {"parameters": _filter_parameters()}


def count_answer(request: Request, endpoint: str, source: str) -> None:
    request.app.state.metrics.answers.labels(endpoint, source).inc()


BundleDep = Annotated[Bundle, Depends(current_bundle)]
KDep = Annotated[int, Depends(default_k)]
CreatorId = Annotated[str, Path(pattern=ID_PATTERN, description="the creator's own ID")]
ProductId = Annotated[str, Path(pattern=ID_PATTERN, description="the product's own ID")]
BrokerId = Annotated[int, Path(ge=0, le=2**63 - 1, description="the broker's ID")]

ERRORS = {
    401: {"model": ErrorBody, "description": "missing or wrong API key"},
    404: {"model": ErrorBody, "description": "unknown ID"},
    413: {"model": ErrorBody, "description": "request body too large"},
    422: {"model": ErrorBody, "description": "invalid k, ID, filter or body"},
    503: {"model": ErrorBody, "description": "no model loaded yet"},
}
