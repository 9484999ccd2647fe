"""`haowu bench serve`: the lookup service under bounded load on loopback.

Starts `haowu serve --from DIR` as its own process, waits for /readyz, then drives it
from this process with the keep-alive HTTP/1.1 client of serving/api/loadgen.py:

1. `GET /creators/{id}/goods?k=20`, open loop at `rate` req/s: requests leave on a fixed
   schedule and latency runs from the scheduled time, so a stalled server cannot hide
   its queue (no coordinated omission);
2. the same route closed loop with `connections` clients: the capacity;
3. `POST /creators/goods` (new creators, features drawn from the data) open loop;
4. scenario 1 again while the model is reloaded twice (`POST /admin/reload`, SIGHUP):
   every request must still succeed.

Reports p50/p90/p99/max per scenario, errors, the server's RSS (after load and peak
during the reloads), the memory of each part of the bundle, an estimate at `full`
scale from those per-item sizes, and the load average (the machine may be shared).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil

from features.errors import HaowuError
from features.idmap import load_id_maps
from features.io import has_table, read_table
from models.artifacts import CREATOR_IDS, PRODUCT_IDS
from serving.api.loadgen import Run, closed_loop, get, open_loop, post

log = logging.getLogger(__name__)

FULL = {"products": 10_000_000, "creators": 3_500_000, "interactions": 100_000_000}


# --------------------------------------------------------------------------- server


def _http_json(url: str, method: str = "GET", token: str | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def _tree_rss(pid: int) -> int:
    try:
        proc = psutil.Process(pid)
        return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])
    except psutil.Error:
        return 0


def _tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of the process and its children so far."""
    try:
        proc = psutil.Process(pid)
        times = [p.cpu_times() for p in [proc, *proc.children(recursive=True)]]
    except psutil.Error:
        return 0.0
    return sum(t.user + t.system for t in times)


