"""The accuracy-diversity trade-off of the category re-ranking, swept over its one knob.

`diversity_curve` takes a model's candidate lists, the held-out truth and the catalog,
runs the policy at each knob value and reports, per value:

- `recall@K`: held-out goods found in the top K (K = 50 by default);
- `category_coverage`: distinct leaf categories over all lists / leaf categories in the
  catalog (the project's `category_coverage@K`);
- `categories_per_list`: mean distinct leaf categories inside one list;
- `intra_list_diversity`: mean pairwise category dissimilarity inside a list, with the
  re-ranker's hierarchy (same leaf 0, same l2 only 1/3, same l1 only 2/3, else 1);
- `apply_ms_per_list`: the policy's time per list.

`held_out_scenario` takes a matching run's own candidates and the random split's test
pairs it never saw; `models.retrieval.synthetic.diversity_scenario` is a synthetic
stand-in (tests, and when no such run is at hand). `run` writes the curve, its plot and
the default knob's point; `haowu bench index --diversity` calls it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from features.errors import HaowuError
from features.io import write_json
from features.settings import PolicyConfig
from models.artifacts import PRODUCT_IDS, read_tiers
from models.retrieval.catalog import ProductCatalog
from models.retrieval.policy import Policy
from models.retrieval.synthetic import DiversityScenario

CAP_SHARES = (1.0, 0.5, 0.3, 0.2, 0.1, 0.06, 0.04, 0.02)
MMR_LAMBDAS = (1.0, 0.9, 0.8, 0.75, 0.7, 0.6, 0.5, 0.3, 0.1)


def _pair_share(codes: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(n,): share of pairs of valid items in a row that share a code."""
    n, k = codes.shape
    c = np.where(valid, codes, -1 - np.arange(k))  # invalid items never pair
    s = np.sort(c, axis=1)
    starts = np.ones((n, k), bool)
    starts[:, 1:] = s[:, 1:] != s[:, :-1]
    col = np.arange(k)
    run = col - np.maximum.accumulate(np.where(starts, col, 0), axis=1)  # 0,1,2.. in a run
    same_pairs = run.sum(axis=1)  # sum over runs of C(len, 2)
    m = valid.sum(axis=1)
    return np.where(m > 1, same_pairs / np.maximum(m * (m - 1) / 2, 1), 0.0)


def list_metrics(
    product_ids: np.ndarray, truth: sp.csr_matrix, catalog: ProductCatalog, k: int
) -> dict[str, float]:
    """Recall@k, category coverage, categories per list and intra-list diversity."""
    ids = product_ids[:, :k]
    pos, found = catalog.positions(ids)
    valid = found & (ids >= 0)
    n_products = truth.shape[1]
    truth = truth.tocsr()
    truth_keys = np.repeat(np.arange(truth.shape[0], dtype=np.int64), np.diff(truth.indptr))
    truth_keys = truth_keys * n_products + truth.indices
    keys = np.arange(len(ids), dtype=np.int64)[:, None] * n_products + pos
    hits = np.isin(keys, truth_keys) & valid
    n_truth = np.diff(truth.indptr)
    has_truth = n_truth > 0
    recall = (hits.sum(axis=1)[has_truth] / n_truth[has_truth]).mean() if has_truth.any() else 0.0
    leaf = np.where(valid, catalog.category_l3[pos], -1)
    distinct_leaves = np.unique(leaf[valid])
    all_leaves = np.unique(catalog.category_l3[catalog.category_l3 >= 0])
    per_list = [len(np.unique(row[row >= 0])) for row in leaf]
    same = [
        _pair_share(level[pos], valid)
        for level in (catalog.category_l1, catalog.category_l2, catalog.category_l3)
    ]
    ild = 1.0 - (same[0] + same[1] + same[2]) / 3.0
    return {
        f"recall@{k}": float(recall),
        "category_coverage": len(distinct_leaves) / max(len(all_leaves), 1),
        "categories_per_list": float(np.mean(per_list)),
        "intra_list_diversity": float(ild.mean()),
    }


def diversity_curve(
    candidate_ids: np.ndarray,
    scores: np.ndarray,
    truth: sp.csr_matrix,
    catalog: ProductCatalog,
    cfg: PolicyConfig,
    k: int = 50,
    cap_shares: Sequence[float] = CAP_SHARES,
    mmr_lambdas: Sequence[float] = MMR_LAMBDAS,
    methods: Sequence[str] = ("mmr_sort", "mmr", "cap"),
) -> pd.DataFrame:
    """One row per (method, knob): the metrics above, plus recall relative to no re-ranking.

    Everything but the knob comes from `cfg` (filters, boost, Selected Goods share);
    goods already promoted are not removed here (the truth is held out already).
    """
    rows = []
    knobs = {
        "mmr_sort": ("mmr_lambda", mmr_lambdas),
        "mmr": ("mmr_lambda", mmr_lambdas),
        "cap": ("category_cap_share", cap_shares),
    }
    sweeps = [(method, knobs[method][0], v) for method in methods for v in knobs[method][1]]
    base = cfg.model_copy(update={"diversity_method": "none", "exclude_seen": False})
    for method, knob, value in [("none", "", 0.0), *sweeps]:
        policy_cfg = (
            base
            if method == "none"
            else base.model_copy(update={"diversity_method": method, knob: value})
        )
        start = time.perf_counter()
        lists = Policy(policy_cfg).apply(candidate_ids, scores, catalog, None, None, k)
        elapsed = time.perf_counter() - start
        rows.append(
            {
                "method": method,
                "knob": value,
                **list_metrics(lists.product_ids, truth, catalog, k),
                "apply_ms_per_list": 1e3 * elapsed / len(candidate_ids),
            }
        )
    frame = pd.DataFrame(rows)
    reference = frame.loc[frame.method == "none"].iloc[0]
    frame["relative_recall"] = frame[f"recall@{k}"] / max(reference[f"recall@{k}"], 1e-12)
    frame["coverage_gain"] = frame["category_coverage"] / max(reference["category_coverage"], 1e-12)
    frame["per_list_gain"] = frame["categories_per_list"] / max(
        reference["categories_per_list"], 1e-12
    )
    return frame


