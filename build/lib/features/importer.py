"""`haowu import`: any implicit-feedback data (CSV/TSV/Parquet + a column mapping) into
the contract's tables (DESIGN §3, §6).

What it does, in order:
- reads the interactions file and, optionally, a creators and a products side file;
- maps the user's creator and product IDs (ints or strings) to dense int64 IDs with an
  `IdMap` over the union of all files, kept in `OUT/id_maps/{creator,product}.parquet`;
  products (creators) of a side file with no interactions are kept: they are the
  cold-start goods;
- timestamps: numbers count `ts_unit`s since 1970-01-01, text is parsed as a date/time;
  without a ts column every event gets 1970-01-01, so repeated (creator, product) pairs
  collapse into one row;
- aggregates duplicate (creator, product, ts) events: `orders` = number of events,
  `gmv` = sum of the weight column (0.0 without one); `min_weight` first keeps only
  events with weight >= it (e.g. ratings >= 4 as positives);
- side-file columns named like a contract column are carried in the contract's type;
  string categories (category_l1..l3, region, category_pref, merchant_id) become int
  codes with their maps in `OUT/id_maps/<table>.<column>.parquet` (creators'
  category_pref and products' category_l3 share one map: both are leaf categories);
- writes everything through `atomic_output_dir`, so a failed import leaves nothing,
  and checks the result with `validate_dir` before it is moved into place.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, model_validator

from features.columns import id_column, numeric_column, offending_rows, ts_column, unify_id_types
from features.errors import ConfigError
from features.idmap import IdMap, id_map_path
from features.import_files import Source, read_source
from features.io import atomic_output_dir, ensure_empty_output, write_json, write_table
from features.side_tables import SideTable, check_side, encode_categories, entity_table, read_side
from features.validate import validate_dir

log = logging.getLogger(__name__)

FIXED_TS_TEXT = "1970-01-01T00:00:00"
FIXED_TS = np.datetime64(FIXED_TS_TEXT, "ns")
ENTITY = {"creators": "creator", "products": "product"}


class ImportOptions(BaseModel):
    """The arguments of `haowu import`; one field per flag."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    interactions: Path = Field(description="CSV/TSV/text (.gz ok) or Parquet file or folder")
    creator_col: str = Field(description="column of the creator (user) ID")
    product_col: str = Field(description="column of the product (item) ID")
    out: Path = Field(description="output folder of contract tables")
    ts_col: str | None = Field(None, description="event time; none: all at 1970-01-01")
    weight_col: str | None = Field(None, description="event value, summed into gmv")
    min_weight: float | None = Field(None, description="keep only events with weight >= this")
    ts_unit: Literal["s", "ms", "us", "ns"] = Field("s", description="unit of numeric times")
    sep: str | None = Field(None, description="delimiter of text files (default by suffix)")
    header: bool = Field(True, description="text files have a header row (else f0, f1, ...)")
    creators: Path | None = Field(None, description="side file of creators")
    creator_id_col: str | None = Field(None, description="its ID column (default creator_col)")
    products: Path | None = Field(None, description="side file of products")
    product_id_col: str | None = Field(None, description="its ID column (default product_col)")
    overwrite: bool = Field(False, description="replace a non-empty output folder")

    @model_validator(mode="after")
    def _consistent(self) -> ImportOptions:
        mapped = [
            c for c in (self.creator_col, self.product_col, self.ts_col, self.weight_col) if c
        ]
        if len(set(mapped)) != len(mapped):
            raise ConfigError(f"each column may be mapped once, got {mapped}")
        if self.min_weight is not None and self.weight_col is None:
            raise ConfigError("--min-weight needs --weight-col")
        if self.creator_id_col and self.creators is None:
            raise ConfigError("--creator-id-col needs --creators FILE")
        if self.product_id_col and self.products is None:
            raise ConfigError("--product-id-col needs --products FILE")
        if self.sep == "":
            raise ConfigError("--sep must not be empty")
        return self

    def source(self, role: str, path: Path) -> Source:
        return Source(role, Path(path), self.sep, self.header)

    def side_files(self) -> list[tuple[Source, str]]:
        """(source, ID column) of each side file given; the ID column defaults to the
        interactions' column of the same entity."""
        files = [
            ("creators", self.creators, self.creator_id_col or self.creator_col),
            ("products", self.products, self.product_id_col or self.product_col),
        ]
        return [(self.source(role, path), col) for role, path, col in files if path is not None]


