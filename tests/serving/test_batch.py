"""The batch runner: atomic parts, resume after SIGKILL, refusal of foreign folders, engines."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from features.errors import HaowuError, OutputExistsError
from features.settings import Settings, load_settings
from models.artifacts import BATCH_LOCK, SUCCESS, model_digest
from serving.batch.bench import CreatorsShards, GoodsShards, HashShards, prepare_world
from serving.batch.folder_lock import FolderLockedError
from serving.batch.parts import OutputWriteError, part_path
from serving.batch.shards import JOB_FILE, write_shards

N, SHARD, K = 240, 20, 4  # 12 parts
MANIFEST = {"model": "run-a", "k": K, "direction": "creator"}


def _lists(out: Path) -> pd.DataFrame:
    """Every part in part order, as a reader of the lists would see them."""
    parts = sorted(out.glob("part-*.parquet"))
    return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)


def _run(out: Path, **kwargs: object) -> dict:
    options = {"shard_size": SHARD, "manifest": MANIFEST, "workers": 1, "progress": False}
    options.update(kwargs)
    factory = options.pop("factory", HashShards(k=K))
    return write_shards(options.pop("n", N), factory, out, **options)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """The lists of one uninterrupted run."""
    out = tmp_path_factory.mktemp("reference") / "lists"
    _run(out)
    return _lists(out)


def test_every_query_once_and_manifest(tmp_path: Path, reference: pd.DataFrame) -> None:
    out = tmp_path / "lists"
    manifest = _run(out)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [JOB_FILE, SUCCESS] + [f"part-{i:05d}.parquet" for i in range(12)]
    )
    lists = _lists(out)
    counts = lists.groupby("creator_id").size()
    assert counts.index.tolist() == list(range(N)) and (counts == K).all()
    assert lists.equals(reference)  # identical across reruns
    # part i holds exactly the queries [i * SHARD, (i + 1) * SHARD)
    assert pd.read_parquet(part_path(out, 3))["creator_id"].unique().tolist() == list(range(60, 80))
    assert json.loads((out / SUCCESS).read_text()) == manifest
    job = json.loads((out / JOB_FILE).read_text())
    assert job["identity"] == {**MANIFEST, "queries": N, "shard_size": SHARD}
    assert manifest["model"] == "run-a" and manifest["k"] == K
    assert manifest["queries"] == N and manifest["parts"] == 12 and manifest["rows"] == N * K
    assert manifest["computed_parts"] == 12 and manifest["resumed_parts"] == 0
    assert manifest["seconds"] > 0 and manifest["queries_per_s"] > 0
    assert 0 < manifest["peak_rss_gib"] < 8 and manifest["cpu_utilisation"] >= 0
    assert manifest["threads_per_worker"] == manifest["cores"]  # one worker gets every core


def test_rerun_skips_finished_parts(tmp_path: Path, reference: pd.DataFrame) -> None:
    out = tmp_path / "lists"
    _run(out)
    success = (out / SUCCESS).read_text()

    def must_not_run() -> object:
        raise AssertionError("a complete job was computed again")

    assert _run(out, factory=must_not_run)["rows"] == N * K  # complete: nothing to do
    assert (out / SUCCESS).read_text() == success
    part_path(out, 3).unlink()
    part_path(out, 7).unlink()
    manifest = _run(out)
    assert manifest["computed_parts"] == 2 and manifest["resumed_parts"] == 10
    assert _lists(out).equals(reference)


def test_failed_write_leaves_no_partial_part_and_resumes(
    tmp_path: Path, reference: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Disk full in the middle of part 2: a clear error, parts 0-1 kept, no torn file."""
    out = tmp_path / "lists"
    real = pd.DataFrame.to_parquet
    written: list[str] = []

    def disk_full_on_third(self: pd.DataFrame, path: str, *args: object, **kw: object) -> None:
        if len(written) == 2:
            Path(path).write_bytes(b"PAR1 half a file")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written.append(path)
        real(self, path, *args, **kw)

    monkeypatch.setattr(pd.DataFrame, "to_parquet", disk_full_on_third)
    with pytest.raises(OutputWriteError, match="No space left on device.*finished parts are kept"):
        _run(out)
    monkeypatch.undo()
    assert sorted(p.name for p in out.iterdir()) == [
        JOB_FILE,
        "part-00000.parquet",
        "part-00001.parquet",
    ]  # no torn part, no temporary file, no _SUCCESS
    manifest = _run(out)
    assert manifest["resumed_parts"] == 2 and manifest["computed_parts"] == 10
    assert _lists(out).equals(reference)


