"""`haowu recommend` over the index and the policy, both directions, on the tiny marketplace.

The data the job reads differs from the data the model was trained on: some goods are
new (never seen in training, embedded from their features) and some are delisted.
"""

from __future__ import annotations

import functools
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cli import app
from features.io import read_table, write_table
from features.settings import load_settings
from models.retrieval.index import RetrievalError, UnknownIdError
from models.retrieval.run import RetrievalRun
from serving.batch.job import _RUNS, ListsRequest, make_shard_fn

CHEAP = [
    "matching.epochs=2",
    "matching.refit_all=false",
    "matching.baselines=[pop]",
    "matching.protocols=[random]",
    "matching.threads=1",
    "matching.eval_creators=300",
    "matching.val_creators=200",
]
NEW_ID = 9_000_000_000


@pytest.fixture(scope="module")
def world(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A cheap matching run on tiny, then a data folder with new and delisted goods and
    a tier run (random tiers: the policy's inputs, not the tier model's quality)."""
    from training.matching.job import run as run_matching

    root = tmp_path_factory.mktemp("recommend")
    model = root / "matching"
    run_matching(
        load_settings("tiny", overrides=CHEAP), tiny_data, model, progress=False, register=False
    )
    data = root / "data"
    shutil.copytree(tiny_data, data)
    products = read_table(data, "products")
    twins = products.sample(40, random_state=1)  # new goods: features of existing ones
    new = twins.assign(product_id=np.arange(40, dtype=np.int64) + NEW_ID)
    delisted = products["product_id"].iloc[:30].to_numpy()
    write_table(
        pd.concat([products[~products.product_id.isin(delisted)], new], ignore_index=True),
        data,
        "products",
    )
    tiers = root / "tier"
    tiers.mkdir()
    ids = np.concatenate([products.product_id.to_numpy(), new.product_id.to_numpy()])
    rng = np.random.default_rng(0)
    tier = rng.choice(6, len(ids), p=[0.15, 0.25, 0.25, 0.15, 0.1, 0.1])
    pd.DataFrame({"product_id": ids, "tier": tier, "score": tier / 5.0}).to_parquet(
        tiers / "tiers.parquet"
    )
    return {"model": model, "data": data, "tiers": tiers, "new": new, "delisted": delisted}


def _recommend(world: dict, out: Path, *args: str) -> object:
    return CliRunner().invoke(
        app,
        [
            "recommend",
            "--data", str(world["data"]),
            "--model", str(world["model"]),
            "--out", str(out),
            "--workers", "1",
            "--preset", "tiny",
            *args,
        ],
    )  # fmt: skip


@pytest.fixture(scope="module")
def creator_lists(world, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lists") / "creator"
    result = _recommend(world, out, "--k", "10", "--tiers", str(world["tiers"]))
    assert result.exit_code == 0, result.output
    return out


def test_creator_lists_follow_the_policy(world, creator_lists: Path) -> None:
    rows = pd.read_parquet(creator_lists)
    manifest = json.loads((creator_lists / "_SUCCESS").read_text())
    assert manifest["rows"] == len(rows) and manifest["k"] == 10 and not manifest["exact"]
    assert manifest["new_products"] == 40 and manifest["delisted_products"] == 30
    assert list(rows.columns) == [
        "creator_id", "rank", "product_id", "score", "tier", "category_l1",
        "selected_goods", "diversity_slot", "selected_slot", "reason",
    ]  # fmt: skip
    n_creators = len(read_table(world["data"], "creators"))
    assert rows.creator_id.nunique() == n_creators == manifest["queries"]
    ranks = rows.groupby("creator_id")["rank"]
    assert ranks.count().eq(10).all() and ranks.max().eq(10).all()
    promoted = read_table(world["data"], "interactions")[["creator_id", "product_id"]]
    assert rows.merge(promoted.drop_duplicates(), on=["creator_id", "product_id"]).empty
    tiers = pd.read_parquet(world["tiers"] / "tiers.parquet").set_index("product_id")["tier"]
    assert (rows.tier.to_numpy() == tiers.loc[rows.product_id].to_numpy()).all()
    assert (rows.tier > 0).all()  # L0 never recommended
    products = read_table(world["data"], "products").set_index("product_id")
    flagged = read_table(world["data"], "merchants").set_index("merchant_id")["flagged_low_quality"]
    assert not flagged.loc[products.loc[rows.product_id, "merchant_id"]].any()
    assert (rows.category_l1.to_numpy() == products.loc[rows.product_id, "category_l1"]).all()
    assert not rows.product_id.isin(world["delisted"]).any()
    assert rows.selected_goods.eq(rows.tier == 5).all()
    assert rows.selected_slot.any() and (rows.loc[rows.selected_slot, "tier"] == 5).all()
    assert rows.loc[rows.diversity_slot, "reason"].str.startswith("category diversity").all()
    assert rows.loc[rows.selected_slot, "reason"].str.startswith("Selected Goods share").all()
    assert (world["model"] / "model" / "index" / "products.faiss").is_file()  # kept for serve


def test_new_goods_are_added_to_the_index_and_delisted_ones_removed(world) -> None:
    request = ListsRequest(world["data"], str(world["model"]), str(world["tiers"]), 10)
    shard = make_shard_fn(request, load_settings("tiny"))
    try:
        _check_new_and_delisted(world, shard)
    finally:
        _RUNS.clear()  # the run was altered below: no later test may reuse it


def _check_new_and_delisted(world: dict, shard) -> None:
    run = shard.run
    index = run.index("products")
    new_ids = world["new"].product_id.to_numpy()
    assert index.contains(new_ids).all() and not index.contains(world["delisted"]).any()
    # a creator whose taste is exactly a new good's direction gets that good first
    ok = run.catalog.eligible(None, (0,), True)[run.product_positions(new_ids)]
    good = new_ids[ok][0]
    creator = int(run.creators.queries[0])
    run.creators.vectors[creator] = 20 * run.products.vectors[run.product_positions([good])[0]]
    rows = shard(np.array([0]))
    assert rows.product_id.iloc[0] == good and "new product" in rows.reason.iloc[0]
    assert not rows.reason.iloc[1:].str.contains("new product").all()


def test_rerun_resumes_and_overwrite_starts_over(world, creator_lists: Path, tmp_path) -> None:
    out = tmp_path / "copy"
    shutil.copytree(creator_lists, out)
    part = next(out.glob("part-*.parquet"))
    before = part.stat().st_mtime_ns
    again = _recommend(world, out, "--k", "10", "--tiers", str(world["tiers"]))
    assert again.exit_code == 0, again.output
    assert part.stat().st_mtime_ns == before  # complete already: nothing recomputed
    other = _recommend(world, out, "--k", "7", "--tiers", str(world["tiers"]))
    assert other.exit_code == 1 and "another job" in other.output
    fresh = _recommend(world, out, "--k", "7", "--tiers", str(world["tiers"]), "--overwrite")
    assert fresh.exit_code == 0, fresh.output
    assert pd.read_parquet(out).groupby("creator_id")["rank"].max().eq(7).all()


def test_ann_lists_agree_with_exact_lists(world, tmp_path) -> None:
    cfg = ["--k", "20", "--set", "index.kind=ivf_flat", "--set", "index.min_nlist=16"]
    ann, exact = tmp_path / "ann", tmp_path / "exact"
    assert _recommend(world, ann, *cfg).exit_code == 0
    result = _recommend(world, exact, *cfg, "--exact")
    assert result.exit_code == 0, result.output
    manifest = json.loads((ann / "_SUCCESS").read_text())
    assert manifest["products_index"]["kind"] == "ivf_flat"
    assert 0 < manifest["products_index"]["nprobe"] < manifest["products_index"]["nlist"]
    assert json.loads((exact / "_SUCCESS").read_text())["products_index"]["kind"] == "flat"
    a = pd.read_parquet(ann).groupby("creator_id").product_id.apply(set)
    b = pd.read_parquet(exact).groupby("creator_id").product_id.apply(set)
    overlap = np.mean([len(a[c] & b[c]) / len(b[c]) for c in b.index])
    assert overlap >= 0.9


def test_product_direction_covers_new_goods(world, tmp_path) -> None:
    out = tmp_path / "product"
    result = _recommend(world, out, "--k", "20", "--direction", "product")
    assert result.exit_code == 0, result.output
    rows = pd.read_parquet(out)
    assert list(rows.columns) == ["product_id", "rank", "creator_id", "score", "reason"]
    listed = read_table(world["data"], "products")["product_id"]
    assert set(rows.product_id) == set(listed)  # new goods in, delisted goods out
    assert rows.groupby("product_id")["rank"].max().eq(20).all()
    promoted = read_table(world["data"], "interactions")[["creator_id", "product_id"]]
    assert rows.merge(promoted.drop_duplicates(), on=["creator_id", "product_id"]).empty
    new = rows[rows.product_id >= NEW_ID]
    assert new.reason.str.contains("new product, embedded from its features").all()
    # a new good is placed by its features: its creators like its category
    creators = read_table(world["data"], "creators").set_index("creator_id")["category_pref"]
    leaf = world["new"].set_index("product_id")["category_l3"]
    match = (creators.loc[new.creator_id].to_numpy() == leaf.loc[new.product_id].to_numpy()).mean()
    base = np.mean([(creators == c).mean() for c in leaf])
    assert match > 2 * base


def test_shard_function_is_picklable_and_matches_the_job(world, creator_lists) -> None:
    cfg = load_settings("tiny")
    request = ListsRequest(world["data"], str(world["model"]), str(world["tiers"]), 10)
    factory = functools.partial(make_shard_fn, request, cfg)
    shard = pickle.loads(pickle.dumps(factory))()
    got = shard(np.array([0, 1, 2]))
    rows = pd.read_parquet(creator_lists)
    want = rows[rows.creator_id.isin(got.creator_id.unique())].reset_index(drop=True)
    pd.testing.assert_frame_equal(got.reset_index(drop=True), want, check_dtype=False)
    assert pickle.loads(pickle.dumps(shard)).k == 10


def test_bad_input(world, tmp_path) -> None:
    for args, message in [
        (["--k", "0"], "--k must be >= 1"),
        (["--k", "100000"], "exceeds"),
        (["--direction", "sideways"], "creator or product"),
    ]:
        result = _recommend(world, tmp_path / "bad", *args)
        assert result.exit_code == 1 and message in result.output, result.output
    result = CliRunner().invoke(
        app, ["recommend", "--data", str(world["data"]), "--model", str(tmp_path),
              "--out", str(tmp_path / "x")],
    )  # fmt: skip
    assert result.exit_code == 1 and "not a train-matching run" in result.output
    run = RetrievalRun.load(world["data"], world["model"])
    with pytest.raises(UnknownIdError, match="unknown product"):
        run.product_positions(np.array([world["delisted"][0]]))
    with pytest.raises(UnknownIdError, match="unknown creator"):
        run.creator_positions(np.array([-7]))
    # a model whose two sides disagree on the embedding width
    broken = tmp_path / "broken"
    shutil.copytree(world["model"] / "model", broken / "model")
    np.save(broken / "model" / "creator_embeddings.npy", np.zeros((3, 8), np.float32))
    with pytest.raises(RetrievalError, match="dim"):
        RetrievalRun.load(world["data"], broken)


def test_exposure_slots_list_every_new_good(world, creator_lists: Path, tmp_path) -> None:
    """Given new goods (a promoted fine-tune passes the day's), the batch job puts each
    eligible one that no list took in one creator's last place, at most one per list,
    leaves every other list as the plain job wrote it, and a rerun changes nothing."""
    from serving.batch.job import run as run_recommend

    cfg = load_settings("tiny")
    request = ListsRequest(world["data"], str(world["model"]), str(world["tiers"]), 10)
    new = world["new"]["product_id"].to_numpy()
    out = tmp_path / "exposed"
    manifest = run_recommend(cfg, request, out, progress=False, workers=1, expose=new)
    plain, rows = pd.read_parquet(creator_lists), pd.read_parquet(out)
    tiers = pd.read_parquet(world["tiers"] / "tiers.parquet").set_index("product_id")["tier"]
    merchant = world["new"].set_index("product_id")["merchant_id"]
    flagged = read_table(world["data"], "merchants").set_index("merchant_id")["flagged_low_quality"]
    shown = (tiers.loc[new].to_numpy() > 0) & ~flagged.loc[merchant.loc[new]].to_numpy()
    eligible = new[shown]
    assert 0 < len(eligible) < len(new), "some new goods are L0 or flagged: no slot for them"
    counts = manifest["exposure"]
    assert counts["goods"] == len(eligible) > counts["listed_by_score"] > 0
    assert set(eligible) <= set(rows.product_id), "every eligible new good is listed"
    assert not rows.product_id.isin(new[~shown]).any()
    slots = rows[rows.reason.str.contains("exposure slot")]
    assert len(slots) == counts["slotted"] == len(eligible) - counts["listed_by_score"]
    assert slots.creator_id.is_unique and slots["rank"].eq(10).all()
    assert rows.groupby("creator_id")["rank"].count().eq(10).all()
    assert manifest["rows"] == len(rows)
    changed = plain.creator_id.isin(slots.creator_id)
    pd.testing.assert_frame_equal(
        rows[~rows.creator_id.isin(slots.creator_id)].reset_index(drop=True),
        plain[~changed].reset_index(drop=True),
    )
    kept = rows[rows.creator_id.isin(slots.creator_id) & rows["rank"].lt(10)]
    head = plain[changed & plain["rank"].lt(10)]
    assert kept[["creator_id", "product_id"]].values.tolist() == (
        head[["creator_id", "product_id"]].values.tolist()
    ), "a slot list keeps its first k - 1 goods in order"
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")}
    assert run_recommend(cfg, request, out, progress=False, workers=1, expose=new) == manifest
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")} == before


def test_expose_since_gives_goods_listed_since_then_their_slots(world, tmp_path) -> None:
    """`recommend --expose-since T`: the goods listed at or after T are the new goods a
    daily full run shows (as a refresh shows a delta's); bad times and tables are refused."""
    data = tmp_path / "data"
    shutil.copytree(world["data"], data)
    products = read_table(data, "products")
    new = world["new"]["product_id"].to_numpy()
    since = products["listed_at"].max() + pd.Timedelta(days=1)
    products.loc[products.product_id.isin(new), "listed_at"] = since + pd.Timedelta(hours=3)
    write_table(products, data, "products")
    args = ["--k", "10", "--tiers", str(world["tiers"])]
    out = tmp_path / "lists"
    result = _recommend({**world, "data": data}, out, *args, "--expose-since", str(since.date()))
    assert result.exit_code == 0, result.output
    assert "40 goods listed since" in result.output and "exposure slotted" in result.output
    success = json.loads((out / "_SUCCESS").read_text())
    assert success["exposure_goods"]["count"] == 40
    rows = pd.read_parquet(out)
    assert rows.product_id.isin(new).any() and rows.reason.str.contains("exposure slot").any()
    for extra, message in [
        (["--expose-since", "yesterday-ish"], "--expose-since: 'yesterday-ish' is no time"),
        (["--expose-since", "2026-12-07", "--direction", "product"], "creator lists"),
    ]:
        result = _recommend({**world, "data": data}, tmp_path / "bad", *args, *extra)
        assert result.exit_code == 1 and message in result.output, result.output
        assert not (tmp_path / "bad").exists()
    write_table(products.drop(columns=["listed_at"]), data, "products")
    result = _recommend({**world, "data": data}, tmp_path / "bad", *args, "--expose-since", "2026")
    assert result.exit_code == 1 and "listed_at" in result.output, result.output
    assert not (tmp_path / "bad").exists()
