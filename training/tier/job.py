"""`haowu train-tier`: fit the tier model on labelled products, evaluate it against the
hand-weighted baseline, score every product, log everything to MLflow.

RUN_DIR holds `tiers.parquet` (one row per product: tier, score, five dimension
contributions, top indicator for/against, reason), `metrics.json`, `run.json`, the model
(`model/`: booster, resolved params and cut-points, baseline), the resolved config and
`plots/`. It is built beside its final place and moved in only when complete.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd

from features.indicators import iter_indicator_chunks, load_lookups
from features.io import atomic_output_dir, count_rows, ensure_empty_output, write_json
from features.settings import Settings, TierConfig
from features.validate import validate_tables
from models.artifacts import METRICS, RUN_DIR_TAG, RUN_META, TIERS, masked
from models.tier.baseline import HandWeightedBaseline
from models.tier.model import FEATURES, TierModel, assign_tiers
from models.tier.table import tier_table
from training.lifecycle.model_logging import log_tier_model
from training.lifecycle.tracking import (
    job_run,
    log_artifact,
    log_artifacts,
    log_metrics,
    tracking_uri,
)
from training.tier import plots as tier_plots
from training.tier.labelled_data import LabelledSplit, load_labelled, split_labelled
from training.tier.metrics import confusion, confusion_metrics, tier_metrics
from training.tier.scoring import Tallies, read_sample, score_products

log = logging.getLogger(__name__)

JOB = "train-tier"
REGISTERED_MODEL = "haowu-tier"
TRUTH = Path("truth") / "products.parquet"
# what the job reads, validated before anything is written (features/validate.py)
INPUT_TABLES = ("merchants", "products", "product_stats", "tier_labels")
# tally key -> metric prefix for agreement with the hidden truth over all products
TRUTH_PREFIXES = {
    "": "truth_",
    "baseline_": "baseline_truth_",
    "cold_": "cold_truth_",
    "baseline_cold_": "baseline_cold_truth_",
}


def read_truth(data_dir: Path) -> pd.Series | None:
    """The synthetic data's hidden true tier by product_id, for evaluation only."""
    path = Path(data_dir) / TRUTH
    if not path.is_file():
        return None
    truth = pd.read_parquet(path, columns=["product_id", "true_tier"])
    return truth.set_index("product_id")["true_tier"]


def fit(split: LabelledSplit, cfg: TierConfig) -> tuple[TierModel, HandWeightedBaseline]:
    """Both models learn from the non-flagged labelled products (flagged merchants' goods
    are L0 by rule, whatever their indicators)."""
    train = split.train[~split.train["flagged_low_quality"]]
    valid = split.valid[~split.valid["flagged_low_quality"]]
    model = TierModel(cfg.model).fit(
        train, train["tier"].to_numpy(), valid, valid["tier"].to_numpy(), seed=cfg.seed
    )
    baseline = HandWeightedBaseline().fit(train, train["tier"].to_numpy(), cfg.scaler_grid_points)
    return model, baseline


