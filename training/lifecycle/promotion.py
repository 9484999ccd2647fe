"""Model lifecycle: the champion/challenger gate and rollback over the MLflow registry.

The batch job and the service load `models:/NAME@champion`, so a model reaches them
only through `promote`, which compares the challenger with the current champion on the
gate metrics, on the same data fingerprint. Every change of champion is appended to a
history tag on the registered model, which is what `rollback` walks back. That tag is
read, changed and written back, so promote and rollback of one model hold a file lock
(`registry_lock_path`): two at once on this machine run one after the other instead of
losing one's change.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from features.errors import HaowuError
from features.settings import RegistryConfig
from models.artifacts import FINE_TUNED_FROM_TAG, RUN_META, registry_lock_path
from training.lifecycle.tracking import configure, metric_key, tracking_uri

log = logging.getLogger(__name__)

HISTORY_TAG = "haowu.champion_history"
CHAMPION_PREFIX = "champion."  # a fine-tuned run's metrics of the model it started from
FINGERPRINT_TAG = "haowu.data_fingerprint"
LOCK_WAIT_S = 120.0


class PromotionRefused(HaowuError):
    """The challenger is worse than the champion on a gate metric, or saw other data."""

    def __init__(self, reason: str, table: str) -> None:
        self.table = table
        super().__init__(f"promotion refused: {reason}\n{table}")


@dataclass
class GateRow:
    metric: str
    direction: str
    champion: float | None
    challenger: float | None
    passed: bool


@dataclass
class Promotion:
    name: str
    version: str
    previous: str | None
    rows: list[GateRow] = field(default_factory=list)
    forced: bool = False

    @property
    def table(self) -> str:
        return format_gate_table(self.rows)


def format_gate_table(rows: list[GateRow]) -> str:
    """Side-by-side champion vs challenger, one line per gate metric."""
    lines = [f"{'metric':<16}{'champion':>12}{'challenger':>12}{'delta':>10}  gate"]
    for r in rows:
        champ = "-" if r.champion is None else f"{r.champion:.4f}"
        chall = "-" if r.challenger is None else f"{r.challenger:.4f}"
        delta = (
            "-"
            if r.champion is None or r.challenger is None
            else f"{r.challenger - r.champion:+.4f}"
        )
        lines.append(
            f"{r.metric:<16}{champ:>12}{chall:>12}{delta:>10}  {'ok' if r.passed else 'WORSE'}"
        )
    return "\n".join(lines)


def _client():
    configure()
    from mlflow import MlflowClient

    return MlflowClient()


NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,199}")  # what a search filter may quote
RUN_ID = re.compile(r"[0-9a-f]{32}")


def _challenger_version(client, name: str, run_id: str):
    from mlflow.exceptions import MlflowException

    if not NAME.fullmatch(name):
        raise HaowuError(f"--model {name!r}: a registered model name is letters, digits, _ . -")
    if not RUN_ID.fullmatch(run_id):
        raise HaowuError(f"--run {run_id!r}: not an MLflow run ID (32 hex digits) or run folder")

    try:
        client.get_run(run_id)
    except MlflowException:
        raise HaowuError(f"run {run_id!r} does not exist in the tracking store") from None
    versions = client.search_model_versions(f"name='{name}' and run_id='{run_id}'")
    if not versions:
        raise HaowuError(f"run {run_id} has no registered version of model {name!r}")
    return max(versions, key=lambda v: int(v.version))


def _champion_version(client, name: str, alias: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


@contextlib.contextmanager
def _exclusive(name: str, wait_s: float | None = None) -> Iterator[None]:
    """Hold the champion-history lock of `name` (waiting up to `wait_s` for it)."""
    path = registry_lock_path(tracking_uri(), name)
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + (LOCK_WAIT_S if wait_s is None else wait_s)
    with open(path, "a") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise HaowuError(
                        f"another promote or rollback of {name!r} has held {path} for too "
                        "long; try again when it has finished"
                    ) from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _history(client, name: str) -> list[str]:
    from mlflow.exceptions import MlflowException

    try:
        tags = client.get_registered_model(name).tags
    except MlflowException:
        raise HaowuError(f"no registered model named {name!r} in {client.tracking_uri}") from None
    return json.loads(tags.get(HISTORY_TAG, "[]"))


def _set_champion(client, name: str, version: str, alias: str, history: list[str]) -> None:
    client.set_registered_model_alias(name, alias, version)
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))


def gate_rows(
    champion: dict[str, float],
    challenger: dict[str, float],
    gates: dict[str, str],
    tolerance: float,
) -> list[GateRow]:
    """Compare metric by metric; a missing challenger metric fails its gate."""
    rows = []
    for metric, direction in gates.items():
        key = metric_key(metric)
        old, new = champion.get(key), challenger.get(key)
        if new is None:
            passed = False
        elif old is None:
            passed = True
        elif direction == "higher":
            passed = new >= old - tolerance
        else:
            passed = new <= old + tolerance
        rows.append(GateRow(metric, direction, old, new, passed))
    return rows


def promote(
    name: str, run_id: str, cfg: RegistryConfig, force: bool = False, reason: str | None = None
) -> Promotion:
    """Make the run's registered version champion if it passes the gate (or `force`)."""
    if force and not reason:
        raise HaowuError("--force needs --reason: say why the gate is overridden")
    client = _client()
    challenger = _challenger_version(client, name, run_id)
    with _exclusive(name):  # the champion and its history, read to written
        return _promote(client, name, run_id, challenger, cfg, force, reason)