@dataclass
class Events:
    """Interaction events after reading, checking and the min-weight filter."""

    src: Source
    creator: pa.Array
    product: pa.Array
    ts: np.ndarray
    gmv: np.ndarray
    raw_rows: int
    rows: np.ndarray  # row number in the file of each kept event, for error messages


# ----- reading --------------------------------------------------------------------------
def _kept(weight: np.ndarray, opts: ImportOptions, src: Source) -> np.ndarray:
    """Events at or above `min_weight`; their weights must be >= 0 (negative ones below
    the threshold, e.g. -1 for a dislike, are simply dropped)."""
    keep = np.ones(len(weight), dtype=bool)
    if opts.min_weight is not None:
        keep = weight >= opts.min_weight
        if not keep.any():
            raise src.error(
                f"no events left after --min-weight {opts.min_weight}", column=opts.weight_col
            )
    negative = keep & (weight < 0)
    if negative.any():
        raise src.error(
            "weight must be >= 0 (use --min-weight to drop negative events)",
            column=opts.weight_col,
            rows=offending_rows(weight, negative, opts.weight_col or "weight"),
            total=int(negative.sum()),
        )
    return keep


def _read_events(opts: ImportOptions) -> Events:
    src = opts.source("interactions", opts.interactions)
    columns = [c for c in (opts.creator_col, opts.product_col, opts.ts_col, opts.weight_col) if c]
    table = read_source(src, columns, string_columns=(opts.creator_col, opts.product_col))
    creator = id_column(table, src, opts.creator_col)
    product = id_column(table, src, opts.product_col)
    n = table.num_rows
    if opts.ts_col:
        ts = ts_column(table, src, opts.ts_col, opts.ts_unit)
    else:
        log.info("no ts column: every event is stamped %s", FIXED_TS_TEXT)
        ts = np.full(n, FIXED_TS)
    weight = numeric_column(table, src, opts.weight_col, "weight") if opts.weight_col else None
    keep = _kept(weight, opts, src) if weight is not None else np.ones(n, dtype=bool)
    rows = np.flatnonzero(keep)
    mask = pa.array(keep)
    return Events(
        src=src,
        creator=creator.filter(mask),
        product=product.filter(mask),
        ts=ts[keep],
        gmv=weight[keep] if weight is not None else np.zeros(len(rows)),
        raw_rows=n,
        rows=rows,
    )


# ----- mapping --------------------------------------------------------------------------
def _map_entity(
    name: str, column: str, events: Events, ids: pa.Array, side: SideTable | None
) -> tuple[IdMap, np.ndarray, np.ndarray | None]:
    """Fit the entity's map: over the interactions' IDs, or over the side file's when
    there is one (every interaction ID must then be in it, so that is the union)."""
    if side is None:
        idmap = IdMap.fit(ids, name)
        return idmap, idmap.to_internal(ids), None
    ids, side_ids = unify_id_types([ids, side.ids])
    idmap = IdMap.fit(side_ids, name)
    internal = idmap.to_internal(ids, missing="minus_one")
    unknown = internal < 0
    if unknown.any():
        examples = offending_rows(ids, unknown, column)
        for example in examples:  # back to the row numbers of the file
            example["row"] = int(events.rows[example["row"]])
        raise events.src.error(
            f"{name} ID(s) not in the {side.src.role} file {side.src.path}",
            column=column,
            rows=examples,
            total=int(unknown.sum()),
        )
    return idmap, internal, idmap.to_internal(side_ids)


