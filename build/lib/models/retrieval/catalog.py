"""ProductCatalog: the per-product facts the policy needs, as arrays aligned by position.

The caller builds it from DataFrames (products, merchants, tiers); the policy only reads
arrays, so a batch of candidate lists is filtered with a few gathers, not joins.
`RequestFilters` are the optional per-request filters; `eligible()` turns the platform's
rules plus a request's filters into one boolean mask over the catalog (cached per filter).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from functools import cached_property

import numpy as np
import pandas as pd

from models.retrieval.index import RetrievalError

CATEGORY_LEVELS = ("category_l1", "category_l2", "category_l3")
PRICE_BANDS = 5  # creators' price_band is 0..4; goods are banded the same way


@dataclass(frozen=True)
class RequestFilters:
    """Optional filters of one request; None means "no filter on this"."""

    category_l1: tuple[int, ...] | None = None
    category_l2: tuple[int, ...] | None = None
    category_l3: tuple[int, ...] | None = None
    min_tier: int | None = None
    price_bands: tuple[int, int] | None = None  # inclusive (low, high)
    min_commission: float | None = None

    def __post_init__(self) -> None:
        for level in CATEGORY_LEVELS:
            value = getattr(self, level)
            if value is not None and not isinstance(value, tuple):
                object.__setattr__(self, level, tuple(np.atleast_1d(value).astype(int).tolist()))
        if self.price_bands is not None:
            low, high = self.price_bands
            if low > high:
                raise RetrievalError(f"price band range {self.price_bands} is empty (low > high)")

    def describe(self) -> str:
        parts = [
            f"{f.name}={getattr(self, f.name)}"
            for f in fields(self)
            if getattr(self, f.name) is not None
        ]
        return ", ".join(parts) or "no filters"


def price_bands(prices: np.ndarray, edges: np.ndarray | None = None) -> np.ndarray:
    """Band 0..4 of each price: by the given inner edges, else by catalog quintiles."""
    prices = np.asarray(prices, dtype=np.float64)
    if edges is None:
        known = prices[np.isfinite(prices)]
        edges = np.quantile(known, [0.2, 0.4, 0.6, 0.8]) if len(known) else np.zeros(4)
    bands = np.searchsorted(np.asarray(edges), prices, side="right").astype(np.int8)
    return np.where(np.isfinite(prices), bands, -1).astype(np.int8)


class IdLookup:
    """int64 ID -> position: one gather when IDs are dense, a binary search otherwise."""

    def __init__(self, ids: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        self.size = len(ids)
        self.lo = int(ids.min()) if len(ids) else 0
        span = int(ids.max()) - self.lo + 1 if len(ids) else 0
        self.dense = span <= 4 * len(ids) + 1024
        if self.dense:
            self.table = np.full(span, -1, np.int64)
            self.table[ids - self.lo] = np.arange(len(ids))
        else:
            self.order = np.argsort(ids)
            self.table = ids[self.order]

    def __call__(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(positions, found) for any-shaped IDs; position 0 where not found."""
        ids = np.asarray(ids, dtype=np.int64)
        if not self.size:
            return np.zeros(ids.shape, np.int64), np.zeros(ids.shape, bool)
        if self.dense:
            rel = ids - self.lo
            inside = (rel >= 0) & (rel < len(self.table))
            pos = self.table[np.where(inside, rel, 0)]
            found = inside & (pos >= 0)
        else:
            at = np.minimum(np.searchsorted(self.table, ids), self.size - 1)
            found = self.table[at] == ids
            pos = self.order[at]
        return np.where(found, pos, 0), found


