"""Products: top-k creators for a product (达人广场), known or new, and its tier."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from serving.api.read_common import (
    ERRORS,
    BundleDep,
    KDep,
    ProductId,
    count_answer,
)
from serving.api.security import ReadAuth
from serving.online import lookup
from serving.online.schemas import (
    CreatorList,
    ErrorBody,
    NewProductQuery,
    TierAnswer,
)

products = APIRouter(prefix="/products", tags=["products"], responses=ERRORS)


@products.get("/{product_id}/creators")
async def creators_for_product(
    request: Request, product_id: ProductId, bundle: BundleDep, k: KDep, _: ReadAuth
) -> CreatorList:
    """Top-k creators for a product (达人广场); creators already promoting it are left out."""
    answer = lookup.creators_for_product(bundle, product_id, k, mode="batch")
    if answer is None:
        answer = await run_in_threadpool(lookup.creators_for_product, bundle, product_id, k, "live")
    count_answer(request, "product_creators", answer.source)
    return answer


@products.post("/creators", responses={409: {"model": ErrorBody, "description": "no towers"}})
def creators_for_new_product(
    request: Request, query: NewProductQuery, bundle: BundleDep, _: ReadAuth
) -> CreatorList:
    """Top-k creators for a new product described by its features (cold start)."""
    answer = lookup.creators_for_new_product(bundle, query.product, query.k)
    count_answer(request, "new_product_creators", answer.source)
    return answer


@products.get("/{product_id}/tier")
async def product_tier(product_id: ProductId, bundle: BundleDep, _: ReadAuth) -> TierAnswer:
    """Tier (L0..L5), score and the five dimensions' contributions."""
    return lookup.product_tier(bundle, product_id)
