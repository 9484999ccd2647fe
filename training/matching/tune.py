"""`haowu tune`: Optuna over the matching settings, the same budget for the two-tower model,
ALS and EASE, and the best two-tower settings written as a YAML `train-matching` reads.

Each model gets one study (TPE, seeded from `tune.seed`). A two-tower trial trains with
the trial's values on the tuning pairs (tune_data.py) and reports each epoch's validation
Recall@`early_stop_k` to the study; the median pruner stops a trial whose curve runs below
the median of the earlier trials at the same epoch (`optuna.TrialPruned` from the
trainer's epoch callback), so a hopeless learning rate costs an epoch or two, not twenty.
ALS and EASE then get as many trials as the two-tower had (pruned ones included), scored
on the same validation pairs. The best settings of each are refit on training +
validation and scored once on the test pairs: that table, not the validation, is the
comparison.

Every trial is a nested MLflow run under the `tune` run (its values as params, its
learning curve as `loss` / `val_recall` by step = epoch); the parent run holds each
model's best value, settings and test figures, and the YAML.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch

from features.errors import HaowuError, OutputExistsError
from features.io import write_text
from features.settings import Distribution, MatchingConfig, Settings, TunedOn
from models.matching.recommender import Recommender
from training.evaluation.evaluate import evaluate
from training.lifecycle import tracking
from training.matching.job import MODEL, make_baselines
from training.matching.quality import LogSpec
from training.matching.search_space import spaces, suggest, with_values
from training.matching.tune_data import TuneData, from_folder, from_log
from training.matching.tuned import tuned_yaml

log = logging.getLogger(__name__)

BASELINES = ("als", "ease")
TUNE_DIR = Path("tune")  # the default home of tuned files: tune/DATA_NAME.yaml


class TuneError(HaowuError):
    """A tuning run that cannot start or cannot give an answer (its budget, its trials)."""


@dataclass(frozen=True)
class Budget:
    """Trials, minutes or both for the two-tower study; the baselines get its trial count."""

    trials: int | None
    minutes: float | None

    @classmethod
    def of(cls, trials: int | None, minutes: float | None, default_trials: int) -> Budget:
        if trials is not None and trials < 1:
            raise TuneError(f"--trials {trials}: a tuning budget needs at least 1 trial")
        if minutes is not None and not minutes > 0:
            raise TuneError(f"--minutes {minutes:g}: a tuning budget needs more than 0 minutes")
        return cls(default_trials if trials is None and minutes is None else trials, minutes)

    @property
    def seconds(self) -> float | None:
        return None if self.minutes is None else self.minutes * 60


def report_epoch(trial: optuna.Trial, record: Mapping[str, float]) -> None:
    """One epoch of a two-tower trial (the trainer's `on_epoch`): its learning curve to
    MLflow (step = epoch), its validation recall to the study; `TrialPruned` when the
    pruner says the curve is not worth finishing."""
    step = int(record["epoch"])
    tracking.log_metrics({k: v for k, v in record.items() if k != "epoch"}, step)
    if "val_recall" not in record:
        return
    trial.report(record["val_recall"], step)
    if trial.should_prune():
        raise optuna.TrialPruned(f"epoch {step}: validation recall {record['val_recall']:.4f}")


@contextlib.contextmanager
def trial_run(model: str, trial: optuna.Trial, values: Mapping[str, Any]) -> Iterator[None]:
    """A trial as a nested MLflow run; a pruned trial's run ends as finished, tagged
    `haowu.tune.state=pruned`, and the pruning goes on to the study."""
    pruned: optuna.TrialPruned | None = None
    tags = {"haowu.tune.model": model, "haowu.tune.trial": str(trial.number)}
    with tracking.job_run(f"tune-{model}-{trial.number}", {"matching": values}, tags=tags):
        try:
            yield
            tracking.set_tags({"haowu.tune.state": "complete"})
        except optuna.TrialPruned as exc:
            tracking.set_tags({"haowu.tune.state": "pruned"})
            pruned = exc
    if pruned is not None:
        raise pruned


def _log_trial(model: str, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """One line per finished trial: its state, value and values."""
    values = trial.user_attrs.get("values", trial.params)
    if trial.state == optuna.trial.TrialState.PRUNED and trial.intermediate_values:
        epoch = max(trial.intermediate_values)
        outcome = f"pruned at epoch {epoch} ({trial.intermediate_values[epoch]:.4f})"
    elif trial.value is not None:
        outcome = f"{trial.value:.4f} (best {study.best_value:.4f})"
    else:
        outcome = trial.state.name.lower()
    log.info("tune %s trial %d: %s %s", model, trial.number, outcome, values)


def _two_tower_objective(
    data: TuneData, base: MatchingConfig, space: Mapping[str, Distribution]
) -> Callable[[optuna.Trial], float]:
    def objective(trial: optuna.Trial) -> float:
        values = suggest(trial, space)
        trial.set_user_attr("values", values)
        trainer = data.job.two_tower(with_values(base, values))
        trainer.on_epoch = functools.partial(report_epoch, trial)
        with trial_run(MODEL, trial, values):
            trainer.fit(data.fit, data.val)
            value = max(r.get("val_recall", 0.0) for r in trainer.history)
            tracking.log_metrics({"value": value, "best_epoch": trainer.best_epoch})
        trial.set_user_attr("best_epoch", trainer.best_epoch)
        return value

    return objective


def _baseline(name: str, cfg: MatchingConfig, n_products: int) -> Recommender:
    return make_baselines(cfg.model_copy(update={"baselines": [name]}), n_products)[name]


def _baseline_objective(
    name: str, data: TuneData, base: MatchingConfig, space: Mapping[str, Distribution]
) -> Callable[[optuna.Trial], float]:
    k = base.early_stop_k
    task = data.val_task

    def objective(trial: optuna.Trial) -> float:
        values = suggest(trial, space)
        trial.set_user_attr("values", values)
        model = _baseline(name, with_values(base, values), data.fit.shape[1])
        with trial_run(name, trial, values):
            model.fit(data.fit)
            value = evaluate(model, task, [k], batch=base.eval_batch).metrics[f"recall@{k}"]
            tracking.log_metrics({"value": value})
        return value

    return objective


def _optimize(
    model: str,
    objective: Callable[[optuna.Trial], float],
    seed: int,
    pruner: optuna.pruners.BasePruner,
    trials: int | None,
    seconds: float | None = None,
) -> optuna.Study:
    study = optuna.create_study(
        study_name=model,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=pruner,
    )
    study.optimize(
        objective,
        n_trials=trials,
        timeout=seconds,
        callbacks=[functools.partial(_log_trial, model)],
    )
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not done:
        raise TuneError(
            f"every {model} trial was pruned ({len(study.trials)}); raise tune.startup_trials "
            "or the budget"
        )
    return study


def _test(
    name: str, study: optuna.Study, data: TuneData, base: MatchingConfig, metrics: list[str]
) -> dict[str, float]:
    """The best settings refit (on training + validation when `refit_all`) and scored on
    the test pairs."""
    best = study.best_trial
    cfg = with_values(base, best.user_attrs["values"])
    if name == MODEL:
        epochs = max(int(best.user_attrs["best_epoch"]), 1)
        if cfg.refit_all:
            refit = data.job.two_tower(cfg.model_copy(update={"epochs": epochs}))
            model: Recommender = refit.fit(data.full)
        else:
            model = data.job.two_tower(cfg).fit(data.fit, data.val)
    else:
        model = _baseline(name, cfg, data.fit.shape[1])
        model.fit(data.full if cfg.refit_all else data.fit)
    ks = sorted({int(m.rpartition("@")[2]) for m in metrics})
    scored = evaluate(model, data.test, ks, batch=base.eval_batch).metrics
    return {m: scored[m] for m in metrics}


def run(
    settings: Settings,
    source: Path | LogSpec,
    out: Path | None = None,
    trials: int | None = None,
    minutes: float | None = None,
    overwrite: bool = False,
    pruner: optuna.pruners.BasePruner | None = None,
) -> dict[str, Any]:
    """Tune the two-tower model, ALS and EASE on one data folder or log; write the best
    two-tower settings to `out` (default tune/NAME.yaml). Returns the summary.

    The budget, the search space and the output path are checked before the data is
    read, and the data is split before any trial runs: bad input fails in seconds and
    writes nothing."""
    budget = Budget.of(trials, minutes, settings.tune.trials)
    space = spaces(settings)
    name = source.name if isinstance(source, LogSpec) else Path(source).name
    out = Path(out) if out is not None else TUNE_DIR / f"{name}.yaml"
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out} exists; pass --overwrite to replace it")
    base, tcfg = settings.matching, settings.tune
    if isinstance(source, LogSpec):
        data = from_log(settings, source)
    else:
        data = from_folder(settings, source)
    if data.job.inter.first_ts is None and space[MODEL].pop("history_half_life", None):
        log.info("history_half_life not searched: %s has no times", data.name)
    base = data.job.resolve_half_life(data.fit, data.val_task, base)[0]  # auto, if not searched
    torch.set_num_threads(base.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own line per trial
    metric = f"recall@{base.early_stop_k}"
    test_metrics = list(dict.fromkeys([metric, *data.test_metrics]))
    main = data.test_metrics[0] if data.test_metrics else metric  # a log's customary metric
    median = optuna.pruners.MedianPruner(  # steps are epochs, from 1: the first that may
        n_startup_trials=tcfg.startup_trials,  # be pruned is warmup_epochs + 1
        n_warmup_steps=tcfg.warmup_epochs + 1,
    )
    params = {
        "tune": tcfg.model_dump(mode="json"),
        "matching": base.model_dump(mode="json"),
        "budget": {"trials": budget.trials, "minutes": budget.minutes},
    }
    summary: dict[str, Any] = {"data": data.name, "metric": metric, "main": main, "models": {}}
    with tracking.job_run("tune", params, data.data_dir, tags={"haowu.tune.data": data.name}):
        studies: dict[str, optuna.Study] = {}
        seconds: dict[str, float] = {}
        start = time.perf_counter()
        studies[MODEL] = _optimize(
            MODEL,
            _two_tower_objective(data, base, space[MODEL]),
            tcfg.seed,
            pruner or median,
            budget.trials,
            budget.seconds,
        )
        seconds[MODEL] = time.perf_counter() - start
        n_trials = len(studies[MODEL].trials)
        for model in BASELINES:
            if not space[model]:
                continue
            if model == "ease" and data.fit.shape[1] > base.ease_max_products:
                log.warning("tune: EASE skipped above %d goods", base.ease_max_products)
                continue
            start = time.perf_counter()
            objective = _baseline_objective(model, data, base, space[model])
            nop = optuna.pruners.NopPruner()
            studies[model] = _optimize(model, objective, tcfg.seed, nop, n_trials)
            seconds[model] = time.perf_counter() - start
        for model, study in studies.items():
            summary["models"][model] = {
                "trials": len(study.trials),
                "pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials),
                f"val_{metric}": study.best_value,
                "test": _test(model, study, data, base, test_metrics),
                "seconds": seconds[model],
                "settings": study.best_trial.user_attrs["values"],
            }
        refs = [summary["models"][m]["test"][main] for m in BASELINES if m in summary["models"]]
        best_ref = max(refs, default=0.0)
        two_tower = summary["models"][MODEL]["test"][main]
        summary["ratio"] = two_tower / best_ref if best_ref else None
        tracking.log_metrics(tracking.numeric({"models": summary["models"]}))
        if summary["ratio"] is not None:
            tracking.log_metrics({"ratio": summary["ratio"]})
        tracking.log_params({"best": {m: r["settings"] for m, r in summary["models"].items()}})
        best = studies[MODEL].best_trial
        tuned_on = TunedOn(
            data=data.source,
            fingerprint=data.fingerprint,
            columns=data.columns,
            metric=f"val {metric}",
            value=round(float(best.value), 4),
            trials=len(studies[MODEL].trials),
        )
        write_text(tuned_yaml(best.user_attrs["values"], tuned_on), out)
        tracking.log_artifact(out, artifact_path="tune")
    summary["out"] = str(out)
    return summary


def table(summary: Mapping[str, Any]) -> str:
    """One markdown table: each model's trials, validation and test figures, its best
    settings, and the two-tower over the best of ALS and EASE."""
    metric, main = summary["metric"], summary["main"]
    tests = list(next(iter(summary["models"].values()))["test"])
    lines = [
        f"tuned on {summary['data']}: validation {metric}, best settings refit and tested",
        "",
        "| model | trials | pruned | val "
        + metric
        + " | "
        + " | ".join(f"test {m}" for m in tests)
        + " | tune s | settings |",
        "|---" * (len(tests) + 6) + "|",
    ]
    for model, row in summary["models"].items():
        settings = ", ".join(
            f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
            for k, v in row["settings"].items()
        )
        lines.append(
            f"| {model} | {row['trials']} | {row['pruned']} | {row[f'val_{metric}']:.4f} | "
            + " | ".join(f"{row['test'][m]:.4f}" for m in tests)
            + f" | {row['seconds']:.0f} | {settings} |"
        )
    ratio = summary.get("ratio")
    if ratio is not None:
        lines += ["", f"two-tower / best of ALS, EASE on test {main}: {ratio:.2f}x"]
    return "\n".join(lines)
