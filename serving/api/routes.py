"""Read endpoints by resource: creators (goods for a creator), products (creators for a
product, tiers) and brokers. Each reads the bundle once (see serving/online/state.py).

Cheap answers (a batch list, a tier row, a broker's matches) run on the event loop;
answers that search the index or run a tower go to the thread pool, so one slow live
query never holds up the cheap ones behind it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from serving.api.security import ReadAuth
from serving.online import lookup
from serving.online.broker_matches import BrokerMatches
from serving.online.bundle import Bundle
from serving.online.schemas import (
    ID_PATTERN,
    K_MAX,
    CreatorList,
    ErrorBody,
    GoodsFilters,
    GoodsList,
    NewCreatorQuery,
    NewProductQuery,
    TierAnswer,
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


def _count(request: Request, endpoint: str, source: str) -> None:
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

creators = APIRouter(prefix="/creators", tags=["creators"], responses=ERRORS)
products = APIRouter(prefix="/products", tags=["products"], responses=ERRORS)
brokers = APIRouter(prefix="/brokers", tags=["brokers"], responses=ERRORS)


@creators.get("/{creator_id}/goods", openapi_extra=FILTER_PARAMETERS)
async def goods_for_creator(
    request: Request,
    creator_id: CreatorId,
    bundle: BundleDep,
    k: KDep,
    filters: Annotated[GoodsFilters | None, Depends(goods_filters)],
    _: ReadAuth,
) -> GoodsList:
    """Top-k goods for a known creator (from its batch list when one can answer)."""
    answer = lookup.goods_for_creator(bundle, creator_id, k, filters, mode="batch")
    if answer is None:
        answer = await run_in_threadpool(
            lookup.goods_for_creator, bundle, creator_id, k, filters, "live"
        )
    _count(request, "creator_goods", answer.source)
    return answer


@creators.post("/goods", responses={409: {"model": ErrorBody, "description": "no towers"}})
def goods_for_new_creator(
    request: Request, query: NewCreatorQuery, bundle: BundleDep, _: ReadAuth
) -> GoodsList:
    """Top-k goods for a new creator described by its features (cold start)."""
    answer = lookup.goods_for_new_creator(bundle, query.creator, query.k, query.filters)
    _count(request, "new_creator_goods", answer.source)
    return answer


@products.get("/{product_id}/creators")
async def creators_for_product(
    request: Request, product_id: ProductId, bundle: BundleDep, k: KDep, _: ReadAuth
) -> CreatorList:
    """Top-k creators for a product (达人广场); creators already promoting it are left out."""
    answer = lookup.creators_for_product(bundle, product_id, k, mode="batch")
    if answer is None:
        answer = await run_in_threadpool(lookup.creators_for_product, bundle, product_id, k, "live")
    _count(request, "product_creators", answer.source)
    return answer


@products.post("/creators", responses={409: {"model": ErrorBody, "description": "no towers"}})
def creators_for_new_product(
    request: Request, query: NewProductQuery, bundle: BundleDep, _: ReadAuth
) -> CreatorList:
    """Top-k creators for a new product described by its features (cold start)."""
    answer = lookup.creators_for_new_product(bundle, query.product, query.k)
    _count(request, "new_product_creators", answer.source)
    return answer


@products.get("/{product_id}/tier")
async def product_tier(product_id: ProductId, bundle: BundleDep, _: ReadAuth) -> TierAnswer:
    """Tier (L0..L5), score and the five dimensions' contributions."""
    return lookup.product_tier(bundle, product_id)


@brokers.get("/{broker_id}/matches")
async def broker_matches(broker_id: BrokerId, bundle: BundleDep, _: ReadAuth) -> BrokerMatches:
    """A broker's recruited goods assigned to the creators on its roster."""
    return lookup.broker_matches(bundle, broker_id)
