"""What matching trains on: ID <-> position maps, unique (creator, product) pairs, side tables.

IDs are arbitrary int64 (not dense, not starting at 0), so they are mapped to positions
once, by `np.searchsorted` over the sorted catalog, and everything downstream (CSR
matrices, embeddings, metrics) works on positions. The catalog is every ID in the
creators/products tables plus every ID in the interactions, so products that were never
promoted (cold goods) still have a position, and so an embedding from their features.

Interactions are streamed from Parquet in batches; only the unique pairs and the time of
their first interaction are kept, as int64 arrays (16-24 bytes a pair).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from features.errors import ContractError
from features.io import has_table, iter_table, read_table, table_columns
from features.product_facts import product_facts

log = logging.getLogger(__name__)

CREATOR_TABLES = ("creators",)
PRODUCT_TABLES = ("products",)


@dataclass(frozen=True)
class IdIndex:
    """Sorted unique int64 IDs; position = index into `ids`."""

    ids: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def positions(self, ids: np.ndarray, strict: bool = True) -> np.ndarray:
        """IDs -> positions; unknown IDs raise (strict) or map to -1."""
        ids = np.asarray(ids, dtype=np.int64)
        pos = np.searchsorted(self.ids, ids)
        pos = np.minimum(pos, max(len(self.ids) - 1, 0))
        known = (self.ids[pos] == ids) if len(self.ids) else np.zeros(len(ids), bool)
        if strict and not known.all():
            raise KeyError(f"{int((~known).sum())} unknown id(s), e.g. {ids[~known][:3].tolist()}")
        return np.where(known, pos, -1).astype(np.int64)


@dataclass
class Interactions:
    """Unique (creator, product) pairs as positions, with the time each pair was first seen."""

    creators: IdIndex
    products: IdIndex
    creator: np.ndarray  # (n_pairs,) int64 creator positions
    product: np.ndarray  # (n_pairs,) int64 product positions
    first_ts: np.ndarray | None  # (n_pairs,) int64 ns, None when the log has no time
    n_rows: int = 0  # raw rows read (repeats included)
    _by_key: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False, compare=False)

    @property
    def n_pairs(self) -> int:
        return len(self.creator)

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.creators), len(self.products)

    def csr(self, mask: np.ndarray | None = None) -> sp.csr_matrix:
        """Binary creator x product matrix of the pairs (or of `mask`'s pairs)."""
        c, p = (
            (self.creator, self.product)
            if mask is None
            else (self.creator[mask], self.product[mask])
        )
        data = np.ones(len(c), dtype=np.float32)
        return sp.csr_matrix((data, (c, p)), shape=self.shape)

    def first_ts_of(self, creator: np.ndarray, product: np.ndarray) -> np.ndarray:
        """(n,) first-seen times of the given pairs; every pair must be one of these."""
        if self.first_ts is None:
            raise ValueError("these interactions have no times")
        if self._by_key is None:
            key = self.creator * len(self.products) + self.product
            order = np.argsort(key, kind="stable")
            self._by_key = key[order], self.first_ts[order]
        keys, ts = self._by_key
        want = np.asarray(creator, np.int64) * len(self.products) + np.asarray(product, np.int64)
        at = np.minimum(np.searchsorted(keys, want), max(len(keys) - 1, 0))
        found = keys[at] == want if len(keys) else np.zeros(len(want), bool)
        if not found.all():
            raise KeyError(f"{int((~found).sum())} pair(s) not among the interactions")
        return ts[at]


def _check_id_column(df: pd.DataFrame, column: str, table: str) -> None:
    col = df[column]
    if col.dtype.kind not in "iu":
        bad = col.head(3)
        raise ContractError(
            table,
            f"expected integer IDs, got dtype {col.dtype} (map string IDs with `haowu import`)",
            column=column,
            rows=bad.tolist(),
        )


def _table_ids(data_dir: Path, table: str, column: str) -> np.ndarray:
    if not has_table(data_dir, table) or column not in table_columns(data_dir, table):
        return np.empty(0, dtype=np.int64)
    df = read_table(data_dir, table, columns=[column])
    _check_id_column(df, column, table)
    return df[column].to_numpy(np.int64)


def _ts_ns(col: pd.Series) -> np.ndarray:
    if col.dtype.kind == "M":
        return col.astype("datetime64[ns]").to_numpy().view(np.int64)
    if col.dtype.kind in "iu":
        return col.to_numpy(np.int64)
    raise ContractError("interactions", f"expected a datetime, got dtype {col.dtype}", column="ts")


def load_interactions(data_dir: Path, batch_rows: int = 2_000_000) -> Interactions:
    """Stream `interactions` into unique pairs; the catalog includes the side tables' IDs."""
    data_dir = Path(data_dir)
    columns = table_columns(data_dir, "interactions")
    want = ["creator_id", "product_id"] + (["ts"] if "ts" in columns else [])
    chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = []
    n_rows = 0
    for df in iter_table(data_dir, "interactions", columns=want, batch_rows=batch_rows):
        for column in ("creator_id", "product_id"):
            _check_id_column(df, column, "interactions")
        n_rows += len(df)
        ts = _ts_ns(df["ts"]) if "ts" in df else None
        if ts is not None and df["ts"].isna().any():
            raise ContractError(
                "interactions", "null timestamps", column="ts", total=int(df["ts"].isna().sum())
            )
        c, p, t = unique_pairs(
            df["creator_id"].to_numpy(np.int64), df["product_id"].to_numpy(np.int64), ts
        )
        chunks.append((c, p, t))
    if not chunks:
        raise ContractError("interactions", "the table is empty: nothing to train on")
    c_ids = np.concatenate([c for c, _, _ in chunks])
    p_ids = np.concatenate([p for _, p, _ in chunks])
    ts_all = None if chunks[0][2] is None else np.concatenate([t for _, _, t in chunks])
    del chunks
    creators = IdIndex(
        np.unique(np.concatenate([c_ids, _table_ids(data_dir, "creators", "creator_id")]))
    )
    products = IdIndex(
        np.unique(np.concatenate([p_ids, _table_ids(data_dir, "products", "product_id")]))
    )
    c_pos, p_pos = creators.positions(c_ids), products.positions(p_ids)
    del c_ids, p_ids
    c_pos, p_pos, ts_all = unique_pairs(c_pos, p_pos, ts_all)
    log.info(
        "interactions: %d rows -> %d unique pairs; %d creators, %d products in the catalog",
        n_rows,
        len(c_pos),
        len(creators),
        len(products),
    )
    return Interactions(creators, products, c_pos, p_pos, ts_all, n_rows=n_rows)


def unique_pairs(
    c: np.ndarray, p: np.ndarray, ts: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Deduplicate pairs, keeping the earliest time of each; sorted by (creator, product)."""
    order = np.lexsort((ts, p, c)) if ts is not None else np.lexsort((p, c))
    c, p = c[order], p[order]
    first = np.ones(len(c), dtype=bool)
    first[1:] = (c[1:] != c[:-1]) | (p[1:] != p[:-1])
    return c[first], p[first], (ts[order][first] if ts is not None else None)


# --- side tables ---------------------------------------------------------------------------


def _aligned(df: pd.DataFrame, key: str, index: IdIndex) -> pd.DataFrame:
    """Rows of `df` placed at their key's position; positions without a row are NaN."""
    df = df.drop_duplicates(key)
    pos = index.positions(df[key].to_numpy(np.int64), strict=False)
    df = df.loc[pos >= 0].drop(columns=[key])
    df.index = pos[pos >= 0]
    return df.reindex(np.arange(len(index)))


def _read_optional(data_dir: Path, table: str, key: str) -> pd.DataFrame | None:
    if not has_table(data_dir, table):
        return None
    df = read_table(data_dir, table)
    if key not in df.columns:
        return None
    _check_id_column(df, key, table)
    return df


def creator_frame(data_dir: Path, creators: IdIndex) -> pd.DataFrame:
    """Creator side features, one row per creator position (empty columns when absent)."""
    df = _read_optional(Path(data_dir), "creators", "creator_id")
    if df is None:
        return pd.DataFrame(index=np.arange(len(creators)))
    return _aligned(df, "creator_id", creators)


def product_frame(
    data_dir: Path, products: IdIndex, tiers: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Product side features (products + merchants + product_stats + tiers), by position."""
    data_dir = Path(data_dir)
    merchants = table_columns(data_dir, "merchants") if has_table(data_dir, "merchants") else []
    # every merchant column but its age is a product feature
    facts = product_facts(data_dir, None, [c for c in merchants if c != "account_age_days"])
    if facts is None:
        frame = pd.DataFrame(index=np.arange(len(products)))
    else:
        _check_id_column(facts, "product_id", "products")
        frame = _aligned(facts, "product_id", products)
    stats = _read_optional(data_dir, "product_stats", "product_id")
    if stats is not None:
        stats = _aligned(stats, "product_id", products)
        frame = frame.join(stats[[c for c in stats.columns if c not in frame.columns]])
    if tiers is not None and "product_id" in tiers.columns:
        keep = [c for c in ("product_id", "tier", "score") if c in tiers.columns]
        t = _aligned(tiers[keep].rename(columns={"score": "tier_score"}), "product_id", products)
        frame = frame.drop(columns=[c for c in t.columns if c in frame.columns]).join(t)
    return frame