def _promote(
    client: Any,
    name: str,
    run_id: str,
    challenger: Any,
    cfg: RegistryConfig,
    force: bool,
    reason: str | None,
) -> Promotion:
    """`promote` once the champion-history lock is held."""
    champion = _champion_version(client, name, cfg.champion_alias)
    history = _history(client, name)
    if champion is not None and champion.version == challenger.version:
        return Promotion(name, str(challenger.version), str(champion.version))
    rows: list[GateRow] = []
    if champion is not None:
        old_run, new_run = client.get_run(champion.run_id), client.get_run(run_id)
        base = new_run.data.tags.get(FINE_TUNED_FROM_TAG)
        if base is not None:  # a fine-tuned challenger was judged against its base in its run
            rows = _fine_tuned_gate(champion, base, new_run.data.metrics, cfg, name, force)
        else:
            rows = _same_data_gate(old_run, new_run, cfg, name, force)
        if not all(r.passed for r in rows) and not force:
            raise PromotionRefused(
                f"challenger v{challenger.version} is worse than champion v{champion.version}",
                format_gate_table(rows),
            )
    history.append(str(challenger.version))
    _set_champion(client, name, str(challenger.version), cfg.champion_alias, history)
    client.set_model_version_tag(
        name,
        challenger.version,
        "haowu.promoted_at",
        datetime.now(UTC).isoformat(timespec="seconds"),
    )
    if force:
        client.set_model_version_tag(name, challenger.version, "haowu.forced_reason", reason or "")
    log.info("%s v%s is champion", name, challenger.version)
    return Promotion(
        name,
        str(challenger.version),
        None if champion is None else str(champion.version),
        rows,
        forced=force,
    )


def _same_data_gate(old_run: Any, new_run: Any, cfg: RegistryConfig, name: str, force: bool):
    """Champion and challenger runs' own metrics, comparable only on the same data."""
    rows = gate_rows(
        old_run.data.metrics, new_run.data.metrics, cfg.gates.get(name, {}), cfg.tolerance
    )
    old_fp, new_fp = (
        old_run.data.tags.get(FINGERPRINT_TAG),
        new_run.data.tags.get(FINGERPRINT_TAG),
    )
    if old_fp != new_fp and not force:
        raise PromotionRefused(
            f"data fingerprint differs (champion {old_fp}, challenger {new_fp}); "
            "metrics are only comparable on the same data",
            format_gate_table(rows),
        )
    return rows


def _fine_tuned_gate(
    champion: Any,
    base_run: str,
    metrics: dict[str, float],
    cfg: RegistryConfig,
    name: str,
    force: bool,
) -> list[GateRow]:
    """A fine-tuned run holds both sides on its held-out pairs: its own figures and the
    champion's (`champion.` prefix). That holds only while the champion is the model it
    started from."""
    if champion.run_id != base_run and not force:
        raise PromotionRefused(
            f"fine-tuned from run {base_run}, but the champion is now v{champion.version} "
            f"(run {champion.run_id}): fine-tune the new champion instead",
            "",
        )
    return fine_tuned_rows(metrics, cfg, name)


def fine_tuned_rows(metrics: dict[str, float], cfg: RegistryConfig, name: str) -> list[GateRow]:
    """The gate on a fine-tuned run's own metrics: the model it started from (`champion.`
    prefix) against the fine-tuned one, on the same held-out pairs (keys as logged or as
    the job returns them: `recall_at_50` or `recall@50`)."""
    metrics = {metric_key(key): value for key, value in metrics.items()}
    before = {
        key.removeprefix(CHAMPION_PREFIX): value
        for key, value in metrics.items()
        if key.startswith(CHAMPION_PREFIX)
    }
    return gate_rows(before, metrics, cfg.gates.get(name, {}), cfg.tolerance)


def run_id_of(run_dir: Path) -> str:
    """The MLflow run id a job's RUN_DIR recorded in `run.json`."""
    path = Path(run_dir) / RUN_META
    if not path.is_file():
        raise HaowuError(f"{run_dir} has no run.json: not a finished train-* run folder")
    return json.loads(path.read_text())["run_id"]


def promote_run_dir(name: str, run_dir: Path, cfg: RegistryConfig) -> dict[str, Any]:
    """The pipeline's promote step: try the gate, report the outcome instead of raising on
    a refusal (the pipeline's own lists use its own model either way)."""
    run_id = run_id_of(run_dir)
    try:
        result = promote(name, run_id, cfg)
    except PromotionRefused as exc:
        reason = str(exc).splitlines()[0].removeprefix("promotion refused: ")
        log.warning("%s from %s not promoted: %s\n%s", name, run_dir, reason, exc.table)
        return {"status": "refused", "reason": reason, "run_id": run_id, "table": exc.table}
    return {
        "status": "champion",
        "version": result.version,
        "previous": result.previous,
        "run_id": run_id,
        "table": result.table if result.rows else "",
    }


def rollback(name: str, cfg: RegistryConfig) -> tuple[str, str]:
    """Restore the champion before the current one; returns (from_version, to_version)."""
    client = _client()
    with _exclusive(name):
        history = _history(client, name)
        current = _champion_version(client, name, cfg.champion_alias)
        if current is None or len(history) < 2:
            raise HaowuError(f"model {name!r} has no previous champion to roll back to")
        history.pop()
        previous = history[-1]
        _set_champion(client, name, previous, cfg.champion_alias, history)
    return str(current.version), previous
