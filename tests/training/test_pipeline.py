"""`haowu pipeline` end to end on tiny data: layout, nested MLflow runs, first champions,
summary and report, a rerun that skips finished steps, and folders it must refuse."""

from __future__ import annotations

import json
import re
from pathlib import Path

from typer.testing import CliRunner

from cli import app
from features.io import write_json
from models.artifacts import PipelineLayout
from training.pipeline.runner import LAYOUT_VERSION
from training.pipeline.summary import STEPS

RUNNER = CliRunner()


def _client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def test_layout_summary_and_next_commands(tiny_pipeline) -> None:
    d = PipelineLayout(tiny_pipeline.root)
    for folder in (d.data, d.tier, d.matching, d.creator_lists, d.product_lists, d.brokers):
        assert folder.is_dir(), folder
    for lists in (d.creator_lists, d.product_lists):
        assert (lists / "_SUCCESS").is_file()
    assert sorted(p.stem for p in (d.root / ".steps").glob("[!_]*.json")) == sorted(STEPS)
    out = tiny_pipeline.output
    for i, step in enumerate(STEPS, 1):
        assert f"[{i}/{len(STEPS)}] {step} ..." in out
        assert re.search(rf"\[{i}/{len(STEPS)}\] {step}: done in \d+\.\d+s", out), step
    assert f"haowu serve --from {d.root}" in out
    assert "mlflow ui --backend-store-uri sqlite:///" in out

    summary = json.loads(d.summary.read_text())
    tier, matching = summary["tier"], summary["matching"]
    assert 0 < tier["qwk"]["model"] <= 1 and 0 < tier["qwk"]["baseline"] <= 1
    assert {"two_tower", "pop", "als", "oracle"} <= set(matching["random"])
    assert matching["random"]["oracle"] > matching["random"]["pop"]
    assert "cold" in matching  # the time split's cold-start slice
    lists = summary["creator_lists"]
    assert lists["creators"] == 1000 and lists["k"] == 50 and lists["rows"] == 50_000
    assert 0 < lists["category_coverage"] <= 1 and 0 <= lists["selected_goods_share"] <= 1
    assert summary["product_lists"]["products"] == 3000
    assert summary["brokers"]["assignments"] > 0
    assert set(STEPS) <= set(summary["seconds"])
    # the printed table carries the same numbers
    assert f"{tier['qwk']['model']:.3f} | {tier['qwk']['baseline']:.3f}" in out
    assert "Selected Goods share of slots" in out


def test_report_is_self_contained(tiny_pipeline) -> None:
    page = PipelineLayout(tiny_pipeline.root).report.read_text()
    assert page.startswith("<!DOCTYPE html>")
    images = re.findall(r'<img alt="[^"]*" src="([^"]{0,40})', page)
    assert len(images) >= 8 and all(src.startswith("data:image/png;base64,") for src in images)
    assert not re.search(r'(src|href)="(https?:|file:|/)', page)  # nothing outside the file
    for heading in ("Tiers", "Matching", "Diversity curve", "Lists", "Promotion", "Brokers"):
        assert f"<h2>{heading}</h2>" in page
    for text in ("two_tower", "hand-weighted baseline", "Selected Goods", "category coverage"):
        assert text in page


def test_nested_runs_tags_and_first_champions(tiny_pipeline) -> None:
    client = _client(tiny_pipeline.tracking_uri)
    d = PipelineLayout(tiny_pipeline.root)
    parent_id = json.loads((d.root / ".steps" / "_layout.json").read_text())["mlflow_run_id"]
    parent = client.get_run(parent_id)
    assert parent.data.tags["haowu.job"] == "pipeline"
    assert parent.data.tags["haowu.preset"] == "tiny"
    assert parent.data.params["matching.epochs"] == "1"  # params = the resolved config
    assert parent.data.params["registry.gates.haowu-matching.recall_at_50"] == "higher"
    assert "tier.qwk.model" in parent.data.metrics
    assert {"report.html", "summary.json"} <= {a.path for a in client.list_artifacts(parent_id)}

    experiment = parent.info.experiment_id
    children = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent_id}'")
    assert sorted(r.data.tags["haowu.job"] for r in children) == sorted(STEPS)
    tier_run = next(r for r in children if r.data.tags["haowu.job"] == "train-tier")
    fingerprint = tier_run.data.tags["haowu.data_fingerprint"]
    assert tier_run.data.tags["haowu.preset"] == "tiny"
    assert len(tier_run.data.tags["haowu.git_commit"]) >= 7
    assert all(
        r.data.tags.get("haowu.data_fingerprint") == fingerprint
        for r in children
        if r.data.tags["haowu.job"] not in ("promote", "report")
    )

    for name, folder in (("haowu-tier", d.tier), ("haowu-matching", d.matching)):
        run_id = json.loads((folder / "run.json").read_text())["run_id"]
        assert client.get_model_version_by_alias(name, "champion").run_id == run_id
    promoted = json.loads((d.root / ".steps" / "promote.json").read_text())["summary"]
    assert {p["status"] for p in promoted.values()} == {"champion"}


