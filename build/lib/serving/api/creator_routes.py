"""Creators: top-k goods for a known creator (人找货) or a new one described by its features."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from serving.api.read_common import (
    ERRORS,
    FILTER_PARAMETERS,
    BundleDep,
    CreatorId,
    KDep,
    count_answer,
    goods_filters,
)
from serving.api.security import ReadAuth
from serving.online import lookup
from serving.online.schemas import (
    ErrorBody,
    GoodsFilters,
    GoodsList,
    NewCreatorQuery,
)

creators = APIRouter(prefix="/creators", tags=["creators"], responses=ERRORS)


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
    count_answer(request, "creator_goods", answer.source)
    return answer


@creators.post("/goods", responses={409: {"model": ErrorBody, "description": "no towers"}})
def goods_for_new_creator(
    request: Request, query: NewCreatorQuery, bundle: BundleDep, _: ReadAuth
) -> GoodsList:
    """Top-k goods for a new creator described by its features (cold start)."""
    answer = lookup.goods_for_new_creator(bundle, query.creator, query.k, query.filters)
    count_answer(request, "new_creator_goods", answer.source)
    return answer
