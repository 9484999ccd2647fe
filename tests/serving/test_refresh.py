"""`haowu refresh` on a copy of the tiny pipeline folder: the delta merged, new goods tiered
and indexed with add / remove, only the changed lists rewritten (the others byte for
byte), a reload serving the new state, and bad deltas refused with DIR untouched."""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from cli import app as cli_app
from features.errors import HaowuError
from features.io import read_table
from features.settings import Settings, load_settings
from models.artifacts import REFRESHED_CREATORS, SUCCESS, PipelineLayout
from models.retrieval.index import EmbeddingIndex
from models.retrieval.run import RetrievalRun
from serving.api.app import create_app
from serving.online.bundle import load_bundle
from serving.online.sources import ServeSources
from serving.refresh import job as refresh_job
from serving.refresh.job import run as refresh
from serving.refresh.staging import Staging

TOKEN = "refresh-admin-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
SHARD = 100  # creators per lists part: several parts, so untouched ones can be seen


def _overrides(args: list[str]) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args) if a == "--set"]


@pytest.fixture(scope="module")
def cfg(tiny_pipeline) -> Settings:
    return load_settings("tiny", overrides=_overrides(tiny_pipeline.args))


@pytest.fixture(scope="module")
def base(tiny_pipeline, cfg: Settings, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny pipeline folder, its creator lists written again in parts of SHARD."""
    from serving.batch.job import ListsRequest
    from serving.batch.job import run as recommend

    root = tmp_path_factory.mktemp("refresh") / "run"
    shutil.copytree(tiny_pipeline.root, root, symlinks=True)
    d = PipelineLayout(root)
    request = ListsRequest(d.data, str(d.matching), str(d.tier), 50, "creator")
    recommend(cfg, request, d.creator_lists, overwrite=True, progress=False, workers=1,
              shard_size=SHARD)  # fmt: skip
    return root


@pytest.fixture
def pipeline(base: Path, tmp_path: Path) -> Path:
    root = tmp_path / "run"
    shutil.copytree(base, root, symlinks=True)
    return root


def _folder_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _lists(root: Path) -> pd.DataFrame:
    return pd.read_parquet(PipelineLayout(root).creator_lists)


# ----------------------------------------------------------------------------- deltas
def _clone_goods(data: Path, sources: list[int], out: Path) -> list[int]:
    """New goods with the side features (and stats) of `sources`; returns their IDs."""
    products = read_table(data, "products")
    new = products.set_index("product_id").loc[sources].reset_index()
    new["product_id"] = int(products["product_id"].max()) + 1 + np.arange(len(new))
    new.to_parquet(out / "products.parquet", index=False)
    stats = read_table(data, "product_stats").set_index("product_id").loc[sources].reset_index()
    stats["product_id"] = new["product_id"].to_numpy()
    stats.to_parquet(out / "product_stats.parquet", index=False)
    return new["product_id"].tolist()


def _new_interactions(data: Path, creators: list[int], out: Path) -> pd.DataFrame:
    inter = read_table(data, "interactions")
    rows = inter.iloc[: len(creators)].copy()
    rows["creator_id"] = creators
    rows["ts"] = inter["ts"].max() + pd.Timedelta(hours=1)
    rows.to_parquet(out / "interactions.parquet", index=False)
    return rows


def _flag(data: Path, merchant: int, out: Path) -> None:
    merchants = read_table(data, "merchants")
    row = merchants[merchants["merchant_id"] == merchant].copy()
    row["flagged_low_quality"] = True
    row.to_parquet(out / "merchants.parquet", index=False)


def _merchant_of_few_listed_goods(root: Path) -> tuple[int, set[int]]:
    """A merchant whose goods sit in a few creator lists (not flagged yet): its goods."""
    lists, data = _lists(root), root / "data"
    products = read_table(data, "products", columns=["product_id", "merchant_id"])
    merchants = read_table(data, "merchants")
    listed = products[products["product_id"].isin(lists["product_id"])]
    counts = listed.merge(lists, on="product_id")["merchant_id"].value_counts()
    ok = set(merchants.loc[~merchants["flagged_low_quality"], "merchant_id"])
    merchant = int(next(m for m in counts.sort_values().index if m in ok))
    return merchant, set(products.loc[products["merchant_id"] == merchant, "product_id"])


# ------------------------------------------------------------------ only what changed
def test_only_changed_lists_are_rewritten_and_the_index_is_patched(pipeline, cfg, tmp_path):
    d = PipelineLayout(pipeline)
    before, files_before = _lists(pipeline), _folder_digest(d.creator_lists)
    plaza_before = pd.read_parquet(d.product_lists)
    tiers_before = pd.read_parquet(d.tier / "tiers.parquet")
    creators = sorted(before["creator_id"].unique())
    rng = np.random.default_rng(0)
    delta = tmp_path / "delta"
    delta.mkdir()
    eligible = pd.read_parquet(d.tier / "tiers.parquet").query("tier >= 1")["product_id"]
    goods = _clone_goods(d.data, rng.choice(eligible.to_numpy(), 2, replace=False).tolist(), delta)
    busy = [int(c) for c in rng.choice(creators, 4, replace=False)]
    _new_interactions(d.data, busy, delta)
    merchant, flagged_goods = _merchant_of_few_listed_goods(pipeline)
    _flag(d.data, merchant, delta)

    manifest = refresh(cfg, pipeline, delta)

    after = _lists(pipeline)
    creator_lists = manifest["lists"]["creator"]
    reasons = creator_lists["reasons"]
    assert reasons["new_interactions"] == len(busy)
    holders = set(before.loc[before["product_id"].isin(flagged_goods), "creator_id"])
    assert reasons["held_removed_good"] >= len(holders) > 0
    # the lists of every creator no reason names are the same rows in the same order
    changed = set(busy) | holders
    held_new = set(after.loc[after["product_id"].isin(goods), "creator_id"])
    changed |= held_new
    same = [c for c in creators if c not in changed]
    rewritten = creator_lists["lists_rewritten"]
    assert 0 < rewritten < len(creators) and len(same) >= len(creators) - rewritten
    mine = before["creator_id"].isin(same)
    pd.testing.assert_frame_equal(
        before[mine].reset_index(drop=True),
        after[after["creator_id"].isin(same)].reset_index(drop=True),
    )
    files_after = _folder_digest(d.creator_lists)
    kept = [n for n in files_before if n.startswith("part-") and files_after[n] == files_before[n]]
    assert len(kept) == creator_lists["parts_kept"] > 0  # untouched parts: byte-identical
    assert creator_lists["parts_rewritten"] >= 1
    # flagged goods left every list; the busy creators' new goods are not offered back
    assert not set(after["product_id"]) & flagged_goods
    # every new good is in some list today: by score, or in an exposure slot at a list's end
    assert set(goods) <= set(after["product_id"])
    assert after.groupby("creator_id").size().max() <= 50
    slots = after[after["reason"].str.contains("exposure slot")]
    assert set(slots["product_id"]) <= set(goods)
    per_list = slots.groupby("creator_id").size()
    assert per_list.empty or per_list.max() <= cfg.refresh.new_good_slots_per_list
    assert reasons.get("new_good_slot", 0) <= len(goods)
    # the saved goods index was patched live: new goods in, the flagged merchant's out
    index = EmbeddingIndex.load(d.matching / "model" / "index", "products")
    assert index.contains(np.array(goods)).all()
    assert not index.contains(np.array(sorted(flagged_goods))).any()
    products = manifest["indexes"]["products"]
    assert products["added"] == len(goods) and products["removed"] >= len(flagged_goods)
    assert products["action"].startswith("patched") and products["rebuild_reason"] is None
    # new goods have product lists; the refresh manifest and _SUCCESS say what happened
    plaza = pd.read_parquet(d.product_lists)
    assert set(goods) <= set(plaza["product_id"]) and not set(plaza["product_id"]) & flagged_goods
    # the broker matches were made again: the flagged merchant's goods left them too
    matches = pd.read_parquet(d.brokers / "matches.parquet")
    assert manifest["brokers"]["assignments"] == len(matches) > 0
    assert not set(matches["product_id"]) & flagged_goods
    # re-embedded creators are not new: no product list is written again for them
    assert manifest["lists"]["product"]["reasons"]["new_creator_enters"] == 0
    l0 = set(tiers_before.loc[tiers_before["tier"] == 0, "product_id"]) - flagged_goods
    assert l0 & set(plaza_before["product_id"]) <= set(plaza["product_id"])  # not this delta's
    success = json.loads((d.creator_lists / SUCCESS).read_text())
    assert success["rows"] == len(after) and success["refresh"]["delta_digest"]
    assert success["data_digest"] == manifest["data_digest"] != manifest["data_digest_before"]
    assert json.loads(d.refresh_manifest.read_text())["lists"]["creator"] == creator_lists
    # the busy creators moved (updated history), kept beside the index, read back on load
    history = manifest["creator_history"]
    assert history["creators_reembedded"] == len(busy) and history["mean_cosine_to_before"] < 1
    run = RetrievalRun.load(d.data, d.matching, d.tier)
    model = np.load(d.matching / "model" / "creator_embeddings.npy")
    at = run.creators.ids.positions(np.array(sorted(busy)))
    with np.load(d.matching / "model" / "index" / REFRESHED_CREATORS) as saved:
        assert saved["ids"].tolist() == sorted(busy)
        np.testing.assert_array_equal(run.creators.vectors[at], saved["vectors"])
    assert not np.allclose(run.creators.vectors[at], model[at])
    still = np.setdiff1d(np.arange(len(model)), at)
    np.testing.assert_array_equal(run.creators.vectors[still], model[still])
    creators_index = EmbeddingIndex.load(d.matching / "model" / "index", "creators")
    assert creators_index.contains(np.array(busy)).all()
    assert manifest["indexes"]["creators"]["removed_why"] == {"reembedded": len(busy)}
    assert manifest["tiering"]["tiered"] >= len(goods) + len(flagged_goods)
    tiers = pd.read_parquet(d.tier / "tiers.parquet").set_index("product_id")["tier"]
    assert tiers.loc[goods].between(0, 5).all() and (tiers.loc[sorted(flagged_goods)] == 0).all()


def test_new_creators_enter_the_product_lists_they_score_into(pipeline, cfg, tmp_path):
    """New creators (embedded from their features) get a goods list, and each product
    list one of them scores into is written again with it; every other product list
    stays as it was."""
    d = PipelineLayout(pipeline)
    plaza_before = pd.read_parquet(d.product_lists)
    delta = tmp_path / "delta"
    delta.mkdir()
    creators = read_table(d.data, "creators")
    new = creators.sample(6, random_state=3).assign(
        creator_id=int(creators["creator_id"].max()) + 1 + np.arange(6)
    )
    new.to_parquet(delta / "creators.parquet", index=False)

    manifest = refresh(cfg, pipeline, delta)

    fresh = set(new["creator_id"])
    assert manifest["lists"]["creator"]["reasons"]["new_creator"] == len(fresh)
    assert fresh <= set(_lists(pipeline)["creator_id"])
    plaza = pd.read_parquet(d.product_lists)
    entered = set(plaza.loc[plaza["creator_id"].isin(fresh), "product_id"])
    reasons = manifest["lists"]["product"]["reasons"]
    assert reasons["new_creator_enters"] == len(entered) > 0
    assert manifest["lists"]["product"]["lists_rewritten"] == len(entered)
    same = ~plaza_before["product_id"].isin(entered)
    pd.testing.assert_frame_equal(
        plaza_before[same].reset_index(drop=True),
        plaza[~plaza["product_id"].isin(entered)].reset_index(drop=True),
    )


def test_a_second_identical_refresh_is_a_no_op(pipeline, cfg, tmp_path):
    d = PipelineLayout(pipeline)
    delta = tmp_path / "delta"
    delta.mkdir()
    _new_interactions(d.data, [int(_lists(pipeline)["creator_id"].iloc[0])], delta)
    first = refresh(cfg, pipeline, delta)
    assert first["lists"]["creator"]["reasons"]["new_interactions"] == 1
    state = _folder_digest(pipeline)
    again = refresh(cfg, pipeline, delta)
    assert again["noop"] and again["delta_digest"] == first["delta_digest"]
    assert _folder_digest(pipeline) == state


def test_index_rebuilt_only_when_a_signal_says_so(pipeline, tiny_pipeline, tmp_path):
    """IVF goods index: patched under the default list-imbalance bound; rebuilt (and
    the manifest says why) under a bound every IVF index exceeds."""
    d = PipelineLayout(pipeline)
    delta = tmp_path / "delta"
    delta.mkdir()
    tiers = pd.read_parquet(d.tier / "tiers.parquet")
    _clone_goods(d.data, tiers.loc[tiers["tier"] >= 1, "product_id"][:3].tolist(), delta)
    ivf = [*_overrides(tiny_pipeline.args), "index.kind=ivf_flat", "index.min_nlist=16"]
    patched = refresh(load_settings("tiny", overrides=ivf), pipeline, delta)
    goods = patched["indexes"]["products"]
    assert goods["kind"] == "ivf_flat" and goods["action"].startswith("patched")
    assert goods["added"] == 3 and goods["rebuild_reason"] is None
    assert goods["probe_recall"] >= 0.95 and goods["list_imbalance"] > 1
    strict = load_settings("tiny", overrides=[*ivf, "refresh.max_list_imbalance=1.001"])
    rebuilt = refresh(strict, pipeline, _second_delta(pipeline, tmp_path))["indexes"]["products"]
    assert rebuilt["action"] == "rebuilt" and "list imbalance" in rebuilt["rebuild_reason"]
    index = EmbeddingIndex.load(d.matching / "model" / "index", "products")
    assert len(index) == rebuilt["items"] and index.kind == "ivf_flat"


def _second_delta(root: Path, tmp_path: Path) -> Path:
    delta = tmp_path / "delta2"
    delta.mkdir()
    _new_interactions(root / "data", [int(_lists(root)["creator_id"].iloc[1])], delta)
    return delta


# ---------------------------------------------------------------------- the service
def test_a_reload_serves_the_new_good_and_drops_the_flagged_merchant(
    pipeline, cfg, tmp_path, monkeypatch
):
    monkeypatch.setenv("HAOWU_ADMIN_TOKEN", TOKEN)
    d = PipelineLayout(pipeline)
    before = _lists(pipeline)
    popular = int(before["product_id"].value_counts().index[0])  # its twin enters lists
    merchant, flagged_goods = _merchant_of_few_listed_goods(pipeline)
    delta = tmp_path / "delta"
    delta.mkdir()
    (new_good,) = _clone_goods(d.data, [popular], delta)
    _flag(d.data, merchant, delta)
    holders = before.loc[before["product_id"].isin(flagged_goods), "creator_id"].unique()[:10]
    bundle = load_bundle(ServeSources.from_dir(pipeline), cfg)
    with TestClient(create_app(cfg, bundle=bundle), raise_server_exceptions=False) as c:
        assert c.get(f"/products/{new_good}/tier").status_code == 404
        served = {int(h): c.get(f"/creators/{h}/goods", params={"k": 50}).json() for h in holders}
        assert all({i["product_id"] for i in b["items"]} & flagged_goods for b in served.values())

        manifest = refresh(cfg, pipeline, delta)
        assert manifest["lists"]["creator"]["reasons"]["new_good_enters"] > 0
        statuses: list[int] = []
        stop = threading.Event()

        def ask() -> None:  # requests all through the reload
            while not stop.is_set():
                for h in holders:
                    statuses.append(c.get(f"/creators/{h}/goods", params={"k": 10}).status_code)

        asker = threading.Thread(target=ask)
        asker.start()
        try:
            r = c.post("/admin/reload?wait=true", headers=ADMIN)
        finally:
            stop.set()
            asker.join(30)
        assert r.status_code == 200 and r.json()["status"] == "ok"
        assert statuses and set(statuses) == {200}

        assert c.get(f"/products/{new_good}/tier").status_code == 200
        after = _lists(pipeline)
        fan = int(after.loc[after["product_id"] == new_good, "creator_id"].iloc[0])
        body = c.get(f"/creators/{fan}/goods", params={"k": 50}).json()
        assert body["source"] == "batch" and new_good in {i["product_id"] for i in body["items"]}
        assert c.get(f"/products/{new_good}/creators", params={"k": 5}).json()["source"] == "batch"
        for h in holders:
            body = c.get(f"/creators/{h}/goods", params={"k": 50}).json()
            assert body["source"] == "batch"
            assert not {i["product_id"] for i in body["items"]} & flagged_goods
        live = c.get(f"/creators/{holders[0]}/goods", params={"k": 60}).json()  # beyond k
        assert live["source"] == "live" and not {i["product_id"] for i in live["items"]} & (
            flagged_goods
        )


# ---------------------------------------------------------------------- bad input
def _bad_delta(kind: str, data: Path, out: Path) -> None:
    products = read_table(data, "products")
    inter = read_table(data, "interactions")
    if kind == "unknown_product":
        rows = inter.iloc[:3].copy()
        rows["ts"] = inter["ts"].max() + pd.Timedelta(days=1)
        rows.loc[rows.index[1], "product_id"] = 99_999_999_999
        rows.to_parquet(out / "interactions.parquet", index=False)
    elif kind == "unknown_creator":
        rows = inter.iloc[:2].copy()
        rows["ts"] = inter["ts"].max() + pd.Timedelta(days=1)
        rows["creator_id"] = 77_777_777_777
        rows.to_parquet(out / "interactions.parquet", index=False)
    elif kind == "unknown_merchant":
        products.head(1).assign(merchant_id=88_888_888_888).to_parquet(
            out / "products.parquet", index=False
        )
    elif kind == "stale":
        rows = inter.iloc[:3].copy()
        rows["ts"] = inter["ts"].min()
        rows.to_parquet(out / "interactions.parquet", index=False)
    elif kind == "schema_change":
        products.head(2).assign(colour="red").to_parquet(out / "products.parquet", index=False)
    elif kind == "wrong_type":
        products.head(2).astype({"price": str}).to_parquet(out / "products.parquet", index=False)
    elif kind == "duplicate_key":
        pd.concat([products.head(2), products.head(1)]).to_parquet(
            out / "products.parquet", index=False
        )
    elif kind == "missing_column":
        inter.head(2).drop(columns=["ts"]).to_parquet(out / "interactions.parquet", index=False)
    elif kind == "not_a_table":
        products.head(2).to_parquet(out / "orders.parquet", index=False)
    # "empty": nothing in the folder


BAD = {
    "unknown_product": r"interactions.*column 'product_id'.*unknown product_id: in neither",
    "unknown_creator": r"interactions.*column 'creator_id'.*unknown creator_id: in neither",
    "unknown_merchant": r"products.*column 'merchant_id'.*unknown merchant_id: in neither",
    "stale": r"column 'ts'.*delta older than the run it refreshes",
    "schema_change": r"products.*column 'colour'.*schema change",
    "wrong_type": r"products.*column 'price'",
    "duplicate_key": r"products.*duplicate key",
    "missing_column": r"interactions.*missing required column",
    "not_a_table": r"orders.parquet is not a table a refresh takes",
    "empty": r"no delta tables",
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_deltas_are_refused_and_dir_is_untouched(base, cfg, tmp_path, kind):
    delta = tmp_path / "delta"
    delta.mkdir()
    _bad_delta(kind, base / "data", delta)
    state = _folder_digest(base)
    with pytest.raises(HaowuError, match=BAD[kind]) as exc:
        refresh(cfg, base, delta)
    assert str(delta) in str(exc.value) or kind == "empty"
    assert _folder_digest(base) == state


def test_lists_of_another_policy_are_refused(base, tiny_pipeline, tmp_path):
    delta = tmp_path / "delta"
    delta.mkdir()
    _new_interactions(base / "data", [int(_lists(base)["creator_id"].iloc[0])], delta)
    other = load_settings(
        "tiny", overrides=[*_overrides(tiny_pipeline.args), "policy.mmr_lambda=0.5"]
    )
    state = _folder_digest(base)
    with pytest.raises(HaowuError, match="another policy.*mmr_lambda"):
        refresh(other, base, delta)
    assert _folder_digest(base) == state


def test_a_batch_job_writing_the_lists_holds_the_refresh_off(pipeline, cfg, tmp_path):
    from serving.batch.folder_lock import FolderLockedError, output_lock

    d = PipelineLayout(pipeline)
    delta = tmp_path / "delta"
    delta.mkdir()
    _new_interactions(d.data, [int(_lists(pipeline)["creator_id"].iloc[0])], delta)
    state = _folder_digest(d.creator_lists)
    with output_lock(d.creator_lists, "batch job"), pytest.raises(FolderLockedError):
        refresh(cfg, pipeline, delta)
    assert _folder_digest(d.creator_lists) == state


def test_the_cli_says_it_in_one_line(base, tiny_pipeline, tmp_path):
    delta = tmp_path / "delta"
    delta.mkdir()
    _bad_delta("stale", base / "data", delta)
    args = ["refresh", "--from", str(base), "--delta", str(delta), "--preset", "tiny"]
    result = CliRunner().invoke(cli_app, args)
    assert result.exit_code == 1
    assert "error: table 'interactions'" in result.output
    assert "delta older than the run" in result.output and "Traceback" not in result.output


def test_a_failed_step_leaves_dir_untouched(pipeline, cfg, tmp_path, monkeypatch):
    d = PipelineLayout(pipeline)
    delta = tmp_path / "delta"
    delta.mkdir()
    _new_interactions(d.data, [int(_lists(pipeline)["creator_id"].iloc[0])], delta)
    state = _folder_digest(pipeline)

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(refresh_job, "rewrite_creator_lists", broken)
    with pytest.raises(OSError, match="disk full"):
        refresh(cfg, pipeline, delta)
    assert _folder_digest(pipeline) == state
    assert not (d.refresh / "staging").exists()


def test_a_refresh_killed_after_its_commit_is_finished_by_the_next_run(
    pipeline, cfg, tmp_path, monkeypatch
):
    """The plan is written (committed) but no file moved: the next run rolls it forward
    and gives the lists an uninterrupted refresh gives."""
    d = PipelineLayout(pipeline)
    twin = tmp_path / "twin"
    shutil.copytree(pipeline, twin, symlinks=True)
    delta = tmp_path / "delta"
    delta.mkdir()
    _new_interactions(d.data, [int(c) for c in _lists(pipeline)["creator_id"].unique()[:3]], delta)
    state = _folder_digest(pipeline)
    finish = Staging.finish

    def killed(self: Staging) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(Staging, "finish", killed)
    with pytest.raises(KeyboardInterrupt):
        refresh(cfg, pipeline, delta)
    monkeypatch.setattr(Staging, "finish", finish)
    outside = {k: v for k, v in _folder_digest(pipeline).items() if not k.startswith(".refresh")}
    assert outside == state  # nothing moved yet ...
    assert refresh(cfg, pipeline, delta)["noop"]  # ... the rerun finished it first
    refresh(cfg, twin, delta)
    pd.testing.assert_frame_equal(_lists(pipeline), _lists(twin))
    tiers = [pd.read_parquet(p / "tier" / "tiers.parquet") for p in (pipeline, twin)]
    pd.testing.assert_frame_equal(*tiers)


def test_exposure_slots_are_greedy_by_score_and_capped_per_list() -> None:
    from models.retrieval.exposure import assign, place

    # goods 1 and 2 both want creator 7 first; a list takes one slot, so 2 goes to 8
    options = pd.DataFrame(
        {"product_id": [1, 1, 2, 2, 3], "creator_id": [7, 9, 7, 8, 7],
         "score": [0.9, 0.5, 0.8, 0.7, 0.1], "rank": [1, 2, 1, 2, 1]}
    )  # fmt: skip
    chosen = assign(options, per_good=1, per_list=1)
    assert dict(zip(chosen["product_id"], chosen["creator_id"], strict=True)) == {1: 7, 2: 8}
    # good 3's only creator is full: it stays out rather than overfill a list
    lists = pd.DataFrame(
        {"creator_id": [7, 7, 7, 8], "rank": [1, 2, 3, 1],
         "product_id": [10, 11, 12, 13], "score": [3.0, 2.0, 1.0, 1.0]}
    )  # fmt: skip
    slot = chosen.assign(rank=0)[["creator_id", "rank", "product_id", "score"]]
    out = place(lists, slot, k=3)
    assert out[out["creator_id"] == 7]["product_id"].tolist() == [10, 11, 1]  # last place
    assert out[out["creator_id"] == 8][["product_id", "rank"]].values.tolist() == [[13, 1], [2, 2]]