def test_matching_run_as_mlflow_users_expect(tiny_pipeline) -> None:
    """Learning curves by step, the data as an input dataset, the model stored once, a
    `challenger` alias on the candidate and the haowu version tag."""
    client = _client(tiny_pipeline.tracking_uri)
    run_id = json.loads((tiny_pipeline.root / "matching" / "run.json").read_text())["run_id"]
    run = client.get_run(run_id)
    curve = client.get_metric_history(run_id, "random.loss")
    assert [m.step for m in curve] == list(range(1, len(curve) + 1)) and curve
    assert client.get_metric_history(run_id, "random.val_recall")
    inputs = run.inputs.dataset_inputs
    assert [i.dataset.digest for i in inputs] == [run.data.tags["haowu.data_fingerprint"]]
    logged = {a.path for a in client.list_artifacts(run_id, "run")}
    assert "run/metrics.json" in logged and "run/model" not in logged  # once: with the pyfunc
    challenger = client.get_model_version_by_alias("haowu-matching", "challenger")
    assert challenger.run_id == run_id
    assert run.data.tags["haowu.version"]


def test_lists_come_from_the_champion(tiny_pipeline) -> None:
    """After the gate, recommend reads models:/haowu-matching@champion, not the folder."""
    for direction in ("creator", "product"):
        path = tiny_pipeline.root / "lists" / direction / "_SUCCESS"
        manifest = json.loads(path.read_text())
        assert manifest["model_uri"] == "models:/haowu-matching@champion"
        assert manifest["model_version"] == "haowu-matching v1"
        assert manifest["tiers"] == "models:/haowu-tier@champion"


def test_rerun_skips_finished_steps_and_resumes(tiny_pipeline, monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tiny_pipeline.tracking_uri)
    steps = tiny_pipeline.root / ".steps"
    before = {p.name: p.stat().st_mtime_ns for p in steps.glob("*.json") if p.name[0] != "_"}
    result = RUNNER.invoke(app, tiny_pipeline.args)
    assert result.exit_code == 0, result.output
    assert result.output.count("skipped (done before") == len(STEPS)
    after = {p.name: p.stat().st_mtime_ns for p in steps.glob("*.json") if p.name[0] != "_"}
    assert after == before

    # a step without a record (it failed, or was removed) runs again, and so does every
    # step after it (its input changed); the steps before it are skipped
    (steps / "match-brokers.json").unlink()
    result = RUNNER.invoke(app, tiny_pipeline.args)
    assert result.exit_code == 0, result.output
    assert re.search(r"\[8/9\] match-brokers: done in", result.output)
    assert re.search(r"\[9/9\] report: done in", result.output)
    assert result.output.count("skipped (done before") == len(STEPS) - 2

    # the reruns resumed the same MLflow pipeline run
    client = _client(tiny_pipeline.tracking_uri)
    parent_id = json.loads((steps / "_layout.json").read_text())["mlflow_run_id"]
    pipelines = client.search_runs(
        [client.get_run(parent_id).info.experiment_id], "tags.`haowu.job` = 'pipeline'"
    )
    assert [r.info.run_id for r in pipelines] == [parent_id]


def test_other_settings_in_the_same_folder_are_refused(tiny_pipeline) -> None:
    args = [a if a != "tiny" else "small" for a in tiny_pipeline.args]
    result = RUNNER.invoke(app, args)
    assert result.exit_code == 1
    assert "preset='tiny'" in result.output and "--force" in result.output


def test_folder_from_an_older_version_is_refused(tmp_path: Path) -> None:
    old = tmp_path / "old"
    write_json({"version": 1, "summary": {}, "seconds": 1.0}, old / ".steps" / "generate.json")
    result = RUNNER.invoke(app, ["pipeline", "--preset", "tiny", "--out", str(old)])
    assert result.exit_code == 1
    assert "older haowu" in result.output and f"layout {LAYOUT_VERSION}" in result.output

    newer = tmp_path / "newer"
    write_json({"layout": LAYOUT_VERSION + 1}, newer / ".steps" / "_layout.json")
    result = RUNNER.invoke(app, ["pipeline", "--preset", "tiny", "--out", str(newer)])
    assert result.exit_code == 1 and "newer haowu" in result.output


def test_non_pipeline_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    result = RUNNER.invoke(app, ["pipeline", "--preset", "tiny", "--out", str(tmp_path)])
    assert result.exit_code == 1 and "not a pipeline folder" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
