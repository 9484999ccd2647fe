"""Which ordinal treatment for the tier model? The numbers behind the README's choice.

    python notebooks/tier_study.py runs/demo/data [small]

Every variant sees the split `train-tier` uses (same seed, flagged merchants' goods out of
fitting, the rule applied at evaluation) and is scored on the labelled test split and
against the synthetic hidden truth over every product.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd

from features.indicators import iter_indicator_chunks, load_lookups
from features.settings import load_settings
from models.tier.cuts import apply_cuts, distribution_cuts, fit_cuts
from models.tier.model import FEATURES, TierModel, assign_tiers, feature_matrix
from training.tier.job import read_truth
from training.tier.labelled_data import load_labelled, split_labelled
from training.tier.metrics import tier_metrics


def main(data_dir: Path, preset: str) -> None:
    cfg = load_settings(preset).tier
    lookups = load_lookups(data_dir)
    split = split_labelled(load_labelled(data_dir, lookups, cfg), cfg)
    train = split.train[~split.train["flagged_low_quality"]]
    valid = split.valid[~split.valid["flagged_low_quality"]]
    test = split.test
    everything = pd.concat(iter_indicator_chunks(data_dir, cfg.chunk_rows, lookups))
    truth = read_truth(data_dir).reindex(everything["product_id"]).to_numpy()
    y_train, y_valid = train["tier"].to_numpy(), valid["tier"].to_numpy()
    m = cfg.model

    def cuts_for(valid_score: np.ndarray) -> np.ndarray:
        return fit_cuts(
            valid_score,
            y_valid,
            m.cut_rounds,
            m.cut_candidates,
            m.l5_target_precision,
            m.l5_min_support,
        )

    def report(name: str, score_fn, cuts: np.ndarray, seconds: float, trees: int) -> None:
        rows = []
        for frame, labels in ((test, test["tier"].to_numpy()), (everything, truth)):
            tier, _ = assign_tiers(apply_cuts(score_fn(frame), cuts), frame["flagged_low_quality"])
            rows.append(tier_metrics(labels, tier))
        t, u = rows
        print(
            f"| {name} | {t['qwk']:.3f} | {t['macro_f1']:.3f} | {t['accuracy']:.3f} | "
            f"{t['l5_precision']:.3f} | {t['l5_recall']:.3f} | {u['qwk']:.3f} | "
            f"{u['accuracy']:.3f} | {trees} | {seconds:.1f} |",
            flush=True,
        )

    print(
        "| variant | qwk | macro_f1 | accuracy | l5_prec | l5_rec | truth qwk | truth acc "
        "| trees | fit s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")

    def tier_model(name: str, **changes) -> TierModel:
        params = m.model_copy(update=changes)
        start = time.perf_counter()
        model = TierModel(params).fit(train, y_train, valid, y_valid, seed=cfg.seed)
        seconds = time.perf_counter() - start
        report(name, model.predict_score, model.cuts, seconds, model.num_trees)
        return model

    tier_model("cumulative + QWK cuts + L5 precision cut (default)")
    chosen = tier_model("regression + QWK cuts + L5 precision cut", ordinal="regression")
    valid_score = chosen.predict_score(valid)
    cut_qwk = fit_cuts(valid_score, y_valid, m.cut_rounds, m.cut_candidates, 1.0, len(valid) + 1)
    report("regression + QWK cuts only", chosen.predict_score, cut_qwk, 0, chosen.num_trees)
    report(
        "regression + rounding (cuts k + 0.5)",
        chosen.predict_score,
        np.arange(5) + 0.5,
        0,
        chosen.num_trees,
    )
    report(
        "regression + label-share cuts",
        chosen.predict_score,
        distribution_cuts(valid_score, y_valid),
        0,
        chosen.num_trees,
    )
    huber = m.lightgbm | {"objective": "huber", "alpha": 1.0}
    tier_model("regression, huber objective", ordinal="regression", lightgbm=huber)
    tier_model("free interactions (path attribution)", interactions="free")
    tier_model("no cold augmentation", cold_augment_share=0.0)

    # cumulative (all-threshold) model: one monotone binary booster per P(tier > k)
    params = dict(m.lightgbm) | {
        "objective": "binary",
        "num_threads": m.train_threads,
        "monotone_constraints": [1] * len(FEATURES),
    }
    x_train, x_valid = feature_matrix(train), feature_matrix(valid)
    start, boosters = time.perf_counter(), []
    for k in range(5):
        boosters.append(
            lgb.train(
                params,
                lgb.Dataset(x_train, (y_train > k).astype(float)),
                m.num_boost_round,
                valid_sets=[lgb.Dataset(x_valid, (y_valid > k).astype(float))],
                callbacks=[lgb.early_stopping(m.early_stopping_rounds, verbose=False)],
            )
        )

    def cumulative(frame: pd.DataFrame) -> np.ndarray:
        return sum(b.predict(feature_matrix(frame)) for b in boosters)  # expected tier

    seconds = time.perf_counter() - start
    report(
        "cumulative, plain (no dimension constraint, no cold copies)",
        cumulative,
        cuts_for(cumulative(valid)),
        seconds,
        sum(b.num_trees() for b in boosters),
    )

    # multiclass: monotone constraints would apply one sign to every class's raw score, so
    # none are set; argmax ignores the order of the tiers
    params = dict(m.lightgbm) | {
        "objective": "multiclass",
        "num_class": 6,
        "num_threads": m.train_threads,
    }
    start = time.perf_counter()
    multi = lgb.train(
        params,
        lgb.Dataset(x_train, y_train),
        m.num_boost_round,
        valid_sets=[lgb.Dataset(x_valid, y_valid)],
        callbacks=[lgb.early_stopping(m.early_stopping_rounds, verbose=False)],
    )
    seconds = time.perf_counter() - start

    def argmax(frame: pd.DataFrame) -> np.ndarray:
        return multi.predict(feature_matrix(frame)).argmax(axis=1).astype(float)

    report(
        "multiclass argmax (no monotonicity)",
        argmax,
        np.arange(5) + 0.5,
        seconds,
        multi.num_trees(),
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "small")
