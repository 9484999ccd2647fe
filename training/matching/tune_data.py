"""The pairs `haowu tune` scores every trial on, read through the matching job's loaders.

A data folder (`--data DIR`) is split with the job's random split, protocol (a): trials
fit on its training pairs and are scored on its validation pairs; the best settings are
refit on training + validation and scored once on its test pairs. A public log
(`--log NAME=FORMAT:DIR`, as `haowu bench quality` reads it) keeps its own test file, and
the validation is carved from its training pairs with the same random split. Either way
a log too small to split (every creator with fewer than 2 pairs) is a `SplitError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from features.io import files_digest
from features.settings import Settings
from features.validate import validate_tables
from training.evaluation.evaluate import EvalTask, make_task
from training.evaluation.splits import SplitError, random_split
from training.lifecycle import tracking
from training.matching.job import INPUT_TABLES, MatchingJob
from training.matching.quality import LogSpec, load_log
from training.matching.tuned import side_columns


@dataclass
class TuneData:
    """Training, validation and test of one tuning run (matrices of one shape)."""

    name: str
    job: MatchingJob  # the two-tower's side frames and trainer factory
    fit: sp.csr_matrix  # what each trial trains on
    val: sp.csr_matrix  # what each trial is scored (and pruned) on
    full: sp.csr_matrix  # fit + val: the best settings' refit before the test
    test: EvalTask
    data_dir: Path | None  # a contract folder (its MLflow dataset), None for a text log
    source: str  # the folder read, resolved (a tuned file's `tuned_on.data`)
    fingerprint: str | None
    columns: dict[str, list[str]]  # side-feature columns (a tuned file's `tuned_on`)
    test_metrics: tuple[str, ...] = ()  # a public log's customary metrics, besides recall

    @property
    def val_task(self) -> EvalTask:
        """The baselines' validation: every creator with validation pairs."""
        return EvalTask("val", np.flatnonzero(np.diff(self.val.indptr) > 0), self.val, self.fit)


def _check_val(val: sp.csr_matrix, where: str) -> None:
    if val.nnz == 0:
        raise SplitError(
            f"{where}: the random split leaves no validation pairs to tune on "
            "(raise matching.val_fraction, or bring a larger log)"
        )


def from_folder(settings: Settings, data_dir: Path) -> TuneData:
    """A contract data folder, split with protocol (a)."""
    cfg = settings.matching
    validate_tables(Path(data_dir), INPUT_TABLES)
    job = MatchingJob(settings, data_dir, None, progress=False)
    inter = job.inter
    split = random_split(inter, cfg.val_fraction, cfg.test_fraction, cfg.seed)
    _check_val(inter.csr(split.val), f"{data_dir}")
    seen = split.train | split.val
    return TuneData(
        name=Path(data_dir).name,
        job=job,
        fit=inter.csr(split.train),
        val=inter.csr(split.val),
        full=inter.csr(seen),
        test=make_task("test", inter, split.test, seen, cfg.eval_creators, cfg.seed),
        data_dir=Path(data_dir),
        source=str(Path(data_dir).resolve()),
        fingerprint=tracking.data_fingerprint(data_dir),
        columns=side_columns(job.creator_frame, job.product_frame),
    )


def from_log(settings: Settings, spec: LogSpec) -> TuneData:
    """A public log with its own test file (formats of `haowu bench quality`)."""
    cfg = settings.matching
    qlog = load_log(spec, settings)
    carve = qlog.validation(cfg)
    val = qlog.train.csr(carve)
    _check_val(val, spec.name)
    full = qlog.train.csr()
    if spec.format == "pairs":
        fingerprint: str | None = tracking.data_fingerprint(spec.path)
    else:
        files = [(p.name, p) for p in sorted(spec.path.glob("*.txt"))]
        fingerprint = files_digest(files)[:16]
    return TuneData(
        name=spec.name,
        job=qlog.job,
        fit=qlog.train.csr(~carve),  # a random carve's own test part stays in training
        val=val,
        full=full,
        test=EvalTask("test", np.flatnonzero(np.diff(qlog.test.indptr) > 0), qlog.test, full),
        data_dir=spec.path if spec.format == "pairs" else None,
        source=str(spec.path.resolve()),
        fingerprint=fingerprint,
        columns=side_columns(qlog.job.creator_frame, qlog.job.product_frame),
        test_metrics=tuple(qlog.metrics),
    )
