"""The answers of the service, computed from one `Bundle` (no HTTP here).

Goods for a known creator come from its batch list when one exists (filtered by the
request's filters and the platform's current rules, then trimmed to k), else live: the
creator's embedding searched in the product index under the policy. A live answer is
computed at the batch lists' depth K (when lists are loaded) and trimmed to k, because
the policy's diversity and Selected Goods rules depend on the list length: so a creator
gets the same first k goods whether they came from the batch list or live (up to ties
and, for an approximate index, its recall). Newcomers are embedded by the towers.

List items are built as plain dicts and validated once, with the answer, by its pydantic
model (in pydantic-core): about ten times cheaper than twenty model objects in Python.
"""

from __future__ import annotations

import re
from typing import Literal

import numpy as np
import pandas as pd

from features.errors import HaowuError
from features.idmap import IdMap
from models.retrieval.catalog import RequestFilters
from models.retrieval.directions import creators_for_products
from models.retrieval.index import RetrievalError
from models.retrieval.policy import RankedLists
from models.retrieval.run import Side
from serving.online.batch_lists import ListRows
from serving.online.broker_matches import BrokerMatches, UnknownBrokerError
from serving.online.bundle import Bundle
from serving.online.schemas import (
    CreatorList,
    GoodsFilters,
    GoodsList,
    NewCreator,
    NewProduct,
    TierAnswer,
)

Mode = Literal["auto", "batch", "live"]
INT_ID = re.compile(r"^-?\d{1,19}$")
INT64 = (-(2**63), 2**63 - 1)


class NotFoundError(HaowuError):
    """An ID the served model (or tier run, or broker matches) does not hold: 404."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


class InvalidRequestError(HaowuError):
    """A request the schema let through but the catalog cannot take: 422."""


class UnsupportedError(HaowuError):
    """The served model cannot answer this kind of request (e.g. no towers): 409."""


# --------------------------------------------------------------------------- IDs


def internal_id(raw: str, id_map: IdMap | None, what: str) -> int:
    """The user's ID from a path -> haowu's internal int64 ID."""
    if id_map is None or id_map.kind == "int":
        if not INT_ID.match(raw) or not INT64[0] <= int(raw) <= INT64[1]:
            raise InvalidRequestError(f"{what} IDs are 64-bit integers, got {raw!r}")
    if id_map is None:
        return int(raw)
    internal = int(id_map.to_internal([raw], missing="minus_one")[0])
    if internal < 0:
        raise NotFoundError(f"unknown_{what}", f"{what} {raw} is unknown")
    return internal


def position(raw: str, side: Side, id_map: IdMap | None, what: str) -> int:
    """The user's ID -> its position on the served side; 404 when the model does not hold
    it (never seen, or a delisted good)."""
    internal = internal_id(raw, id_map, what)
    pos = int(side.ids.positions(np.array([internal]), strict=False)[0])
    if pos < 0 or not side.listed[pos]:
        raise NotFoundError(f"unknown_{what}", f"{what} {raw} is unknown to the served model")
    return pos


def external(ids: np.ndarray, id_map: IdMap | None) -> list[int | str]:
    """Internal IDs -> the user's IDs, as JSON-ready Python values."""
    return (id_map.to_external(ids) if id_map is not None else ids).tolist()


def request_filters(filters: GoodsFilters | None) -> RequestFilters | None:
    if filters is None:
        return None
    values = filters.model_dump(exclude_none=True)
    if not values:
        return None
    bands = None
    if "price_band_min" in values or "price_band_max" in values:
        bands = (values.pop("price_band_min", 0), values.pop("price_band_max", 4))
    for level in ("category_l1", "category_l2", "category_l3"):
        if level in values:
            values[level] = tuple(values[level])
    try:
        return RequestFilters(price_bands=bands, **values)
    except RetrievalError as exc:
        raise InvalidRequestError(str(exc)) from None


# --------------------------------------------------------------------------- goods


def _reason(
    score: float, tier: int, selected: bool, selected_slot: bool, diversity_slot: bool
) -> str:
    """The same words as `RankedLists.why`, for rows read from the batch lists."""
    parts = [f"score {score:.4f}", f"tier L{tier}" if tier >= 0 else "tier unknown"]
    if selected:
        parts.append("Selected Goods (boosted)")
    if selected_slot:
        parts.append("Selected Goods slot")
    if diversity_slot:
        parts.append("diversity slot")
    return "; ".join(parts)


