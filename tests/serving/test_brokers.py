"""Broker matchmaking end to end on tiny data, with a synthetic scorer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from features.errors import ConfigError, ContractError, HaowuError, OutputExistsError
from features.idmap import IdMap, id_map_path
from features.io import read_table, write_table
from features.settings import Settings, load_settings
from models.brokers.expected_value import creator_capacity, relative_followers
from serving.brokers.bench import bench_brokers, truth_scorer
from serving.brokers.job import MATCHES, SUMMARY, run
from serving.online.broker_matches import BrokerMatchStore, UnknownBrokerError

COLUMNS = ["broker_id", "creator_id", "product_id", "expected_value", "affinity", "rank"]


class CategoryScorer:
    """Synthetic two-tower stand-in: a creator likes goods of its preferred leaf category
    (logit + 3), plus a fixed pseudo-random part per pair; NaN for unknown IDs."""

    def __init__(self, data_dir: Path) -> None:
        creators = read_table(data_dir, "creators", columns=["creator_id", "category_pref"])
        products = read_table(data_dir, "products", columns=["product_id", "category_l3"])
        self.pref = dict(zip(creators["creator_id"], creators["category_pref"], strict=True))
        self.leaf = dict(zip(products["product_id"], products["category_l3"], strict=True))

    def __call__(self, creator_ids: np.ndarray, product_ids: np.ndarray) -> np.ndarray:
        pref = np.array([self.pref.get(c, -1) for c in creator_ids], dtype=np.float64)
        leaf = np.array([self.leaf.get(p, -2) for p in product_ids], dtype=np.float64)
        noise = np.sin(np.outer(creator_ids % 1009, product_ids % 997) * 0.37)  # (n_c, n_p)
        out = 3.0 * (pref[:, None] == leaf[None, :]) + noise
        out[pref < 0, :] = np.nan
        out[:, leaf < 0] = np.nan
        return out


def tiny_settings(**brokers: object) -> Settings:
    """The tiny preset's settings with some `brokers` knobs changed."""
    cfg = load_settings("tiny")
    return cfg.model_copy(update={"brokers": cfg.brokers.model_copy(update=brokers)})


@pytest.fixture(scope="module")
def cfg() -> Settings:
    return tiny_settings()