def plot_curve(frame: pd.DataFrame, path: Path, k: int = 50) -> Path:
    """Recall@k against categories per list and against intra-list diversity, per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, x in zip(axes, ("categories_per_list", "intra_list_diversity"), strict=True):
        for method, marker in (("mmr_sort", "^"), ("mmr", "s"), ("cap", "o")):
            part = frame[frame.method == method]
            if part.empty:
                continue
            ax.plot(part[x], part[f"recall@{k}"], marker=marker, label=method)
            knob = "share" if method == "cap" else "λ"
            for _, row in part.iterrows():
                ax.annotate(
                    f"{knob}={row.knob:g}",
                    (row[x], row[f"recall@{k}"]),
                    fontsize=7,
                    textcoords="offset points",
                    xytext=(3, 3),
                )
        none = frame[frame.method == "none"].iloc[0]
        ax.scatter([none[x]], [none[f"recall@{k}"]], color="black", zorder=3, label="no re-ranking")
        ax.set_xlabel(x.replace("_", " "))
        ax.set_ylabel(f"Recall@{k}")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle("Category diversity: accuracy vs diversity over the knob")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ------------------------------------------------------------------ the job
def held_out_scenario(
    data_dir: Path,
    model: Path,
    tiers: Path | None = None,
    depth: int = 300,
    n_creators: int = 5000,
    seed: int = 0,
) -> DiversityScenario:
    """A real model's candidates and the pairs it never saw: the run's own random split.

    The run must have served the random-protocol model (`matching.refit_all=false`), so
    its test pairs are held out; candidates are its top-`depth` goods per creator with
    the training and validation pairs excluded.
    """
    import yaml

    from features.matching_data import load_interactions, product_frame
    from features.settings import Settings
    from models.matching.recommender import EmbeddingRecommender
    from training.evaluation.splits import random_split

    folder = Path(model)
    run_dir, model_dir = (
        (folder.parent, folder) if folder.name == "model" else (folder, folder / "model")
    )
    cfg = Settings.model_validate(yaml.safe_load((run_dir / "config.yaml").read_text())).matching
    if cfg.refit_all or "random" not in cfg.protocols:
        raise HaowuError(
            f"{run_dir} served a model refitted on every pair: no held-out truth "
            "(train it with --set matching.refit_all=false)"
        )
    inter = load_interactions(Path(data_dir))
    if not np.array_equal(inter.products.ids, np.load(model_dir / PRODUCT_IDS)):
        raise HaowuError(f"{data_dir} is not the data {run_dir} was trained on")
    split = random_split(inter, cfg.val_fraction, cfg.test_fraction, cfg.seed)
    truth_all = inter.csr(split.test)
    seen_all = inter.csr(split.train | split.val)
    rng = np.random.default_rng(seed)
    with_truth = np.flatnonzero(np.diff(truth_all.indptr) > 0)
    creators = np.sort(rng.choice(with_truth, min(n_creators, len(with_truth)), replace=False))
    served = EmbeddingRecommender._load(model_dir, {})
    served.n_products = len(inter.products)
    parts = [  # (500, n_products) scores at a time
        served.recommend(chunk, depth, exclude=seen_all[chunk])
        for chunk in np.array_split(creators, max(1, len(creators) // 500))
    ]
    positions = np.concatenate([p for p, _ in parts])
    scores = np.concatenate([s for _, s in parts])
    frame = product_frame(Path(data_dir), inter.products, read_tiers(tiers))
    catalog = ProductCatalog.from_frame(frame.assign(product_id=inter.products.ids))
    ids = np.where(np.isfinite(scores), inter.products.ids[positions], -1)
    return DiversityScenario(ids, scores, truth_all[creators], catalog)


def run(
    scenario: DiversityScenario,
    cfg: PolicyConfig,
    out: Path,
    k: int = 50,
    title: str = "",
    **sweep: Sequence[float] | Sequence[str],
) -> pd.DataFrame:
    """The curve over both knobs, written to OUT/diversity_curve.{csv,png,json}.

    The JSON holds the default knob's point (`cfg`'s method and value) beside the
    unre-ranked lists, so the target (per-list category coverage >= 1.5x at <= 5%
    relative Recall@k loss) can be read off directly.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    frame = diversity_curve(
        scenario.candidate_ids, scenario.scores, scenario.truth, scenario.catalog, cfg, k=k, **sweep
    )  # type: ignore[arg-type]
    frame.to_csv(out / "diversity_curve.csv", index=False)
    plot_curve(frame, out / "diversity_curve.png", k=k)
    knob = "category_cap_share" if cfg.diversity_method == "cap" else "mmr_lambda"
    default = frame[(frame.method == cfg.diversity_method)
                    & np.isclose(frame.knob, getattr(cfg, knob))]  # fmt: skip
    summary = {
        "title": title,
        "k": k,
        "lists": int(len(scenario.candidate_ids)),
        "depth": int(scenario.candidate_ids.shape[1]),
        "none": frame.iloc[0].to_dict(),
        "default": default.iloc[0].to_dict() if len(default) else None,
    }
    write_json(summary, out / "diversity_curve.json")
    return frame
