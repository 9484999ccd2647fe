"""Feature encoders the towers consume: IDs, categorical and numeric side features.

Every encoder is fitted on training rows only and round-trips through a plain dict
(saved as JSON beside the weights), so serving encodes exactly as training did.

- IDs: positions seen at least `min_count` times in training get rows 1..n of the ID
  table; everything else (cold goods, new creators) shares row 0, the OOV bucket.
- Categorical: each distinct value gets 1..n; missing and unseen values get 0.
- Numeric: log1p for non-negative heavy-tailed columns, then standardised with the
  training mean/std; missing values become 0 (the mean) and values are clipped to +-5.
- `price_band` for products is derived from price by training-set quintiles.

Everything but the IDs is optional: a column absent from the data is simply skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

CLIP = 5.0
DERIVED_BANDS = {"price_band": ("price", 5)}


@dataclass
class IdEncoder:
    """Position -> ID-embedding row (0 = OOV)."""

    rows: np.ndarray  # (n_positions,) int64

    @classmethod
    def fit(cls, n_positions: int, train_positions: np.ndarray, min_count: int = 1) -> IdEncoder:
        counts = np.bincount(train_positions, minlength=n_positions)
        known = counts >= min_count
        rows = np.zeros(n_positions, dtype=np.int64)
        rows[known] = np.arange(1, int(known.sum()) + 1)
        return cls(rows)

    @property
    def vocab_size(self) -> int:
        return int(self.rows.max(initial=0)) + 1

    def to_dict(self) -> dict[str, Any]:
        known = np.flatnonzero(self.rows)
        out: dict[str, Any] = {"known": known.tolist(), "n": len(self.rows)}
        if not np.array_equal(self.rows[known], np.arange(1, len(known) + 1)):
            # rows not in position order (a warm start appends new IDs' rows at the end)
            out["rows"] = self.rows[known].tolist()
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> IdEncoder:
        rows = np.zeros(d["n"], dtype=np.int64)
        known = np.asarray(d["known"], dtype=np.int64)
        rows[known] = (
            np.asarray(d["rows"], np.int64) if "rows" in d else np.arange(1, len(known) + 1)
        )
        return cls(rows)


def _as_key(values: pd.Series) -> pd.Series:
    """One comparable type per column: numbers and bools as float, anything else as str."""
    if values.dtype.kind in "biuf" or str(values.dtype) in ("boolean", "Int64"):
        return values.astype("float64")
    return values.astype("string")


@dataclass
class CategoricalEncoder:
    vocab: list[Any]

    @classmethod
    def fit(cls, values: pd.Series) -> CategoricalEncoder:
        keys = _as_key(values).dropna().unique()
        return cls(sorted(keys.tolist()))

    @property
    def cardinality(self) -> int:
        return len(self.vocab) + 1

    def transform(self, values: pd.Series) -> np.ndarray:
        index = pd.Index(self.vocab)
        keys = _as_key(values)
        if len(self.vocab) and isinstance(self.vocab[0], str):
            keys = keys.astype("string")
        return (index.get_indexer(keys) + 1).astype(np.int64)  # -1 (unseen) -> 0


@dataclass
class NumericEncoder:
    log: bool
    mean: float
    std: float

    @classmethod
    def fit(cls, values: pd.Series) -> NumericEncoder:
        x = pd.to_numeric(values, errors="coerce").astype("float64").to_numpy()
        x = x[np.isfinite(x)]
        if len(x) == 0:
            return cls(False, 0.0, 1.0)
        log = bool(x.min() >= 0 and x.max() > 10 * max(np.median(x), 1e-9) and x.max() > 10)
        if log:
            x = np.log1p(x)
        std = float(x.std())
        return cls(log, float(x.mean()), std if std > 1e-9 else 1.0)

    def transform(self, values: pd.Series) -> np.ndarray:
        x = pd.to_numeric(values, errors="coerce").astype("float64").to_numpy(na_value=np.nan)
        if self.log:
            x = np.log1p(np.clip(x, 0, None))
        z = (x - self.mean) / self.std
        z = np.where(np.isfinite(z), z, 0.0)  # missing -> the training mean
        return np.clip(z, -CLIP, CLIP).astype(np.float32)


@dataclass
class QuantileBands:
    """A categorical band derived from a numeric column by training-set quantiles."""

    source: str
    edges: list[float]

    @classmethod
    def fit(cls, source: str, values: pd.Series, bands: int) -> QuantileBands:
        x = pd.to_numeric(values, errors="coerce").dropna().to_numpy(np.float64)
        qs = np.quantile(x, np.linspace(0, 1, bands + 1)[1:-1]) if len(x) else []
        return cls(source, sorted(set(float(q) for q in qs)))

    def transform(self, frame: pd.DataFrame) -> pd.Series:
        x = pd.to_numeric(frame[self.source], errors="coerce").to_numpy(np.float64)
        band = np.searchsorted(np.asarray(self.edges), x, side="right").astype("float64")
        return pd.Series(np.where(np.isnan(x), np.nan, band), index=frame.index)


@dataclass
class SideFeatures:
    """Encoded side features of one tower, by position."""

    categorical: np.ndarray  # (n, n_categorical) int64, 0 = missing/OOV
    numeric: np.ndarray  # (n, n_numeric) float32


@dataclass
class SideEncoder:
    """The side features of one tower: which columns, and how each is encoded."""

    categorical: dict[str, CategoricalEncoder]
    numeric: dict[str, NumericEncoder]
    bands: dict[str, QuantileBands]

    @classmethod
    def fit(
        cls,
        frame: pd.DataFrame,
        train_rows: np.ndarray,
        categorical: list[str],
        numeric: list[str],
    ) -> SideEncoder:
        """Fit on `frame.iloc[train_rows]`; columns absent (or all missing) are skipped."""
        train = frame.iloc[train_rows] if len(train_rows) else frame
        bands: dict[str, QuantileBands] = {}
        for name in categorical:
            source = DERIVED_BANDS.get(name)
            if name not in frame.columns and source and source[0] in frame.columns:
                bands[name] = QuantileBands.fit(source[0], train[source[0]], source[1])
        derived = {name: b.transform(train) for name, b in bands.items()}
        cats = {}
        for name in categorical:
            col = derived.get(name, train[name] if name in train.columns else None)
            if col is not None and col.notna().any():
                cats[name] = CategoricalEncoder.fit(col)
        nums = {
            name: NumericEncoder.fit(train[name])
            for name in numeric
            if name in train.columns and pd.to_numeric(train[name], errors="coerce").notna().any()
        }
        return cls(cats, nums, {k: v for k, v in bands.items() if k in cats})

    @property
    def cardinalities(self) -> list[int]:
        return [enc.cardinality for enc in self.categorical.values()]

    def transform(self, frame: pd.DataFrame) -> SideFeatures:
        n = len(frame)
        cat = np.zeros((n, len(self.categorical)), dtype=np.int64)
        for j, (name, enc) in enumerate(self.categorical.items()):
            if name in self.bands and self.bands[name].source in frame.columns:
                cat[:, j] = enc.transform(self.bands[name].transform(frame))
            elif name in frame.columns:
                cat[:, j] = enc.transform(frame[name])
        num = np.zeros((n, len(self.numeric)), dtype=np.float32)
        for j, (name, enc) in enumerate(self.numeric.items()):
            if name in frame.columns:
                num[:, j] = enc.transform(frame[name])
        return SideFeatures(cat, num)

    def to_dict(self) -> dict[str, Any]:
        return {
            "categorical": {k: v.vocab for k, v in self.categorical.items()},
            "numeric": {k: [v.log, v.mean, v.std] for k, v in self.numeric.items()},
            "bands": {k: [v.source, v.edges] for k, v in self.bands.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SideEncoder:
        return cls(
            {k: CategoricalEncoder(list(v)) for k, v in d["categorical"].items()},
            {
                k: NumericEncoder(bool(v[0]), float(v[1]), float(v[2]))
                for k, v in d["numeric"].items()
            },
            {k: QuantileBands(v[0], list(v[1])) for k, v in d["bands"].items()},
        )


@dataclass
class TowerEncoders:
    """Both towers' encoders: what is saved as `encoders.json` beside the weights."""

    creator_ids: IdEncoder
    product_ids: IdEncoder
    creator_side: SideEncoder
    product_side: SideEncoder

    def to_dict(self) -> dict[str, Any]:
        return {
            "creator_ids": self.creator_ids.to_dict(),
            "product_ids": self.product_ids.to_dict(),
            "creator_side": self.creator_side.to_dict(),
            "product_side": self.product_side.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TowerEncoders:
        return cls(
            IdEncoder.from_dict(d["creator_ids"]),
            IdEncoder.from_dict(d["product_ids"]),
            SideEncoder.from_dict(d["creator_side"]),
            SideEncoder.from_dict(d["product_side"]),
        )
