"""Read a pipeline folder into tables: what the notebooks and the report show.

The notebooks stay short by calling these; everything here reads what the jobs wrote
(DESIGN §6 layout, `training.pipeline.runner.PipelineLayout`) and computes nothing the jobs did not.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from features.indicators import indicators_for, load_lookups
from models.artifacts import METRICS, PRODUCT_INFO, TIERS, PipelineLayout
from models.tier.model import FEATURES, TierModel

RUN_ENV = "HAOWU_RUN"
DEFAULT_RUN = Path("runs") / "demo"
MATCHING_SHOW = (
    "recall@10",
    "recall@50",
    "recall@100",
    "ndcg@10",
    "coverage@50",
    "category_coverage@50",
)


def pipeline_dir(default: Path = DEFAULT_RUN) -> PipelineLayout:
    """The pipeline folder to look at: `$HAOWU_RUN`, else runs/demo (from the repository
    root or from notebooks/)."""
    chosen = os.environ.get(RUN_ENV)
    candidates = [Path(chosen)] if chosen else [default, Path("..") / default]
    for path in candidates:
        if (path / ".steps").is_dir():
            return PipelineLayout(path.resolve())
    raise FileNotFoundError(
        f"no pipeline folder at {', '.join(map(str, candidates))}: run "
        f"`haowu pipeline --preset tiny --out DIR` and set {RUN_ENV}=DIR"
    )


# -- tiers ---------------------------------------------------------------------------


def tier_metrics(layout: PipelineLayout) -> pd.DataFrame:
    """Model vs hand-weighted baseline on the test split, its cold slice and the truth."""
    metrics = json.loads((layout.tier / METRICS).read_text())
    groups = {"test": "", "test, no history": "cold_", "hidden truth": "truth_"}
    rows = {}
    for name in ("qwk", "macro_f1", "accuracy", "l5_precision", "l5_recall"):
        for title, prefix in groups.items():
            if f"{prefix}{name}" in metrics:
                rows[(name, title)] = {
                    "model": metrics[f"{prefix}{name}"],
                    "baseline": metrics.get(f"baseline_{prefix}{name}"),
                }
    table = pd.DataFrame(rows).T
    table.index.names = ["metric", "population"]
    wide = table.unstack("population").swaplevel(axis=1)  # columns: (population, model|baseline)
    order = [(p, m) for p in groups if (p, "model") in wide.columns for m in ("model", "baseline")]
    return wide[order].loc[[m for m in rows_order(rows) if m in wide.index]]


def rows_order(rows: dict[tuple[str, str], object]) -> list[str]:
    return list(dict.fromkeys(metric for metric, _ in rows))


def tier_distribution(layout: PipelineLayout) -> pd.Series:
    """Products per tier over the whole catalog."""
    tiers = pd.read_parquet(layout.tier / TIERS, columns=["tier"])["tier"]
    counts = tiers.value_counts().reindex(range(6), fill_value=0)
    counts.index = [f"L{t}" for t in counts.index]
    return counts.rename("products")


def tier_examples(layout: PipelineLayout, tiers: tuple[int, ...] = (5, 0)) -> pd.DataFrame:
    """One product per tier (the model's most confident: highest score for L5, lowest
    for the others), with its score, reason and top indicators."""
    table = pd.read_parquet(layout.tier / TIERS)
    picked = []
    for tier in tiers:
        candidates = table[table["tier"] == tier]
        model_made = candidates[candidates["reason"] == "model"]
        pool = model_made if len(model_made) else candidates
        if len(pool):
            picked.append(pool.nlargest(1, "score") if tier == 5 else pool.nsmallest(1, "score"))
    return pd.concat(picked).set_index("product_id") if picked else table.head(0)


def explain_products(layout: PipelineLayout, product_ids: list[int]) -> pd.DataFrame:
    """Per-indicator contributions to the tier score (rows: indicator; columns: product),
    with each indicator's raw value: why a product got its tier."""
    model = TierModel.load(layout.tier / "model")
    ids = np.asarray(product_ids, dtype=np.int64)
    indicators = indicators_for(layout.data, ids, load_lookups(layout.data))
    explanation = model.explain(indicators)
    frames = []
    for i, pid in enumerate(ids):
        frames.append(
            pd.DataFrame(
                {
                    "product_id": pid,
                    "indicator": list(FEATURES),
                    "value": indicators.loc[i, list(FEATURES)].to_numpy(np.float64),
                    "contribution": explanation.indicators[i],
                }
            )
        )
    out = pd.concat(frames)
    out["base_score"] = explanation.base
    return out.sort_values(["product_id", "contribution"], ascending=[True, False])


# -- matching ------------------------------------------------------------------------


def matching_table(layout: PipelineLayout, protocol: str = "random") -> pd.DataFrame:
    """Model vs baselines vs oracle (rows) on one protocol's key metrics (columns)."""
    long = pd.read_csv(layout.matching / "metrics.csv")
    part = long[long["protocol"] == protocol]
    wide = part.pivot(index="model", columns="metric", values="value")
    return wide[[c for c in MATCHING_SHOW if c in wide.columns]].sort_values(
        "recall@50", ascending=False
    )


def protocols(layout: PipelineLayout) -> list[str]:
    long = pd.read_csv(layout.matching / "metrics.csv", usecols=["protocol"])
    return list(dict.fromkeys(long["protocol"]))


def embedding_map(layout: PipelineLayout, sample: int = 5000, seed: int = 0) -> pd.DataFrame:
    """Product embeddings projected to 2-D (PCA), with category_l1 and tier."""
    folder = layout.matching / "model"
    vectors = np.load(folder / "product_embeddings.npy")  # (products, dim)
    info = pd.read_parquet(folder / PRODUCT_INFO)
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(vectors), size=min(sample, len(vectors)), replace=False))
    x = vectors[rows] - vectors[rows].mean(axis=0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    xy = x @ vt[:2].T  # (sample, 2)
    out = info.iloc[rows].reset_index(drop=True)
    out["x"], out["y"] = xy[:, 0], xy[:, 1]
    return out


def cold_start_table(layout: PipelineLayout) -> pd.DataFrame:
    """Recall on goods first seen in the test period (cold) against the time split."""
    long = pd.read_csv(layout.matching / "metrics.csv")
    metrics = ["recall@10", "recall@50", "recall@100"]
    part = long[long["protocol"].isin(["time", "cold"]) & long["metric"].isin(metrics)]
    table = part.pivot_table(index="model", columns=["protocol", "metric"], values="value")
    order = [(p, m) for p in ("time", "cold") for m in metrics if (p, m) in table.columns]
    return table[order]


# -- lists ---------------------------------------------------------------------------


def diversity_curve(layout: PipelineLayout) -> pd.DataFrame | None:
    """The accuracy-diversity sweep, where a job wrote one (diversity_curve*.csv)."""
    found = sorted(layout.root.glob("*/diversity_curve*.csv")) + sorted(
        layout.root.glob("lists/*/diversity_curve*.csv")
    )
    return pd.read_csv(found[0]) if found else None
