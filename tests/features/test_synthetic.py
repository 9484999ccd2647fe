"""The synthetic marketplace: contract, determinism, and the structure the engine must find."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from features.contract import TABLES
from features.errors import ConfigError, OutputExistsError
from features.io import read_table, table_path
from features.settings import CONFIG_DIR, load_settings
from features.synthetic import generate
from features.synthetic.bench import bench_generate
from features.synthetic.indicator_draws import HISTORY
from features.synthetic.labels import GOODNESS, true_score
from features.synthetic.params import (
    AffinityParams,
    AudienceParams,
    CatalogParams,
    DataConfig,
    IndicatorParams,
)
from features.validate import validate_dir

# A marketplace smaller than tiny, for tests that generate several times.
MINI = [
    "data.n_creators=300",
    "data.n_products=1500",
    "data.n_merchants=150",
    "data.n_brokers=4",
    "data.n_categories_l1=4",
    "data.n_categories_l2=10",
    "data.n_leaf_categories=30",
    "data.interactions=6000",
    "data.chunk_rows=2000",
    "data.catalog.product_chunk_rows=600",
]
TABLE_NAMES = [name for name in TABLES]


def mini(*extra: str) -> DataConfig:
    return load_settings("tiny", overrides=[*MINI, *extra]).data


@pytest.fixture(scope="module")
def cfg() -> DataConfig:
    return load_settings("tiny").data


@pytest.fixture(scope="module")
def tables(tiny_data: Path) -> dict[str, pd.DataFrame]:
    return {name: read_table(tiny_data, name) for name in TABLE_NAMES}


@pytest.fixture(scope="module")
def truth(tiny_data: Path) -> pd.DataFrame:
    return pd.read_parquet(tiny_data / "truth" / "products.parquet")


def _all_tables(root: Path) -> dict[str, pd.DataFrame]:
    frames = {name: read_table(root, name) for name in TABLE_NAMES}
    for file in ("products", "creators", "leaves"):
        frames[f"truth/{file}"] = pd.read_parquet(root / "truth" / f"{file}.parquet")
    return frames


# --- contract ------------------------------------------------------------------------------


def test_every_table_passes_the_contract(tiny_data: Path) -> None:
    reports = validate_dir(tiny_data)
    assert set(reports) == set(TABLE_NAMES)


def test_dtypes_are_exactly_the_contracts(tables: dict[str, pd.DataFrame]) -> None:
    for name, frame in tables.items():
        want = TABLES[name].dtypes
        for column in frame.columns:
            if want[column].startswith("str"):  # pandera spells the string type its own way
                assert pd.api.types.is_string_dtype(frame[column]), (name, column)
            else:
                assert str(frame[column].dtype) == want[column], (name, column)
        assert set(TABLES[name].required) <= set(frame.columns)


def test_interactions_are_written_in_parts(tiny_data: Path, cfg: DataConfig) -> None:
    parts = sorted(table_path(tiny_data, "interactions").glob("part-*.parquet"))
    assert len(parts) >= 2
    sizes = [pq_rows(p) for p in parts[:-1]]
    assert max(sizes) <= 1.5 * cfg.chunk_rows


def pq_rows(path: Path) -> int:
    return len(pd.read_parquet(path, columns=["orders"]))


def test_ids_are_not_positions(tables: dict[str, pd.DataFrame]) -> None:
    assert tables["creators"]["creator_id"].min() == 1_000_000_000
    assert tables["products"]["product_id"].min() == 5_000_000_000
    assert tables["merchants"]["merchant_id"].min() == 300_000_000
    assert tables["brokers"]["broker_id"].min() == 9_000


def test_interactions_reference_known_ids_without_duplicates(
    tables: dict[str, pd.DataFrame],
) -> None:
    events = tables["interactions"]
    assert events["creator_id"].isin(tables["creators"]["creator_id"]).all()
    assert events["product_id"].isin(tables["products"]["product_id"]).all()
    assert not events.duplicated(["creator_id", "product_id", "ts"]).any()
    assert (events["orders"] >= 1).all()
    price = events["product_id"].map(tables["products"].set_index("product_id")["price"])
    assert np.allclose(events["gmv"], events["orders"] * price, atol=0.01)


def test_category_tree_is_consistent(tables: dict[str, pd.DataFrame], cfg: DataConfig) -> None:
    products = tables["products"]
    assert products.groupby("category_l3")["category_l2"].nunique().max() == 1
    assert products.groupby("category_l2")["category_l1"].nunique().max() == 1
    assert products["category_l1"].max() < cfg.n_categories_l1
    assert products["category_l3"].max() < cfg.n_leaf_categories
    assert tables["creators"]["category_pref"].isin(products["category_l3"]).all()


# --- determinism ---------------------------------------------------------------------------


def test_same_seed_same_marketplace_whatever_the_threads(tmp_path: Path) -> None:
    generate(mini("data.workers=1"), tmp_path / "a", progress=False)
    generate(mini("data.workers=2"), tmp_path / "b", progress=False)
    generate(mini("data.seed=7"), tmp_path / "c", progress=False)
    a, b, c = (_all_tables(tmp_path / x) for x in "abc")
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name], obj=name)
    for latent in ("creator_latent.npy", "product_latent.npy"):
        assert np.array_equal(
            np.load(tmp_path / "a/truth" / latent), np.load(tmp_path / "b/truth" / latent)
        )
    assert not a["interactions"].equals(c["interactions"])
    assert not a["products"]["price"].equals(c["products"]["price"])


def test_refuses_to_overwrite_unless_asked(tmp_path: Path) -> None:
    out = tmp_path / "data"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(OutputExistsError):
        generate(mini(), out, progress=False)
    assert (out / "keep.txt").exists()
    rows = generate(mini(), out, overwrite=True, progress=False)
    assert not (out / "keep.txt").exists() and rows["products"] == 1500


def test_a_marketplace_without_brokers(tmp_path: Path) -> None:
    rows = generate(mini("data.n_brokers=0"), tmp_path / "data", progress=False)
    assert "brokers" not in rows and "broker_products" not in rows
    assert read_table(tmp_path / "data", "creators")["broker_id"].isna().all()
    validate_dir(tmp_path / "data")


@pytest.mark.parametrize(
    "override, match",
    [
        ("data.tier_shares=[0.5, 0.5]", "tier_shares"),
        ("data.affinity.leaf_mix=[0.5, 0.3, 0.3]", "leaf_mix"),
        ("data.n_merchants=5000", "n_merchants"),
        ("data.broker_creator_share=0.001", "broker_creator_share"),
    ],
)
def test_impossible_settings_fail_fast(tmp_path: Path, override: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        generate(mini(override), tmp_path / "data", progress=False)
    assert not (tmp_path / "data").exists()


def test_default_yaml_spells_out_every_hidden_parameter() -> None:
    doc = yaml.safe_load((CONFIG_DIR / "data" / "default.yaml").read_text())
    for key, model in (
        ("catalog", CatalogParams),
        ("indicators", IndicatorParams),
        ("audience", AudienceParams),
        ("affinity", AffinityParams),
    ):
        assert set(doc[key]) == set(model.model_fields), key
        assert model.model_validate(doc[key]) == model(), f"{key}: YAML and code defaults differ"


# --- structure -----------------------------------------------------------------------------


def test_true_tiers_form_the_configured_pyramid(truth: pd.DataFrame, cfg: DataConfig) -> None:
    shares = np.bincount(truth["true_tier"], minlength=6) / len(truth)
    assert np.allclose(shares, cfg.tier_shares, atol=0.01)
    assert shares.argmin() == 5


def test_labels_cover_a_few_percent_and_every_tier(
    tables: dict[str, pd.DataFrame], truth: pd.DataFrame, cfg: DataConfig
) -> None:
    labels = tables["tier_labels"]
    assert 0.05 <= len(labels) / len(tables["products"]) <= 0.10
    shares = np.bincount(labels["tier"], minlength=6) / len(labels)
    assert (shares > 0).all()
    assert np.allclose(shares, cfg.tier_shares, atol=0.05)
    assert shares[5] < shares[1:5].min()
    joined = labels.merge(truth, on="product_id")
    assert (joined["tier"] - joined["true_tier"]).abs().max() <= 1
    assert (joined["tier"] == joined["true_tier"]).mean() > 0.7
    listed = joined["product_id"].map(tables["products"].set_index("product_id")["listed_at"])
    assert (labels["labelled_at"].to_numpy() >= listed.to_numpy()).all()


def test_heavy_tails(tables: dict[str, pd.DataFrame]) -> None:
    followers = tables["creators"]["followers"]
    assert followers.max() / followers.median() > 50
    per_product = tables["interactions"]["product_id"].value_counts()
    top = per_product.iloc[: len(tables["products"]) // 100].sum()
    assert top / len(tables["interactions"]) > 0.10
    per_creator = tables["interactions"]["creator_id"].value_counts()
    assert per_creator.max() / per_creator.median() > 10
    stats = tables["product_stats"]
    assert stats["gmv_30d"].max() > 20 * stats["gmv_30d"].median()


def test_cold_products_have_no_history_and_appear_late(
    tables: dict[str, pd.DataFrame], cfg: DataConfig
) -> None:
    products = tables["products"].set_index("product_id")
    end = pd.Timestamp(cfg.end_date)
    cold = products.index[products["listed_at"] >= end - pd.Timedelta(days=cfg.cold_days)]
    assert len(cold) > 0
    stats = tables["product_stats"].set_index("product_id")
    assert stats.loc[cold, list(HISTORY)].isna().all().all()
    assert stats.loc[cold, "price_index"].notna().mean() > 0.9
    warm = stats.drop(cold)
    assert 0.0 < warm[list(HISTORY)].isna().mean().mean() < 0.05  # a few random gaps
    new_share = (products["listed_at"] >= end - pd.Timedelta(days=cfg.days)).mean()
    assert abs(new_share - cfg.new_product_share) < 0.02
    events = tables["interactions"]
    listed = events["product_id"].map(products["listed_at"])
    assert (events["ts"] >= listed).all()
    assert events["ts"].max() < end
    assert events["product_id"].isin(cold).any()


def test_flagged_merchants(
    tables: dict[str, pd.DataFrame], truth: pd.DataFrame, cfg: DataConfig
) -> None:
    merchants = tables["merchants"]
    assert merchants["flagged_low_quality"].mean() == pytest.approx(
        cfg.flagged_merchant_share, abs=0.005
    )
    flagged_ids = merchants.loc[merchants["flagged_low_quality"], "merchant_id"]
    flagged = tables["products"].loc[
        tables["products"]["merchant_id"].isin(flagged_ids), "product_id"
    ]
    assert len(flagged) > 0
    assert (truth.loc[truth["product_id"].isin(flagged), "true_tier"] == 0).all()
    labels = tables["tier_labels"]
    assert (labels.loc[labels["product_id"].isin(flagged), "tier"] == 0).all()
    assert tables["interactions"]["product_id"].isin(flagged).any()
    quality = truth.set_index("product_id")["quality"]
    assert quality[flagged].mean() < quality.drop(flagged).mean() - 1.0


def test_new_merchants_share(tables: dict[str, pd.DataFrame], cfg: DataConfig) -> None:
    new = (tables["merchants"]["account_age_days"] < cfg.catalog.new_merchant_days).mean()
    assert new == pytest.approx(cfg.new_merchant_share, abs=0.005)


def test_indicators_follow_hidden_quality(
    tables: dict[str, pd.DataFrame], truth: pd.DataFrame
) -> None:
    joined = tables["product_stats"].merge(truth, on="product_id")
    corr = joined[["quality", "positive_review_rate", "refund_rate", "conversion_rate"]].corr(
        method="spearman"
    )["quality"]
    assert corr["positive_review_rate"] > 0.3 and corr["refund_rate"] < -0.3
    assert corr["conversion_rate"] > 0.1
    score_corr = joined[["true_score", "quality"]].corr(method="spearman").iloc[0, 1]
    assert score_corr > 0.3


def test_true_score_is_monotone_in_every_indicator(tiny_data: Path, cfg: DataConfig) -> None:
    params = json.loads((tiny_data / "truth" / "params.json").read_text())
    standardisation = params["true_score"]["indicator_standardisation"]
    rng = np.random.default_rng(0)
    n = 500
    base = pd.DataFrame(
        {
            "brand_awareness": rng.lognormal(5, 1.5, n),
            "is_official_brand": rng.integers(0, 2, n).astype(float),
            "price_index": rng.lognormal(0, 0.5, n),
            "price_vs_platform_low": 1 + rng.exponential(0.1, n),
            "commission_rate": rng.uniform(0.01, 0.5, n),
            "active_promoters_30d": rng.poisson(5, n).astype(float),
            "positive_review_rate": rng.uniform(0.5, 0.99, n),
            "refund_rate": rng.uniform(0.01, 0.4, n),
            "ship_48h_rate": rng.uniform(0.3, 0.99, n),
            "gmv_30d": rng.lognormal(6, 2, n),
            "conversion_rate": rng.uniform(0.005, 0.2, n),
        }
    )
    score = true_score(cfg, base, standardisation)
    lower_is_better = {"price_index", "price_vs_platform_low", "refund_rate"}
    for name in GOODNESS:
        better = base.copy()
        step = 0.01 if name.endswith("rate") else 1.0
        if name in lower_is_better:
            better[name] = (
                base[name] * 0.9 if name != "price_vs_platform_low" else 1 + (base[name] - 1) * 0.5
            )
        elif name == "is_official_brand":
            better[name] = 1.0
        else:
            better[name] = base[name] + step
        gain = true_score(cfg, better, standardisation) - score
        changed = better[name] != base[name]
        assert (gain[changed] > 0).all(), name


def test_creators_have_brokers_and_brokers_have_goods(
    tables: dict[str, pd.DataFrame], cfg: DataConfig
) -> None:
    creators, brokers, goods = tables["creators"], tables["brokers"], tables["broker_products"]
    assert creators["broker_id"].notna().mean() == pytest.approx(cfg.broker_creator_share, abs=0.01)
    assert set(creators["broker_id"].dropna()) == set(brokers["broker_id"])
    assert set(goods["broker_id"]) == set(brokers["broker_id"])
    l1 = goods["product_id"].map(tables["products"].set_index("product_id")["category_l1"])
    low, high = cfg.audience.broker_l1_range
    spread = l1.groupby(goods["broker_id"]).nunique()
    assert spread.max() <= high


def test_creators_stick_to_their_leaves(
    tiny_data: Path, tables: dict[str, pd.DataFrame], cfg: DataConfig
) -> None:
    leaves = pd.read_parquet(tiny_data / "truth" / "creators.parquet").set_index("creator_id")
    events = tables["interactions"]
    leaf = events["product_id"].map(tables["products"].set_index("product_id")["category_l3"])
    primary = events["creator_id"].map(leaves["primary_leaf"])
    share = (leaf == primary).mean()
    assert share == pytest.approx(cfg.affinity.leaf_mix[0], abs=0.05)


def test_truth_rows_follow_the_tables(
    tiny_data: Path, tables: dict[str, pd.DataFrame], cfg: DataConfig
) -> None:
    hidden = tiny_data / "truth"
    products = pd.read_parquet(hidden / "products.parquet")
    assert products["product_id"].tolist() == tables["products"]["product_id"].tolist()
    creators = pd.read_parquet(hidden / "creators.parquet")
    assert creators["creator_id"].tolist() == tables["creators"]["creator_id"].tolist()
    assert np.load(hidden / "product_latent.npy").shape == (len(products), cfg.latent_dim)
    assert np.load(hidden / "creator_latent.npy").dtype == np.float32
    params = json.loads((hidden / "params.json").read_text())
    assert (
        params["config"]["seed"] == cfg.seed and len(params["true_score"]["tier_thresholds"]) == 5
    )
    meta = json.loads((tiny_data / "_meta.json").read_text())
    assert meta["preset"] == "tiny" and meta["end_date"] == "2026-11-01"
    assert meta["counts"]["interactions"] == len(tables["interactions"])


def test_bench_reports_rows_per_second(tmp_path: Path) -> None:
    result = bench_generate(mini(), tmp_path / "bench", progress=False)
    assert result["rows"] > 0 and result["rows_per_s"] > 0 and result["peak_rss_gib"] > 0
    assert result["tables"]["interactions"]["rows_per_s"] > 0
    assert validate_dir(tmp_path / "bench")


@pytest.mark.slow
def test_small_preset_generates_and_validates(tmp_path: Path) -> None:
    cfg = load_settings("small").data
    rows = generate(cfg, tmp_path / "small", progress=False)
    assert rows["products"] == cfg.n_products
    assert abs(rows["interactions"] - cfg.interactions) < 0.01 * cfg.interactions
    validate_dir(tmp_path / "small")
