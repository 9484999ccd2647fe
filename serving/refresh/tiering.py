"""New and changed products tiered with the saved tier model (no retraining).

The goods to tier are the delta's products (new or changed), the goods whose stats the
delta changed, and every good of a merchant the delta changed (brand indicators, the
low-quality flag, which forces L0). Their rows of `tier/tiers.parquet` are replaced by
what the pipeline's tier model (`DIR/tier/model`) says now; every other row is kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.indicators import indicators_for, load_lookups
from features.io import read_table
from models.artifacts import TIERS, open_tier_run
from models.tier.model import TierModel
from models.tier.table import tier_schema, tier_table
from serving.refresh.merge import Changes

TIER = "tier"  # DIR/tier, as PipelineLayout names it


@dataclass(frozen=True)
class Retiered:
    """The products tiered again: their tier before (-1: new) and now."""

    product_ids: np.ndarray
    before: np.ndarray
    after: np.ndarray

    def changed(self) -> np.ndarray:
        """Goods that were tiered before and now have another tier."""
        moved = (self.before >= 0) & (self.before != self.after)
        return self.product_ids[moved]

    def counts(self) -> dict[str, int]:
        return {
            "tiered": len(self.product_ids),
            "tier_changed": int(((self.before >= 0) & (self.before != self.after)).sum()),
            "now_l0": int((self.after == 0).sum()),
        }


def goods_to_tier(data_dir: Path, changes: Changes) -> np.ndarray:
    """Product IDs whose tier may have moved (see the module doc)."""
    ids = [changes.of(kind, table) for kind in ("new", "changed")
           for table in ("products", "product_stats")]  # fmt: skip
    merchants = np.union1d(changes.of("new", "merchants"), changes.of("changed", "merchants"))
    if len(merchants):
        products = read_table(data_dir, "products", columns=["product_id", "merchant_id"])
        ids.append(products.loc[products["merchant_id"].isin(merchants), "product_id"].to_numpy())
    return np.unique(np.concatenate(ids).astype(np.int64)) if ids else np.empty(0, np.int64)


def retier(tier_dir: Path, data_dir: Path, product_ids: np.ndarray, out: Path) -> Retiered:
    """Write `out` (the new tiers.parquet): `tier_dir`'s rows with `product_ids` tiered
    again over `data_dir` (the merged data) by `tier_dir`'s saved model."""
    run = open_tier_run(tier_dir)
    base = pd.read_parquet(run.tiers)
    before = base.set_index("product_id")["tier"].reindex(product_ids).fillna(-1)
    fresh = base.iloc[:0]
    if len(product_ids):
        model = TierModel.load(run.model)
        indicators = indicators_for(data_dir, product_ids, load_lookups(data_dir))
        fresh = tier_table(model, indicators)
    kept = base[~base["product_id"].isin(product_ids)]
    schema = tier_schema()
    # one table from both: categoricals of different categories are joined as strings
    frames = [f.astype({c: str for c in f.columns if isinstance(f[c].dtype, pd.CategoricalDtype)})
              for f in (kept, fresh)]  # fmt: skip
    table = pa.Table.from_pandas(
        pd.concat(frames, ignore_index=True), schema=schema, preserve_index=False
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out)
    after = fresh.set_index("product_id")["tier"].reindex(product_ids).fillna(-1)
    return Retiered(product_ids, before.to_numpy(np.int64), after.to_numpy(np.int64))


def stage_tiers(staging_path: Path, tier_dir: Path, data_dir: Path, changes: Changes) -> Retiered:
    """Tier the goods the delta touched into `staging_path/tiers.parquet`."""
    return retier(tier_dir, data_dir, goods_to_tier(data_dir, changes), staging_path / TIERS)