# ----- building tables ------------------------------------------------------------------
def _aggregate(creator: np.ndarray, product: np.ndarray, events: Events) -> pd.DataFrame:
    """One row per (creator, product, ts): orders = events, gmv = summed weight."""
    table = pa.table(
        {
            "creator_id": creator,
            "product_id": product,
            "ts": events.ts.view(np.int64),
            "gmv": events.gmv.astype(np.float64),
        }
    )
    # Single-threaded: groups come out in order of first appearance and float sums add up
    # in file order, so the same input always gives the same output (sorting ~10M rows
    # on 2 cores would cost more than the whole aggregation).
    agg = table.group_by(["creator_id", "product_id", "ts"], use_threads=False).aggregate(
        [("gmv", "sum"), ("gmv", "count")]
    )
    return pd.DataFrame(
        {
            "creator_id": agg["creator_id"].to_numpy(),
            "product_id": agg["product_id"].to_numpy(),
            "ts": agg["ts"].to_numpy().view("datetime64[ns]"),
            "orders": agg["gmv_count"].to_numpy().astype(np.int64),
            "gmv": agg["gmv_sum"].to_numpy().astype(np.float64),
        }
    )


def _summary(
    opts: ImportOptions,
    events: Events,
    interactions: pd.DataFrame,
    maps: dict[str, IdMap],
    sides: dict[str, SideTable],
) -> dict[str, Any]:
    n_products, n_creators = len(maps["product"]), len(maps["creator"])
    return {
        "imported_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "sources": {
            "interactions": str(opts.interactions.resolve()),
            **{role: str(side.src.path.resolve()) for role, side in sides.items()},
        },
        "columns": {
            "creator_id": opts.creator_col,
            "product_id": opts.product_col,
            "ts": opts.ts_col,
            "gmv": opts.weight_col,
            **{f"{role}.{ENTITY[role]}_id": side.id_col for role, side in sides.items()},
        },
        "options": {
            "ts_unit": opts.ts_unit,
            "min_weight": opts.min_weight,
            "sep": opts.sep,
            "header": opts.header,
            "fixed_ts": None if opts.ts_col else FIXED_TS_TEXT,
        },
        "side_columns": {
            role: {"carried": sorted(side.values), "dropped": side.dropped}
            for role, side in sides.items()
        },
        "id_maps": sorted(maps),
        "id_types": {"creator": maps["creator"].kind, "product": maps["product"].kind},
        "counts": {
            "raw_events": events.raw_rows,
            "kept_events": len(events.rows),
            "dropped_by_min_weight": events.raw_rows - len(events.rows),
            "interactions": len(interactions),
            "merged_duplicate_events": len(events.rows) - len(interactions),
            "creators": n_creators,
            "products": n_products,
            "cold_creators": n_creators - int(interactions["creator_id"].nunique()),
            "cold_products": n_products - int(interactions["product_id"].nunique()),
        },
    }


def import_interactions(opts: ImportOptions) -> dict[str, Any]:
    """Run `haowu import`; returns the summary also written to `OUT/_import.json`."""
    ensure_empty_output(opts.out, opts.overwrite)  # fail before a long read, not after
    events = _read_events(opts)
    sides = {src.role: read_side(src, id_col, opts.ts_unit) for src, id_col in opts.side_files()}
    creator_map, creator_ids, side_creators = _map_entity(
        "creator", opts.creator_col, events, events.creator, sides.get("creators")
    )
    product_map, product_ids, side_products = _map_entity(
        "product", opts.product_col, events, events.product, sides.get("products")
    )
    maps = {"creator": creator_map, "product": product_map, **encode_categories(sides)}
    for side in sides.values():
        check_side(side)
    tables = {
        "interactions": _aggregate(creator_ids, product_ids, events),
        "creators": entity_table(
            "creators", len(creator_map), sides.get("creators"), side_creators
        ),
        "products": entity_table(
            "products", len(product_map), sides.get("products"), side_products
        ),
    }
    summary = _summary(opts, events, tables["interactions"], maps, sides)
    with atomic_output_dir(opts.out, opts.overwrite) as staging:
        for name, frame in tables.items():
            write_table(frame, staging, name)
        for name, idmap in maps.items():
            idmap.save(id_map_path(staging, name))
        write_json(summary, staging / "_import.json")
        validate_dir(staging)  # the contract's last word before the folder appears
    log.info(
        "imported %s events -> %s interactions, %d creators, %d products into %s",
        f"{events.raw_rows:,}",
        f"{len(tables['interactions']):,}",
        len(creator_map),
        len(product_map),
        opts.out,
    )
    return summary
