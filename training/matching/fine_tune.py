"""`haowu fine-tune`: a two-tower trained on from where a full training left it, on what
a delta brought, judged against the champion on the newest pairs and registered as a
challenger.

    haowu fine-tune --from DIR --delta DELTA_DIR      (after `haowu refresh` applied it)

A full retrain costs every pair and every epoch again; the trained model already knows
the older pairs. Fine-tuning starts from the weights of the model train-matching made,
from which DIR's fine-tunes descend (`start_from: trained`, `trained_model`; so no day's
model is more than one pass past a full training), or DIR's own model (`current`)
(training/matching/warm_start.py: known IDs keep their rows, new IDs start where the model
puts a cold item) and trains a few epochs (`refresh.fine_tune.epochs`) on:

- the delta's new pairs (pairs of DIR/data first seen at or after the delta's first
  event), except the latest `holdout_fraction` of them by time, which are held out;
- a replay of a `replay_share` of the older pairs, drawn uniformly, so that the model does
  not forget the catalog it knew. Measured on `small` (README): a day's pairs with a small
  replay (4 or 10 older pairs per new one, 2-6% of them) pull the held-out recall@50 far
  below the champion's at any learning rate tried; one epoch over every pair from the
  champion's weights lifts it (0.1733 -> 0.1773), hence the defaults: all of them, once;

at `lr_scale` times the champion's learning rates. Each creator's history (what the
creator tower reads) is all its pairs but the held-out ones.

The held-out pairs then judge: the champion, DIR's model as it stands (carried onto
today's catalog, not trained, new IDs on the OOV row), against the fine-tuned model, both
ranking every good with every known pair masked. The run logs the fine-tuned figures as
`recall@50`, ... and the champion's as `champion.recall@50`, ..., tags
`haowu.fine_tuned_from` with the champion's MLflow run (the model it would replace; its
`weights_from` param names the run the weights came from), and registers the model as a
challenger. `haowu promote` (or
`haowu refresh --fine-tune`) compares the two on those held-out pairs — the same data by
construction — and moves `champion` only if the fine-tuned model is no worse.

Run folder (default DIR/fine-tune/<first 12 hex digits of the delta's digest>): the same
contract as train-matching's (`model/`, `metrics.json`, `history.json`, `config.yaml`,
`run.json`), so every command that opens a matching run opens it.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from features.errors import HaowuError
from features.io import (
    atomic_output_dir,
    ensure_empty_output,
    files_digest,
    has_table,
    read_table,
    table_files,
    write_json,
)
from features.settings import MatchingConfig, Settings
from features.validate import validate_tables
from models.artifacts import (
    FINE_TUNED_FROM_TAG,
    HISTORY,
    METRICS,
    RUN_CONFIG,
    RUN_DIR_TAG,
    RUN_META,
    PipelineLayout,
    model_digest,
    open_matching_run,
)
from models.matching.two_tower_served import TwoTowerRecommender
from training.evaluation.evaluate import evaluate as run_eval
from training.evaluation.evaluate import make_task
from training.lifecycle import tracking
from training.lifecycle.promotion import CHAMPION_PREFIX, run_id_of
from training.matching.job import INPUT_TABLES, MatchingJob, register_model, save_model
from training.matching.warm_start import WarmStart, carry

log = logging.getLogger(__name__)


class FineTuneError(HaowuError):
    """Nothing to fine-tune on, or nothing to fine-tune."""


@dataclass(frozen=True)
class NewPeriod:
    """Pair masks over DIR/data's pairs: what trains, what judges, what the towers read."""

    train: np.ndarray  # new pairs before the holdout, plus the replayed older ones
    holdout: np.ndarray  # the latest new pairs
    new: np.ndarray  # every pair first seen in the delta's period

    def counts(self) -> dict[str, int]:
        return {
            "new_pairs": int(self.new.sum()),
            "holdout_pairs": int(self.holdout.sum()),
            "replayed_pairs": int((self.train & ~self.new).sum()),
            "train_pairs": int(self.train.sum()),
        }


def delta_start(delta_dir: Path) -> np.datetime64:
    """The delta's first event: where the new period begins."""
    if not has_table(Path(delta_dir), "interactions"):
        raise FineTuneError(f"--delta {delta_dir}: no interactions table, nothing to fine-tune on")
    ts = read_table(Path(delta_dir), "interactions", columns=["ts"])["ts"]
    if ts.empty:
        raise FineTuneError(f"--delta {delta_dir}: the interactions table is empty")
    return np.datetime64(ts.min().to_datetime64(), "ns")


