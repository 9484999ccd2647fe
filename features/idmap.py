"""Maps between a user's own IDs (ints or strings) and haowu's dense int64 IDs.

`haowu import` maps every creator and product ID to 0..n-1 (sorted order of the user's
IDs, so the same input always gives the same map) and keeps the map under
`DATA_DIR/id_maps/`. Later jobs (batch lists, the HTTP service) map back with
`to_external`, which is a plain numpy take because internal IDs are 0..n-1.

A map file is Parquet with two columns: `internal_id` (int64, 0..n-1 in order) and
`external_id` (int64 or string, the user's ID).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from features.errors import HaowuError

log = logging.getLogger(__name__)

ID_MAPS_DIR = "id_maps"
ENTITY_MAPS = ("creator", "product")
MAX_SHOWN = 5
# Batches at least this long (and at least as long as the map) are looked up with
# pyarrow, which hashes the map afresh but probes millions of values fast; shorter ones
# (the HTTP service's single IDs) use a pandas index built once and kept.
_ARROW_LOOKUP_MIN = 100_000

Kind = Literal["int", "str"]


# One rule for a user's string ID, shared by `haowu import` (which refuses others) and the
# service's URL paths (which accept exactly these): 1..256 characters, none of them
# whitespace, a control character or '/', '?', '#' (which would end a URL path segment).
ID_PATTERN = r"^[^\s/?#\x00-\x1f\x7f]{1,256}$"


class UnknownIdError(HaowuError):
    """IDs that the map does not hold (an external ID never imported, or an internal
    ID outside 0..n-1)."""


def _as_arrow(values: Any) -> pa.Array:
    """Any 1-d array-like (list, numpy, pandas, pyarrow) as one pyarrow Array."""
    if isinstance(values, pa.ChunkedArray):
        return values.combine_chunks()
    if isinstance(values, pa.Array):
        return values
    if isinstance(values, pd.Series | pd.Index):
        return pa.Array.from_pandas(values)
    if isinstance(values, str | bytes | int | np.integer):
        values = [values]
    try:
        return pa.array(values if isinstance(values, list) else np.asarray(values))
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise HaowuError(f"IDs must all be integers or all be strings: {exc}") from None


def _kind_of(arr: pa.Array, name: str) -> Kind:
    kind = arr.type
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if pa.types.is_integer(kind):
        return "int"
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return "str"
    raise HaowuError(f"{name} IDs must be integers or strings, got {arr.type}")


class IdMap:
    """A fitted map: external ID `external[i]` has internal ID `i`."""

    def __init__(self, external: np.ndarray, name: str = "id") -> None:
        self.name = name
        self._external = external
        self.kind: Kind = "int" if external.dtype.kind in "iu" else "str"
        self._index: pd.Index | None = None
        self._arrow: pa.Array | None = None

    # ----- building -------------------------------------------------------------
    @classmethod
    def fit(cls, values: Iterable[Any] | Any, name: str = "id") -> IdMap:
        """Sorted unique external IDs -> 0..n-1. Nulls are refused: an ID must exist."""
        arr = _as_arrow(values)
        if pa.types.is_dictionary(arr.type):
            arr = arr.dictionary_decode()
        kind = _kind_of(arr, name)
        if arr.null_count:
            raise HaowuError(f"{name} IDs contain {arr.null_count} null(s)")
        unique = pc.unique(arr)
        if kind == "str":
            bad = unique.filter(pc.invert(pc.match_substring_regex(unique, ID_PATTERN)))
            if len(bad):
                shown = ", ".join(repr(v) for v in bad.to_pylist()[:3])
                raise HaowuError(
                    f"{len(bad)} {name} ID(s) break the ID rule (1..256 characters, no "
                    f"whitespace, control characters, '/', '?' or '#'), e.g. {shown}"
                )
        unique = unique.take(pc.sort_indices(unique))
        if kind == "int":
            external = unique.cast(pa.int64()).to_numpy()
        else:
            external = unique.to_numpy(zero_copy_only=False).astype(object)
        return cls(external, name)

    # ----- lookups --------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._external)

    def __repr__(self) -> str:
        return f"IdMap({self.name!r}, kind={self.kind}, n={len(self)})"

    @property
    def external_ids(self) -> np.ndarray:
        """The external IDs in internal order (read-only view)."""
        view = self._external.view()
        view.flags.writeable = False
        return view

    def _lookup_index(self) -> pd.Index:
        # Built on first use and kept: the HTTP service looks up one ID at a time.
        if self._index is None:
            self._index = pd.Index(self._external, dtype=object if self.kind == "str" else "int64")
        return self._index

    def _coerce(self, arr: pa.Array) -> pa.Array:
        """Bring lookup values to the map's type; values that cannot be converted
        (e.g. 'abc' against an int map) become null, i.e. unknown."""
        if pa.types.is_dictionary(arr.type):
            arr = arr.dictionary_decode()
        if pa.types.is_null(arr.type):
            return arr.cast(pa.int64() if self.kind == "int" else pa.string())
        if self.kind == "str":
            if pa.types.is_integer(arr.type):
                return pc.cast(arr, pa.string())
            return arr.cast(pa.string()) if pa.types.is_large_string(arr.type) else arr
        if pa.types.is_integer(arr.type):
            return arr.cast(pa.int64())
        if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
            clean = pc.match_substring_regex(arr, r"^-?\d{1,18}$")
            return pc.if_else(clean, arr, pa.scalar(None, arr.type)).cast(pa.int64())
        if pa.types.is_floating(arr.type):
            integral = pc.equal(pc.floor(arr), arr)
            return pc.if_else(integral, arr, pa.scalar(None, arr.type)).cast(pa.int64())
        raise HaowuError(f"cannot look up {arr.type} values in the {self.name} ID map")

    def _positions(self, arr: pa.Array) -> np.ndarray:
        if len(arr) >= max(len(self), _ARROW_LOOKUP_MIN):
            if self._arrow is None:
                self._arrow = self.to_arrow()["external_id"].combine_chunks()
            found = pc.index_in(arr, value_set=self._arrow).fill_null(-1)
            return found.to_numpy(zero_copy_only=False).astype(np.int64)
        values = arr.to_numpy(zero_copy_only=False)
        return self._lookup_index().get_indexer(values).astype(np.int64)

    def to_internal(
        self, external: Iterable[Any] | Any, missing: Literal["raise", "minus_one"] = "raise"
    ) -> np.ndarray:
        """External IDs -> int64 internal IDs. Unknown (or null) IDs raise
        `UnknownIdError` naming a few, or become -1 with `missing="minus_one"`."""
        arr = self._coerce(_as_arrow(external))
        valid = arr.is_valid().to_numpy(zero_copy_only=False)
        out = np.full(len(arr), -1, dtype=np.int64)
        if valid.any():
            out[valid] = self._positions(arr.filter(pa.array(valid)))
        if missing == "raise":
            bad = np.flatnonzero(out < 0)
            if len(bad):
                shown = _as_arrow(external).take(pa.array(bad[:MAX_SHOWN])).to_pylist()
                raise UnknownIdError(
                    f"{len(bad)} unknown {self.name} ID(s), e.g. {shown}; "
                    f"the map holds {len(self)} IDs"
                )
        return out

    def to_external(self, internal: Iterable[int] | Any) -> np.ndarray:
        """Internal IDs (0..n-1) -> the user's IDs (int64 or object array of str)."""
        idx = np.asarray(internal)
        if idx.dtype.kind not in "iu":
            raise HaowuError(f"internal {self.name} IDs must be integers, got {idx.dtype}")
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            bad = idx[(idx < 0) | (idx >= len(self))]
            raise UnknownIdError(
                f"{len(bad)} internal {self.name} ID(s) outside 0..{len(self) - 1}, "
                f"e.g. {bad[:MAX_SHOWN].tolist()}"
            )
        return self._external[idx]

    # ----- persistence ----------------------------------------------------------
    def to_arrow(self) -> pa.Table:
        external = pa.array(self._external, type=pa.int64() if self.kind == "int" else pa.string())
        internal = pa.array(np.arange(len(self), dtype=np.int64))
        return pa.table({"internal_id": internal, "external_id": external})

    def save(self, path: Path | str) -> Path:
        """Write the map as Parquet (temp file + rename, so never half-written)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        pq.write_table(self.to_arrow(), tmp)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: Path | str, name: str | None = None) -> IdMap:
        """Read a map written by `save`; checks it is a dense, one-to-one map."""
        path = Path(path)
        name = name or path.stem
        if not path.is_file():
            raise HaowuError(f"ID map not found: {path}")
        try:
            table = pq.read_table(path, columns=["internal_id", "external_id"])
        except (pa.ArrowInvalid, OSError, KeyError) as exc:
            raise HaowuError(f"unreadable ID map {path}: {exc}") from None
        table = table.sort_by("internal_id")
        internal = table["internal_id"].to_numpy()
        if not np.array_equal(internal, np.arange(len(internal))):
            raise HaowuError(f"ID map {path}: internal_id is not 0..n-1")
        external = table["external_id"].combine_chunks()
        kind = _kind_of(external, name)
        if external.null_count or len(pc.unique(external)) != len(external):
            raise HaowuError(f"ID map {path}: external_id has nulls or duplicates")
        if kind == "int":
            values = external.cast(pa.int64()).to_numpy()
        else:
            values = external.to_numpy(zero_copy_only=False).astype(object)
        return cls(values, name)


def id_map_path(data_dir: Path | str, name: str) -> Path:
    """Where map `name` (`creator`, `product`, or `<table>.<column>`) lives."""
    return Path(data_dir) / ID_MAPS_DIR / f"{name}.parquet"


def load_id_maps(data_dir: Path | str, names: Iterable[str] = ENTITY_MAPS) -> dict[str, IdMap]:
    """The creator/product maps that `haowu import` kept, keyed by name.

    Missing maps are simply absent from the result: generated data has none, and
    its internal IDs already are the user's IDs.
    """
    maps = {}
    for name in names:
        path = id_map_path(data_dir, name)
        if path.is_file():
            maps[name] = IdMap.load(path, name)
            log.info("loaded %s ID map: %d IDs (%s)", name, len(maps[name]), maps[name].kind)
    return maps
