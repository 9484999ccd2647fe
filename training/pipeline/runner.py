"""`haowu pipeline`: run the jobs in order over one folder, resumable, under one MLflow run.

The folder layout (DESIGN §6) is a contract, versioned by `LAYOUT_VERSION` in
`DIR/.steps/_layout.json`:

    DIR/data/            the marketplace (generate)
    DIR/tier/            train-tier run folder
    DIR/matching/        train-matching run folder
    DIR/lists/creator/   top-k goods per creator (recommend)
    DIR/lists/product/   top-k creators per good (recommend --direction product)
    DIR/brokers/         match-brokers output
    DIR/report.html      the visual report (also in the pipeline's MLflow run)
    DIR/summary.json     the summary table's numbers
    DIR/.steps/          one record per finished step (skipped on rerun unless forced)

The runner knows nothing of the jobs: the CLI hands it named callables. A step whose job
opens no MLflow run of its own gets one here, nested under the pipeline's run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from features.steps import StepLedger
from models.artifacts import PipelineLayout, masked
from training.lifecycle import tracking

log = logging.getLogger(__name__)

LAYOUT_VERSION = 2


@dataclass
class Step:
    name: str
    run: Callable[[], dict[str, Any]]
    own_run: bool = False  # the job opens its own MLflow run (train-tier, train-matching)
    data_dir: Path | None = None  # fingerprinted in the step run's tags
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class StepResult:
    name: str
    summary: dict[str, Any]
    seconds: float | None
    skipped: bool


@dataclass
class PipelineRun:
    layout: PipelineLayout
    run_id: str
    steps: list[StepResult]


def _tracked(step: Step) -> Callable[[], dict[str, Any]]:
    """The step inside its own nested MLflow run, its numbers logged as metrics."""
    if step.own_run:
        return step.run

    def run() -> dict[str, Any]:
        with tracking.job_run(step.name, step.params, data_dir=step.data_dir):
            summary = step.run() or {}
            tracking.log_metrics(tracking.numeric(summary))
            if step.data_dir is not None:  # generate: the data exists only now
                import mlflow

                mlflow.set_tags(tracking.run_tags(step.name, step.data_dir))
        return summary

    return run


def run_pipeline(
    out: Path,
    steps: list[Step],
    preset: str,
    settings: dict[str, Any],
    identity: dict[str, Any],
    force: bool = False,
    echo: Callable[[str], None] = print,
    finish: Callable[[Path], dict[str, Any]] | None = None,
) -> PipelineRun:
    """Run (or skip, when finished before) each step in order; once one runs, the later
    ones run too (their inputs changed). A failing step stops the pipeline and leaves no
    record, so the rerun starts there. `finish(DIR)` returns the summary, logged as the
    pipeline run's metrics."""
    layout = PipelineLayout(Path(out))
    ledger = StepLedger(layout.root, force=force, layout=LAYOUT_VERSION, identity=identity)
    tags = {
        "haowu.job": "pipeline",
        "haowu.git_commit": tracking.git_commit() or "unknown",
        "haowu.pipeline_dir": str(layout.root.resolve()),
        "haowu.settings_hash": tracking.settings_hash(settings),
    }
    results: list[StepResult] = []
    with (
        tracking.context(preset=preset),
        tracking.parent_run("pipeline", ledger.meta.get("mlflow_run_id"), settings, tags) as run,
    ):
        ledger.set_meta(mlflow_run_id=run.info.run_id, tracking_uri=masked(tracking.tracking_uri()))
        total = len(steps)
        rebuilt = False  # a step ran: every later step's record is stale
        for i, step in enumerate(steps, 1):
            echo(f"[{i}/{total}] {step.name} ...")
            start = time.perf_counter()
            if rebuilt:
                ledger.forget(step.name)
            summary, skipped = ledger.run(step.name, _tracked(step))
            seconds = ledger.seconds(step.name)
            state = (
                f"skipped (done before in {seconds:.1f}s)"
                if skipped
                else f"done in {time.perf_counter() - start:.1f}s"
            )
            echo(f"[{i}/{total}] {step.name}: {state}")
            results.append(StepResult(step.name, summary, seconds, skipped))
            rebuilt = rebuilt or not skipped
        if layout.data.is_dir():
            import mlflow

            mlflow.set_tags(tracking.run_tags("pipeline", layout.data))
        if finish is not None:
            tracking.log_metrics(tracking.numeric(finish(layout.root)))
        for path in (layout.report, layout.summary):
            if path.is_file():
                tracking.log_artifact(path)
    return PipelineRun(layout, run.info.run_id, results)
