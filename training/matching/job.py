"""`haowu train-matching`: fit the two-tower model and its baselines, evaluate them on the
same splits with the same code, write the run folder and log it all to MLflow.

Run folder (the artifact contract, also what `haowu recommend --model` reads):

    RUN_DIR/model/           the served recommender: weights.pt, model_config.json,
                             matching_config.json, encoders.json, recommender.json,
                             creator_embeddings.npy, product_embeddings.npy,
                             creator_ids.npy, product_ids.npy (position -> ID),
                             products.parquet (product_id, category_l1, tier when known),
                             id_maps/ (imported data: the user's own IDs)
    RUN_DIR/metrics.json     flat metrics (DESIGN §6 names)
    RUN_DIR/metrics.csv      protocol, model, metric, value (long form)
    RUN_DIR/metrics.md       model vs baselines vs oracle, one table per protocol
    RUN_DIR/recall_*.png     Recall@k curves per protocol
    RUN_DIR/config.yaml      the resolved settings
    RUN_DIR/history.json     per-epoch loss / validation recall of every two-tower fit
    RUN_DIR/run.json         the MLflow run id and registered model version
"""

from __future__ import annotations

import functools
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
import yaml

from features.idmap import ID_MAPS_DIR, id_map_path
from features.io import atomic_output_dir, ensure_empty_output, write_json
from features.matching_data import (
    Interactions,
    creator_frame,
    load_interactions,
    product_frame,
)
from features.settings import MatchingConfig, Settings
from features.validate import validate_tables
from models.artifacts import (
    CREATOR_IDS,
    HISTORY,
    METRICS,
    MODEL_DIR,
    PRODUCT_IDS,
    PRODUCT_INFO,
    RUN_DIR_TAG,
    RUN_META,
    SERVING_DEFAULTS,
    masked,
    model_digest,
    open_tier_run,
    read_tiers,
)
from models.matching.baselines import (
    ALSRecommender,
    EASERecommender,
    ItemKNNRecommender,
    PopularityRecommender,
)
from models.matching.recommender import Recommender
from training.evaluation.evaluate import EvalResult, EvalTask, make_task
from training.evaluation.evaluate import evaluate as run_eval
from training.evaluation.oracle_model import OracleRecommender
from training.evaluation.splits import Split, SplitError, cold_products, random_split, time_split
from training.lifecycle import tracking
from training.matching.history_order import resolve_half_life
from training.matching.tuned import check_tuned_on, side_columns
from training.matching.two_tower_fit import TwoTowerTrainer
from training.matching.verdict import (
    MODEL,
    PROTOCOL_PREFIX,
    Verdict,
    metric_name,
    val_metric,
    verdict,
)
from training.matching.warm_start import carry

log = logging.getLogger(__name__)

REGISTERED_NAME = "haowu-matching"
# what the job reads, validated before anything is written (features/validate.py)
INPUT_TABLES = ("merchants", "creators", "products", "product_stats", "interactions")


def make_baselines(cfg: MatchingConfig, n_products: int) -> dict[str, Recommender]:
    """The configured baselines; EASE becomes ItemKNN above `ease_max_products`."""
    out: dict[str, Recommender] = {}
    for name in cfg.baselines:
        if name == "pop":
            out["pop"] = PopularityRecommender()
        elif name == "als":
            out["als"] = ALSRecommender(
                cfg.als_factors,
                cfg.als_regularization,
                cfg.als_alpha,
                cfg.als_iterations,
                cfg.threads,
                cfg.seed,
            )
        elif name == "ease" and n_products <= cfg.ease_max_products:
            out["ease"] = EASERecommender(cfg.ease_lambda, cfg.ease_max_products)
        elif name in ("ease", "itemknn"):
            out["itemknn"] = ItemKNNRecommender(cfg.itemknn_neighbors, cfg.threads)
    return out


def metric_names(protocol: str, model: str, metrics: dict[str, float]) -> dict[str, float]:
    """`recall@50` of model `als` under protocol `time` -> `time_als_recall@50`."""
    return {metric_name(protocol, model, k): v for k, v in metrics.items()}