@pytest.fixture(scope="module")
def job(tiny_data: Path, cfg: Settings, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("brokers") / "out"
    metrics = run(cfg, tiny_data, CategoryScorer(tiny_data), out, progress=False)
    return out, metrics


def _copy(data: Path, tmp_path: Path) -> Path:
    target = tmp_path / "data"
    shutil.copytree(data, target, ignore=shutil.ignore_patterns("truth", "interactions"))
    return target


def test_end_to_end_on_tiny(job, tiny_data: Path) -> None:
    out, metrics = job
    matches = pd.read_parquet(out / MATCHES)
    assert list(matches.columns) == COLUMNS
    assert len(matches) == metrics["assignments"] > 0
    assert json.loads((out / "metrics.json").read_text()) == pytest.approx(metrics, nan_ok=True)
    assert metrics["brokers"] == read_table(tiny_data, "brokers")["broker_id"].nunique()
    assert metrics["brokers_matched"] == metrics["brokers"]
    assert metrics["affinity_vs_random"] >= 1.2
    assert metrics["expected_value_vs_random"] >= 1.2
    assert 0 <= metrics["greedy_gap"] <= 0.05
    assert 0 < metrics["creator_capacity_use"] <= 1 and 0 < metrics["product_capacity_use"] <= 1
    assert not matches.duplicated(["broker_id", "creator_id", "product_id"]).any()
    assert (matches["expected_value"] > 0).all()
    # rank: 1..n per creator, by decreasing expected value
    for _, group in matches.groupby(["broker_id", "creator_id"]):
        assert group["rank"].tolist() == list(range(1, len(group) + 1))
        assert group["expected_value"].is_monotonic_decreasing


def test_assignments_stay_inside_rosters_and_goods(job, tiny_data: Path) -> None:
    out, _ = job
    matches = pd.read_parquet(out / MATCHES)
    creators = read_table(tiny_data, "creators", columns=["creator_id", "broker_id"]).dropna()
    goods = read_table(tiny_data, "broker_products")

    def pairs(df: pd.DataFrame, column: str) -> set[tuple[int, int]]:
        return set(zip(df["broker_id"].astype("int64"), df[column], strict=True))

    assert pairs(matches, "creator_id") <= pairs(creators, "creator_id")
    assert pairs(matches, "product_id") <= pairs(goods, "product_id")


def test_capacities_never_exceeded(job, cfg: Settings) -> None:
    out, _ = job
    matches = pd.read_parquet(out / MATCHES)
    per_creator = matches.groupby(["broker_id", "creator_id"]).size()
    per_product = matches.groupby(["broker_id", "product_id"]).size()
    assert per_creator.max() <= cfg.brokers.max_goods_per_creator
    assert per_product.max() <= cfg.brokers.max_creators_per_product


def test_follower_scaled_capacities(tiny_data: Path, tmp_path: Path) -> None:
    cfg = tiny_settings(
        max_goods_per_creator=4, capacity_followers_exponent=0.5, creator_capacity_limit=8
    )
    run(cfg, tiny_data, CategoryScorer(tiny_data), tmp_path / "out", progress=False)
    matches = pd.read_parquet(tmp_path / "out" / MATCHES)
    creators = read_table(tiny_data, "creators", columns=["creator_id", "followers"])
    rel = relative_followers(creators["followers"].to_numpy(), creators["followers"].median())
    cap = pd.Series(creator_capacity(rel, 4, 0.5, 8), index=creators["creator_id"])
    taken = matches.groupby("creator_id").size()
    assert (taken <= cap.reindex(taken.index)).all()
    assert taken.max() > 4  # big creators take more than a median one
    assert (
        matches.groupby(["broker_id", "product_id"]).size().max()
        <= cfg.brokers.max_creators_per_product
    )


def test_flagged_merchants_and_l0_never_assigned(tiny_data: Path, tmp_path: Path) -> None:
    products = read_table(tiny_data, "products", columns=["product_id", "merchant_id"])
    merchants = read_table(tiny_data, "merchants", columns=["merchant_id", "flagged_low_quality"])
    flagged = set(
        products.loc[
            products["merchant_id"].isin(
                merchants.loc[merchants["flagged_low_quality"], "merchant_id"]
            ),
            "product_id",
        ]
    )
    rng = np.random.default_rng(0)
    tiers = pd.DataFrame(
        {
            "product_id": products["product_id"],
            "tier": pd.array(rng.integers(0, 6, len(products)), dtype="Int64"),
            "score": rng.random(len(products)),
        }
    ).iloc[::2]  # half the goods not tiered yet: never excluded as L0
    tier_run = tmp_path / "tier"
    tier_run.mkdir()
    tiers.to_parquet(tier_run / "tiers.parquet", index=False)
    cfg = tiny_settings()
    metrics = run(
        cfg, tiny_data, CategoryScorer(tiny_data), tmp_path / "out", tiers=tier_run, progress=False
    )
    matches = pd.read_parquet(tmp_path / "out" / MATCHES)
    level0 = set(tiers.loc[tiers["tier"] == 0, "product_id"])
    assert not set(matches["product_id"]) & (flagged | level0)
    assert metrics["goods_excluded_tier"] > 0 and metrics["goods_excluded_flagged"] > 0


def test_bad_brokers_are_skipped_with_a_reason(tiny_data: Path, tmp_path: Path, caplog) -> None:
    data = _copy(tiny_data, tmp_path)
    brokers = read_table(data, "brokers")
    goods = read_table(data, "broker_products")
    first = int(goods["broker_id"].iloc[0])
    extra_brokers = pd.DataFrame(
        {"broker_id": [1, 2], "name": pd.array(["empty", "no roster"], "str")}
    )
    write_table(pd.concat([brokers, extra_brokers], ignore_index=True), data, "brokers")
    extra_goods = pd.DataFrame(
        {"broker_id": [2, first], "product_id": [goods["product_id"].iloc[0], 42]}
    )
    write_table(pd.concat([goods, extra_goods], ignore_index=True), data, "broker_products")
    with caplog.at_level("INFO"):
        metrics = run(
            tiny_settings(),
            data,
            CategoryScorer(data),
            tmp_path / "out",
            progress=False,
        )
    summary = pd.read_parquet(tmp_path / "out" / SUMMARY).set_index("broker_id")
    assert summary.loc[1, "reason"] == "no goods recruited"
    assert summary.loc[2, "reason"] == "no creators on the roster"
    assert metrics["brokers_empty"] == 2
    assert metrics["goods_not_in_catalog"] == 1
    assert "not in the products table" in caplog.text
    matches = pd.read_parquet(tmp_path / "out" / MATCHES)
    assert not matches["broker_id"].isin([1, 2]).any() and 42 not in set(matches["product_id"])


def test_creators_unknown_to_the_model_get_nothing(tiny_data: Path, tmp_path: Path) -> None:
    scorer = CategoryScorer(tiny_data)
    hidden = sorted(scorer.pref)[::2]
    for c in hidden:
        del scorer.pref[c]
    metrics = run(tiny_settings(), tiny_data, scorer, tmp_path / "out", progress=False)
    matches = pd.read_parquet(tmp_path / "out" / MATCHES)
    assert metrics["creators_unscored"] > 0
    assert not matches["creator_id"].isin(hidden).any()


@pytest.mark.parametrize(
    "update",
    [
        {"exact_max_pairs": 0},  # every broker greedy
        {"affinity_normalisation": "broker"},
        {"normaliser_sample": 100, "reach_weight": 1.0, "commission_weight": 1.0},
    ],
)
def test_settings_variants(tiny_data: Path, tmp_path: Path, update: dict) -> None:
    cfg = tiny_settings(**update)
    metrics = run(cfg, tiny_data, CategoryScorer(tiny_data), tmp_path / "out", progress=False)
    assert metrics["affinity_vs_random"] >= 1.2
    if update.get("exact_max_pairs") == 0:
        assert metrics["brokers_greedy"] == metrics["brokers"] and np.isnan(metrics["greedy_gap"])


def test_user_ids_come_back(tmp_path: Path) -> None:
    """Imported data: tables hold dense internal IDs, id_maps/ the user's own."""
    data = tmp_path / "data"
    creators = pd.DataFrame(
        {
            "creator_id": np.arange(4, dtype=np.int64),
            "followers": [10, 20, 30, 40],
            "broker_id": pd.array([7, 7, 7, None], dtype="Int64"),
        }
    )
    products = pd.DataFrame({"product_id": np.arange(5, dtype=np.int64)})
    write_table(creators, data, "creators")
    write_table(products, data, "products")
    write_table(
        pd.DataFrame({"broker_id": [7] * 5, "product_id": np.arange(5)}), data, "broker_products"
    )
    IdMap.fit(["ann", "bob", "cat", "dan"], "creator").save(id_map_path(data, "creator"))
    IdMap.fit(["p1", "p2", "p3", "p4", "p5"], "product").save(id_map_path(data, "product"))
    scorer = lambda c, p: np.add.outer(c, p).astype(float)  # noqa: E731
    run(
        tiny_settings(max_goods_per_creator=2, max_creators_per_product=1),
        data,
        scorer,
        tmp_path / "out",
        progress=False,
    )
    matches = pd.read_parquet(tmp_path / "out" / MATCHES)
    assert set(matches["creator_id"]) <= {"ann", "bob", "cat"}
    assert set(matches["product_id"]) <= {"p1", "p2", "p3", "p4", "p5"}
    assert len(matches) == 5


def test_missing_inputs_are_clear_errors(tiny_data: Path, tmp_path: Path) -> None:
    data = _copy(tiny_data, tmp_path)
    (data / "broker_products.parquet").unlink()
    with pytest.raises(ContractError, match="broker_products"):
        run(tiny_settings(), data, CategoryScorer(tiny_data), tmp_path / "out", progress=False)
    creators = read_table(data, "creators").drop(columns=["broker_id"])
    write_table(creators, data, "creators")
    with pytest.raises(ContractError, match="broker_id"):
        run(tiny_settings(), data, CategoryScorer(tiny_data), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_capacities_must_be_positive(tiny_data: Path, tmp_path: Path) -> None:
    for key in ("max_goods_per_creator", "max_creators_per_product"):
        with pytest.raises(ConfigError, match=key):
            load_settings("tiny", overrides=[f"brokers.{key}=0"])
    from cli import app

    result = CliRunner().invoke(
        app,
        [
            "match-brokers",
            "--data",
            str(tiny_data),
            "--model",
            "x",
            "--out",
            str(tmp_path / "o"),
            "--set",
            "brokers.max_creators_per_product=-1",
        ],
    )
    assert result.exit_code == 1
    assert "max_creators_per_product" in result.output


def test_existing_output_is_kept_without_overwrite(job, tiny_data: Path) -> None:
    out, _ = job
    with pytest.raises(OutputExistsError):
        run(tiny_settings(), tiny_data, CategoryScorer(tiny_data), out, progress=False)


def test_store_answers_a_broker(job) -> None:
    out, _ = job
    store = BrokerMatchStore.load(out)
    broker = store.broker_ids[0]
    answer = store.get(broker)
    assert answer.broker_id == broker and answer.solver == "exact" and answer.matches
    assert all(m.rank >= 1 for m in answer.matches)
    with pytest.raises(UnknownBrokerError):
        store.get(-1)


def test_bench_on_tiny(tiny_data: Path) -> None:
    result = bench_brokers(tiny_settings(), tiny_data)
    assert result["brokers"] > 0 and result["seconds"] > 0
    assert 0 <= result["greedy_gap"] <= 0.05 and 0 <= result["greedy_only_gap"] <= 0.05
    assert result["affinity_vs_random"] >= 1.2
    truth = truth_scorer(tiny_data)
    scores = truth(np.array([1_000_000_000, 1]), np.array([5_000_000_000, 5_000_000_001, 3]))
    assert (
        np.isfinite(scores[0, :2]).all()
        and np.isnan(scores[1]).all()
        and np.isnan(scores[:, 2]).all()
    )


def _embedding_run(data: Path, folder: Path, dim: int = 8) -> Path:
    """A matching run folder as train-matching writes it, with random embeddings."""
    from models.matching.recommender import EmbeddingRecommender

    creators = read_table(data, "creators", columns=["creator_id"])["creator_id"].to_numpy()
    products = read_table(data, "products", columns=["product_id"])["product_id"].to_numpy()
    rng = np.random.default_rng(0)
    model = folder / "model"
    EmbeddingRecommender(
        rng.normal(size=(len(creators), dim)).astype(np.float32),
        rng.normal(size=(len(products), dim)).astype(np.float32),
    ).save(model)
    np.save(model / "creator_ids.npy", np.sort(creators))
    np.save(model / "product_ids.npy", np.sort(products))
    return folder


def test_cli_on_a_matching_run(tiny_data: Path, tmp_path: Path) -> None:
    from cli import app

    run_dir = _embedding_run(tiny_data, tmp_path / "matching")
    out = tmp_path / "brokers"
    args = ["match-brokers", "--data", str(tiny_data), "--model", str(run_dir), "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--preset", "tiny", "--set", "brokers.seed=3"])
    assert result.exit_code == 0, result.output
    assert "affinity_vs_random" in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["assignments"] > 0 and metrics["affinity_vs_random"] >= 1.2
    assert json.loads((out / "config.json").read_text())["brokers"]["seed"] == 3
    again = CliRunner().invoke(app, [*args, "--preset", "tiny"])
    assert again.exit_code == 1 and "--overwrite" in again.output


def test_embedding_scorer_matches_the_dot_product(tiny_data: Path, tmp_path: Path) -> None:
    from serving.brokers.scorer import load_scorer

    scorer = load_scorer(_embedding_run(tiny_data, tmp_path / "matching"))
    c = scorer.creators.ids[[5, 0, 9]]
    p = np.append(scorer.products.ids[[3, 1]], 7)  # 7: unknown product
    got = scorer(c, p)
    want = scorer.creator_vectors[[5, 0, 9]] @ scorer.product_vectors[[3, 1]].T
    np.testing.assert_allclose(got[:, :2], want, rtol=1e-5)
    assert np.isnan(got[:, 2]).all()
    with pytest.raises(HaowuError, match="not a train-matching run"):
        load_scorer(tmp_path)
