"""`haowu train-tier` end to end on tiny, its metrics, the campaign pool, the benchmark and
the refusals of bad input (a clear error, nothing written)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score, f1_score
from typer.testing import CliRunner

from cli import app
from features.errors import ContractError, OutputExistsError
from features.io import count_rows, read_table, write_table
from features.settings import load_settings
from tests.data_breakers import duplicate_products, negative_prices
from training.tier import job as tier_job
from training.tier import selected_goods
from training.tier.bench import bench_tier
from training.tier.metrics import confusion, confusion_metrics, tier_metrics
from training.tier.scoring import CONTRIBUTION_COLUMNS

CONTRACT_METRICS = (
    "qwk",
    "macro_f1",
    "accuracy",
    "l5_precision",
    "l5_recall",
    "baseline_qwk",
    "baseline_macro_f1",
)


@pytest.fixture(scope="module")
def tier_run(
    tiny_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, float]]:
    out = tmp_path_factory.mktemp("tier") / "run"
    return out, tier_job.run(load_settings("tiny"), tiny_data, out)


# -- metrics ------------------------------------------------------------------------


def test_metrics_match_sklearn_and_hand_counts() -> None:
    y = np.array([0, 1, 2, 3, 4, 5, 5, 5, 2, 1])
    p = np.array([0, 1, 2, 4, 4, 5, 4, 5, 1, 1])
    m = tier_metrics(y, p)
    assert m["qwk"] == pytest.approx(cohen_kappa_score(y, p, weights="quadratic"))
    assert m["macro_f1"] == pytest.approx(f1_score(y, p, average="macro"))
    assert m["accuracy"] == pytest.approx(0.7) and m["within_one"] == pytest.approx(1.0)
    assert m["l5_precision"] == pytest.approx(1.0) and m["l5_recall"] == pytest.approx(2 / 3)
    assert tier_metrics(y, np.zeros_like(y), "baseline_")["baseline_l5_precision"] == 0.0


def test_confusion_metrics_equal_metrics_of_the_rows() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 6, 500)
    p = np.clip(y + rng.integers(-1, 2, 500), 0, 5)
    by_rows, by_counts = tier_metrics(y, p, "truth_"), confusion_metrics(confusion(y, p), "truth_")
    assert by_rows.keys() == by_counts.keys()
    for key, value in by_rows.items():
        assert by_counts[key] == pytest.approx(value, abs=1e-12), key


# -- the job end to end ---------------------------------------------------------------


def test_job_writes_metrics_under_the_contract_names(
    tier_run: tuple[Path, dict[str, float]],
) -> None:
    out, metrics = tier_run
    assert json.loads((out / "metrics.json").read_text()) == pytest.approx(metrics)
    for name in CONTRACT_METRICS + ("within_one", "cold_qwk", "truth_qwk", "baseline_truth_qwk"):
        assert name in metrics and np.isfinite(metrics[name]), name
    assert metrics["qwk"] > metrics["baseline_qwk"]
    assert metrics["truth_qwk"] > 0.8
    for plot in ("confusion_matrix", "tier_distribution", "dimension_contributions"):
        assert (out / "plots" / f"{plot}.png").stat().st_size > 0


def test_every_product_is_tiered_and_explained(
    tier_run: tuple[Path, dict[str, float]], tiny_data: Path
) -> None:
    out, metrics = tier_run
    tiers = pd.read_parquet(out / "tiers.parquet")
    assert len(tiers) == count_rows(tiny_data, "products") == metrics["products_scored"]
    assert tiers["product_id"].is_unique
    assert (
        set(tiers["tier"]) <= set(range(6))
        and (tiers["tier"] == 5).sum() == metrics["selected_goods"]
    )
    base = json.loads((out / "model" / "tier_model.json").read_text())["base"]
    total = base + tiers[list(CONTRIBUTION_COLUMNS)].to_numpy(dtype=np.float64).sum(axis=1)
    np.testing.assert_allclose(total, tiers["score"], atol=1e-4)  # contributions are float32
    cold = tiers[~tiers["has_sales_history"]]
    assert len(cold) and cold["score"].notna().all()  # new products are tiered, not dropped
    assert set(tiers["top_for"].dropna()) <= set(tier_job.FEATURES)


def test_flagged_merchants_goods_are_l0_with_the_reason(
    tier_run: tuple[Path, dict[str, float]], tiny_data: Path
) -> None:
    out, _ = tier_run
    tiers = pd.read_parquet(out / "tiers.parquet")
    merchants = read_table(tiny_data, "merchants", ["merchant_id", "flagged_low_quality"])
    products = read_table(tiny_data, "products", ["product_id", "merchant_id"])
    bad = merchants.loc[merchants["flagged_low_quality"], "merchant_id"]
    flagged = tiers["product_id"].isin(
        products.loc[products["merchant_id"].isin(bad), "product_id"]
    )
    assert flagged.any()
    assert (tiers.loc[flagged, "tier"] == 0).all()
    assert (tiers.loc[flagged, "reason"] == "flagged_low_quality_merchant").all()
    assert (tiers.loc[~flagged, "reason"] == "model").all()


def test_run_is_logged_and_the_model_registered(tier_run: tuple[Path, dict[str, float]]) -> None:
    from mlflow import MlflowClient

    out, metrics = tier_run
    info = json.loads((out / "run.json").read_text())
    client = MlflowClient()
    run = client.get_run(info["run_id"])
    assert run.data.metrics["qwk"] == pytest.approx(metrics["qwk"])
    assert run.data.tags["haowu.job"] == "train-tier"
    versions = client.search_model_versions("name='haowu-tier'")
    assert any(v.run_id == info["run_id"] for v in versions)


def test_output_is_refused_unless_overwrite(
    tier_run: tuple[Path, dict[str, float]], tiny_data: Path
) -> None:
    out, _ = tier_run
    with pytest.raises(OutputExistsError):
        tier_job.run(load_settings("tiny"), tiny_data, out)
    result = CliRunner().invoke(
        app, ["train-tier", "--data", str(tiny_data), "--out", str(out), "--preset", "tiny"]
    )
    assert result.exit_code == 1 and "--overwrite" in result.output


def test_selected_goods_pool(
    tier_run: tuple[Path, dict[str, float]], tiny_data: Path, tmp_path: Path
) -> None:
    out, _ = tier_run
    result = CliRunner().invoke(
        app,
        [
            "selected-goods",
            "--tiers",
            str(out),
            "--data",
            str(tiny_data),
            "--out",
            str(tmp_path / "pool"),
            "--quota",
            "3",
            "--min-commission",
            "0.05",
            "--preset",
            "tiny",
        ],
    )
    assert result.exit_code == 0, result.output
    pool = pd.read_parquet(tmp_path / "pool" / "selected_goods.parquet")
    tiers = pd.read_parquet(out / "tiers.parquet").set_index("product_id")
    assert len(pool) and (tiers.loc[pool["product_id"], "tier"] == 5).all()
    assert pool.groupby("category_l1").size().max() <= 3
    assert (pool["commission_rate"] >= 0.05).all()
    assert pool["reason"].str.startswith("L5 Selected Goods").all()
    summary = json.loads((tmp_path / "pool" / "summary.json").read_text())
    assert summary["pool"] == len(pool)
    unlimited = selected_goods.build_pool(
        tiers[tiers["tier"] == 5].reset_index(),
        read_table(tiny_data, "products", ["product_id", "category_l1", "commission_rate"]),
        cut=0.0,
        cfg=load_settings("tiny").tier.selected_goods,
    )
    assert len(unlimited) == (tiers["tier"] == 5).sum()


def test_bench_scores_synthetic_rows() -> None:
    cfg = load_settings(
        "tiny", overrides=["tier.bench.chunk_rows=4000", "tier.bench.fit_rows=1500"]
    ).tier
    result = bench_tier(cfg, rows=10_000, write=True)
    assert result["rows"] == 10_000 and result["rows_per_second"] > 0
    assert result["explained_by"] == "dimension lookup tables" and result["peak_rss_mib"] > 0


# -- bad input: a clear error naming the cause, nothing written -------------------------


def _copy(tiny_data: Path, tmp_path: Path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data, ignore=shutil.ignore_patterns("truth", "interactions*"))
    return data


def _no_labels(data: Path) -> None:
    (data / "tier_labels.parquet").unlink()


def _label_out_of_range(data: Path) -> None:
    labels = read_table(data, "tier_labels")
    labels.loc[labels.index[:3], "tier"] = 7
    write_table(labels, data, "tier_labels")


def _tier_missing(data: Path) -> None:
    labels = read_table(data, "tier_labels")
    write_table(labels[labels["tier"] != 5], data, "tier_labels")


def _indicator_all_missing(data: Path) -> None:
    stats = read_table(data, "product_stats")
    write_table(stats.assign(gmv_30d=np.nan), data, "product_stats")


def _duplicate_product(data: Path) -> None:
    duplicate_products(data, rows=2)


def _negative_price(data: Path) -> None:
    negative_prices(data, rows=2, price=-1.0)


def _infinite_brand_awareness(data: Path) -> None:
    merchants = read_table(data, "merchants")
    merchants.loc[merchants.index[:1], "brand_awareness"] = np.inf
    write_table(merchants, data, "merchants")


@pytest.mark.parametrize(
    ("breaks", "message"),
    [
        (_no_labels, "no labelled products"),
        # the job validates what it reads before anything else (features/validate.py)
        (_label_out_of_range, "column 'tier': rule in_range(0, 5) violated [3 offending"),
        (_duplicate_product, "column 'product_id': duplicate key ('product_id',)"),
        (_negative_price, "column 'price': rule greater_than(0) violated [2 offending"),
        (_infinite_brand_awareness, "column 'brand_awareness': non-finite value"),
        (_tier_missing, "L5 (0)"),
        (_indicator_all_missing, "'gmv_30d' is missing for every labelled product"),
    ],
)
def test_bad_input_is_a_clear_error_and_writes_nothing(
    tiny_data: Path, tmp_path: Path, breaks, message: str
) -> None:
    data = _copy(tiny_data, tmp_path)
    breaks(data)
    out = tmp_path / "run"
    with pytest.raises(ContractError, match=re.escape(message)):
        tier_job.run(load_settings("tiny"), data, out)
    assert not out.exists()
    result = CliRunner().invoke(
        app, ["train-tier", "--data", str(data), "--out", str(out), "--preset", "tiny"]
    )
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output
    assert not out.exists() and not list(tmp_path.glob(".run.*"))