def new_period(
    first_ts: np.ndarray, since: np.datetime64, holdout_fraction: float, replay_share: float,
    min_new: int, rng: np.random.Generator,
) -> NewPeriod:  # fmt: skip
    """Split the pairs (first-seen times `first_ts`, ns) at `since`; hold out the latest
    `holdout_fraction` of the new ones; replay a `replay_share` of the older pairs."""
    new = first_ts >= since.astype(np.int64)
    n_new = int(new.sum())
    if n_new < min_new:
        raise FineTuneError(
            f"{n_new} new pair(s) since {since} (refresh.fine_tune.min_new_pairs is "
            f"{min_new}): apply the delta with `haowu refresh` first, or wait for more"
        )
    cut = np.quantile(first_ts[new], 1.0 - holdout_fraction)
    holdout = new & (first_ts > cut)
    if not holdout.any() or holdout.sum() == n_new:
        raise FineTuneError(f"the {n_new} new pairs share one timestamp: no time to hold out")
    older = np.flatnonzero(~new)
    n_replay = int(round(replay_share * len(older)))
    train = new & ~holdout
    train[rng.choice(older, n_replay, replace=False)] = True
    return NewPeriod(train, holdout, new)


def _output(layout: PipelineLayout, delta_dir: Path, out: Path | None, overwrite: bool) -> Path:
    """The run folder: DIR/fine-tune/<delta digest>, refused when this delta's fine-tune
    is already DIR's model."""
    digest = files_digest([(p.name, p) for p in table_files(Path(delta_dir), "interactions")])
    out = Path(out) if out is not None else layout.fine_tune / digest[:12]
    installed = layout.fine_tune / f"{out.name}.replaced"
    if installed.exists() and not overwrite:
        raise FineTuneError(
            f"DIR/matching is already the model fine-tuned on this delta ({installed} is "
            "the one it replaced)"
        )
    ensure_empty_output(out, overwrite)
    return out


def fine_tuned_from(run_dir: Path) -> str | None:
    """The run a fine-tuned run folder was judged against and replaces (None: a run
    train-matching made)."""
    return json.loads((Path(run_dir) / RUN_META).read_text()).get("fine_tuned_from")


def trained_model(layout: PipelineLayout) -> Path:
    """The model train-matching made that DIR/matching's fine-tunes descend from: each
    installed fine-tune names the run it replaced (`fine_tuned_from`), and `install` keeps
    that run's folder as DIR/fine-tune/*.replaced. Fine-tuning from it, not from yesterday's
    fine-tune, trains every day's model one pass past a full training instead of one pass
    more each day."""
    folder, seen = layout.matching, set()
    while (base := fine_tuned_from(folder)) is not None:
        if base in seen:
            raise FineTuneError(f"the fine-tunes of {layout.matching} name run {base} twice")
        seen.add(base)
        kept = [p for p in sorted(layout.fine_tune.glob("*.replaced")) if run_id_of(p) == base]
        if not kept:
            raise FineTuneError(
                f"{folder} was fine-tuned from run {base}, but no {layout.fine_tune}/*.replaced "
                "holds it: set refresh.fine_tune.start_from=current to fine-tune DIR's model"
            )
        folder = kept[0]
    return folder


def _settings(cfg: Settings, base: MatchingConfig) -> MatchingConfig:
    """The champion's own settings, for a few epochs at scaled-down learning rates, on
    this machine's threads and device."""
    ft = cfg.refresh.fine_tune
    return base.model_copy(
        update={
            "epochs": ft.epochs,
            "lr": base.lr * ft.lr_scale,
            "embedding_lr": base.embedding_lr * ft.lr_scale,
            "threads": cfg.matching.threads,
            "adaptive_threads": cfg.matching.adaptive_threads,
            "device": cfg.matching.device,
        }
    )


def _fit_and_judge(
    job: MatchingJob, base: Any, current: Any, period: NewPeriod
) -> tuple[TwoTowerRecommender, dict[str, float]]:
    """Fine-tune from the `base` run's model; it and the `current` one (DIR's model, which
    it would replace: the champion) scored on the held-out pairs."""
    inter, mcfg, ft = job.inter, job.mcfg, job.cfg.refresh.fine_tune
    known = ~period.holdout

    def warm(train: np.ndarray, run: Any = base) -> WarmStart:  # on today's positions, a copy
        return carry(
            run.model, run.creators.ids, run.products.ids, inter.creators.ids,
            inter.products.ids, inter.creator[train], inter.product[train],
            mcfg.min_id_count, ft.carry_optimizer,
        )  # fmt: skip

    started = time.perf_counter()
    champion = job.two_tower().adopt(warm(period.train, current), inter.csr(known))
    start = warm(period.train)
    tuned = job.two_tower(curve="fine_tune")
    tuned.fit(inter.csr(period.train), warm=start, history=inter.csr(known))
    train_seconds = time.perf_counter() - started
    task = make_task("holdout", inter, period.holdout, known, mcfg.eval_creators, mcfg.seed)
    scores = {
        name: run_eval(model, task, mcfg.eval_k, job.categories, mcfg.eval_batch).metrics
        for name, model in (("champion", champion), ("fine_tuned", tuned))
    }
    log.info(
        "fine-tune: held-out %s (champion -> fine-tuned)",
        {f"recall@{k}": (round(scores["champion"][f"recall@{k}"], 4),
                         round(scores["fine_tuned"][f"recall@{k}"], 4)) for k in mcfg.eval_k},
    )  # fmt: skip
    tuned.embed_with_history(inter.csr())  # the served vectors read every pair
    return tuned, {
        **scores["fine_tuned"],
        **{CHAMPION_PREFIX + k: v for k, v in scores["champion"].items()},
        **{k: float(v) for k, v in period.counts().items()},
        "new_creator_rows": float(start.new_rows["creator"]),
        "new_product_rows": float(start.new_rows["product"]),
        "train_seconds": train_seconds,
    }


