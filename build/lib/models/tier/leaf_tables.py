"""A dimension-separable booster compiled into one lookup table per dimension.

When every tree splits on the indicators of one dimension only, the score is
`bias + sum_d g_d(x_d)`, and each g_d is constant on the cells of the grid spanned by the
thresholds its trees split on, plus one "missing" cell per indicator. Each leaf reaches a
box of cells, so the per-indicator path credits of a dimension are the sum over its
leaves of `credit * indicator(box)`, built with a difference array (a +-credit at the 2^k
corners of each box, then a cumulative sum along each axis) without evaluating a single
tree. Scoring is one `searchsorted` per indicator and one gather per dimension,
independent of the number of trees.

LightGBM sends a value left when `value <= threshold`, so with sorted thresholds t, cell i
of an axis holds the values in (t[i-1], t[i]], cell len(t) the values above t[-1] and cell
len(t) + 1 the missing values.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import lightgbm as lgb
import numpy as np

from models.tier.explain import Leaf, LeafAttribution

# LightGBM reads any input with |value| <= kZeroThreshold (1e-35f) as exactly 0.0
ZERO_THRESHOLD = float(np.float32(1e-35))


@dataclass(frozen=True)
class _Table:
    features: np.ndarray  # (k,) feature positions of the dimension
    thresholds: list[np.ndarray]  # per feature, sorted
    strides: np.ndarray  # (k,) flat cell = sum(cell_j * stride_j)
    values: np.ndarray  # (cells, k) per-indicator contributions


def _ranges(bounds: tuple[float, float, bool], cuts: np.ndarray) -> list[tuple[int, int]]:
    """The half-open cell ranges of one axis that a leaf's (low, high, missing_ok) covers."""
    low, high, missing_ok = bounds
    first = 0 if low == -np.inf else int(np.searchsorted(cuts, low, side="left")) + 1
    last = len(cuts) if high == np.inf else int(np.searchsorted(cuts, high, side="left"))
    out = [(first, last + 1)] if first <= last else []
    if missing_ok:
        out.append((len(cuts) + 1, len(cuts) + 2))
    return out


def _table(trees: list[list[Leaf]], features: np.ndarray) -> _Table:
    thresholds = []
    for feature in features:
        seen = {b for leaves in trees for leaf in leaves for b in leaf.region.get(feature, ())[:2]}
        thresholds.append(np.asarray(sorted(v for v in seen if np.isfinite(v)), dtype=np.float64))
    sizes = [len(t) + 2 for t in thresholds]
    k = len(features)
    diff = np.zeros([s + 1 for s in sizes] + [k])  # difference array, one slot past each axis
    everything = (-np.inf, np.inf, True)
    for leaves in trees:
        for leaf in leaves:
            credit = np.asarray([leaf.credit.get(int(f), 0.0) for f in features])
            if not credit.any():
                continue
            axes = [
                _ranges(leaf.region.get(int(f), everything), thresholds[j])
                for j, f in enumerate(features)
            ]
            for box in itertools.product(*axes):  # <= 2^k boxes (a range, plus the missing cell)
                for corner in itertools.product((0, 1), repeat=k):
                    at = tuple(box[j][c] for j, c in enumerate(corner))
                    diff[at] += credit * (-1) ** sum(corner)
    for axis in range(k):
        np.cumsum(diff, axis=axis, out=diff)
    values = diff[tuple(slice(0, s) for s in sizes)]  # (*sizes, k)
    # flat cell index with the first feature varying fastest
    strides = np.cumprod([1, *sizes[:-1]]).astype(np.int64)
    flat = values.transpose(*reversed(range(k)), k).reshape(-1, k)
    return _Table(features, thresholds, strides, np.ascontiguousarray(flat))


class DimensionTables:
    """`contributions(x)` -> (rows, features), equal to `LeafAttribution` on the booster."""

    def __init__(self, tables: list[_Table], n_features: int) -> None:
        self.tables = tables
        self.n_features = n_features

    @classmethod
    def build(
        cls, attribution: LeafAttribution, groups: Sequence[Sequence[int]], max_cells: int
    ) -> DimensionTables | None:
        """Compile; None when some tree splits across groups or a grid would exceed
        `max_cells` (the caller then explains through the leaves)."""
        group_of = {f: g for g, members in enumerate(groups) for f in members}
        by_group: list[list[list[Leaf]]] = [[] for _ in groups]
        for leaves in attribution.trees:
            used = {group_of.get(f, -1) for leaf in leaves for f in leaf.region}
            if len(used) > 1 or -1 in used:
                return None
            if used:
                by_group[used.pop()].append(leaves)
        tables = []
        for members, trees in zip(groups, by_group, strict=True):
            features = np.asarray(members, dtype=np.int64)
            cells = 1
            for feature in features:
                splits = {
                    leaf.region[feature][:2] for t in trees for leaf in t if feature in leaf.region
                }
                cells *= len({v for pair in splits for v in pair if np.isfinite(v)}) + 2
            if cells > max_cells:
                return None
            tables.append(_table(trees, features))
        return cls(tables, attribution.n_features)

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """(rows, features) float64 -> (rows, features) per-indicator contributions."""
        out = np.zeros((len(x), self.n_features))
        for table in self.tables:
            cell = np.zeros(len(x), dtype=np.int64)
            for j, feature in enumerate(table.features):
                column = x[:, feature]
                column = np.where(np.abs(column) <= ZERO_THRESHOLD, 0.0, column)
                cuts = table.thresholds[j]
                bins = np.searchsorted(cuts, column, side="left")  # cell of (t[i-1], t[i]]
                bins[np.isnan(column)] = len(cuts) + 1  # the missing cell
                cell += bins * table.strides[j]
            out[:, table.features] = table.values[cell]
        return out


class CompiledBooster:
    """A booster with what explains it: per-leaf path credits, and the lookup tables when
    its trees never cross `groups` (else contributions come through `pred_leaf`)."""

    def __init__(
        self,
        booster: lgb.Booster,
        groups: Sequence[Sequence[int]],
        max_cells: int,
        block_rows: int,
        threads: int,
    ) -> None:
        self.booster = booster
        self.attribution = LeafAttribution(booster)
        self.tables = DimensionTables.build(self.attribution, groups, max_cells)
        self.block_rows, self.threads = block_rows, threads

    @property
    def bias(self) -> float:
        return self.attribution.bias

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """(rows, features): bias + the row sum is the booster's raw score."""
        if self.tables is not None:
            return self.tables.contributions(x)
        leaves = self.booster.predict(x, pred_leaf=True, num_threads=self.threads)
        return self.attribution.from_leaves(np.asarray(leaves, dtype=np.int32), self.block_rows)
