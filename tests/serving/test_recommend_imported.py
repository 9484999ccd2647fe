"""Imported data (string IDs, no tiers, no side tables): train, then lists in the user's IDs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from cli import app


def _movielens_like(path: Path, n_users: int = 120, n_items: int = 80, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    taste = rng.normal(size=(n_users, 4))
    items = rng.normal(size=(n_items, 4))
    rows = []
    for u in range(n_users):
        p = np.exp(taste[u] @ items.T)
        for i in rng.choice(n_items, 12, replace=False, p=p / p.sum()):
            rows.append((f"user-{u}", f"movie-{i}", 4, 1_000_000_000 + int(rng.integers(0, 10**7))))
    pd.DataFrame(rows, columns=["userId", "movieId", "rating", "timestamp"]).to_csv(
        path, index=False
    )


def test_imported_data_round_trips_user_ids(tmp_path: Path) -> None:
    csv = tmp_path / "ratings.csv"
    _movielens_like(csv)
    data, run_dir, lists = tmp_path / "data", tmp_path / "run", tmp_path / "lists"
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "import",
            "--interactions",
            str(csv),
            "--creator-col",
            "userId",
            "--product-col",
            "movieId",
            "--ts-col",
            "timestamp",
            "--out",
            str(data),
        ],
    )
    assert result.exit_code == 0, result.output
    sets = [
        "matching.epochs=1",
        "matching.baselines=[pop]",
        "matching.refit_all=false",
        "matching.batch_size=64",
        "matching.threads=1",
        "matching.time_test_days=20",
    ]
    result = runner.invoke(
        app,
        [
            "train-matching",
            "--data",
            str(data),
            "--out",
            str(run_dir),
            "--preset",
            "tiny",
            *sum((["--set", s] for s in sets), []),
        ],
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        app,
        [
            "recommend",
            "--data",
            str(data),
            "--model",
            str(run_dir),
            "--k",
            "3",
            "--out",
            str(lists),
        ],
    )
    assert result.exit_code == 0, result.output
    assert (run_dir / "model" / "id_maps" / "creator.parquet").is_file()
    rows = pd.read_parquet(lists)
    assert rows["creator_id"].str.startswith("user-").all()
    assert rows["product_id"].str.startswith("movie-").all()
    seen = pd.read_csv(csv)[["userId", "movieId"]].drop_duplicates()
    clash = rows.merge(seen, left_on=["creator_id", "product_id"], right_on=["userId", "movieId"])
    assert clash.empty


def test_string_ids_without_import_are_a_clear_error(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    pd.DataFrame(
        {
            "creator_id": ["a", "b", "a"],
            "product_id": [1, 2, 2],
            "ts": pd.to_datetime(["2024-01-01"] * 3),
        }
    ).to_parquet(data / "interactions.parquet")
    result = CliRunner().invoke(
        app,
        ["train-matching", "--data", str(data), "--out", str(tmp_path / "run"), "--preset", "tiny"],
    )
    assert result.exit_code == 1
    assert "creator_id" in result.output and "integer" in result.output
    assert not (tmp_path / "run").exists()


def test_pyfunc_answers_in_user_ids(tmp_path: Path) -> None:
    """The registered model takes and returns the user's own IDs too."""
    import json

    import mlflow

    csv = tmp_path / "ratings.csv"
    _movielens_like(csv, n_users=40, n_items=30)
    data, run_dir = tmp_path / "data", tmp_path / "run"
    runner = CliRunner()
    assert (
        runner.invoke(
            app,
            [
                "import",
                "--interactions",
                str(csv),
                "--creator-col",
                "userId",
                "--product-col",
                "movieId",
                "--out",
                str(data),
            ],
        ).exit_code
        == 0
    )
    sets = [
        "matching.epochs=1",
        "matching.baselines=[pop]",
        "matching.refit_all=false",
        "matching.protocols=[random]",
        "matching.batch_size=32",
        "matching.threads=1",
    ]
    result = runner.invoke(
        app,
        [
            "train-matching",
            "--data",
            str(data),
            "--out",
            str(run_dir),
            "--preset",
            "tiny",
            *sum((["--set", s] for s in sets), []),
        ],
    )
    assert result.exit_code == 0, result.output
    version = json.loads((run_dir / "run.json").read_text())["version"]
    model = mlflow.pyfunc.load_model(f"models:/haowu-matching/{version}")
    got = model.predict(pd.DataFrame({"creator_id": ["user-3", "nobody"]}), params={"k": 2})
    assert got["creator_id"].tolist() == ["user-3", "user-3"]
    assert got["product_id"].str.startswith("movie-").all()