def test_unwritable_output_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(OutputWriteError, match="cannot use output folder"):
        _run(tmp_path / "a-file" / "lists")


def test_another_jobs_folder_is_refused_unless_forced(tmp_path: Path) -> None:
    out = tmp_path / "lists"
    _run(out)
    lists_a = _lists(out)
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.iterdir()}
    other = {**MANIFEST, "model": "run-b"}
    with pytest.raises(OutputExistsError, match=r"12 part\(s\) of another job.*model: 'run-a' vs"):
        _run(out, manifest=other, factory=HashShards(k=K, seed=1))
    with pytest.raises(OutputExistsError, match="another job.*shard_size: 20 vs 30"):
        _run(out, shard_size=30)
    after = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.iterdir()}
    assert after == before  # nothing overwritten
    manifest = _run(out, manifest=other, factory=HashShards(k=K, seed=1), force=True)
    assert manifest["model"] == "run-b" and manifest["computed_parts"] == 12
    assert json.loads((out / JOB_FILE).read_text())["identity"]["model"] == "run-b"
    assert not _lists(out)["product_id"].equals(lists_a["product_id"])  # run-b's lists now
    # force also starts over the same job, and a folder of unrelated files is refused
    assert (
        _run(out, manifest=other, factory=HashShards(k=K, seed=1), force=True)["resumed_parts"] == 0
    )
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(OutputExistsError, match="no haowu batch job"):
        _run(tmp_path / "mine")
    assert _run(tmp_path / "mine", force=True)["rows"] == N * K
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_worker_errors_come_back_as_domain_errors(tmp_path: Path) -> None:
    out = tmp_path / "lists"
    with pytest.raises(HaowuError, match="query 150: simulated failure"):
        _run(out, factory=HashShards(k=K, fail_at=150), workers=2)
    assert not (out / SUCCESS).exists()
    assert not part_path(out, 7).exists()  # the part holding query 150


KILLED_JOB = """
import sys
from pathlib import Path
from serving.batch.shards import write_shards
from serving.batch.bench import HashShards
write_shards({n}, HashShards(k={k}, delay_s=0.25), Path(sys.argv[1]), shard_size={shard},
             manifest={manifest!r}, workers=2, progress=False)
"""


