"""`haowu bench tier`: how fast the tier model scores and explains products.

Synthetic indicator rows are generated in-process, chunk by chunk (never all at once),
and pushed through exactly what `train-tier` does per chunk (`tier_table`: score, tier,
rules, five dimension contributions, top indicators) and, unless told not to, into a
Parquet file. Generation time is measured apart and left out of the scoring rate.
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.contract import INDICATORS
from features.indicators import HISTORY
from features.settings import TierBenchParams, TierConfig
from models.artifacts import TIERS
from models.tier.cuts import N_TIERS
from models.tier.model import TierModel
from models.tier.table import tier_schema, tier_table

FULL_CATALOGUE = 10_000_000  # products of the `full` preset (DESIGN §5): the speed target


def synthetic_indicators(
    rows: int, start_id: int, p: TierBenchParams, rng: np.random.Generator
) -> pd.DataFrame:
    """Oriented indicators (standard normal, the binary one 0/1) with random gaps and a
    share of rows without any sales history."""
    values = rng.standard_normal((rows, len(INDICATORS)))
    frame = pd.DataFrame(values, columns=list(INDICATORS))
    frame["is_official_brand"] = (frame["is_official_brand"] > 0).astype(np.float64)
    history = list(HISTORY)
    gaps = rng.random((rows, len(history))) < p.missing_share
    no_history = rng.random(rows) < p.no_history_share
    frame[history] = frame[history].mask(gaps | no_history[:, None])
    frame.insert(0, "product_id", np.arange(start_id, start_id + rows, dtype=np.int64))
    frame["flagged_low_quality"] = False
    frame["has_sales_history"] = frame[history].notna().any(axis=1)
    return frame


def stand_in_model(cfg: TierConfig) -> TierModel:
    """A tier model fitted on synthetic rows whose label rises with every indicator, so
    it has a realistic number of trees without any data on disk."""
    p = cfg.bench
    rng = np.random.default_rng(p.seed)
    frame = synthetic_indicators(p.fit_rows, 0, p, rng)
    signal = frame[list(INDICATORS)].fillna(0.0).sum(axis=1).to_numpy()
    signal = signal + rng.standard_normal(len(frame))
    labels = np.searchsorted(np.quantile(signal, np.linspace(0, 1, N_TIERS + 1)[1:-1]), signal)
    n_valid = int(cfg.valid_fraction * len(frame))
    model = TierModel(cfg.model)
    return model.fit(
        frame[n_valid:], labels[n_valid:], frame[:n_valid], labels[:n_valid], seed=p.seed
    )


def peak_rss_mib() -> float:
    """Peak resident memory of this process (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def bench_tier(
    cfg: TierConfig, rows: int, model_dir: Path | None = None, write: bool = True
) -> dict[str, float | str]:
    p = cfg.bench
    start = time.perf_counter()
    model = TierModel.load(model_dir) if model_dir else stand_in_model(cfg)
    model.compiled  # noqa: B018 -- build the explanation tables before the clock starts
    prepare = time.perf_counter() - start
    rng = np.random.default_rng(p.seed + 1)
    generate = score = 0.0
    with tempfile.TemporaryDirectory(prefix="haowu-bench-tier-") as folder:
        writer = pq.ParquetWriter(Path(folder) / TIERS, tier_schema()) if write else None
        for lo in range(0, rows, p.chunk_rows):
            t0 = time.perf_counter()
            chunk = synthetic_indicators(min(p.chunk_rows, rows - lo), lo, p, rng)
            t1 = time.perf_counter()
            table = tier_table(model, chunk)
            if writer is not None:
                writer.write_table(
                    pa.Table.from_pandas(table, schema=tier_schema(), preserve_index=False)
                )
            t2 = time.perf_counter()
            generate += t1 - t0
            score += t2 - t1
        if writer is not None:
            writer.close()
    return {
        "rows": float(rows),
        "model": str(model_dir) if model_dir else "stand-in (synthetic labels)",
        "ordinal": model.params.ordinal,
        "trees": float(model.num_trees),
        "explained_by": (
            "dimension lookup tables"
            if all(c.tables is not None for c in model.compiled)
            else "leaves"
        ),
        "model_seconds": round(prepare, 2),
        "generate_seconds": round(generate, 2),
        "score_seconds": round(score, 2),
        "rows_per_second": round(rows / score) if score else 0.0,
        "seconds_per_10M_rows": round(score * FULL_CATALOGUE / rows, 1),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "wrote_parquet": str(write),
    }
