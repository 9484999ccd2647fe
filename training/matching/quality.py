"""`haowu bench quality`: the two-tower model against Pop, ItemKNN, ALS and EASE on real
logs with a given train/test split, scored the way each data set is customarily reported.

Formats of `--log NAME=FORMAT:DIR`:

- `lastfm`: DIR/train.txt and DIR/test.txt, tab-separated `user item count` (hetrec-2011
  Last.fm as research repositories ship it); Recall@20 / NDCG@20.
- `beauty`: DIR/train.txt lines `user:item item ...` (time order), DIR/test.txt lines
  `user:item` (leave-one-out, e.g. Amazon Beauty 5-core); Hit@10 / NDCG@10.
- `pairs`: DIR is a contract data folder (`haowu import`); the job's random split gives
  the test; Recall@20 / NDCG@20.

Train and test share one ID space (their union, so a test-only item is still ranked).
Every model sees the same training matrix; every item is ranked and the user's training
items are masked. Validation is carved from the training pairs as the test is: each
user's latest good for a sequence log (`beauty`, whose test is the next good), else the
job's random split. The two-tower early-stops on it (then, as the job does, refits on
all training pairs: `refit_warm_epochs` on from the early-stopped model), ALS and EASE
pick their grid point on it and are refit on all training pairs. Pop and ItemKNN have
nothing to tune.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from features.errors import HaowuError
from features.matching_data import IdIndex, Interactions, unique_pairs
from features.settings import MatchingConfig, Settings
from models.matching.baselines import (
    ALSRecommender,
    EASERecommender,
    ItemKNNRecommender,
    PopularityRecommender,
)
from models.matching.recommender import Recommender
from training.evaluation.evaluate import EvalTask, evaluate
from training.evaluation.splits import latest_split, random_split
from training.matching.job import MODEL, MatchingJob

log = logging.getLogger(__name__)

# format -> (main metric, k); NDCG@k is always reported beside it
FORMATS: dict[str, tuple[str, int]] = {
    "lastfm": ("recall", 20),
    "beauty": ("hit_rate", 10),
    "pairs": ("recall", 20),
}
MODELS = (MODEL, "pop", "itemknn", "als", "ease")
ALS_GRID = {"factors": (64, 128), "alpha": (3.0, 10.0, 30.0), "regularization": (5.0, 50.0)}
EASE_GRID = (100.0, 250.0, 500.0)


class QualityError(HaowuError):
    """A `--log` that cannot be read as asked."""


@dataclass(frozen=True)
class LogSpec:
    name: str
    format: str
    path: Path

    @classmethod
    def parse(cls, text: str) -> LogSpec:
        """`NAME=FORMAT:DIR`, e.g. `lastfm=lastfm:/data/lastfm`."""
        name, eq, rest = text.partition("=")
        fmt, colon, path = rest.partition(":")
        if not (eq and colon and name and path) or fmt not in FORMATS:
            raise QualityError(
                f"--log {text!r}: expected NAME=FORMAT:DIR with FORMAT one of {', '.join(FORMATS)}"
            )
        return cls(name, fmt, Path(path))


@dataclass
class QualityLog:
    """Training pairs (positions in the shared ID space) and the test truth, same shape."""

    spec: LogSpec
    job: MatchingJob  # the job whose two-tower is trained (side frames, settings)
    train: Interactions
    test: sp.csr_matrix

    @property
    def metrics(self) -> list[str]:
        metric, k = FORMATS[self.spec.format]
        return [f"{metric}@{k}", f"ndcg@{k}"]

    def validation(self, cfg: MatchingConfig) -> np.ndarray:
        """(n_pairs,) the training pairs held out for validation, carved as the test is:
        a sequence log's latest good per user (its test is the next one), else the job's
        random split."""
        if self.spec.format == "beauty":
            return latest_split(self.train).val
        return random_split(self.train, cfg.val_fraction, cfg.test_fraction, cfg.seed).val


def _read_tsv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    df = pd.read_csv(path, sep="\t", header=None, usecols=[0, 1], dtype=np.int64)
    return df[0].to_numpy(), df[1].to_numpy()


def _read_sequences(path: Path) -> tuple[np.ndarray, np.ndarray]:
    users, items = [], []
    with open(path) as fh:
        for line in fh:
            head, sep, tail = line.strip().partition(":")
            if not sep:
                continue
            seq = [int(x) for x in tail.split()]
            users += [int(head)] * len(seq)
            items += seq
    return np.asarray(users, dtype=np.int64), np.asarray(items, dtype=np.int64)


def _interactions(
    creators: IdIndex, products: IdIndex, users: np.ndarray, items: np.ndarray, ordered: bool
) -> Interactions:
    """Unique pairs (counts and repeats dropped); an `ordered` log's line order is its time
    order (each pair's first line), which the history's recency weights read."""
    c, p = creators.positions(users), products.positions(items)
    c, p, ts = unique_pairs(c, p, np.arange(len(c), dtype=np.int64) if ordered else None)
    return Interactions(creators, products, c, p, ts, len(c))


def _subset(inter: Interactions, mask: np.ndarray) -> Interactions:
    ts = None if inter.first_ts is None else inter.first_ts[mask]
    return Interactions(
        inter.creators, inter.products, inter.creator[mask], inter.product[mask], ts
    )


def load_log(spec: LogSpec, settings: Settings) -> QualityLog:
    """Read one log into the shared ID space (and its job)."""
    if spec.format == "pairs":
        job = MatchingJob(settings, spec.path, None, progress=False)
        cfg = settings.matching
        split = random_split(job.inter, cfg.val_fraction, cfg.test_fraction, cfg.seed)
        return QualityLog(spec, job, _subset(job.inter, ~split.test), job.inter.csr(split.test))
    files = [spec.path / "train.txt", spec.path / "test.txt"]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise QualityError(f"log {spec.name}: missing {', '.join(missing)}")
    read = _read_tsv if spec.format == "lastfm" else _read_sequences
    (tu, ti), (su, si) = read(files[0]), read(files[1])
    creators = IdIndex(np.unique(np.concatenate([tu, su])))
    products = IdIndex(np.unique(np.concatenate([ti, si])))
    ordered = spec.format == "beauty"  # each line's goods in time order
    train = _interactions(creators, products, tu, ti, ordered)
    test = _interactions(creators, products, su, si, ordered=False).csr()
    return QualityLog(spec, MatchingJob.from_interactions(settings, train), train, test)


def _task(name: str, truth: sp.csr_matrix, exclude: sp.csr_matrix) -> EvalTask:
    return EvalTask(name, np.flatnonzero(np.diff(truth.indptr) > 0), truth, exclude)


@dataclass
class ModelResult:
    metrics: dict[str, float]
    train_seconds: float
    setting: str = ""
    validation: list[dict[str, Any]] = field(default_factory=list)


def _grid(
    candidates: dict[str, Callable[[], Recommender]],
    fit: sp.csr_matrix,
    val_task: EvalTask,
    metric: str,
    k: int,
    batch: int,
) -> tuple[str, list[dict[str, Any]]]:
    """Fit each candidate on `fit`, score it on the validation; the best label and the grid."""
    rows = []
    for label, make in candidates.items():
        score = evaluate(make().fit(fit), val_task, [k], batch=batch).metrics[metric]
        rows.append({"setting": label, f"val_{metric}": round(score, 4)})
        log.info("validation %s: %.4f", label, score)
    best = max(rows, key=lambda r: r[f"val_{metric}"])
    return best["setting"], rows


def bench_log(
    qlog: QualityLog,
    models: Sequence[str] = MODELS,
    als_grid: dict[str, Sequence[float]] | None = None,
    ease_grid: Sequence[float] = EASE_GRID,
) -> dict[str, ModelResult]:
    """Fit and score every asked model on one log."""
    job, cfg = qlog.job, qlog.job.mcfg
    main, k = FORMATS[qlog.spec.format]
    carve = qlog.validation(cfg)
    fit_pairs = qlog.train.csr(~carve)  # a random split's own test part stays in training
    val = qlog.train.csr(carve)
    full = qlog.train.csr()
    val_task, test_task = _task("val", val, fit_pairs), _task("test", qlog.test, full)
    grid_metric = f"{main}@{k}"

    def score(model: Recommender) -> dict[str, float]:
        metrics = evaluate(model, test_task, [k], batch=cfg.eval_batch).metrics
        return {m: metrics[m] for m in qlog.metrics}

    out: dict[str, ModelResult] = {}
    for name in models:
        start = time.perf_counter()
        setting, validation = "", []
        if name == MODEL:
            ordered = job.resolve_half_life(fit_pairs, val_task)[0]  # `auto` decided
            first = job.two_tower(ordered).fit(fit_pairs, val)
            job.best_epoch = epochs = max(first.best_epoch, 1)
            validation = first.history
            model = job.refit(first, full, curve="") if cfg.refit_all else first  # as the job
            refit = f" + {cfg.refit_warm_epochs} on all" if cfg.refit_warm_epochs else ""
            half_life, heads = first.cfg.history_half_life, first.cfg.heads
            order = f", half-life {half_life:g}" if half_life else ""
            width = f", {heads} heads" if heads > 1 else ""
            setting = f"{cfg.loss}{width}{order}, {epochs} epochs{refit}"
        elif name == "pop":
            model = PopularityRecommender().fit(full)
        elif name == "itemknn":
            model = ItemKNNRecommender(cfg.itemknn_neighbors, cfg.threads).fit(full)
            setting = f"{cfg.itemknn_neighbors} neighbours"
        elif name == "als":
            grid = als_grid or ALS_GRID
            makers = {
                f"factors {int(f)}, alpha {a:g}, reg {r:g}": (
                    lambda f=f, a=a, r=r: ALSRecommender(
                        int(f), r, a, cfg.als_iterations, cfg.threads, cfg.seed
                    )
                )
                for f, a, r in itertools.product(
                    grid["factors"], grid["alpha"], grid["regularization"]
                )
            }
            setting, validation = _grid(makers, fit_pairs, val_task, grid_metric, k, cfg.eval_batch)
            model = makers[setting]().fit(full)
        elif name == "ease":
            if full.shape[1] > cfg.ease_max_products:
                log.warning("%s: EASE skipped above %d items", qlog.spec.name, full.shape[1])
                continue
            makers = {
                f"lambda {lam:g}": (lambda lam=lam: EASERecommender(lam, cfg.ease_max_products))
                for lam in ease_grid
            }
            setting, validation = _grid(makers, fit_pairs, val_task, grid_metric, k, cfg.eval_batch)
            model = makers[setting]().fit(full)
        else:
            raise QualityError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
        seconds = time.perf_counter() - start
        out[name] = ModelResult(score(model), seconds, setting, validation)
        log.info("%s %s: %s (%.0fs)", qlog.spec.name, name, out[name].metrics, seconds)
    return out


def ratios(results: dict[str, ModelResult], metric: str) -> dict[str, float]:
    """Each model's `metric` over the best of ALS and EASE (empty without either)."""
    refs = [results[m].metrics[metric] for m in ("als", "ease") if m in results]
    best = max(refs, default=0.0)
    return {name: r.metrics[metric] / best for name, r in results.items()} if best else {}


def report(qlog: QualityLog, results: dict[str, ModelResult]) -> dict[str, Any]:
    """The JSON record of one log."""
    main = qlog.metrics[0]
    ratio = ratios(results, main)
    return {
        "format": qlog.spec.format,
        "path": str(qlog.spec.path),
        "users": len(qlog.train.creators),
        "items": len(qlog.train.products),
        "train_pairs": qlog.train.n_pairs,
        "test_users": int((np.diff(qlog.test.indptr) > 0).sum()),
        "test_pairs": int(qlog.test.nnz),
        "metrics": qlog.metrics,
        "models": {
            name: {
                **{m: round(v, 4) for m, v in r.metrics.items()},
                "train_seconds": round(r.train_seconds, 1),
                f"{main} / best of als, ease": round(ratio[name], 3) if name in ratio else None,
                "setting": r.setting,
                "validation": r.validation,
            }
            for name, r in results.items()
        },
    }


def table(name: str, record: dict[str, Any]) -> str:
    """One markdown table: model rows, metric columns, train seconds, ratio, setting."""
    metrics = record["metrics"]
    ratio_key = f"{metrics[0]} / best of als, ease"
    lines = [
        f"{name} ({record['format']}): {record['users']:,} users, {record['items']:,} items, "
        f"{record['train_pairs']:,} train pairs, {record['test_users']:,} test users",
        "",
        "| model | " + " | ".join(metrics) + " | train s | vs best ALS/EASE | setting |",
        "|---" * (len(metrics) + 4) + "|",
    ]
    for model, row in record["models"].items():
        ratio = row[ratio_key]
        lines.append(
            f"| {model} | "
            + " | ".join(f"{row[m]:.4f}" for m in metrics)
            + f" | {row['train_seconds']:.1f} | "
            + (f"{ratio:.2f}x" if ratio is not None else "-")
            + f" | {row['setting']} |"
        )
    return "\n".join(lines)


def run_quality(
    specs: Sequence[LogSpec],
    settings: Settings,
    models: Sequence[str] = MODELS,
    als_grid: dict[str, Sequence[float]] | None = None,
    ease_grid: Sequence[float] = EASE_GRID,
) -> dict[str, Any]:
    """Every log's record, keyed by its name."""
    torch.set_num_threads(settings.matching.threads)  # EASE's inverse, the scoring
    out: dict[str, Any] = {}
    for spec in specs:
        qlog = load_log(spec, settings)
        out[spec.name] = report(qlog, bench_log(qlog, models, als_grid, ease_grid))
    return out
