"""Protocol (a) on a data folder, outside the job: the README's ID-only tables.

Uses the job's own pieces (`random_split`, `make_task`, the two-tower and baselines,
`evaluate`) on the `small` preset's settings plus `--set`-style overrides, and prints
test Recall@50 as one JSON line per model:

    python notebooks/idonly_tuning.py DATA two_tower [matching.KEY=VALUE ...]
    python notebooks/idonly_tuning.py DATA als|ease|itemknn|pop [matching.KEY=VALUE ...]
    python notebooks/idonly_tuning.py DATA als-grid FACTORS ALPHAS REGS [matching.KEY=VALUE ...]

FACTORS, ALPHAS and REGS are comma lists; the grid also prints validation Recall@50,
which is how its best setting is picked.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

from features.settings import MatchingConfig, load_settings
from models.matching.recommender import Recommender
from training.evaluation.evaluate import EvalTask, evaluate, make_task
from training.evaluation.splits import random_split
from training.matching.job import MatchingJob, make_baselines


def _recall(model: Recommender, task: EvalTask, job: MatchingJob, cfg: MatchingConfig) -> float:
    return round(
        evaluate(model, task, [50], job.categories, cfg.eval_batch).metrics["recall@50"], 4
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("model")
    parser.add_argument("rest", nargs="*", help="grid lists (als-grid), then overrides")
    args = parser.parse_args()
    grid = args.rest[:3] if args.model == "als-grid" else []
    overrides = args.rest[len(grid) :]
    settings = load_settings("small", overrides=overrides)
    cfg = settings.matching
    job = MatchingJob(settings, args.data, None, False)
    split = random_split(job.inter, cfg.val_fraction, cfg.test_fraction, cfg.seed)
    train, val = job.inter.csr(split.train), job.inter.csr(split.val)
    test = make_task(
        "test", job.inter, split.test, split.train | split.val, cfg.eval_creators, cfg.seed
    )
    if args.model == "two_tower":
        start = time.perf_counter()
        model = job.two_tower().fit(train, val)
        print(
            json.dumps(
                {
                    "model": "two_tower",
                    "overrides": overrides,
                    "recall@50": _recall(model, test, job, cfg),
                    "epochs": len(model.history),
                    "best_epoch": model.best_epoch,
                    "seconds": round(time.perf_counter() - start),
                }
            )
        )
        return
    if args.model != "als-grid":
        model = make_baselines(cfg.model_copy(update={"baselines": [args.model]}), train.shape[1])
        fitted = next(iter(model.values())).fit(train, val)
        print(
            json.dumps(
                {
                    "model": args.model,
                    "overrides": overrides,
                    "recall@50": _recall(fitted, test, job, cfg),
                }
            )
        )
        return
    val_task = make_task("val", job.inter, split.val, split.train, cfg.eval_creators, cfg.seed)
    lists = [[float(x) for x in g.split(",")] for g in grid]
    for factors, alpha, reg in itertools.product(*lists):
        setting = {"als_factors": int(factors), "als_alpha": alpha, "als_regularization": reg}
        als = make_baselines(
            cfg.model_copy(update={**setting, "baselines": ["als"]}), train.shape[1]
        )
        fitted = als["als"].fit(train, val)
        print(
            json.dumps(
                {
                    **setting,
                    "val_recall@50": _recall(fitted, val_task, job, cfg),
                    "recall@50": _recall(fitted, test, job, cfg),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
