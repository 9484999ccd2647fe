"""`haowu`: the one command line in front of every job.

Parses arguments, loads settings and calls the job functions of `features`, `training`
and `serving`; it holds no logic of its own. Heavy imports (torch, MLflow, FAISS) happen
inside the commands so `haowu --help` stays instant.
"""

from __future__ import annotations

import functools
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from features.errors import HaowuError
from features.settings import PRESETS, Settings, load_settings

app = typer.Typer(
    help="haowu (好物): product tiering and creator-goods matching for live commerce.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
bench_app = typer.Typer(help="Performance benchmarks: print figures and ratios.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")

F = TypeVar("F", bound=Callable[..., Any])

PresetOpt = Annotated[str, typer.Option(help=f"scale preset: {' | '.join(PRESETS)}")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="YAML file of setting overrides")]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", help="override one setting, e.g. --set data.seed=7")
]
OverwriteOpt = Annotated[bool, typer.Option(help="replace a non-empty output folder")]


def fails_cleanly(func: F) -> F:
    """Turn domain errors into one line on stderr and exit code 1 (no traceback)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except HaowuError as exc:
            typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            typer.secho("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def settings(preset: str, config: Path | None, overrides: list[str] | None) -> Settings:
    return load_settings(preset, config, overrides or [])


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")] = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


@app.command()
@fails_cleanly
def generate(
    out: Annotated[Path, typer.Option(help="output data folder")],
    preset: PresetOpt = "small",
    seed: Annotated[int | None, typer.Option(help="random seed (overrides data.seed)")] = None,
    overwrite: OverwriteOpt = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Write a synthetic marketplace: every contract table (Parquet) plus truth/."""
    from features.synthetic import generate as run_generate

    overrides = list(set_ or []) + ([f"data.seed={seed}"] if seed is not None else [])
    cfg = settings(preset, config, overrides)
    start = time.perf_counter()
    counts = run_generate(cfg.data, out, overwrite=overwrite)
    for table, rows in counts.items():
        typer.echo(f"{table:>16}: {rows:,} rows")
    typer.echo(f"wrote {out} in {time.perf_counter() - start:.1f}s")