class RssSampler:
    """Peak RSS of the server's process tree, sampled in a thread."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid, self.interval, self.peak = pid, interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, _tree_rss(self.pid))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def start_server(
    from_dir: Path, port: int, preset: str, overrides: list[str], log_file: Path, token: str
) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "cli",
        "serve",
        "--from",
        str(from_dir),
        "--port",
        str(port),
        "--preset",
        preset,
    ]
    for item in overrides:
        cmd += ["--set", item]
    env = dict(os.environ, HAOWU_ADMIN_TOKEN=token)
    return subprocess.Popen(cmd, stdout=log_file.open("wb"), stderr=subprocess.STDOUT, env=env)


def wait_ready(base: str, proc: subprocess.Popen, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise HaowuError(f"the server exited with code {proc.returncode}")
        try:
            status, body = _http_json(f"{base}/readyz")
        except (urllib.error.URLError, ConnectionError):
            status, body = 0, None
        if status == 200:
            return body
        time.sleep(0.2)
    raise HaowuError(f"the server was not ready within {timeout:.0f}s")


# --------------------------------------------------------------------------- workload


def _workload(from_dir: Path, k: int, n: int, seed: int) -> tuple[list[bytes], list[bytes]]:
    """GET requests for known creators (the user's IDs) and POST bodies of new creators."""
    model = from_dir / "matching" / "model"
    ids = np.load(model / CREATOR_IDS)
    maps = load_id_maps(model) or load_id_maps(from_dir / "data")
    rng = np.random.default_rng(seed)
    picked = ids[rng.choice(len(ids), min(n, len(ids)), replace=False)]
    if "creator" in maps:
        picked = maps["creator"].to_external(picked)
    gets = [get(f"/creators/{c}/goods?k={k}") for c in picked]
    features = [
        "category_pref",
        "price_band",
        "region",
        "followers",
        "fans_female_share",
        "account_age_days",
    ]
    bodies: list[dict[str, Any]] = [{}]
    data = from_dir / "data"
    if has_table(data, "creators"):
        frame = read_table(data, "creators")
        frame = frame[[c for c in features if c in frame.columns]]
        sample = frame.sample(min(n, len(frame)), random_state=seed)
        bodies = [
            {key: (v.item() if hasattr(v, "item") else v) for key, v in row.items() if pd.notna(v)}
            for row in sample.to_dict("records")
        ]
    posts = [post("/creators/goods", {"creator": body, "k": k}) for body in bodies]
    return gets, posts


def _estimate_full(ready: dict[str, Any], rss: int, from_dir: Path) -> dict[str, float]:
    """Scale each part's measured bytes by how its item count grows to `full`.

    Steady state: the interpreter and libraries (RSS minus the parts, constant) plus the
    parts held in RAM; memory-mapped embeddings are reported apart (page cache the kernel
    can drop). While loading, the retrieval run's own copy of both sides' vectors, the
    recommender's product embeddings and the weights (ID tables) are held until the
    bundle is built; during a reload the old bundle serves beside the new one.
    """
    memory = ready.get("memory_bytes", {})
    model = from_dir / "matching" / "model"
    n_products = len(np.load(model / PRODUCT_IDS, mmap_mode="r"))
    n_creators = len(np.load(model / CREATOR_IDS, mmap_mode="r"))
    meta = from_dir / "data" / "_meta.json"
    counts = json.loads(meta.read_text()).get("counts", {}) if meta.is_file() else {}
    n_rows = counts.get("interactions")
    scale = {
        "product": FULL["products"] / n_products,
        "creator": FULL["creators"] / n_creators,
        "pair": FULL["interactions"] / n_rows if n_rows else FULL["creators"] / n_creators,
    }
    creator_parts = ("creator_vectors", "creator_index", "lists")
    pair_parts = ("promoted", "promoted_by_product")

    def full(name: str, size: float) -> float:
        base = name.removesuffix("_mapped")
        kind = "creator" if base in creator_parts else "pair" if base in pair_parts else "product"
        return size * scale[kind]

    ram = {n: full(n, v) for n, v in memory.items() if not n.endswith("_mapped")}
    mapped = {n: full(n, v) for n, v in memory.items() if n.endswith("_mapped")}
    baseline = max(rss - sum(v for n, v in memory.items() if not n.endswith("_mapped")), 0)
    weights = (model / "weights.pt").stat().st_size if (model / "weights.pt").is_file() else 0
    weights *= (FULL["products"] + FULL["creators"]) / (n_products + n_creators)
    vectors = sum(mapped.values()) or ram.get("creator_vectors", 0) + ram.get("product_vectors", 0)
    transient = vectors + mapped.get("product_vectors_mapped", 0) + weights
    steady = baseline + sum(ram.values())
    lean = steady - ram.get("product_lists", 0)  # serve.use_product_lists: false
    gib = 2**30
    out = {f"full_{name}_gib": round(v / gib, 3) for name, v in {**ram, **mapped}.items()}
    out["full_steady_gib"] = round(steady / gib, 2)
    out["full_load_peak_gib"] = round((steady + transient) / gib, 2)
    out["full_reload_peak_gib"] = round((2 * steady - baseline + transient) / gib, 2)
    out["full_steady_no_product_lists_gib"] = round(lean / gib, 2)
    out["full_reload_peak_no_product_lists_gib"] = round((2 * lean - baseline + transient) / gib, 2)
    out["small_parts_in_ram_gib"] = round((rss - baseline) / gib, 3)
    out["small_baseline_gib"] = round(baseline / gib, 3)
    return out


def run_bench(
    from_dir: Path,
    preset: str = "small",
    rate: float = 500.0,
    cold_rate: float = 20.0,
    seconds: float = 20.0,
    connections: int = 16,
    k: int = 20,
    port: int = 8765,
    overrides: list[str] | None = None,
    keep_log: Path | None = None,
) -> dict[str, Any]:
    """Start the service over `from_dir`, run the four scenarios, stop it; the figures."""
    from_dir = Path(from_dir)
    token = secrets.token_hex(16)
    log_file = keep_log or Path(tempfile.mkstemp(prefix="haowu-serve-", suffix=".log")[1])
    base = f"http://127.0.0.1:{port}"
    host = "127.0.0.1"
    result: dict[str, Any] = {"cores": os.cpu_count(), "load_avg_1m_before": os.getloadavg()[0]}
    started = time.perf_counter()
    proc = start_server(from_dir, port, preset, overrides or [], log_file, token)
    try:
        ready = wait_ready(base, proc, timeout=900)
        result["startup_s"] = round(time.perf_counter() - started, 1)
        result["model"] = ready["model"]["label"]
        result["model_load_s"] = ready["model"]["load_seconds"]
        result["parts"] = {name: on for name, on in ready["parts"].items()}
        gets, posts = _workload(from_dir, k, 2000, seed=0)
        rss_loaded = _tree_rss(proc.pid)
        result["rss_after_load_gib"] = round(rss_loaded / 2**30, 3)

        async def measured(scenario: Awaitable[Run]) -> Run:
            server, client = _tree_cpu(proc.pid), time.process_time()
            run = await scenario
            run.server_cpu_s = _tree_cpu(proc.pid) - server
            run.client_cpu_s = time.process_time() - client
            return run

        async def scenarios() -> list[Run]:
            await closed_loop(host, port, gets, 2.0, 4, "warmup")
            return [
                await measured(open_loop(host, port, gets, rate, seconds, connections, "goods")),
                await measured(closed_loop(host, port, gets, seconds / 2, 8, "goods_capacity")),
                await measured(open_loop(host, port, posts, cold_rate, seconds, 8, "cold")),
            ]

        for run in asyncio.run(scenarios()):
            result.update(run.summary())
        result.update(
            _reload_under_load(base, host, port, gets, rate, seconds, connections, token, proc)
        )
        result["rss_end_gib"] = round(_tree_rss(proc.pid) / 2**30, 3)
        result["memory_parts_mib"] = {
            name: round(v / 2**20, 1) for name, v in ready.get("memory_bytes", {}).items()
        }
        result.update(_estimate_full(ready, rss_loaded, from_dir))
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    result["load_avg_1m_after"] = os.getloadavg()[0]
    result["server_log"] = str(log_file)
    return result


def _reload_under_load(
    base: str,
    host: str,
    port: int,
    gets: list[bytes],
    rate: float,
    seconds: float,
    connections: int,
    token: str,
    proc: subprocess.Popen,
) -> dict[str, Any]:
    """Scenario 4: the goods load while the model is reloaded by the admin call, then SIGHUP."""
    outcome: dict[str, Any] = {}

    def reloads() -> None:
        time.sleep(seconds * 0.2)
        t = time.perf_counter()
        status, body = _http_json(f"{base}/admin/reload?wait=true", "POST", token)
        outcome["reload_admin_status"] = status
        outcome["reload_admin_s"] = round(time.perf_counter() - t, 2)
        outcome["reload_admin_error"] = (body or {}).get("error")
        time.sleep(seconds * 0.1)
        sent = time.time()
        proc.send_signal(signal.SIGHUP)
        t = time.perf_counter()
        while time.perf_counter() - t < seconds:
            time.sleep(0.2)
            status, body = _http_json(f"{base}/admin/reload", token=token)
            fresh = body and (body.get("started_at") or 0) >= sent - 0.5
            if fresh and body.get("status") in ("ok", "failed"):
                break
        outcome["reload_sighup_status"] = (body or {}).get("status")
        outcome["reload_sighup_s"] = (body or {}).get("seconds")

    thread = threading.Thread(target=reloads, daemon=True)
    with RssSampler(proc.pid) as sampler:
        thread.start()
        server = _tree_cpu(proc.pid)
        run = asyncio.run(open_loop(host, port, gets, rate, seconds * 1.5, connections, "reload"))
        run.server_cpu_s = _tree_cpu(proc.pid) - server
        thread.join()
    status, body = _http_json(f"{base}/readyz")
    outcome.update(run.summary())
    outcome["rss_peak_during_reload_gib"] = round(sampler.peak / 2**30, 3)
    outcome["reloads_counted"] = (body or {}).get("reloads")
    return outcome
