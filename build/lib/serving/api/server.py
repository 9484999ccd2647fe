"""`haowu serve`: run the lookup service under uvicorn, one process or several workers."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

from features.errors import HaowuError
from features.settings import Settings
from serving.online.sources import ServeSources

log = logging.getLogger(__name__)


def sources_from_flags(
    from_dir: Path | None,
    model: str | None = None,
    **parts: Path | None,
) -> ServeSources:
    """`--from DIR` and/or the individual flags (a flag wins over the folder's part)."""
    if from_dir is not None:
        return ServeSources.from_dir(from_dir, model).with_overrides(**parts)
    if model is None:
        raise HaowuError("give --from DIR, or --model RUN_DIR|models:/NAME@ALIAS (and --data ...)")
    return ServeSources(model=model, **parts)


def _limit_threads(threads: int) -> None:
    """One query at a time per worker: more BLAS/OpenMP threads only contend."""
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, str(threads))
    import torch

    torch.set_num_threads(threads)


def run_server(
    cfg: Settings,
    sources: ServeSources,
    preset: str,
    config: Path | None = None,
    overrides: list[str] | None = None,
) -> None:
    """Serve until interrupted. With workers > 1 the worker processes rebuild the app from
    the same preset, config file and overrides (passed as JSON in the environment)."""
    import uvicorn

    from features.logs import uvicorn_log_config
    from serving.api.app import ENV_CONFIG, create_app

    serve = cfg.serve
    _limit_threads(serve.threads)
    common = dict(
        host=serve.host,
        port=serve.port,
        access_log=False,  # serving/api/observability.py writes structured access lines
        server_header=False,
        log_level="info",
        log_config=uvicorn_log_config(),  # haowu's format (features/logs.py)
        timeout_graceful_shutdown=30,
    )
    if serve.workers == 1:
        uvicorn.run(create_app(cfg, sources), **common)  # type: ignore[arg-type]
        return
    spec = {
        "preset": preset,
        "config": str(config) if config else None,
        "overrides": list(overrides or []) + [f"serve.workers={serve.workers}"],
        "sources": {k: (str(v) if v is not None else None) for k, v in asdict(sources).items()},
    }
    os.environ[ENV_CONFIG] = json.dumps(spec)
    metrics_dir = Path(tempfile.mkdtemp(prefix="haowu-metrics-"))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)  # /metrics sums the workers
    try:
        uvicorn.run(
            "serving.api.app:app_from_env",
            factory=True,
            workers=serve.workers,
            timeout_worker_healthcheck=int(serve.load_timeout_s),
            **common,  # type: ignore[arg-type]
        )
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