def _start_slow_job(out: Path) -> subprocess.Popen:
    """Another process writing OUT (slowly); returns once it holds OUT's lock and has
    written its job file."""
    script = KILLED_JOB.format(n=N, k=K, shard=SHARD, manifest=MANIFEST).replace(
        "workers=2", "workers=1"
    )
    job = subprocess.Popen([sys.executable, "-c", script, str(out)], start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and job.poll() is None:
        lock = out / BATCH_LOCK
        if lock.is_file() and f'"pid": {job.pid}' in lock.read_text() and (out / JOB_FILE).exists():
            return job
        time.sleep(0.02)
    job.kill()
    raise AssertionError(f"the other run never took the lock (exit {job.poll()})")


def test_concurrent_run_into_one_folder_fails_at_once_naming_the_holder(
    tmp_path: Path, reference: pd.DataFrame, caplog: pytest.LogCaptureFixture
) -> None:
    """Two processes, one folder: the second fails before touching anything; once the
    first is killed, its lock file (left behind, pid recorded) is taken over."""
    out = tmp_path / "lists"
    job = _start_slow_job(out)
    try:
        started = time.monotonic()
        with pytest.raises(FolderLockedError, match=rf"in use by .*pid {job.pid} on \S+, started"):
            _run(out, factory=HashShards(k=K, seed=7), force=True)
        assert time.monotonic() - started < 5  # at once, not after the other run
        assert job.poll() is None  # the holder runs on, its job file untouched
        assert json.loads((out / JOB_FILE).read_text())["identity"]["model"] == "run-a"
    finally:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait(10)
    assert str(job.pid) in (out / BATCH_LOCK).read_text()  # left by the dead run
    with caplog.at_level("WARNING", logger="serving.batch.folder_lock"):
        manifest = _run(out)
    assert f"pid {job.pid}" in caplog.text and "no longer holds it" in caplog.text
    assert manifest["rows"] == N * K and _lists(out).equals(reference)
    assert not (out / BATCH_LOCK).exists()  # a clean exit leaves no lock file


@pytest.mark.parametrize("after_parts", [0, 4])
def test_sigkill_then_rerun_gives_the_uninterrupted_lists(
    tmp_path: Path, reference: pd.DataFrame, after_parts: int
) -> None:
    out = tmp_path / "lists"
    script = KILLED_JOB.format(n=N, k=K, shard=SHARD, manifest=MANIFEST)
    job = subprocess.Popen([sys.executable, "-c", script, str(out)], start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and job.poll() is None:
            if (out / JOB_FILE).exists() and len(list(out.glob("part-*"))) >= after_parts:
                break
            time.sleep(0.02)
        workers = psutil.Process(job.pid).children(recursive=True)
        os.kill(job.pid, signal.SIGKILL)
        job.wait(10)
        # the workers die with the driver: no orphan keeps writing parts
        _, alive = psutil.wait_procs(workers, timeout=10)
        assert not alive, [(p.cmdline(), p.ppid(), p.status()) for p in alive]
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    assert job.returncode == -signal.SIGKILL
    assert not (out / SUCCESS).exists()
    done = len(list(out.glob("part-*")))
    assert after_parts <= done < 12
    manifest = _run(out)
    assert manifest["resumed_parts"] == done and manifest["computed_parts"] == 12 - done
    assert _lists(out).equals(reference)
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


# --------------------------------------------------- FAISS + policy shard functions
@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, Path]:
    """A tiny bench world with an IVF index (approximate search, tuned)."""
    cfg = load_settings(
        "tiny",
        overrides=[
            "data.n_creators=600",
            "data.n_products=3000",
            "index.kind=ivf_flat",
            "index.tune_queries=200",
        ],
    )
    folder = tmp_path_factory.mktemp("world")
    prepare_world(cfg, folder, ("creator", "product"), k=10)
    return cfg, folder


def test_goods_lists_are_the_same_in_one_process_and_in_a_pool(
    tiny_world: tuple[Settings, Path], tmp_path: Path
) -> None:
    cfg, folder = tiny_world
    factory = GoodsShards(str(folder), 10, cfg.policy, seen_per_creator=5, seed=1)
    one = _run(tmp_path / "one", n=600, shard_size=100, factory=factory)
    pool = _run(tmp_path / "pool", n=600, shard_size=100, factory=factory, workers=2)
    assert one["rows"] == pool["rows"] == 600 * 10  # every list is full
    assert pool["threads_per_worker"] == max(1, pool["cores"] // 2)
    lists = _lists(tmp_path / "one")
    assert lists.equals(_lists(tmp_path / "pool"))
    assert (lists.groupby("creator_id")["rank"].max() == 10).all()
    assert not lists.duplicated(["creator_id", "product_id"]).any()


def test_product_direction_lists_creators_for_every_product(
    tiny_world: tuple[Settings, Path], tmp_path: Path
) -> None:
    _, folder = tiny_world
    _run(tmp_path / "lists", n=3000, shard_size=1000, factory=CreatorsShards(str(folder), 10))
    lists = _lists(tmp_path / "lists")
    assert lists.columns.tolist() == ["product_id", "rank", "creator_id", "score"]
    assert lists["product_id"].nunique() == 3000 and len(lists) == 3000 * 10
    assert lists["creator_id"].between(0, 599).all()
    assert (lists.groupby("product_id")["score"].apply(lambda s: s.is_monotonic_decreasing)).all()


def test_ray_engine_writes_the_local_engines_lists(
    tiny_world: tuple[Settings, Path], tmp_path_factory: pytest.TempPathFactory
) -> None:
    import ray

    cfg, folder = tiny_world
    tmp = tmp_path_factory.mktemp("r")  # short: Ray's socket paths must stay < 108 bytes
    factory = GoodsShards(str(folder), 10, cfg.policy, seen_per_creator=5, seed=1)
    local = _run(tmp / "local", n=600, shard_size=50, factory=factory)
    ray.init(num_cpus=2, _temp_dir=str(tmp / "ray-tmp"), include_dashboard=False)
    try:
        remote = _run(
            tmp / "lists-ray", n=600, shard_size=50, factory=factory, engine="ray", workers=2
        )
        assert ray.is_initialized()  # a Ray the caller started is left running
    finally:
        ray.shutdown()
    assert remote["engine"] == "ray" and remote["rows"] == local["rows"] == 6000
    assert _lists(tmp / "lists-ray").equals(_lists(tmp / "local"))


def test_ray_actor_returns_domain_errors_as_data(tmp_path: Path) -> None:
    """Ray Data would flatten a raised HaowuError into a traceback string: the actor
    reports it in its output instead, and the driver raises it (run_ray)."""
    from serving.batch.ray_engine import ShardActor

    batch = pd.DataFrame({"part": [6, 7], "start": [120, 140], "stop": [140, 160]})
    done = ShardActor(HashShards(k=K, fail_at=150), str(tmp_path), 1)(batch)
    assert done["rows"].tolist() == [20 * K, -1]
    assert done["error"].tolist() == ["", "query 150: simulated failure"]
    assert part_path(tmp_path, 6).is_file() and not part_path(tmp_path, 7).exists()

    def broken() -> object:
        raise HaowuError("model folder has no embeddings")

    done = ShardActor(broken, str(tmp_path), 1)(batch)
    assert set(done["error"]) == {"model folder has no embeddings"}


# ------------------------------------------------ end to end: `haowu recommend`
@pytest.mark.slow
def test_recommend_job_resumes_and_refuses_another_k(tiny_data: Path, tmp_path: Path) -> None:
    """serving.batch.job.run on a trained tiny model, through write_shards and the CLI."""
    from typer.testing import CliRunner

    from cli import app
    from serving.batch.job import ListsRequest
    from serving.batch.job import run as recommend
    from training.matching.job import run as train

    overrides = [
        "matching.epochs=1", "matching.refit_all=false", "matching.baselines=[pop]",
        "matching.protocols=[random]", "matching.eval_creators=500", "batch.shard_size=500",
    ]  # fmt: skip
    cfg = load_settings("tiny", overrides=overrides)
    model = tmp_path / "run"
    train(cfg, tiny_data, model, progress=False)
    out = tmp_path / "lists"
    first = recommend(
        cfg, ListsRequest(tiny_data, str(model), k=10), out, workers=1, progress=False
    )
    assert first["parts"] == -(-first["queries"] // 500) > 1
    lists = _lists(out)
    assert lists["creator_id"].nunique() == first["queries"]
    assert not lists.duplicated(["creator_id", "rank"]).any()
    part_path(out, 1).unlink()
    again = recommend(
        cfg, ListsRequest(tiny_data, str(model), k=10), out, workers=1, progress=False
    )
    assert again["resumed_parts"] == first["parts"] - 1 and again["computed_parts"] == 1
    assert _lists(out).equals(lists)  # deterministic: the recomputed part is the same
    with pytest.raises(OutputExistsError, match="another job.*k: 10 vs 20"):
        recommend(cfg, ListsRequest(tiny_data, str(model), k=20), out, workers=1, progress=False)
    args = ["recommend", "--data", str(tiny_data), "--model", str(model), "--out", str(out),
            "--k", "20", "--workers", "1", "--preset", "tiny"]  # fmt: skip
    for override in overrides:
        args += ["--set", override]
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 1 and "pass --force" in refused.output
    forced = CliRunner().invoke(app, [*args, "--force", "--shard-size", "1000"])
    assert forced.exit_code == 0, forced.output
    assert "peak RSS" in forced.output
    manifest = json.loads((out / SUCCESS).read_text())
    assert manifest["k"] == 20 and manifest["shard_size"] == 1000
    assert len(_lists(out)) == 20 * manifest["queries"]


def test_retrained_model_new_data_or_new_tiers_make_another_job(
    tiny_data: Path, tmp_path: Path
) -> None:
    """Retrain into the same folder (another seed, overwrite) and rerun `recommend` into
    the same OUT: the old lists are refused, naming what changed, instead of being
    resumed or called complete; the same for data or tiers whose content changed."""
    import shutil

    from serving.batch.job import ListsRequest
    from serving.batch.job import run as recommend
    from training.matching.job import run as train

    overrides = [
        "matching.epochs=1", "matching.refit_all=false", "matching.baselines=[pop]",
        "matching.protocols=[random]", "matching.eval_creators=300", "batch.shard_size=500",
        "matching.threads=1",
    ]  # fmt: skip
    cfg = load_settings("tiny", overrides=overrides)
    model, out = tmp_path / "run", tmp_path / "lists"
    train(cfg, tiny_data, model, progress=False, register=False)
    request = ListsRequest(tiny_data, str(model), k=5)
    first = recommend(cfg, request, out, workers=1, progress=False)
    assert first["model_digest"] == model_digest(model)
    assert json.loads((out / SUCCESS).read_text())["model_digest"] == first["model_digest"]
    old_lists = _lists(out)

    reseeded = load_settings("tiny", overrides=[*overrides, "matching.seed=7"])
    train(reseeded, tiny_data, model, progress=False, register=False, overwrite=True)
    assert model_digest(model) != first["model_digest"]
    with pytest.raises(OutputExistsError, match="another job \\(model_digest: '"):
        recommend(cfg, request, out, workers=1, progress=False)  # was: "complete already"
    part_path(out, 0).unlink()
    with pytest.raises(OutputExistsError, match="model_digest"):
        recommend(cfg, request, out, workers=1, progress=False)  # was: resumed the old parts
    forced = recommend(cfg, request, out, workers=1, progress=False, overwrite=True)
    assert forced["model_digest"] == model_digest(model) and forced["computed_parts"] > 0
    assert not _lists(out).equals(old_lists)

    data = tmp_path / "data"  # same tables, same row counts; one price changed
    shutil.copytree(tiny_data, data)
    products = pd.read_parquet(data / "products.parquet")
    products.loc[0, "price"] *= 2
    products.to_parquet(data / "products.parquet", index=False)
    recommend(cfg, ListsRequest(data, str(model), k=5), tmp_path / "l2", workers=1, progress=False)
    products.loc[1, "price"] *= 2
    products.to_parquet(data / "products.parquet", index=False)
    with pytest.raises(OutputExistsError, match="another job \\(data_digest: '"):
        recommend(cfg, ListsRequest(data, str(model), k=5), tmp_path / "l2", workers=1,
                  progress=False)  # fmt: skip


def test_bench_batch_command_prints_figures(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cli import app

    overrides = ["data.n_creators=300", "data.n_products=1500", "batch.bench.k=10",
                 "batch.bench.eval_queries=50", "batch.shard_size=100"]  # fmt: skip
    args = ["bench", "batch", "--preset", "tiny", "--workers", "1", "--workdir", str(tmp_path)]
    result = CliRunner().invoke(app, args + [x for o in overrides for x in ("--set", o)])
    assert result.exit_code == 0, result.output
    figures = dict(
        line.strip().split(": ", 1) for line in result.output.splitlines() if ": " in line
    )
    assert figures["creator.w1.local.queries"] == "300"
    assert figures["product.w1.local.rows"] == str(1500 * 10)
    assert float(figures["creator.w1.local.ann_recall@10"]) >= 0.95
    assert float(figures["creator.w1.local.full_lists_share"]) == 1.0


def test_progress_bar_counts_queries_with_rate_and_eta(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _run(tmp_path / "quiet", progress=True, desc="creators")  # not a terminal: no frames
    quiet = capsys.readouterr().err  # the closing log line may be here; a bar frame may not
    assert f"{N}/{N}" not in quiet and not re.search(r"\[\d\d:\d\d<\d\d:\d\d, ", quiet)
    monkeypatch.setattr("features.logs.on_terminal", lambda: True)
    _run(tmp_path / "lists", progress=True, desc="creators")
    err = capsys.readouterr().err
    assert "creators" in err and f"{N}/{N}" in err and "q/s" in err
    assert re.search(r"\[\d\d:\d\d<\d\d:\d\d, ", err)  # [elapsed<ETA, rate]
    part_path(tmp_path / "lists", 11).unlink()
    _run(tmp_path / "lists", progress=True, desc="creators")
    assert f"{N - SHARD}/{N}" in capsys.readouterr().err  # a resumed run starts where it was
