"""Fine-tuning the champion (training/matching/fine_tune.py): the warm start keeps what the
model knew, the new period splits by time, and `haowu refresh --fine-tune` on a copy of
the tiny pipeline learns a planted new taste, passes the gate against the champion on
the held-out pairs, becomes DIR's model and rewrites the lists with it."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from typer.testing import CliRunner

from cli import app as cli_app
from features.io import read_table
from features.settings import MatchingConfig, RegistryConfig, load_settings
from models.artifacts import (
    FINE_TUNED_FROM_TAG,
    RUN_META,
    PipelineLayout,
    model_digest,
    open_matching_run,
)
from models.matching.recommender import Recommender
from training.lifecycle.promotion import PromotionRefused, _fine_tuned_gate
from training.matching.fine_tune import (
    FineTuneError,
    delta_start,
    install,
    new_period,
    trained_model,
)
from training.matching.fine_tune import run as fine_tune
from training.matching.two_tower_fit import TwoTowerTrainer
from training.matching.warm_start import carry


# ------------------------------------------------------------------ the warm start
def _fitted(n_creators: int = 40, n_products: int = 30) -> tuple[TwoTowerTrainer, sp.csr_matrix]:
    rng = np.random.default_rng(0)
    pairs = sp.random(n_creators, n_products, density=0.2, random_state=1, format="csr")
    pairs.data[:] = 1.0
    products = pd.DataFrame({"category_l3": np.arange(n_products) % 3,
                             "price": rng.uniform(1, 50, n_products)})  # fmt: skip
    cfg = MatchingConfig(id_dim=8, side_dim=4, hidden=[16], out_dim=8, batch_size=32, epochs=2,
                         val_creators=0, threads=1, product_categorical=["category_l3"],
                         product_numeric=["price"])  # fmt: skip
    model = TwoTowerTrainer(cfg, product_frame=products, progress=False).fit(pairs)
    return model, pairs


def test_the_warm_start_keeps_known_rows_and_starts_new_ids_at_the_oov_row(tmp_path: Path) -> None:
    model, pairs = _fitted()
    old_creators, old_products = np.arange(40) * 10, np.arange(30) * 10  # the model's IDs
    # the new catalog: two new goods (IDs 5, 295) and one new creator (ID 7) between the old
    creators, products = np.sort(np.r_[old_creators, 7]), np.sort(np.r_[old_products, 5, 295])
    new_good = int(np.searchsorted(products, 5))
    # the pairs the warm start trains on: one with a new good, one with an unseen good
    train_c, train_p = np.array([0, 3]), np.array([new_good, int(np.searchsorted(products, 295))])
    warm = carry(model, old_creators, old_products, creators, products, train_c, train_p, 1)
    enc, old = warm.encoders, model.encoders
    at = np.searchsorted(products, old_products)
    np.testing.assert_array_equal(enc.product_ids.rows[at], old.product_ids.rows)
    assert warm.new_rows == {"creator": 0, "product": 2}  # the new creator has no pair
    assert enc.creator_ids.rows[np.searchsorted(creators, 7)] == 0
    row = enc.product_ids.rows[new_good]
    assert row == old.product_ids.vocab_size  # past the old table ...
    table = warm.model.product_tower.ids.weight.detach()
    oov = model.model.product_tower.ids.weight.detach()[0]
    assert torch.equal(table[row], oov)  # ... started where a cold good sits

    # carried without training, the model places every old good where it did
    frame = model.product_frame.iloc[np.searchsorted(old_products, np.clip(products, 0, 290))]
    adopted = TwoTowerTrainer(
        model.cfg, product_frame=frame.reset_index(drop=True), progress=False
    ).adopt(warm, sp.csr_matrix((len(creators), len(products))))
    np.testing.assert_allclose(adopted.product_vectors[at], model.product_vectors, atol=1e-5)
    # and saved, it loads with the same rows (new rows sit past the old table, out of
    # position order): the loaded model is the one that was trained
    adopted.save(tmp_path / "model")
    loaded = Recommender.load(tmp_path / "model")
    for side in ("creator_ids", "product_ids"):
        saved_rows = getattr(loaded.encoders, side).rows
        np.testing.assert_array_equal(saved_rows, getattr(adopted.encoders, side).rows)


def test_the_warm_start_carries_the_optimiser_state_and_training_goes_on_from_it(
    tmp_path: Path,
) -> None:
    """The fitted model saves its optimisers' state; a warm start carries it onto the new
    rows (a new row's Adagrad sum starts at 0), and a fit from it takes the small steps
    training had reached where a fresh optimiser takes its large first ones."""
    model, pairs = _fitted()
    model.save(tmp_path / "model")
    loaded = Recommender.load(tmp_path / "model")
    assert loaded.optimizer_state is not None
    table = "product_tower.ids.weight"
    saved = loaded.optimizer_state[table]["sum"]
    assert torch.equal(saved, model.optimizer_state[table]["sum"]) and (saved > 0).any()
    old_ids, new_ids = np.arange(40), np.arange(31)  # one new good, ID 30
    train_c, train_p = pairs.tocoo().row, pairs.tocoo().col
    train_c, train_p = np.r_[train_c, 0, 1], np.r_[train_p, 30, 30]
    warm = carry(loaded, old_ids, np.arange(30), old_ids, new_ids, train_c, train_p, 1, True)
    grown = warm.optimizer[table]["sum"]
    assert len(grown) == len(saved) + 1 and grown[-1] == 0
    assert torch.equal(grown[:-1], saved)
    assert carry(loaded, old_ids, np.arange(30), old_ids, new_ids, train_c, train_p, 1
                 ).optimizer is None  # the default: a new optimiser  # fmt: skip

    frame = pd.concat([model.product_frame, model.product_frame.iloc[:1]], ignore_index=True)
    day = sp.csr_matrix((np.ones(2), (np.array([0, 1]), np.array([30, 30]))), shape=(40, 31))
    moved = {}
    for name, with_optimizer in (("carried", True), ("fresh", False)):
        start = carry(loaded, old_ids, np.arange(30), old_ids, new_ids, train_c, train_p, 1,
                      with_optimizer=with_optimizer)  # fmt: skip
        before = start.model.product_tower.ids.weight.detach().clone()[1:30]
        tuned = TwoTowerTrainer(model.cfg.model_copy(update={"epochs": 1}), product_frame=frame,
                                progress=False).fit(pairs_with(pairs, day), warm=start)  # fmt: skip
        after = tuned.model.product_tower.ids.weight.detach()[1:30]
        moved[name] = float((after - before).norm())
    assert moved["carried"] < 0.5 * moved["fresh"], moved


def pairs_with(pairs: sp.csr_matrix, more: sp.csr_matrix) -> sp.csr_matrix:
    """`pairs` on `more`'s wider catalog, plus `more`."""
    wide = sp.csr_matrix((pairs.data, pairs.indices, pairs.indptr), shape=more.shape)
    out = (wide + more).tocsr()
    out.data[:] = 1.0
    return out


def test_the_trained_model_is_found_through_the_replaced_runs(tmp_path: Path) -> None:
    """DIR/matching (run c) was fine-tuned from b, b from a, a by train-matching: a
    fine-tune `start_from: trained` starts from a's folder; a broken or looping chain is
    refused."""
    layout = PipelineLayout(tmp_path)

    def run(folder: Path, run_id: str, base: str | None) -> Path:
        folder.mkdir(parents=True)
        meta = {"run_id": run_id} | ({"fine_tuned_from": base} if base else {})
        (folder / RUN_META).write_text(json.dumps(meta))
        return folder

    run(layout.matching, "c", "b")
    run(layout.fine_tune / "day2.replaced", "b", "a")
    first = run(layout.fine_tune / "day1.replaced", "a", None)
    assert trained_model(layout) == first
    shutil.rmtree(first)
    with pytest.raises(FineTuneError, match="fine-tuned from run a, but no"):
        trained_model(layout)
    run(layout.fine_tune / "day1.replaced", "a", "b")  # a loop: b -> a -> b
    with pytest.raises(FineTuneError, match="name run b twice"):
        trained_model(layout)


def test_the_new_period_holds_out_its_latest_pairs_and_replays_older_ones() -> None:
    first_ts = np.arange(1000, dtype=np.int64) * 10**9
    since = np.datetime64(800, "s").astype("datetime64[ns]")
    period = new_period(first_ts, since, 0.25, 0.5, 10, np.random.default_rng(0))
    assert period.new.sum() == 200
    assert first_ts[period.holdout].min() > first_ts[period.new & ~period.holdout].max()
    assert period.holdout.sum() == pytest.approx(50, abs=1)
    assert not (period.train & period.holdout).any()
    assert period.counts()["replayed_pairs"] == 400  # half of the 800 older pairs
    every = new_period(first_ts, since, 0.25, 1.0, 10, np.random.default_rng(0))
    assert (every.train == ~every.holdout).all()  # the default: every older pair replayed
    with pytest.raises(FineTuneError, match="min_new_pairs"):
        new_period(first_ts, since, 0.25, 0.5, 500, np.random.default_rng(0))


def test_the_fine_tune_gate_compares_the_run_with_its_own_base() -> None:
    cfg = RegistryConfig()
    metrics = {"recall_at_50": 0.30, "champion.recall_at_50": 0.20}
    champion = SimpleNamespace(run_id="a" * 32, version="3")
    (row,) = _fine_tuned_gate(champion, "a" * 32, metrics, cfg, "haowu-matching", False)
    assert (row.champion, row.challenger, row.passed) == (0.20, 0.30, True)
    worse = {"recall_at_50": 0.10, "champion.recall_at_50": 0.20}
    assert not _fine_tuned_gate(champion, "a" * 32, worse, cfg, "haowu-matching", False)[0].passed
    with pytest.raises(PromotionRefused, match="champion is now v3"):
        _fine_tuned_gate(champion, "b" * 32, metrics, cfg, "haowu-matching", False)


# ------------------------------------------------------------ on the tiny pipeline
def _planted_delta(data: Path, out: Path) -> tuple[list[int], list[int]]:
    """A day after the data's last event: 8 new goods (twins of listed ones) that 60
    creators each promote, spread over the day; returns (goods, creators)."""
    out.mkdir()
    products = read_table(data, "products")
    stats = read_table(data, "product_stats")
    source = stats["product_id"].sample(8, random_state=0).to_numpy()
    new = products.set_index("product_id").loc[source].reset_index()
    new["product_id"] = int(products["product_id"].max()) + 1 + np.arange(len(new))
    new.to_parquet(out / "products.parquet", index=False)
    twin = stats.set_index("product_id").loc[source].reset_index()
    twin["product_id"] = new["product_id"].to_numpy()
    twin.to_parquet(out / "product_stats.parquet", index=False)
    inter = read_table(data, "interactions")
    creators = inter["creator_id"].drop_duplicates().sample(60, random_state=1).to_numpy()
    c, p = np.meshgrid(creators, new["product_id"].to_numpy(), indexing="ij")
    rows = pd.DataFrame({"creator_id": c.ravel(), "product_id": p.ravel()})
    start = inter["ts"].max() + pd.Timedelta(minutes=5)
    rows["ts"] = start + pd.to_timedelta(
        np.random.default_rng(2).uniform(0, 86_400, len(rows)), "s"
    )
    for column in inter.columns.difference(rows.columns):
        rows[column] = inter[column].iloc[: len(rows)].to_numpy()
    rows[inter.columns].to_parquet(out / "interactions.parquet", index=False)
    return new["product_id"].tolist(), creators.tolist()


@pytest.fixture
def registry(tiny_pipeline, tmp_path: Path):
    """A copy of the tiny pipeline's registry, so that its champion can move here."""
    db = Path(tiny_pipeline.tracking_uri.removeprefix("sqlite:///"))
    copy = tmp_path / "mlflow.db"
    shutil.copyfile(db, copy)
    before = os.environ["MLFLOW_TRACKING_URI"]
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{copy}"
    yield
    os.environ["MLFLOW_TRACKING_URI"] = before


def test_refresh_fine_tune_learns_new_goods_passes_the_gate_and_rewrites_the_lists(
    tiny_pipeline, registry, tmp_path: Path
) -> None:
    import mlflow

    root = tmp_path / "run"
    shutil.copytree(tiny_pipeline.root, root, symlinks=True)
    d = PipelineLayout(root)
    goods, _ = _planted_delta(d.data, tmp_path / "delta")
    with pytest.raises(FineTuneError, match="haowu refresh"):  # not applied yet
        fine_tune(load_settings("tiny", overrides=_sets(tiny_pipeline)), root, tmp_path / "delta")
    base_digest = model_digest(d.matching / "model")
    args = ["refresh", "--from", str(root), "--delta", str(tmp_path / "delta"), "--fine-tune",
            "--preset", "tiny", *sum((["--set", s] for s in _sets(tiny_pipeline)), []),
            "--set", "refresh.fine_tune.epochs=3"]  # fmt: skip
    result = CliRunner().invoke(cli_app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "is champion" in result.output, result.output
    assert mlflow.active_run() is None  # the learning curve went into the fine-tune run

    # the fine-tuned run became DIR's model; the replaced one is kept
    meta = json.loads((d.matching / RUN_META).read_text())
    run = mlflow.get_run(meta["run_id"])
    assert run.data.tags[FINE_TUNED_FROM_TAG] != meta["run_id"]
    metrics = run.data.metrics
    assert metrics["recall_at_50"] > metrics["champion.recall_at_50"] + 0.2, metrics
    assert metrics["new_product_rows"] >= len(goods)  # and goods new to the model's rows
    tuned = open_matching_run(d.matching)
    assert (tuned.model.encoders.product_ids.rows[tuned.products.positions(goods)] > 0).all()
    replaced = list(d.fine_tune.glob("*.replaced"))
    assert len(replaced) == 1 and model_digest(replaced[0] / "model") == base_digest
    with pytest.raises(FineTuneError, match="fine-tuned from run"):  # not over another base
        install(d, replaced[0])
    assert str(
        mlflow.MlflowClient().get_model_version_by_alias("haowu-matching", "champion").version
    ) == str(meta["version"])

    # every list was written again by the new model
    new_digest = model_digest(d.matching / "model")
    for folder in (d.creator_lists, d.product_lists):
        success = json.loads((folder / "_SUCCESS").read_text())
        assert success["model_digest"] == new_digest != base_digest
    # ... and the delta's new goods kept a place in some creator's list
    creator = json.loads((d.creator_lists / "_SUCCESS").read_text())
    assert creator["exposure_goods"]["count"] == len(goods)
    listed = pd.read_parquet(d.creator_lists, columns=["product_id"])["product_id"]
    assert np.isin(goods, listed).sum() >= creator["exposure"]["goods"] > 0

    # the next day fine-tunes the trained model again (`start_from: trained`), judged
    # against the first fine-tune, which it would replace
    _planted_delta(d.data, tmp_path / "delta2")
    sets = sum((["--set", s] for s in _sets(tiny_pipeline)), [])
    args = ["refresh", "--from", str(root), "--delta", str(tmp_path / "delta2"), "--preset", "tiny"]
    result = CliRunner().invoke(cli_app, [*args, *sets])
    assert result.exit_code == 0, result.output + repr(result.exception)
    cfg = load_settings("tiny", overrides=_sets(tiny_pipeline))
    second = fine_tune(cfg, root, tmp_path / "delta2", register=False)
    second_run = mlflow.get_run(
        json.loads((Path(second["run_dir"]) / RUN_META).read_text())["run_id"]
    )
    assert second_run.data.params["weights_from"] == run.data.tags[FINE_TUNED_FROM_TAG]
    assert second_run.data.tags[FINE_TUNED_FROM_TAG] == meta["run_id"]


def _sets(tiny_pipeline) -> list[str]:
    args = tiny_pipeline.args
    return [args[i + 1] for i, a in enumerate(args) if a == "--set"]


def test_a_delta_without_interactions_is_refused(tmp_path: Path) -> None:
    (tmp_path / "delta").mkdir()
    with pytest.raises(FineTuneError, match="no interactions table"):
        delta_start(tmp_path / "delta")


def test_a_warm_refit_carries_what_the_first_protocol_learnt() -> None:
    """`matching.refit_warm_epochs`: one epoch on from the protocol model finds the
    planted blocks about as well as the model it started from; one epoch from scratch
    does not."""
    import mlflow

    from features.matching_data import IdIndex, Interactions
    from features.settings import load_settings
    from tests.models.test_two_tower import _blocks
    from training.matching.job import MatchingJob

    train, test = _blocks(seed=3)
    coo = train.tocoo()
    n_creators, n_products = train.shape
    inter = Interactions(IdIndex(np.arange(n_creators)), IdIndex(np.arange(n_products)),
                         coo.row.astype(np.int64), coo.col.astype(np.int64), None)  # fmt: skip
    towers = dict(id_dim=8, side_dim=4, hidden=[16], out_dim=8, batch_size=64, val_creators=0,
                  threads=1, patience=0, id_only_dropout=0.0, adaptive_threads=False,
                  heads=1, id_only_hidden="null")  # fmt: skip
    cfg = load_settings("tiny", overrides=[f"matching.{k}={v}" for k, v in towers.items()])

    def found(model) -> float:
        creators = np.arange(n_creators)
        positions, _ = model.recommend(creators, 10, exclude=train[creators])
        return float(np.mean([len(set(positions[i]) & set(test[c].indices)) / 2
                              for i, c in enumerate(creators)]))  # fmt: skip

    first = MatchingJob.from_interactions(cfg, inter).two_tower(
        cfg.matching.model_copy(update={"epochs": 15})
    ).fit(train)  # fmt: skip
    warm_cfg = cfg.model_copy(
        update={"matching": cfg.matching.model_copy(update={"refit_warm_epochs": 1})}
    )
    warm = MatchingJob.from_interactions(warm_cfg, inter).refit(first)
    assert not mlflow.active_run()  # a refit outside a job's run logs no curve of its own
    cold_cfg = cfg.model_copy(update={"matching": cfg.matching.model_copy(update={"epochs": 1})})
    cold = MatchingJob.from_interactions(cold_cfg, inter)
    cold.best_epoch = 1
    scratch = cold.refit(None)
    assert len(warm.history) == 1 and len(scratch.history) == 1
    assert found(warm) >= 0.8 * found(first) > found(scratch) + 0.1, (
        found(warm), found(first), found(scratch)
    )  # fmt: skip
