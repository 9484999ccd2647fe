"""The served bundle and its hot reload: load beside the old one, then swap one reference.

A request reads `state.bundle` once and keeps that object for its whole life, so a swap
never changes the model under a request in flight: requests that started before the
swap finish on the old bundle (freed when the last of them returns), later ones get the
new one. One load runs at a time, in a background thread; a load that fails leaves the
old bundle serving and keeps the error for /readyz and the admin endpoint.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from serving.online.bundle import Bundle

log = logging.getLogger(__name__)

Loader = Callable[[], Bundle]


@contextlib.contextmanager
def _short_gil_slices(seconds: float = 0.001) -> Iterator[None]:
    """While a load runs beside the event loop, hand the GIL back sooner (the default 5 ms
    slice is added to a request's latency each time the loop waits for it). Not an OS
    priority on the load thread: descheduled while holding the GIL, it would stall the
    requests instead (priority inversion)."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(min(before, seconds))
    try:
        yield
    finally:
        sys.setswitchinterval(before)


class NotReadyError(Exception):
    """No model is loaded yet (the first load is running or failed): 503."""


@dataclass
class ReloadRecord:
    """The outcome of the last (re)load."""

    status: str = "idle"  # idle | running | ok | failed
    started_at: float | None = None
    seconds: float | None = None
    error: str | None = None
    finished: threading.Event = field(default_factory=threading.Event)


class ServingState:
    """Holds the current bundle; `reload` builds a new one and swaps it in atomically."""

    def __init__(
        self,
        loader: Loader,
        on_swap: Callable[[Bundle], None] | None = None,
        on_done: Callable[[ReloadRecord], None] | None = None,
    ) -> None:
        self._loader, self._on_swap, self._on_done = loader, on_swap, on_done
        self._bundle: Bundle | None = None
        self._lock = threading.Lock()  # guards `last` and the one-load-at-a-time rule
        self.last = ReloadRecord()
        self.last.finished.set()
        self.loads_ok = 0
        self.loads_failed = 0

    @property
    def bundle(self) -> Bundle | None:
        return self._bundle

    def current(self) -> Bundle:
        """The bundle a request should use from start to end."""
        bundle = self._bundle
        if bundle is None:
            raise NotReadyError(
                "the model is still loading"
                if self.loading
                else f"no model loaded: {self.last.error}"
            )
        return bundle

    @property
    def loading(self) -> bool:
        return self.last.status == "running"

    def install(self, bundle: Bundle) -> None:
        """Swap in an already loaded bundle (tests, or a caller that loaded it itself)."""
        self._bundle = bundle  # one reference assignment: atomic for every reader
        if self._on_swap is not None:
            self._on_swap(bundle)

    def _run(self, record: ReloadRecord) -> None:
        start = time.perf_counter()
        try:
            with _short_gil_slices():
                bundle = self._loader()
        except Exception as exc:  # any failure: keep serving the old bundle
            record.status, record.error = "failed", f"{type(exc).__name__}: {exc}"
            self.loads_failed += 1
            log.error(
                "load failed, %s keeps serving: %s",
                self._label(),
                record.error,
                exc_info=not isinstance(exc, (OSError, ValueError)),
            )
        else:
            self.install(bundle)
            record.status, record.error = "ok", None
            self.loads_ok += 1
        finally:
            record.seconds = round(time.perf_counter() - start, 3)
            if self._on_done is not None:
                self._on_done(record)
            record.finished.set()

    def _label(self) -> str:
        return self._bundle.info.label if self._bundle is not None else "no model"

    def start_reload(self) -> tuple[ReloadRecord, bool]:
        """Start a load in a background thread; (record, started). When a load is already
        running, returns its record and False."""
        with self._lock:
            if self.loading:
                return self.last, False
            record = ReloadRecord(status="running", started_at=time.time())
            self.last = record
        threading.Thread(target=self._run, args=(record,), name="haowu-reload", daemon=True).start()
        return record, True

    def reload(self, timeout: float | None = None) -> ReloadRecord:
        """Load now and wait for the outcome (joins a load already running)."""
        record, _ = self.start_reload()
        record.finished.wait(timeout)
        return record
