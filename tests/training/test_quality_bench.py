"""`haowu bench quality` on toy logs written in the public data sets' text formats."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cli import app
from features.settings import load_settings
from training.matching.quality import LogSpec, QualityError, load_log, run_quality, table

FAST = [
    "matching.id_dim=8",
    "matching.hidden=[16]",
    "matching.out_dim=8",
    "matching.batch_size=64",
    "matching.epochs=3",
    "matching.threads=1",
]
TINY_ALS = {"factors": [8], "alpha": [10.0], "regularization": [5.0]}


def _blocks(k: int = 4, users: int = 25, items: int = 15, seed: int = 0):
    """1-based users in k blocks, each with 6 goods of its own block: 5 train, 1 test."""
    rng = np.random.default_rng(seed)
    train, test = {}, {}
    for u in range(k * users):
        goods = (u // users) * items + rng.choice(items, 6, replace=False) + 1
        train[u + 1], test[u + 1] = goods[1:].tolist(), int(goods[0])
    return train, test


def _write(folder: Path, fmt: str) -> Path:
    train, test = _blocks()
    folder.mkdir()
    if fmt == "lastfm":
        rows = [f"{u}\t{i}\t{7}" for u, goods in train.items() for i in goods]
        (folder / "train.txt").write_text("\n".join(rows) + "\n")
        (folder / "test.txt").write_text("\n".join(f"{u}\t{i}\t1" for u, i in test.items()))
    else:
        lines = [f"{u}:" + " ".join(map(str, goods)) for u, goods in train.items()]
        (folder / "train.txt").write_text("\n".join(lines) + "\n")
        (folder / "test.txt").write_text("\n".join(f"{u}:{i}" for u, i in test.items()))
    return folder


@pytest.mark.parametrize("fmt, metric", [("lastfm", "recall@20"), ("beauty", "hit_rate@10")])
def test_bench_reads_both_text_formats_and_ease_beats_pop(
    tmp_path: Path, fmt: str, metric: str
) -> None:
    spec = LogSpec.parse(f"toy={fmt}:{_write(tmp_path / fmt, fmt)}")
    settings = load_settings("tiny", overrides=FAST)
    qlog = load_log(spec, settings)
    assert qlog.train.shape == qlog.test.shape == (100, 60)  # one ID space
    assert qlog.train.n_pairs == 500 and qlog.test.nnz == 100
    result = run_quality([spec], settings, als_grid=TINY_ALS, ease_grid=[10.0, 100.0])
    record = result["toy"]
    k = metric.split("@")[1]
    assert record["metrics"] == [metric, f"ndcg@{k}"]
    assert list(record["models"]) == ["two_tower", "pop", "itemknn", "als", "ease"]
    ratio = f"{metric} / best of als, ease"
    for name, row in record["models"].items():
        assert 0.0 <= row[metric] <= 1.0 and row["train_seconds"] >= 0, name
        assert row[ratio] is not None
    models = record["models"]
    assert max(models["als"][ratio], models["ease"][ratio]) == pytest.approx(1.0)
    # the block structure: a user's test good is among 14 block goods it has not had
    assert models["ease"][metric] > 2 * models["pop"][metric]
    assert models["ease"][metric] > 0.5
    assert models["ease"]["setting"] in ("lambda 10", "lambda 100")
    assert len(models["als"]["validation"]) == 1
    lines = table("toy", record).splitlines()
    assert lines[2] == f"| model | {metric} | ndcg@{k} | train s | vs best ALS/EASE | setting |"
    assert len(lines) == 4 + 5 and all(line.startswith("| ") for line in lines[4:])


def test_a_sequence_log_keeps_its_time_order(tmp_path: Path) -> None:
    folder = tmp_path / "seq"
    folder.mkdir()
    (folder / "train.txt").write_text("1:30 10 20 10\n2:20\n")  # user 1 repeats good 10
    (folder / "test.txt").write_text("1:40\n2:30\n")
    settings = load_settings("tiny", overrides=FAST)
    qlog = load_log(LogSpec.parse(f"seq=beauty:{folder}"), settings)
    train = qlog.train
    goods = train.products.positions(np.array([30, 10, 20]))
    when = train.first_ts_of(np.zeros(3, np.int64), goods)
    assert when.tolist() == [0, 1, 2]  # line order, a repeat at its first place
    # validated as tested: each user's latest good (user 2's only good stays in training)
    held = qlog.validation(settings.matching)
    assert train.products.ids[train.product[held]].tolist() == [20]
    lastfm = _write(tmp_path / "tsv", "lastfm")
    assert load_log(LogSpec.parse(f"t=lastfm:{lastfm}"), settings).train.first_ts is None


def test_cli_prints_the_table_and_writes_json(tmp_path: Path) -> None:
    data = _write(tmp_path / "toy", "beauty")
    out = tmp_path / "q.json"
    args = ["bench", "quality", "--log", f"toy=beauty:{data}", "--out", str(out)]
    args += ["--models", "pop,ease", "--preset", "tiny"]
    for item in FAST:
        args += ["--set", item]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "| pop |" in result.output and "| ease |" in result.output
    assert set(json.loads(out.read_text())["toy"]["models"]) == {"pop", "ease"}


def test_pairs_format_splits_a_data_folder(tiny_data: Path) -> None:
    settings = load_settings("tiny", overrides=FAST)
    spec = LogSpec.parse(f"tiny=pairs:{tiny_data}")
    qlog = load_log(spec, settings)
    assert qlog.train.shape == qlog.test.shape
    assert qlog.train.csr().multiply(qlog.test).nnz == 0  # test pairs are not trained on
    record = run_quality([spec], settings, models=["pop", "ease"])["tiny"]
    assert record["metrics"] == ["recall@20", "ndcg@20"]


def test_bad_log_specs_fail_cleanly(tmp_path: Path) -> None:
    with pytest.raises(QualityError):
        LogSpec.parse("lastfm:/x")
    with pytest.raises(QualityError):
        LogSpec.parse("a=csv:/x")
    with pytest.raises(QualityError, match="missing"):
        load_log(LogSpec.parse(f"a=lastfm:{tmp_path}"), load_settings("tiny"))
