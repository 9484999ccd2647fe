"""`haowu bench brokers`: time broker matchmaking over every broker of a data set and
measure the greedy solver's gap to the exact one.

With `--model` the two-tower run scores the pairs, as in `haowu match-brokers`. Without
one, on synthetic data, a stand-in with the same cost (one dot product per pair) scores
them from the hidden truth: alpha * taste . latent + log popularity + gamma * quality
- beta * |price band gap| + log P(leaf | creator), i.e. the oracle without its per-leaf
normaliser, which would cost a pass over the whole catalog per creator.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from features.errors import HaowuError
from features.settings import Settings
from serving.brokers.job import Scorer, run
from serving.brokers.scorer import load_scorer

log = logging.getLogger(__name__)

TRUTH = "truth"


class _TruthScorer:
    """Cheap scores from `DATA/truth/` (synthetic data only); NaN for unknown IDs."""

    def __init__(self, data_dir: Path) -> None:
        folder = Path(data_dir) / TRUTH
        if not folder.is_dir():
            raise HaowuError(
                f"{data_dir} has no {TRUTH}/ (not synthetic data): pass --model MATCHING_RUN"
            )
        params = json.loads((folder / "params.json").read_text())["config"]["affinity"]
        products = pd.read_parquet(folder / "products.parquet")
        creators = pd.read_parquet(folder / "creators.parquet")
        leaves = pd.read_parquet(folder / "leaves.parquet")
        self.alpha, self.beta = params["alpha"], params["beta"]
        primary, secondary, anywhere = params["leaf_mix"]
        self.product_order = np.argsort(products["product_id"].to_numpy())
        self.product_ids = products["product_id"].to_numpy()[self.product_order]
        self.creator_order = np.argsort(creators["creator_id"].to_numpy())
        self.creator_ids = creators["creator_id"].to_numpy()[self.creator_order]
        self.latent = np.load(folder / "product_latent.npy")  # (N, d)
        self.taste = np.load(folder / "creator_latent.npy") * self.alpha  # (C, d)
        self.base = (
            np.log(products["popularity"].to_numpy())
            + params["gamma"] * products["quality"].to_numpy()
        )
        self.band = products["price_band"].to_numpy(np.float64)
        self.creator_band = creators["price_band"].to_numpy(np.float64)
        self.leaf = products["category_l3"].to_numpy()
        weight = np.zeros(int(leaves["category_l3"].max()) + 1)
        weight[leaves["category_l3"].to_numpy()] = leaves["choice_weight"].to_numpy()
        self.anywhere = anywhere * weight
        self.primary, self.secondary = primary, secondary
        self.creator_leaves = creators[
            ["primary_leaf", "secondary_leaf_1", "secondary_leaf_2"]
        ].to_numpy()

    @staticmethod
    def _rows(sorted_ids: np.ndarray, order: np.ndarray, ids: np.ndarray) -> np.ndarray:
        at = np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1)
        return np.where(sorted_ids[at] == ids, order[at], -1)

    def __call__(self, creator_ids: np.ndarray, product_ids: np.ndarray) -> np.ndarray:
        c = self._rows(self.creator_ids, self.creator_order, creator_ids)
        p = self._rows(self.product_ids, self.product_order, product_ids)
        cs, ps = np.maximum(c, 0), np.maximum(p, 0)
        out = self.taste[cs] @ self.latent[ps].T  # (n_c, n_p)
        out += self.base[ps][None, :]
        out -= self.beta * np.abs(self.creator_band[cs][:, None] - self.band[ps][None, :])
        leaf = self.leaf[ps]
        prob = np.tile(self.anywhere[leaf], (len(cs), 1))
        mine = self.creator_leaves[cs]  # (n_c, 3)
        prob += self.primary * (leaf[None, :] == mine[:, :1])
        prob += self.secondary / 2 * (leaf[None, :] == mine[:, 1:2])
        prob += self.secondary / 2 * (leaf[None, :] == mine[:, 2:3])
        with np.errstate(divide="ignore"):
            out += np.log(prob)
        out[c < 0, :] = np.nan
        out[:, p < 0] = np.nan
        return out


def truth_scorer(data_dir: Path) -> Scorer:
    return _TruthScorer(data_dir)


def bench_brokers(
    cfg: Settings, data_dir: Path, model: Path | str | None = None, tiers: Path | None = None
) -> dict[str, float]:
    """The job as configured (exact up to `exact_max_pairs`, greedy gap measured), then
    every broker greedily: seconds, gap, affinity ratio."""
    start = time.perf_counter()
    scorer = load_scorer(model, data_dir) if model is not None else truth_scorer(data_dir)
    load_seconds = time.perf_counter() - start
    result: dict[str, float] = {"scorer_load_seconds": load_seconds}
    with tempfile.TemporaryDirectory(prefix="haowu-bench-brokers-") as tmp:
        for name, update in (
            ("job", {}),
            ("greedy_only", {"exact_max_pairs": 0, "measure_greedy_gap": False}),
        ):
            t = time.perf_counter()
            metrics = run(
                cfg.model_copy(update={"brokers": cfg.brokers.model_copy(update=update)}),
                data_dir,
                scorer,
                Path(tmp) / name,
                tiers,
                progress=False,
            )
            seconds = time.perf_counter() - t
            prefix = "" if name == "job" else f"{name}_"
            result[f"{prefix}seconds"] = seconds
            result[f"{prefix}solve_seconds"] = metrics["solve_seconds"]
            result[f"{prefix}total_expected_value"] = metrics["total_expected_value"]
            if name == "job":
                for key in (
                    "brokers",
                    "brokers_exact",
                    "brokers_greedy",
                    "brokers_empty",
                    "assignments",
                    "affinity_vs_random",
                    "expected_value_vs_random",
                    "greedy_gap",
                    "greedy_gap_max",
                    "creator_capacity_use",
                    "product_capacity_use",
                ):
                    result[key] = metrics[key]
    job, greedy = result["total_expected_value"], result["greedy_only_total_expected_value"]
    result["greedy_only_gap"] = 1.0 - greedy / job if job > 0 else float("nan")
    return result