class MatchingJob:
    """State shared by the protocols of one run (data, side features, categories)."""

    def __init__(
        self,
        cfg: Settings,
        data_dir: Path,
        tiers: Path | None,
        progress: bool,
        with_oracle: bool = True,
    ) -> None:
        self.cfg = cfg
        self.data_dir, self.progress = Path(data_dir), progress
        self.inter: Interactions = load_interactions(self.data_dir)
        self.tiers = read_tiers(tiers)
        self.tiers_ref = str(open_tier_run(tiers).root.resolve()) if tiers is not None else None
        self.creator_frame = creator_frame(self.data_dir, self.inter.creators)
        self.product_frame = product_frame(self.data_dir, self.inter.products, self.tiers)
        side = side_columns(self.creator_frame, self.product_frame)
        self.mcfg = cfg.matching.for_data(side_features=any(side.values()))
        leaf = self.product_frame.get("category_l3")
        self.categories = (
            pd.to_numeric(leaf, errors="coerce").fillna(-1).to_numpy(np.int64)
            if leaf is not None
            else None
        )
        self.oracle = (
            OracleRecommender(self.data_dir, self.inter.creators, self.inter.products)
            if with_oracle and OracleRecommender.available(self.data_dir)
            else None
        )
        self._reset()

    @classmethod
    def from_interactions(
        cls, cfg: Settings, inter: Interactions, progress: bool = False
    ) -> MatchingJob:
        """A job on pairs read elsewhere (a public log's text files): ID-only (no side
        tables, no categories, no oracle), the same two-tower and baselines."""
        job = cls.__new__(cls)
        job.cfg, job.mcfg, job.progress = cfg, cfg.matching, progress
        job.data_dir, job.inter, job.tiers = None, inter, None
        job.creator_frame = pd.DataFrame(index=np.arange(len(inter.creators)))
        job.product_frame = pd.DataFrame(index=np.arange(len(inter.products)))
        job.categories, job.oracle = None, None
        job._reset()
        return job

    def _reset(self) -> None:
        self.results: dict[str, dict[str, EvalResult]] = {}
        self.history: dict[str, list[dict[str, float]]] = {}
        self.timings: dict[str, float] = {}
        self.verdicts: dict[str, Verdict] = {}
        self.half_lives: dict[str, float] = {}  # protocol -> the history half-life trained
        self.order_notes: dict[str, str] = {}  # protocol -> how `auto` chose it
        self.best_epoch = self.mcfg.epochs

    def two_tower(self, cfg: MatchingConfig | None = None, curve: str = "") -> TwoTowerTrainer:
        """A trainer whose epochs are logged as MLflow metrics `CURVE.loss`, ... by step."""
        trainer = TwoTowerTrainer(
            cfg or self.mcfg, self.creator_frame, self.product_frame, progress=self.progress
        )
        if curve:
            trainer.on_epoch = functools.partial(_log_epoch, curve)
        if self.inter.first_ts is not None:
            trainer.pair_times = self.inter.first_ts_of
        return trainer

    def run_protocol(self, split: Split) -> TwoTowerTrainer:
        """Fit every model on the split's training pairs; evaluate on its test (and, for
        the time split, the cold-start slice)."""
        cfg, inter = self.mcfg, self.inter
        train, val = inter.csr(split.train), inter.csr(split.val)
        seen = split.train | split.val
        tasks = {
            split.name: make_task("test", inter, split.test, seen, cfg.eval_creators, cfg.seed)
        }
        if split.name == "time":
            cold = cold_products(inter, split)
            log.info("cold-start slice: %d products first seen in the test period", len(cold))
            if len(cold):
                tasks["cold"] = make_task(
                    "cold", inter, split.test, seen, cfg.eval_creators, cfg.seed, cold
                )
        start = time.perf_counter()
        val_task = self._val_task(split)  # the `auto` half-life's probe and the verdict
        two_tower_cfg, why = self.resolve_half_life(train, val_task)
        self.half_lives[split.name] = float(two_tower_cfg.history_half_life)
        if why:
            self.order_notes[split.name] = why
        model = self.two_tower(two_tower_cfg, curve=split.name).fit(train, val)
        self.timings[f"{split.name}_train_seconds"] = time.perf_counter() - start
        self.timings[f"{split.name}_epoch_seconds"] = model.seconds_per_epoch
        self.history[split.name] = model.history
        models: dict[str, Recommender] = {MODEL: model}
        for name, baseline in make_baselines(cfg, inter.shape[1]).items():
            start = time.perf_counter()
            models[name] = baseline.fit(train, val)
            self.timings[f"{split.name}_{name}_fit_seconds"] = time.perf_counter() - start
        self._judge(split.name, models, val_task)
        if self.oracle is not None:
            models["oracle"] = self.oracle
        for protocol, task in tasks.items():
            for name, m in models.items():
                result = run_eval(m, task, cfg.eval_k, self.categories, cfg.eval_batch)
                self.results.setdefault(protocol, {})[name] = result
                log.info(
                    "%s %s: %s",
                    protocol,
                    name,
                    {k: round(v, 4) for k, v in result.metrics.items() if k.startswith("recall@")},
                )
        return model

    def refit(
        self,
        first: TwoTowerTrainer | None,
        pairs: sp.csr_matrix | None = None,
        curve: str = "refit",
    ) -> TwoTowerTrainer:
        """The served model on `pairs` (default: every pair): from scratch for the best
        epoch count, or (`refit_warm_epochs` > 0) a few epochs on from the first
        protocol's model, which has learnt most of it already
        (training/matching/warm_start.py). `curve`: the MLflow prefix of its learning
        curve ("" = not logged)."""
        cfg, inter = self.mcfg, self.inter
        if first is not None or cfg.history_half_life == "auto":
            # the half-life the first protocol's validation chose (none ran: auto is a mean)
            half_life = first.cfg.history_half_life if first is not None else 0.0
            cfg = cfg.model_copy(update={"history_half_life": half_life})
        pairs = inter.csr() if pairs is None else pairs
        if first is None or not cfg.refit_warm_epochs:
            refit_cfg = cfg.model_copy(update={"epochs": max(self.best_epoch, 1)})
            return self.two_tower(refit_cfg, curve=curve).fit(pairs)
        scale = cfg.refit_warm_lr_scale
        refit_cfg = cfg.model_copy(
            update={
                "epochs": cfg.refit_warm_epochs,
                "lr": cfg.lr * scale,
                "embedding_lr": cfg.embedding_lr * scale,
            }
        )
        ids = inter.creators.ids, inter.products.ids
        coo = pairs.tocoo()
        warm = carry(first, *ids, *ids, coo.row, coo.col, cfg.min_id_count)
        return self.two_tower(refit_cfg, curve=curve).fit(pairs, warm=warm)

    def resolve_half_life(
        self, train: sp.csr_matrix, val: EvalTask, cfg: MatchingConfig | None = None
    ) -> tuple[MatchingConfig, str]:
        """`cfg` (default: the job's settings) with `history_half_life: auto` decided on
        `val`, and why (training/matching/history_order.py)."""
        times = self.inter.first_ts_of if self.inter.first_ts is not None else None
        return resolve_half_life(cfg or self.mcfg, train, val, times)

    def _val_task(self, split: Split) -> EvalTask:
        """The split's validation pairs, on a sample of creators (`val_creators`)."""
        cfg = self.mcfg
        sample = cfg.val_sample(len(self.inter.products))
        return make_task("val", self.inter, split.val, split.train, sample, cfg.seed)

    def _judge(self, protocol: str, models: dict[str, Recommender], task: EvalTask) -> None:
        """Score every model on the protocol's validation pairs: which won, by how much."""
        cfg = self.mcfg
        if len(task.creators) == 0:
            return
        k = cfg.early_stop_k
        scores = {
            name: run_eval(m, task, [k], None, cfg.eval_batch).metrics[f"recall@{k}"]
            for name, m in models.items()
        }
        found = verdict(protocol, val_metric(k), scores)
        if found is not None:
            self.verdicts[protocol] = found
            log.info("validation verdict, %s", found.line())

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for protocol, found in self.verdicts.items():
            for name, value in found.scores.items():
                out[metric_name(protocol, name, found.metric)] = value
            out[f"{PROTOCOL_PREFIX[protocol]}val_ratio_vs_best_baseline"] = found.ratio
        for protocol, by_model in self.results.items():
            for name, result in by_model.items():
                out.update(metric_names(protocol, name, result.metrics))
            oracle = by_model.get("oracle")
            if oracle is not None and MODEL in by_model:
                for k in self.mcfg.eval_k:
                    ref = oracle.metrics.get(f"recall@{k}", 0.0)
                    model = by_model[MODEL].metrics.get(f"recall@{k}", 0.0)
                    out[f"{PROTOCOL_PREFIX[protocol]}oracle_ratio@{k}"] = (
                        model / ref if ref else 0.0
                    )
        for protocol, half_life in self.half_lives.items():
            out[f"{PROTOCOL_PREFIX[protocol]}history_half_life"] = half_life
        out.update({k: float(v) for k, v in self.timings.items()})
        out["best_epoch"] = float(self.best_epoch)
        out["pairs"] = float(self.inter.n_pairs)
        return out


