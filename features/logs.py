"""One log format for haowu and the libraries it runs (uvicorn, MLflow, Ray's driver):
ISO-8601 timestamps with the UTC offset, as text for people or JSON lines for machines;
progress bars only where a person watches a terminal.

`configure(level, fmt)` is called once by the CLI; `uvicorn_log_config()` hands the same
format to uvicorn (which otherwise installs its own); `progress_bar(iterable, ...)` is tqdm
on a terminal and silent elsewhere, where each job logs a line per step or epoch instead
of redrawing hundreds of frames into a log file.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from tqdm.auto import tqdm

LogFormat = Literal["text", "json"]
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# libraries whose own handlers would print a second format
LIBRARIES = ("uvicorn", "uvicorn.error", "mlflow", "alembic", "ray")
QUIET = ("faiss.loader",)  # INFO lines about CPU-specific builds it did not find
T = TypeVar("T")


class IsoFormatter(logging.Formatter):
    """`2026-12-06T06:14:25.123+00:00 INFO name: message` (UTC, millisecond)."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


class JsonFormatter(IsoFormatter):
    """One JSON object a line: time, level, logger, message (and the exception, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            body["exception"] = self.formatException(record.exc_info)
        return json.dumps(body, ensure_ascii=False)


class StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is when a record is emitted (a test runner or a
    daemon may swap it after logging was configured)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:  # StreamHandler.__init__ assigns it
        pass


def formatter(fmt: LogFormat) -> logging.Formatter:
    return JsonFormatter() if fmt == "json" else IsoFormatter(TEXT_FORMAT)


def configure(level: int = logging.INFO, fmt: LogFormat = "text") -> None:
    """Route every logger (haowu's and the libraries') through one stderr handler."""
    handler = StderrHandler()
    handler.setFormatter(formatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    adopt(*LIBRARIES)
    for name in QUIET:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
    if not on_terminal():  # MLflow's artifact downloads draw tqdm bars of their own
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def adopt(*names: str) -> None:
    """Loggers a library configured for itself (MLflow does, on import) pass their
    records to haowu's handler instead, once haowu has configured one."""
    if not any(isinstance(h, StderrHandler) for h in logging.getLogger().handlers):
        return
    for name in names:
        library = logging.getLogger(name)
        library.handlers[:] = []
        library.propagate = True


def uvicorn_log_config() -> dict[str, Any]:
    """uvicorn's `log_config`: its loggers keep no handlers and pass to the root one."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "loggers": {name: {"handlers": [], "propagate": True} for name in LIBRARIES[:2]},
    }


def on_terminal() -> bool:
    return sys.stderr.isatty()


def progress_bar(iterable: Iterable[T], enabled: bool = True, **kwargs: Any) -> tqdm:
    """A tqdm bar over `iterable`, drawn only when `enabled` and stderr is a terminal."""
    return tqdm(iterable, disable=not (enabled and on_terminal()), **kwargs)
