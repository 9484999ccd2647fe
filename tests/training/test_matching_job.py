"""train-matching end to end on the tiny marketplace, then the batch job on its output."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from features.errors import ContractError
from features.settings import load_settings
from tests.data_breakers import duplicate_products, negative_prices
from training.matching.job import run

TINY = [
    "matching.epochs=2",
    "matching.refit_all=false",
    "matching.ease_max_products=1000",  # tiny's 5,000 goods: the ItemKNN path
    "matching.threads=1",
]


@pytest.fixture(scope="module")
def matching_run(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("matching") / "run"
    metrics = run(load_settings("tiny", overrides=TINY), tiny_data, out, progress=False)
    return out, metrics


def test_run_folder_contract(matching_run) -> None:
    out, metrics = matching_run
    for name in [
        "metrics.json",
        "metrics.csv",
        "metrics.md",
        "config.yaml",
        "history.json",
        "run.json",
        "recall_random.png",
        "recall_time.png",
        "model/weights.pt",
        "model/encoders.json",
        "model/matching_config.json",
        "model/model_config.json",
        "model/creator_embeddings.npy",
        "model/product_embeddings.npy",
        "model/creator_ids.npy",
        "model/product_ids.npy",
        "model/products.parquet",
    ]:
        assert (out / name).is_file(), name
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk == pytest.approx(metrics)
    for key in [
        "recall@10",
        "recall@50",
        "recall@100",
        "ndcg@10",
        "hit_rate@10",
        "coverage@50",
        "category_coverage@50",
        "pop_recall@50",
        "als_recall@50",
        "itemknn_recall@50",
        "time_recall@50",
        "time_pop_recall@50",
        "cold_recall@50",
        "cold_pop_recall@50",
        "oracle_recall@50",
        "oracle_ratio@50",
    ]:
        assert key in metrics, key
    assert 0 < metrics["recall@50"] <= 1
    products = np.load(out / "model" / "product_ids.npy")
    assert len(np.load(out / "model" / "product_embeddings.npy")) == len(products)


def test_model_beats_popularity_and_cold_start(matching_run) -> None:
    _, m = matching_run
    assert m["recall@50"] > 1.5 * m["pop_recall@50"]
    assert m["cold_recall@50"] > m["cold_pop_recall@50"]


def test_run_says_which_model_won_on_validation(matching_run) -> None:
    out, m = matching_run
    prefixes = {"two_tower": "", "pop": "pop_", "als": "als_", "itemknn": "itemknn_"}
    scores = {name: m[f"{prefix}val_recall@50"] for name, prefix in prefixes.items()}
    best = max(v for name, v in scores.items() if name != "two_tower")
    assert m["val_ratio_vs_best_baseline"] == pytest.approx(scores["two_tower"] / best)
    assert "oracle_val_recall@50" not in m  # the oracle is no baseline
    winner = max(scores, key=lambda name: scores[name])
    assert f"random: {winner} won on validation val_recall@50" in (out / "metrics.md").read_text()
    from mlflow import MlflowClient

    run_ = MlflowClient().get_run(json.loads((out / "run.json").read_text())["run_id"])
    assert run_.data.tags["random.val_winner"] == winner


def test_registered_in_mlflow(matching_run) -> None:
    from mlflow import MlflowClient

    out, _ = matching_run
    info = json.loads((out / "run.json").read_text())
    client = MlflowClient()
    run_ = client.get_run(info["run_id"])
    assert run_.data.metrics["recall_at_50"] == pytest.approx(
        json.loads((out / "metrics.json").read_text())["recall@50"]
    )
    version = client.get_model_version("haowu-matching", info["version"])
    assert version.run_id == info["run_id"]


def test_pyfunc_predicts(matching_run) -> None:
    import mlflow

    out, _ = matching_run
    info = json.loads((out / "run.json").read_text())
    model = mlflow.pyfunc.load_model(f"models:/haowu-matching/{info['version']}")
    ids = np.load(out / "model" / "creator_ids.npy")[:3]
    got = model.predict(pd.DataFrame({"creator_id": ids}), params={"k": 4})
    assert len(got) == 12 and set(got["creator_id"]) == set(ids.tolist())


def test_recommend_excludes_promoted_goods(matching_run, tiny_data: Path, tmp_path: Path) -> None:
    from cli import app

    out, _ = matching_run
    lists = tmp_path / "lists"
    result = CliRunner().invoke(
        app,
        [
            "recommend",
            "--data",
            str(tiny_data),
            "--model",
            str(out),
            "--k",
            "5",
            "--out",
            str(lists),
        ],
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((lists / "_SUCCESS").read_text())
    rows = pd.read_parquet(lists)
    assert manifest["rows"] == len(rows) and manifest["k"] == 5
    assert {"creator_id", "rank", "product_id", "score", "category_l1"} <= set(rows.columns)
    assert rows.groupby("creator_id")["rank"].max().eq(5).all()
    promoted = pd.read_parquet(tiny_data / "interactions", columns=["creator_id", "product_id"])
    clash = rows.merge(promoted.drop_duplicates(), on=["creator_id", "product_id"])
    assert clash.empty
    again = CliRunner().invoke(
        app,
        ["recommend", "--data", str(tiny_data), "--model", str(out), "--k", "5",
         "--out", str(lists)],
    )  # fmt: skip
    assert again.exit_code == 0, again.output
    pd.testing.assert_frame_equal(pd.read_parquet(lists), rows)


def _unknown_product(data: Path) -> None:
    first = sorted((data / "interactions").glob("*.parquet"))[0]
    frame = pd.read_parquet(first)
    frame.loc[frame.index[:3], "product_id"] = 10**15 + 7  # in no products row
    frame.to_parquet(first, index=False)


_duplicate_product = duplicate_products
_negative_price = negative_prices


@pytest.mark.parametrize(
    ("breaks", "message"),
    [
        (_unknown_product, "table 'interactions' (.*), column 'product_id': unknown product_id"),
        (_duplicate_product, "column 'product_id': duplicate key"),
        (_negative_price, "column 'price': rule greater_than\\(0\\) violated"),
    ],
)
def test_bad_input_is_refused_before_anything_is_written(
    tiny_data: Path, tmp_path: Path, breaks, message: str
) -> None:
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data, ignore=shutil.ignore_patterns("truth"))
    breaks(data)
    out = tmp_path / "run"
    with pytest.raises(ContractError, match=message):
        run(load_settings("tiny", overrides=TINY), data, out, progress=False)
    assert not out.exists() and not list(tmp_path.glob(".run.*"))


def test_the_job_trains_side_feature_data_on_its_schedule(tiny_data: Path) -> None:
    """The platform's tables have side features: the job takes `with_side_features`; the
    same pairs as an ID-only log keep the general patience and refit."""
    from training.matching.job import MatchingJob

    cfg = load_settings("tiny", overrides=TINY)
    job = MatchingJob(cfg, tiny_data, None, progress=False, with_oracle=False)
    assert (job.mcfg.patience, job.mcfg.refit_warm_epochs) == (0, 1)
    id_only = MatchingJob.from_interactions(cfg, job.inter)
    assert id_only.mcfg == cfg.matching
    assert (id_only.mcfg.patience, id_only.mcfg.refit_warm_epochs) == (
        cfg.matching.patience,
        cfg.matching.refit_warm_epochs,
    )