def _log_epoch(curve: str, record: dict[str, float]) -> None:
    """One epoch of a learning curve as MLflow metrics (`random.loss`, step = epoch), into
    the job's run; outside one (a fit called on its own) nothing is logged, since MLflow
    would otherwise open a run of its own and leave it open."""
    if not tracking.active():
        return
    step = int(record["epoch"])
    tracking.log_metrics({f"{curve}.{k}": v for k, v in record.items() if k != "epoch"}, step)


def _table(job: MatchingJob) -> pd.DataFrame:
    rows = [
        {"protocol": protocol, "model": name, "metric": metric, "value": value}
        for protocol, by_model in job.results.items()
        for name, result in by_model.items()
        for metric, value in result.metrics.items()
    ]
    return pd.DataFrame(rows, columns=["protocol", "model", "metric", "value"])


def _markdown(table: pd.DataFrame, ks: list[int]) -> str:
    show = [f"recall@{k}" for k in ks] + [
        f"ndcg@{min(ks)}",
        f"hit_rate@{min(ks)}",
        f"coverage@{max(ks)}",
        f"category_coverage@{max(ks)}",
    ]
    parts = []
    for protocol, group in table.groupby("protocol", sort=False):
        wide = group.pivot(index="model", columns="metric", values="value")
        wide = wide[[c for c in show if c in wide.columns]]
        lines = [
            f"### protocol {protocol}",
            "",
            "| model | " + " | ".join(wide.columns) + " |",
            "|---" * (len(wide.columns) + 1) + "|",
        ]
        for model, row in wide.iterrows():
            lines.append(f"| {model} | " + " | ".join(f"{v:.4f}" for v in row) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def _verdict_markdown(verdicts: dict[str, Verdict]) -> str:
    if not verdicts:
        return ""
    lines = ["", "### validation: which model won", ""]
    lines += [f"- {v.line()}" for v in verdicts.values()]
    return "\n".join(lines) + "\n"


def _notes_markdown(title: str, notes: dict[str, str]) -> str:
    if not notes:
        return ""
    lines = ["", f"### {title}", ""]
    lines += [f"- protocol {protocol}: {note}" for protocol, note in notes.items()]
    return "\n".join(lines) + "\n"


def save_model(job: MatchingJob, model: TwoTowerTrainer, folder: Path) -> None:
    """The served model folder: the recommender, its ID maps and what serving defaults to."""
    model.save(folder)
    np.save(folder / CREATOR_IDS, job.inter.creators.ids)
    np.save(folder / PRODUCT_IDS, job.inter.products.ids)
    info = pd.DataFrame({"product_id": job.inter.products.ids})
    for column in ("category_l1", "tier"):
        if column in job.product_frame.columns:
            info[column] = (
                pd.to_numeric(job.product_frame[column], errors="coerce").astype("Int64").to_numpy()
            )
    info.to_parquet(folder / PRODUCT_INFO, index=False)
    # imported data: keep its ID maps beside the model, so outputs carry the user's IDs
    for name in ("creator", "product"):
        source = id_map_path(job.data_dir, name)
        if source.is_file():
            (folder / ID_MAPS_DIR).mkdir(exist_ok=True)
            shutil.copyfile(source, folder / ID_MAPS_DIR / source.name)
    # what the registered model's policy reads by default: this run's data, tiers, settings
    defaults = {
        "data": str(Path(job.data_dir).resolve()),
        "tiers": job.tiers_ref,
        "index": job.cfg.index.model_dump(mode="json"),
        "policy": job.cfg.policy.model_dump(mode="json"),
    }
    write_json(defaults, folder / SERVING_DEFAULTS)


def register_model(staging: Path, run_id: str, register: bool, **meta: str | None) -> str | None:
    """Log RUN_DIR/model with its pyfunc (registered as a challenger when `register`) and
    record the run in RUN_DIR/run.json (plus `meta`); returns the registered version."""
    from training.lifecycle.model_logging import log_matching_model

    name = REGISTERED_NAME if register else None
    version = log_matching_model(staging / MODEL_DIR, name)
    record = {
        "run_id": run_id,
        "registered_model": name,
        "version": version,
        "tracking_uri": masked(tracking.tracking_uri()),
        **meta,
    }
    write_json(record, staging / RUN_META)
    return version


def run(
    cfg: Settings,
    data_dir: Path,
    out: Path,
    tiers: Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
    register: bool = True,
    validate: bool = True,
) -> dict[str, float]:
    """Train, evaluate and save the matching model; returns the flat metrics.

    The input tables are validated first (`validate=False`: the caller just did), so
    duplicate keys, interactions naming unknown creators or goods, +-inf or negative
    prices fail before a run folder or an MLflow run is made."""
    from training.matching.plots import plot_recall_curves

    if validate:
        validate_tables(Path(data_dir), INPUT_TABLES)
    torch.set_num_threads(cfg.matching.threads)
    started = time.perf_counter()
    ensure_empty_output(Path(out), overwrite)
    job = MatchingJob(cfg, data_dir, tiers, progress)
    mcfg = job.mcfg  # the schedule for this data (`with_side_features`)
    if cfg.tuned_on is not None:  # a `haowu tune` YAML: only for data with its columns
        check_tuned_on(
            cfg.tuned_on,
            side_columns(job.creator_frame, job.product_frame),
            str(Path(data_dir)),
            tracking.data_fingerprint(data_dir),
        )
    with atomic_output_dir(Path(out), overwrite) as staging:
        params = {"matching": mcfg.model_dump(), "tiers": str(tiers) if tiers else "none"}
        with tracking.job_run(
            "train-matching", params, data_dir, tags={RUN_DIR_TAG: str(Path(out).resolve())}
        ) as mlrun:
            served: TwoTowerTrainer | None = None
            for protocol in mcfg.protocols:
                if protocol == "random":
                    split = random_split(
                        job.inter, mcfg.val_fraction, mcfg.test_fraction, mcfg.seed
                    )
                else:
                    try:
                        split = time_split(job.inter, mcfg.time_test_days, mcfg.time_val_days)
                    except SplitError as exc:  # e.g. imported data without times
                        log.warning("protocol (b) time split and (c) cold slice skipped: %s", exc)
                        continue
                model = job.run_protocol(split)
                if protocol == "random" or served is None:
                    served, job.best_epoch = model, model.best_epoch
            if served is None or mcfg.refit_all:
                start = time.perf_counter()
                served = job.refit(served)
                job.timings["refit_seconds"] = time.perf_counter() - start
                job.history["refit"] = served.history
            save_model(job, served, staging / "model")
            model_digest(staging / "model")  # kept beside the model: readers reuse it
            job.timings["job_seconds"] = time.perf_counter() - started
            metrics = job.metrics()
            table = _table(job)
            table.to_csv(staging / "metrics.csv", index=False)
            (staging / "metrics.md").write_text(
                _markdown(table, mcfg.eval_k)
                + _verdict_markdown(job.verdicts)
                + _notes_markdown("history order", job.order_notes)
            )
            write_json(metrics, staging / METRICS)
            write_json(job.history, staging / HISTORY)
            (staging / "config.yaml").write_text(
                yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
            )
            for protocol, by_model in job.results.items():
                plot_recall_curves(
                    {name: r.recall_curve for name, r in by_model.items()},
                    staging / f"recall_{protocol}.png",
                    title=f"Recall@k, protocol {protocol}",
                )
            tracking.log_metrics(metrics)
            tracking.set_tags({f"{p}.val_winner": v.winner for p, v in job.verdicts.items()})
            for item in staging.iterdir():  # the model folder is logged once, with the pyfunc
                if item.is_dir() and item.name != MODEL_DIR:
                    tracking.log_artifacts(item, artifact_path=f"run/{item.name}")
                elif item.is_file():
                    tracking.log_artifact(item, artifact_path="run")
            register_model(staging, mlrun.info.run_id, register)
    log.info(
        "train-matching: %s",
        {k: round(v, 4) for k, v in metrics.items() if k.endswith("recall@50")},
    )
    return metrics