def _goods_from_batch(
    b: Bundle, stored: ListRows, k: int, filters: RequestFilters | None
) -> list[dict] | None:
    """The stored list, filtered and trimmed to k; None when it cannot answer (live then)."""
    assert b.lists is not None
    pos = stored.positions
    keep = (pos >= 0) & b.retriever.policy.eligible(b.catalog, filters)[np.maximum(pos, 0)]
    rows = np.flatnonzero(keep)
    exhaustive = len(pos) < b.lists.depth  # the batch job found no more goods to add
    if len(rows) < k and not exhaustive:
        return None
    rows = rows[:k]
    picked = pos[rows]
    tiers = b.catalog.tier[picked].astype(int).tolist()
    cats = b.catalog.category_l1[picked].astype(int).tolist()
    scores = stored.scores[rows].astype(float).tolist()
    ids = external(b.products.ids.ids[picked], b.product_map)
    flags = {name: values[rows].tolist() for name, values in stored.flags.items()}
    no_flags = [False] * len(rows)
    selected = b.selected_tier
    return [
        dict(
            rank=i + 1,
            product_id=ids[i],
            score=scores[i],
            tier=tiers[i] if tiers[i] >= 0 else None,
            selected_goods=tiers[i] == selected,
            category_l1=cats[i] if cats[i] >= 0 else None,
            reason=_reason(
                scores[i],
                tiers[i],
                tiers[i] == selected,
                flags.get("selected_slot", no_flags)[i],
                flags.get("diversity_slot", no_flags)[i],
            ),
        )
        for i in range(len(rows))
    ]


def _goods_from_ranked(b: Bundle, ranked: RankedLists, k: int) -> tuple[list[dict], str | None]:
    n = int(min(k, ranked.lengths[0]))
    ids = external(ranked.product_ids[0, :n], b.product_map)
    items = [
        dict(
            rank=j + 1,
            product_id=ids[j],
            score=float(ranked.scores[0, j]),
            tier=int(ranked.tier[0, j]) if ranked.tier[0, j] >= 0 else None,
            selected_goods=bool(ranked.selected_goods[0, j]),
            category_l1=int(ranked.category_l1[0, j]) if ranked.category_l1[0, j] >= 0 else None,
            reason=ranked.why(0, j),
        )
        for j in range(n)
    ]
    return items, (ranked.reasons[0] if n < k else None)


def _clamp(k: int, size: int, what: str) -> tuple[int, str | None]:
    if k <= size:
        return k, None
    return size, f"k={k} is more than the {size} {what} the model knows"


def _search_goods(
    b: Bundle, vector: np.ndarray, k: int, depth: int, seen, filters: RequestFilters | None
) -> tuple[list[dict], str | None]:
    size = len(b.catalog)
    k, clamped = _clamp(k, size, "goods")
    try:
        ranked = b.retriever.recommend(vector[None, :], min(max(k, depth), size), seen, filters)
    except RetrievalError as exc:
        raise InvalidRequestError(str(exc)) from None
    items, note = _goods_from_ranked(b, ranked, k)
    return items, clamped or note


def goods_for_creator(
    b: Bundle,
    creator: str,
    k: int,
    filters: GoodsFilters | None = None,
    mode: Mode = "auto",
) -> GoodsList | None:
    """Top-k goods for a known creator: its batch list when it can answer, else live.

    mode "batch" answers only from the batch list (None when it cannot); "live" skips it.
    """
    pos = position(creator, b.creators, b.creator_map, "creator")
    request = request_filters(filters)
    creator_id = external(b.creators.ids.ids[pos : pos + 1], b.creator_map)[0]
    stored = b.lists.get(pos) if b.lists is not None and mode != "live" else None
    if stored is not None:
        items = _goods_from_batch(b, stored, k, request)
        if items is not None:
            note = None if len(items) == k else f"only {len(items)} goods match the request"
            return GoodsList(
                creator_id=creator_id,
                k=k,
                source="batch",
                model_version=b.info.label,
                items=items,
                note=note,
            )
    if mode == "batch":
        return None
    seen = b.promoted[pos]
    depth = b.lists.depth if b.lists is not None else k
    vector = np.asarray(b.creators.vectors[pos], dtype=np.float32)
    items, note = _search_goods(b, vector, k, depth, seen, request)
    return GoodsList(
        creator_id=creator_id,
        k=k,
        source="live",
        model_version=b.info.label,
        items=items,
        note=note,
    )


def _embedder(b: Bundle):  # type: ignore[no-untyped-def]
    if b.embedder is None:
        raise UnsupportedError("the served model has no towers: it cannot embed a newcomer")
    return b.embedder


def goods_for_new_creator(
    b: Bundle, creator: NewCreator, k: int, filters: GoodsFilters | None = None
) -> GoodsList:
    """Top-k goods for a creator described only by its features (cold start)."""
    frame = pd.DataFrame([creator.model_dump(exclude_none=True)])
    vector = _embedder(b).creators(frame)[0]
    items, note = _search_goods(b, vector, k, k, None, request_filters(filters))
    return GoodsList(
        creator_id=None, k=k, source="live", model_version=b.info.label, items=items, note=note
    )