def evaluate(
    model: TierModel, baseline: HandWeightedBaseline, test: pd.DataFrame
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Model and baseline (rule applied to both) on the test split, overall and on the
    products without sales history; returns metrics and the confusion matrices."""
    labels = test["tier"].to_numpy()
    tier = tier_table(model, test)["tier"].to_numpy()
    base, _ = assign_tiers(baseline.predict_tier(test), test["flagged_low_quality"].to_numpy())
    cold = ~test["has_sales_history"].to_numpy()
    metrics = {
        **tier_metrics(labels, tier),
        **tier_metrics(labels, base, "baseline_"),
        **tier_metrics(labels[cold], tier[cold], "cold_"),
        **tier_metrics(labels[cold], base[cold], "baseline_cold_"),
        "cold_test_products": float(cold.sum()),
    }
    matrices = {
        "tier model": confusion(labels, tier),
        "hand-weighted baseline": confusion(labels, base),
    }
    return metrics, matrices


def _tally_metrics(tallies: Tallies) -> dict[str, float]:
    metrics = {
        "products_scored": float(tallies.products),
        "score_seconds": round(tallies.seconds, 3),
        "selected_goods": float(tallies.tier_counts[-1]),
    }
    for key, prefix in TRUTH_PREFIXES.items():
        if key in tallies.truth:
            metrics |= confusion_metrics(tallies.truth[key], prefix)
    return metrics


def _plots(
    folder: Path,
    matrices: dict[str, np.ndarray],
    tallies: Tallies,
    labels: np.ndarray,
    dpi: int,
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tier_plots.confusion_plot(matrices, folder / "confusion_matrix.png", dpi)
    shares = {
        "all products (model)": tallies.tier_counts / max(tallies.products, 1),
        "labelled products": np.bincount(labels, minlength=6) / len(labels),
    }
    if "" in tallies.truth:
        truth = tallies.truth[""].sum(axis=1)
        shares["all products (hidden truth)"] = truth / max(truth.sum(), 1)
    tier_plots.distribution_plot(shares, folder / "tier_distribution.png", dpi)
    tier_plots.contributions_plot(
        tallies.mean_contributions(), folder / "dimension_contributions.png", dpi
    )


def run(
    cfg: Settings, data_dir: Path, out: Path, overwrite: bool = False, validate: bool = True
) -> dict[str, float]:
    """Fit, evaluate, score every product into OUT; returns the metrics (DESIGN §6 names).

    The input tables are validated first (`validate=False`: the caller just did): a
    duplicate product, a label for an unknown product, a negative or infinite price
    fails before anything is written."""
    tcfg = cfg.tier
    data_dir, out = Path(data_dir), Path(out)
    ensure_empty_output(out, overwrite)
    if validate:
        validate_tables(data_dir, INPUT_TABLES)
    lookups = load_lookups(data_dir)
    split = split_labelled(load_labelled(data_dir, lookups, tcfg), tcfg)  # checks, or raises
    truth = read_truth(data_dir)
    n_chunks = math.ceil(count_rows(data_dir, "products") / tcfg.chunk_rows)

    with (
        atomic_output_dir(out, overwrite) as stage,
        job_run(
            JOB, tcfg.model_dump(), data_dir, tags={RUN_DIR_TAG: str(out.resolve())}
        ) as mlflow_run,
    ):
        start = time.perf_counter()
        model, baseline = fit(split, tcfg)
        train_seconds = time.perf_counter() - start
        metrics, matrices = evaluate(model, baseline, split.test)
        chunks = iter_indicator_chunks(data_dir, tcfg.chunk_rows, lookups)
        tallies = score_products(model, baseline, chunks, stage / TIERS, truth, n_chunks)
        metrics |= _tally_metrics(tallies) | split.sizes()
        metrics |= {
            "train_seconds": round(train_seconds, 3),
            "trees": float(model.num_trees),
            **{f"cut_l{k + 1}": float(c) for k, c in enumerate(model.cuts)},
        }

        model.save(stage / "model")
        baseline.save(stage / "model")
        write_json(tcfg.model_dump(), stage / "config.json")
        _plots(stage / "plots", matrices, tallies, split.train["tier"].to_numpy(), tcfg.plot_dpi)
        write_json(metrics, stage / METRICS)
        log_metrics(metrics)
        log_artifacts(stage / "plots", "plots")
        log_artifacts(stage / "model", "tier_model")
        log_artifact(stage / METRICS)
        if tcfg.sample_rows:
            sample = read_sample(stage / TIERS, tcfg.sample_rows)
            sample.to_csv(stage / "tiers_sample.csv", index=False)
            log_artifact(stage / "tiers_sample.csv")
        complete = split.test.dropna(subset=list(FEATURES))
        example = (complete if len(complete) else split.test).head(tcfg.input_example_rows)
        info = log_tier_model(model, stage / "model", example, REGISTERED_MODEL)
        run_id = mlflow_run.info.run_id
        write_json(
            {
                "run_id": run_id,
                "job": JOB,
                "tracking_uri": masked(tracking_uri()),
                "model_uri": info.model_uri,
                "registered_model": REGISTERED_MODEL,
                "registered_version": getattr(info, "registered_model_version", None),
                "data_dir": str(data_dir.resolve()),
            },
            stage / RUN_META,
        )
    log.info("train-tier: %s", json.dumps({k: metrics[k] for k in ("qwk", "baseline_qwk")}))
    return metrics
