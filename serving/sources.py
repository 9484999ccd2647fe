"""Where the service loads from: a pipeline folder, individual folders, or the registry.

`haowu serve --from DIR` reads DIR/{data,tier,matching,lists/creator,lists/product,brokers}
(lists and brokers are optional). `--model models:/haowu-matching@champion` resolves the
alias at every (re)load, downloads that version's artifacts once into a cache and serves
their `artifacts/model/` folder: the registered pyfunc carries the whole matching model
folder (weights, encoders, embeddings, ID maps), but not the data (the catalog facts and
the goods each creator already promoted), the tiers, the batch lists or the broker
matches. Those come from the flags; when `--data`/`--tiers` are not given, the data and
tier folders the registered run was trained on (its MLflow tag and param) are used.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from features.errors import HaowuError

log = logging.getLogger(__name__)

REGISTRY_PREFIX = "models:/"
_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


class ModelSourceError(HaowuError):
    """The model to serve cannot be found (bad folder, unknown registered model or alias)."""


@dataclass(frozen=True)
class ServeSources:
    """Every input of the service; only `model` is required."""

    model: str
    data: Path | None = None
    tiers: Path | None = None
    lists: Path | None = None  # creator -> goods batch lists
    product_lists: Path | None = None  # product -> creators batch lists
    brokers: Path | None = None

    @classmethod
    def from_dir(cls, root: Path, model: str | None = None) -> ServeSources:
        """A pipeline folder's layout (DESIGN §6); absent optional parts stay None."""
        root = Path(root)
        if not root.is_dir():
            raise ModelSourceError(f"--from {root}: not a folder")

        def part(*names: str) -> Path | None:
            path = root.joinpath(*names)
            return path if path.exists() else None

        return cls(
            model=model or str(root / "matching"),
            data=part("data"),
            tiers=part("tier"),
            lists=part("lists", "creator"),
            product_lists=part("lists", "product"),
            brokers=part("brokers"),
        )

    def with_overrides(self, **values: Path | str | None) -> ServeSources:
        """These sources with the given (non-None) values replaced."""
        return replace(self, **{k: v for k, v in values.items() if v is not None})

    @property
    def from_registry(self) -> bool:
        return self.model.startswith(REGISTRY_PREFIX)


@dataclass
class ModelInfo:
    """What is served: enough to answer "which model is this?" in /readyz and /metrics."""

    uri: str  # as asked: a folder or models:/NAME@ALIAS
    folder: Path  # the model folder actually loaded
    name: str | None = None  # registered model name
    version: str | None = None  # registered model version
    run_id: str | None = None
    alias: str | None = None
    loaded_at: float = field(default_factory=time.time)
    load_seconds: float = 0.0

    @property
    def label(self) -> str:
        if self.version is not None:
            return f"{self.name or 'model'} v{self.version}"
        return f"run {self.run_id[:8]}" if self.run_id else str(self.folder)


@dataclass(frozen=True)
class ResolvedModel:
    info: ModelInfo
    data_dir: Path | None = None  # what the run was trained on, when the registry says
    tier_dir: Path | None = None


def _model_folder(path: Path) -> Path:
    folder = path / "model" if (path / "model").is_dir() else path
    if not (folder / "creator_ids.npy").is_file():
        raise ModelSourceError(
            f"{path} is not a train-matching run folder (no model/creator_ids.npy)"
        )
    return folder


def resolve_folder(uri: str) -> ResolvedModel:
    folder = _model_folder(Path(uri))
    run_json = folder.parent / "run.json"
    meta = json.loads(run_json.read_text()) if run_json.is_file() else {}
    version = meta.get("version")
    info = ModelInfo(
        uri=uri,
        folder=folder.resolve(),
        name=meta.get("registered_model"),
        version=str(version) if version is not None else None,
        run_id=meta.get("run_id"),
    )
    return ResolvedModel(info)


def _existing(path: str | None) -> Path | None:
    return Path(path) if path and path != "none" and Path(path).exists() else None


def resolve_registry(uri: str, cache_dir: Path) -> ResolvedModel:
    """models:/NAME@ALIAS (or NAME/VERSION) -> a local copy of that version's model folder."""
    match = _URI.match(uri)
    if match is None:
        raise ModelSourceError(f"{uri}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from training.tracking import _mlflow, tracking_uri

    mlflow = _mlflow()
    mlflow.set_tracking_uri(tracking_uri())
    client = MlflowClient()
    name, alias = match["name"], match["alias"]
    try:
        if alias:
            version = client.get_model_version_by_alias(name, alias)
        else:
            version = client.get_model_version(name, match["version"])
        run = client.get_run(version.run_id) if version.run_id else None
    except MlflowException as exc:
        raise ModelSourceError(f"{uri}: {exc.message}") from None
    target = Path(cache_dir) / f"{name}-v{version.version}-{(version.run_id or 'norun')[:12]}"
    if not (target / "artifacts" / "model" / "creator_ids.npy").is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{name}/{version.version}", dst_path=str(staging)
            )
            if target.exists():  # another worker finished first
                shutil.rmtree(staging)
            else:
                os.replace(staging, target)
        except Exception:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    folder = target / "artifacts" / "model"
    if not (folder / "creator_ids.npy").is_file():
        raise ModelSourceError(
            f"{uri} (v{version.version}) carries no matching model folder under artifacts/model"
        )
    info = ModelInfo(
        uri=uri,
        folder=folder,
        name=name,
        version=str(version.version),
        run_id=version.run_id,
        alias=alias,
    )
    tags = run.data.tags if run else {}
    params = run.data.params if run else {}
    return ResolvedModel(
        info, _existing(tags.get("haowu.data_dir")), _existing(params.get("tiers"))
    )


def resolve_model(uri: str, cache_dir: Path | None = None) -> ResolvedModel:
    """A run folder or a registry URI, resolved now (an alias names today's champion)."""
    if uri.startswith(REGISTRY_PREFIX):
        cache = cache_dir or Path.home() / ".cache" / "haowu" / "models"
        return resolve_registry(uri, cache)
    return resolve_folder(uri)