# --------------------------------------------------------------------------- creators


def _creator_items(b: Bundle, positions: np.ndarray, scores: np.ndarray) -> list[dict]:
    ids = external(b.creators.ids.ids[positions], b.creator_map)
    values = scores.astype(float).tolist()
    return [dict(rank=i + 1, creator_id=ids[i], score=values[i]) for i in range(len(ids))]


def _search_creators(
    b: Bundle, vector: np.ndarray, k: int, exclude
) -> tuple[list[dict], str | None]:
    k, clamped = _clamp(k, len(b.creator_index), "creators")
    ids, scores = creators_for_products(
        b.creator_index,
        vector[None, :],
        k,
        exclude=exclude if exclude is not None and exclude.nnz else None,
        creator_ids=b.creators.ids.ids,
        overfetch=b.retriever.cfg.overfetch,
    )
    keep = ids[0] >= 0
    positions = b.creators.ids.positions(ids[0][keep], strict=False)
    items = _creator_items(b, positions, scores[0][keep])
    note = clamped or (None if len(items) == k else f"only {len(items)} creators remain")
    return items, note


def creators_for_product(
    b: Bundle, product: str, k: int, mode: Mode = "auto"
) -> CreatorList | None:
    """Top-k creators for a known product (creators already promoting it are left out);
    `mode` as for `goods_for_creator`."""
    pos = position(product, b.products, b.product_map, "product")
    product_id = external(b.products.ids.ids[pos : pos + 1], b.product_map)[0]
    lists = b.product_lists if mode != "live" else None
    stored = lists.get(pos) if lists is not None else None
    if lists is not None and stored is not None:
        rows = np.flatnonzero(stored.positions >= 0)
        if len(rows) >= k or len(stored.positions) < lists.depth:
            rows = rows[:k]
            items = _creator_items(b, stored.positions[rows], stored.scores[rows])
            note = None if len(items) == k else f"only {len(items)} creators remain"
            return CreatorList(
                product_id=product_id,
                k=k,
                source="batch",
                model_version=b.info.label,
                items=items,
                note=note,
            )
    if mode == "batch":
        return None
    exclude = b.promoted_by_product[pos]
    vector = np.asarray(b.products.vectors[pos], dtype=np.float32)
    items, note = _search_creators(b, vector, k, exclude)
    return CreatorList(
        product_id=product_id,
        k=k,
        source="live",
        model_version=b.info.label,
        items=items,
        note=note,
    )


def creators_for_new_product(b: Bundle, product: NewProduct, k: int) -> CreatorList:
    """Top-k creators for a product described only by its features (cold start)."""
    values = product.model_dump(exclude_none=True)
    merchant = values.get("merchant_id")
    if merchant is not None and b.merchants is not None and merchant in b.merchants.index:
        for name, value in b.merchants.loc[merchant].items():
            values.setdefault(str(name), value)
    vector = _embedder(b).products(pd.DataFrame([values]))[0]
    items, note = _search_creators(b, vector, k, None)
    return CreatorList(
        product_id=None, k=k, source="live", model_version=b.info.label, items=items, note=note
    )


# --------------------------------------------------------------------------- tiers, brokers


def warm_up(b: Bundle) -> Bundle:
    """One newcomer query of each kind before the bundle serves, so torch's and FAISS's
    first-call costs (~50 ms on `small`) are paid by the load, not by a user's request."""
    if b.embedder is not None:
        goods_for_new_creator(b, NewCreator(), 1)
        creators_for_new_product(b, NewProduct(), 1)
    return b


def product_tier(b: Bundle, product: str) -> TierAnswer:
    if b.tiers is None:
        raise NotFoundError("tiers_not_loaded", "this service was started without tiers")
    internal = internal_id(product, b.product_map, "product")
    row = b.tiers.get(internal)
    if row is None:
        raise NotFoundError("unknown_product", f"product {product} has no tier")
    return TierAnswer(
        product_id=external(np.array([internal]), b.product_map)[0],
        tier=row.tier,
        selected_goods=row.tier == b.selected_tier,
        score=row.score,
        contributions=row.contributions,
        top_for=row.top_for,
        top_against=row.top_against,
        reason=row.reason,
        has_sales_history=row.has_sales_history,
    )


def broker_matches(b: Bundle, broker_id: int) -> BrokerMatches:
    if b.brokers is None:
        raise NotFoundError("brokers_not_loaded", "this service was started without broker matches")
    try:
        return b.brokers.get(broker_id)
    except UnknownBrokerError as exc:
        raise NotFoundError("unknown_broker", str(exc)) from None