@dataclass
class ProductCatalog:
    """Per-product arrays aligned by position; -1 (or NaN) marks an unknown value."""

    product_ids: np.ndarray  # (N,) int64
    tier: np.ndarray  # (N,) int8, 0..5; -1 = not yet tiered (not excluded as L0)
    flagged: np.ndarray  # (N,) bool: merchant flagged as low quality
    category_l1: np.ndarray  # (N,) int32
    category_l2: np.ndarray
    category_l3: np.ndarray
    price_band: np.ndarray  # (N,) int8, 0..4
    commission: np.ndarray  # (N,) float32
    _masks: dict[tuple, np.ndarray] = field(default_factory=dict, repr=False)
    _codes: dict[str, tuple[np.ndarray, int]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.product_ids = np.asarray(self.product_ids, dtype=np.int64)
        n = len(self.product_ids)
        casts = {
            "tier": np.int8,
            "flagged": bool,
            "category_l1": np.int32,
            "category_l2": np.int32,
            "category_l3": np.int32,
            "price_band": np.int8,
            "commission": np.float32,
        }
        for name, dtype in casts.items():
            arr = np.asarray(getattr(self, name)).astype(dtype)
            if arr.shape != (n,):
                raise ValueError(f"catalog column {name} has shape {arr.shape}, expected ({n},)")
            setattr(self, name, arr)
        if len(np.unique(self.product_ids)) != n:
            raise RetrievalError("catalog product_ids are not unique")

    @classmethod
    def from_frame(cls, df: pd.DataFrame, price_edges: np.ndarray | None = None) -> ProductCatalog:
        """From one row per product: product_id and any of tier, flagged_low_quality,
        category_l1..l3, price_band (or price), commission_rate. Missing columns are unknown."""
        if "product_id" not in df.columns:
            raise RetrievalError(f"catalog frame needs a product_id column; has {list(df.columns)}")
        n = len(df)

        def col(name: str, fill: float, dtype: type) -> np.ndarray:
            if name not in df.columns:
                return np.full(n, fill, dtype=dtype)
            return pd.to_numeric(df[name], errors="coerce").fillna(fill).to_numpy().astype(dtype)

        if "price_band" in df.columns:
            bands = col("price_band", -1, np.int8)
        elif "price" in df.columns:
            bands = price_bands(pd.to_numeric(df["price"], errors="coerce").to_numpy(), price_edges)
        else:
            bands = np.full(n, -1, np.int8)
        flagged = (
            df["flagged_low_quality"].fillna(False).astype(bool).to_numpy()
            if "flagged_low_quality" in df.columns
            else np.zeros(n, bool)
        )
        return cls(
            product_ids=df["product_id"].to_numpy(dtype=np.int64),
            tier=col("tier", -1, np.int8),
            flagged=flagged,
            category_l1=col("category_l1", -1, np.int32),
            category_l2=col("category_l2", -1, np.int32),
            category_l3=col("category_l3", -1, np.int32),
            price_band=bands,
            commission=col("commission_rate", np.nan, np.float32),
        )

    def __len__(self) -> int:
        return len(self.product_ids)

    @cached_property
    def _lookup(self) -> IdLookup:
        return IdLookup(self.product_ids)

    def positions(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(positions, found) for any-shaped IDs; position 0 where not found."""
        return self._lookup(ids)

    def level(self, name: str) -> np.ndarray:
        if name not in CATEGORY_LEVELS:
            raise ValueError(f"unknown category level {name!r}; choose one of {CATEGORY_LEVELS}")
        return getattr(self, name)

    def codes(self, name: str) -> tuple[np.ndarray, int]:
        """(codes, n_codes): one level's categories as compact codes 0..n_codes-1 (cached)."""
        if name not in self._codes:
            _, inverse = np.unique(self.level(name), return_inverse=True)
            codes = inverse.astype(np.int32)
            self._codes[name] = (codes, int(codes.max(initial=-1)) + 1)
        return self._codes[name]

    def eligible(
        self,
        filters: RequestFilters | None,
        exclude_tiers: tuple[int, ...] = (0,),
        exclude_flagged: bool = True,
    ) -> np.ndarray:
        """(N,) bool: goods the platform may recommend under these filters (cached)."""
        key = (filters, tuple(exclude_tiers), exclude_flagged)
        if key not in self._masks:
            mask = ~np.isin(self.tier, np.asarray(exclude_tiers, dtype=np.int8))
            if exclude_flagged:
                mask &= ~self.flagged
            if filters is not None:
                for name in CATEGORY_LEVELS:
                    allowed = getattr(filters, name)
                    if allowed is not None:
                        mask &= np.isin(self.level(name), np.asarray(allowed, dtype=np.int32))
                if filters.min_tier is not None:
                    mask &= self.tier >= filters.min_tier
                if filters.price_bands is not None:
                    low, high = filters.price_bands
                    mask &= (self.price_band >= low) & (self.price_band <= high)
                if filters.min_commission is not None:
                    mask &= self.commission >= filters.min_commission  # NaN commission fails
            if len(self._masks) > 64:
                self._masks.clear()
            self._masks[key] = mask
        return self._masks[key]