def run(
    cfg: Settings,
    from_dir: Path,
    delta_dir: Path,
    out: Path | None = None,
    overwrite: bool = False,
    register: bool = True,
    progress: bool = False,
) -> dict[str, Any]:
    """Fine-tune DIR's matching model on the delta's period; returns the metrics, the run
    folder and the registered version."""
    started = time.perf_counter()
    layout = PipelineLayout(Path(from_dir)).require()
    ft = cfg.refresh.fine_tune
    since = delta_start(Path(delta_dir))
    out = _output(layout, Path(delta_dir), out, overwrite)
    validate_tables(layout.data, INPUT_TABLES)
    current = open_matching_run(layout.matching)
    if not isinstance(current.model, TwoTowerRecommender):
        raise FineTuneError(f"{layout.matching} holds a {current.model.kind} model: only a "
                            "two-tower model is fine-tuned")  # fmt: skip
    base_run = run_id_of(layout.matching)
    start_dir = trained_model(layout) if ft.start_from == "trained" else layout.matching
    base = current if start_dir == layout.matching else open_matching_run(start_dir)
    mcfg = _settings(cfg, base.model.cfg)
    job = MatchingJob(
        cfg.model_copy(update={"matching": mcfg}), layout.data, layout.tier, progress, False
    )
    if job.inter.first_ts is None:
        raise FineTuneError(f"{layout.data}: interactions without times: no new period")
    period = new_period(
        job.inter.first_ts, since, ft.holdout_fraction, ft.replay_share, ft.min_new_pairs,
        np.random.default_rng(cfg.refresh.seed),
    )  # fmt: skip
    log.info("fine-tune from %s: %s", start_dir, period.counts())
    with atomic_output_dir(out, overwrite) as staging:
        tags = {RUN_DIR_TAG: str(out.resolve()), FINE_TUNED_FROM_TAG: base_run}
        params = {"fine_tune": ft.model_dump(), "matching": mcfg.model_dump(), "since": str(since),
                  "weights_from": run_id_of(start_dir)}  # fmt: skip
        # the learning curve is logged by epoch: into this run, so training happens in it
        with tracking.job_run("fine-tune", params, layout.data, tags=tags) as mlrun:
            tuned, metrics = _fit_and_judge(job, base, current, period)
            save_model(job, tuned, staging / "model")
            model_digest(staging / "model")
            metrics["job_seconds"] = time.perf_counter() - started
            write_json(metrics, staging / METRICS)
            write_json({"fine_tune": tuned.history}, staging / HISTORY)
            (staging / RUN_CONFIG).write_text(
                yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
            )
            tracking.log_metrics(metrics)
            tracking.log_artifact(staging / METRICS, artifact_path="run")
            version = register_model(staging, mlrun.info.run_id, register, fine_tuned_from=base_run)
    log.info("fine-tune: wrote %s", out)
    return {"run_dir": str(out), "version": version, "metrics": metrics}


def install(layout: PipelineLayout, run_dir: Path) -> Path:
    """Make a promoted fine-tuned run DIR's matching model: DIR/matching moves to
    DIR/fine-tune/<run>.replaced (kept for a rollback by hand), the run folder takes its
    place; returns where the replaced one went. Both moves are renames on one file system."""
    run_dir = Path(run_dir).resolve()
    base = fine_tuned_from(run_dir)
    if base != run_id_of(layout.matching):
        raise FineTuneError(
            f"{run_dir} was fine-tuned from run {base}, but DIR/matching is now run "
            f"{run_id_of(layout.matching)}: fine-tune that model instead"
        )
    replaced = layout.fine_tune / f"{run_dir.name}.replaced"
    if replaced.exists():
        raise FineTuneError(f"{replaced} exists: this fine-tune was installed before")
    layout.matching.rename(replaced)
    run_dir.rename(layout.matching)
    log.info("DIR/matching is now the fine-tuned run (the replaced one: %s)", replaced)
    return replaced