@app.command("import")
@fails_cleanly
def import_(
    interactions: Annotated[Path, typer.Option(help="CSV/TSV/Parquet of events")],
    creator_col: Annotated[str, typer.Option(help="column holding the creator (user) id")],
    product_col: Annotated[str, typer.Option(help="column holding the product (item) id")],
    out: Annotated[Path, typer.Option(help="output data folder")],
    ts_col: Annotated[str | None, typer.Option(help="event time column")] = None,
    ts_unit: Annotated[str, typer.Option(help="unit of a numeric time column: s|ms|us|ns")] = "s",
    weight_col: Annotated[str | None, typer.Option(help="event value column (summed into gmv)")] = None,
    min_weight: Annotated[float | None, typer.Option(help="keep events with weight >= this")] = None,
    sep: Annotated[str | None, typer.Option(help="field separator for .txt/.dat files")] = None,
    creators: Annotated[Path | None, typer.Option(help="creator side table")] = None,
    creator_id_col: Annotated[str | None, typer.Option(help="id column of --creators")] = None,
    products: Annotated[Path | None, typer.Option(help="product side table")] = None,
    product_id_col: Annotated[str | None, typer.Option(help="id column of --products")] = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Turn any implicit-feedback log into the contract's tables (IDs mapped, mapping kept)."""
    from features.importer import ImportOptions, import_interactions

    options = ImportOptions(
        interactions=interactions,
        creator_col=creator_col,
        product_col=product_col,
        ts_col=ts_col,
        ts_unit=ts_unit,
        weight_col=weight_col,
        min_weight=min_weight,
        sep=sep,
        creators=creators,
        creator_id_col=creator_id_col,
        products=products,
        product_id_col=product_id_col,
        out=out,
        overwrite=overwrite,
    )
    summary = import_interactions(options)
    for key, value in summary.items():
        typer.echo(f"{key:>24}: {value}")
    typer.echo(f"wrote {out}; check it with: haowu validate {out}")


@app.command()
@fails_cleanly
def validate(data: Annotated[Path, typer.Argument(help="data folder")]) -> None:
    """Check every table present against the data contract; exit 0 or a clear error."""
    from features.validate import validate_dir

    reports = validate_dir(data)
    for name, report in reports.items():
        typer.echo(f"{name:>16}: {report.rows:,} rows ok  ({report.path})")
    typer.echo(f"{data}: valid")


@app.command()
@fails_cleanly
def pipeline(
    out: Annotated[Path, typer.Option(help="pipeline folder (data, models, lists)")],
    preset: PresetOpt = "small",
    force: Annotated[bool, typer.Option(help="rerun finished steps")] = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """generate -> validate -> ... end to end; a rerun skips finished steps."""
    from features.steps import StepLedger
    from features.synthetic import generate as run_generate
    from features.validate import validate_dir

    cfg = settings(preset, config, set_)
    ledger = StepLedger(out, force=force)
    data_dir = out / "data"
    steps: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("generate", lambda: run_generate(cfg.data, data_dir, overwrite=True)),
        ("validate", lambda: {k: r.rows for k, r in validate_dir(data_dir).items()}),
    ]
    total = len(steps)
    for i, (name, step) in enumerate(steps, 1):
        start = time.perf_counter()
        typer.echo(f"[{i}/{total}] {name} ...")
        summary, skipped = ledger.run(name, step)
        state = "skipped (done before)" if skipped else f"done in {time.perf_counter() - start:.1f}s"
        typer.echo(f"[{i}/{total}] {name}: {state}")
    typer.echo(f"\nresults in {out.resolve()}")
    typer.echo(f"  data:   {data_dir.resolve()}")


# --- tier commands (train-tier, selected-goods) ---

# --- matching commands (train-matching, recommend) ---

# --- broker commands (match-brokers) ---


# --- lifecycle commands (promote, rollback) ---


def _run_id(run: str) -> str:
    """A run id, or a job's RUN_DIR whose run.json names it."""
    import json

    path = Path(run) / "run.json"
    if path.is_file():
        return json.loads(path.read_text())["run_id"]
    if Path(run).exists():
        raise HaowuError(f"{run} is a folder without run.json: not a haowu run folder")
    return run


@app.command()
@fails_cleanly
def promote(
    model: Annotated[str, typer.Option(help="registered model, e.g. haowu-matching")],
    run: Annotated[str, typer.Option(help="MLflow run id or the job's RUN_DIR")],
    force: Annotated[bool, typer.Option(help="override the gate (needs --reason)")] = False,
    reason: Annotated[str | None, typer.Option(help="why the gate is overridden")] = None,
    preset: PresetOpt = "small",
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Make a run's model champion if it is no worse than the current one on the gate."""
    from training.registry import PromotionRefused, promote as run_promote

    cfg = settings(preset, config, set_)
    try:
        result = run_promote(model, _run_id(run), cfg.registry, force=force, reason=reason)
    except PromotionRefused as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    if result.rows:
        typer.echo(result.table)
    was = f"(was v{result.previous})" if result.previous else "(first champion)"
    typer.echo(f"{model} v{result.version} is {cfg.registry.champion_alias} {was}"
               + (" [forced]" if result.forced else ""))


@app.command()
@fails_cleanly
def rollback(
    model: Annotated[str, typer.Option(help="registered model, e.g. haowu-matching")],
    preset: PresetOpt = "small",
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Restore the previous champion."""
    from training.registry import rollback as run_rollback

    cfg = settings(preset, config, set_)
    old, new = run_rollback(model, cfg.registry)
    typer.echo(f"{model}: {cfg.registry.champion_alias} v{old} -> v{new}")


@bench_app.command("generate")
@fails_cleanly
def bench_generate(
    preset: PresetOpt = "tiny",
    out: Annotated[Path | None, typer.Option(help="where to write (default: a temp folder)")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Time the synthetic generator: rows/s per table and peak RSS."""
    import shutil
    import tempfile

    from features.synthetic.bench import bench_generate as run_bench

    cfg = settings(preset, config, set_)
    target = out or Path(tempfile.mkdtemp(prefix=f"haowu-bench-{preset}-")) / "data"
    try:
        result = run_bench(cfg.data, target)
    finally:
        if out is None:
            shutil.rmtree(target.parent, ignore_errors=True)
    for key, value in result.items():
        typer.echo(f"{key:>32}: {value}")


if __name__ == "__main__":
    app()
