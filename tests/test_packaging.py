"""haowu as users install and run it: a wheel in a fresh environment, the version, the
optional Ray extra, one log format, no progress frames in a log file."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
from datetime import datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from features.errors import HaowuError
from features.version import haowu_version, shadowing

ROOT = Path(__file__).resolve().parents[1]
HAOWU = "import sys; sys.argv = ['haowu', *sys.argv[1:]]; from cli import app; app()"


def test_version_everywhere() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"haowu {haowu_version()}"
    assert haowu_version() != "0+unknown"  # the installed distribution answers
    assert shadowing() == []  # no other distribution ships features/, models/, ...


def test_every_config_group_ships_with_the_wheel() -> None:
    import tomllib

    data_files = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "data-files"
    ]
    shipped = {Path(target).name for target in data_files if "configs" in target}
    assert shipped == {p.name for p in (ROOT / "configs").iterdir() if p.is_dir()}


def test_running_cli_py_as_a_script_knows_every_command() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), "bench", "--help"],
        capture_output=True, text=True, check=False, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert all(name in result.stdout for name in ("quality", "train", "batch", "serve"))


def test_ray_engine_without_the_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from serving.batch.shards import write_shards

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    monkeypatch.setitem(sys.modules, "ray.data", None)
    with pytest.raises(HaowuError, match=r"pip install 'haowu\[ray\]'"):
        write_shards(
            10, lambda: None, Path("/nonexistent/out"), shard_size=5, manifest={}, engine="ray"
        )


def test_logs_are_one_iso_format_and_json_on_request(tmp_path: Path) -> None:
    """Through a pipe (not a terminal): ISO-8601 times, no progress-bar frames."""
    out = subprocess.run(
        [sys.executable, "-c", HAOWU, "--log-format", "json", "generate", "--preset", "tiny",
         "--out", str(tmp_path / "data"), "--set", "data.interactions=5000",
         "--set", "data.n_creators=200", "--set", "data.n_products=1000",
         "--set", "data.n_merchants=100"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert "\r" not in out.stderr  # tqdm draws nothing into a pipe
    lines = [json.loads(line) for line in out.stderr.splitlines() if line.strip()]
    assert lines, "generate logs its steps"
    for line in lines:
        assert {"time", "level", "logger", "message"} <= line.keys()
        assert datetime.fromisoformat(line["time"]).tzinfo is not None
    text = subprocess.run(
        [sys.executable, "-c", HAOWU, "-v", "validate", str(tmp_path / "data")],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert text.returncode == 0, text.stderr[-2000:]
    first = text.stderr.splitlines()[0]
    assert datetime.fromisoformat(first.split(" ", 1)[0]).tzinfo is not None


@pytest.mark.slow
def test_wheel_installs_and_runs_the_tiny_pipeline(tmp_path: Path) -> None:
    """`pip install` of the wheel (not editable) into a fresh environment runs the tiny
    pipeline from any folder: configs come with the wheel. The environment borrows this
    one's dependencies (a path entry), not its haowu."""
    from tests.conftest import TINY_PIPELINE_SETTINGS

    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(wheels), str(ROOT)],
        check=True, capture_output=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    env_dir = tmp_path / "env"  # its own pip: installing never touches this environment
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True, timeout=300)
    python = env_dir / "bin" / "python"
    site = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True, capture_output=True, text=True,
        ).stdout.strip()
    )  # fmt: skip
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
         *map(str, wheels.glob("haowu-*.whl"))],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    (site / "borrowed_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    work = tmp_path / "work"
    work.mkdir()
    where = subprocess.run(
        [python, "-c", "import features, cli; print(features.__file__); print(cli.__file__)"],
        capture_output=True, text=True, cwd=work, check=True,
    ).stdout.split()  # fmt: skip
    assert all(path.startswith(str(env_dir)) for path in where), where
    sets = sum((["--set", s] for s in TINY_PIPELINE_SETTINGS), [])
    run = subprocess.run(
        [python, "-c", HAOWU, "pipeline", "--preset", "tiny", "--out", "demo", *sets],
        capture_output=True, text=True, timeout=900, cwd=work,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "MLFLOW_DISABLE_TELEMETRY": "true"},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert (work / "demo" / "summary.json").is_file() and (work / "mlflow.db").is_file()
    assert "\r" not in run.stderr and "Downloading artifacts" not in run.stderr  # a log file
    here = subprocess.run([sys.executable, "-m", "pip", "show", "haowu"], capture_output=True)
    assert here.returncode == 0  # this environment's haowu is still installed
