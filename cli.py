"""`haowu`: the one command line in front of every job.

Parses arguments, loads settings and calls the job functions of `features`, `training`
and `serving`; it holds no logic of its own. Heavy imports (torch, MLflow, FAISS) happen
inside the commands so `haowu --help` stays instant.

Why one long file: it is the only module allowed to import both `serving` and `training`
(they are independent layers), so every command, the pipeline's composition of the jobs
and the `haowu bench` sub-app (at the end) live here, each a few lines over one `run`.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from features.errors import ConfigError, HaowuError
from features.settings import PRESETS, Settings, load_settings
from features.version import haowu_version
from models.artifacts import RUN_META

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from serving.refresh.simulation import Arm

app = typer.Typer(
    help="haowu (好物): product tiering and creator-goods matching for live commerce.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
bench_app = typer.Typer(
    help="Performance benchmarks: print figures and ratios.", no_args_is_help=True
)
app.add_typer(bench_app, name="bench")

F = TypeVar("F", bound=Callable[..., Any])
PROMOTION_REFUSED = 3  # `haowu promote`: the gate said no (1 is an error, 0 promoted)

PresetOpt = Annotated[str, typer.Option(help=f"scale preset: {' | '.join(PRESETS)}")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="YAML file of setting overrides")]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", help="override one setting, e.g. --set data.seed=7")
]
OverwriteOpt = Annotated[bool, typer.Option(help="replace a non-empty output folder")]
FromOpt = Annotated[
    Path | None,
    typer.Option("--from", help="pipeline folder: data, tier, matching, lists/*, brokers"),
]
ModelOpt = Annotated[
    str | None, typer.Option(help="matching RUN_DIR or models:/haowu-matching@champion")
]
TiersOpt = Annotated[
    str | None, typer.Option(help="train-tier RUN_DIR or models:/haowu-tier@champion")
]


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


def show(result: Mapping[str, Any], prefix: str = "", fmt: str = "") -> None:
    """The one printer of result tables: `key: value` lines, keys right-aligned."""
    width = max((len(prefix + str(key)) for key in result), default=0)
    for key, value in result.items():
        text = format(value, fmt) if fmt and isinstance(value, int | float) else value
        typer.echo(f"{prefix + str(key):>{width}}: {text}")


def settings(preset: str, config: Path | None, overrides: list[str] | None) -> Settings:
    return load_settings(preset, config, overrides or [])


def _timestamp(text: str, option: str) -> pd.Timestamp:
    """An ISO time given on the command line, or a one-line error naming the option."""
    import pandas as pd

    try:
        return pd.Timestamp(text)
    except ValueError:
        raise ConfigError(f"{option}: {text!r} is no time (ISO, e.g. 2026-12-07T08:00)") from None


def _version(value: bool) -> None:
    if value:
        from features.version import shadowing

        typer.echo(f"haowu {haowu_version()}")
        for line in shadowing():  # another distribution's package of the same name
            typer.secho(f"warning: {line}; the two overwrite each other", fg="yellow", err=True)
        raise typer.Exit()


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="warnings and errors only")] = False,
    log_format: Annotated[
        str, typer.Option(help="text (people) | json (one object a line, for machines)")
    ] = "text",
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="print the version"),
    ] = False,
) -> None:
    """Logs go to stderr in one format with ISO-8601 times; results go to stdout."""
    from features import logs

    if log_format not in ("text", "json"):
        raise typer.BadParameter("text or json", param_hint="--log-format")
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logs.configure(level, log_format)  # type: ignore[arg-type]


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
    show({table: f"{rows:,} rows" for table, rows in counts.items()})
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
    weight_col: Annotated[
        str | None, typer.Option(help="event value column (summed into gmv)")
    ] = None,
    min_weight: Annotated[
        float | None, typer.Option(help="keep events with weight >= this")
    ] = None,
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
    show(summary)
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
    out: Annotated[Path, typer.Option(help="pipeline folder (data, models, lists, report)")],
    preset: PresetOpt = "small",
    force: Annotated[bool, typer.Option(help="rerun finished steps")] = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """generate -> validate -> train-tier -> train-matching -> promote -> recommend (both
    directions) -> match-brokers -> report, under one MLflow run; a rerun skips finished
    steps."""
    import json

    from features.synthetic import generate as run_generate
    from features.validate import validate_dir
    from models.artifacts import MATCHING_MODEL, TIER_MODEL, PipelineLayout, masked
    from serving.batch.job import ListsRequest
    from serving.batch.job import run as run_recommend
    from serving.brokers.job import run as run_brokers
    from training.lifecycle.promotion import promote_run_dir
    from training.lifecycle.tracking import tracking_uri
    from training.matching.job import run as run_matching
    from training.pipeline.report import build_report
    from training.pipeline.runner import Step, run_pipeline
    from training.pipeline.summary import format_summary, write_summary
    from training.tier.job import run as run_tier

    cfg = settings(preset, config, set_)
    d = PipelineLayout(out)

    def promote_both() -> dict[str, Any]:
        return {
            name: promote_run_dir(name, folder, cfg.registry)
            for name, folder in ((TIER_MODEL, d.tier), (MATCHING_MODEL, d.matching))
        }

    # after the gate, the lists and the broker matches come from the registry's champions
    alias = cfg.registry.champion_alias
    champion, champion_tiers = f"models:/{MATCHING_MODEL}@{alias}", f"models:/{TIER_MODEL}@{alias}"

    def recommend(direction: str, target: Path) -> Callable[[], dict[str, Any]]:
        request = ListsRequest(d.data, champion, champion_tiers, direction=direction)
        return lambda: run_recommend(cfg, request, target, overwrite=True, progress=False)

    steps = [
        Step(
            "generate",
            lambda: run_generate(cfg.data, d.data, overwrite=True),
            data_dir=d.data,
            params={"preset": preset, "seed": cfg.data.seed},
        ),
        Step(
            "validate",
            lambda: {k: r.rows for k, r in validate_dir(d.data).items()},
            data_dir=d.data,
        ),
        # the validate step has checked every table the two training jobs read
        Step(
            "train-tier",
            lambda: run_tier(cfg, d.data, d.tier, overwrite=True, validate=False),
            own_run=True,
        ),
        Step(
            "train-matching",
            lambda: run_matching(
                cfg, d.data, d.matching, tiers=d.tier, overwrite=True, validate=False
            ),
            own_run=True,
        ),
        Step("promote", promote_both, params={"gates": cfg.registry.gates}),
        Step("recommend-creator", recommend("creator", d.creator_lists), data_dir=d.data),
        Step("recommend-product", recommend("product", d.product_lists), data_dir=d.data),
        Step(
            "match-brokers",
            lambda: run_brokers(
                cfg, d.data, champion, d.brokers, tiers=champion_tiers, overwrite=True
            ),
            data_dir=d.data,
        ),
        Step("report", lambda: {"bytes": build_report(out).stat().st_size}),
    ]
    identity = {
        "preset": preset,
        "config": str(config) if config else None,
        "overrides": sorted(set_ or []),
    }
    result = run_pipeline(
        out,
        steps,
        preset,
        cfg.model_dump(mode="json"),
        identity,
        force=force,
        echo=typer.echo,
        finish=write_summary,
    )
    summary = json.loads(d.summary.read_text())
    typer.echo("\n" + format_summary(summary))
    typer.echo(f"\nresults in {d.root.resolve()} (report: {d.report.resolve()})")
    typer.echo("next:")
    typer.echo(f"  haowu serve --from {out}")
    for name, promo in summary.get("promotion", {}).items():
        if promo.get("status") == "refused":  # a human may override the gate, with a reason
            folder = d.tier if name == "haowu-tier" else d.matching
            typer.echo(f"  haowu promote --model {name} --run {folder} --force --reason '...'")
    store = masked(tracking_uri())
    typer.echo(f"  mlflow ui --backend-store-uri {store}   # pipeline run {result.run_id}")


# --- tier commands (train-tier, selected-goods) ---


_TIER_ROWS = ("qwk", "macro_f1", "accuracy", "within_one", "l5_precision", "l5_recall")


def _tier_table(metrics: dict[str, float]) -> str:
    """Model | baseline on the test split, its no-history slice and the hidden truth."""
    groups = [
        ("test", ""),
        ("test, no hist.", "cold_"),
        ("truth", "truth_"),
        ("truth, no hist.", "cold_truth_"),
    ]
    groups = [(title, p) for title, p in groups if f"{p}qwk" in metrics]
    lines = [f"{'model | baseline':<16}" + "".join(f"{title:>18}" for title, _ in groups)]
    for name in _TIER_ROWS:
        cells = "".join(
            f"{metrics[p + name]:>10.3f} | {metrics.get('baseline_' + p + name, float('nan')):.3f}"
            for _, p in groups
        )
        lines.append(f"{name:<16}{cells}")
    return "\n".join(lines)


@app.command("train-tier")
@fails_cleanly
def train_tier(
    data: Annotated[Path, typer.Option(help="data folder (contract tables)")],
    out: Annotated[Path, typer.Option(help="run folder to write")],
    preset: PresetOpt = "small",
    overwrite: OverwriteOpt = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Fit the five-dimension tier model, evaluate it against the baseline, score every product."""
    from training.tier.job import run as run_tier

    cfg = settings(preset, config, set_)
    metrics = run_tier(cfg, data, out, overwrite=overwrite)
    typer.echo(_tier_table(metrics))
    typer.echo(
        f"trees {metrics['trees']:.0f}, trained in {metrics['train_seconds']:.1f}s; "
        f"scored {metrics['products_scored']:,.0f} products in {metrics['score_seconds']:.1f}s; "
        f"{metrics['selected_goods']:,.0f} Selected Goods (L5)"
    )
    typer.echo(f"wrote {out}/tiers.parquet, metrics.json, plots/, model/ (run id in run.json)")


@app.command("selected-goods")
@fails_cleanly
def selected_goods(
    tiers: Annotated[str, typer.Option(help="train-tier RUN_DIR or models:/haowu-tier@champion")],
    data: Annotated[Path, typer.Option(help="data folder (for categories and commission)")],
    out: Annotated[Path, typer.Option(help="folder for the campaign pool")],
    quota: Annotated[int | None, typer.Option(help="most goods per category")] = None,
    min_commission: Annotated[float | None, typer.Option(help="commission floor, e.g. 0.1")] = None,
    preset: PresetOpt = "small",
    overwrite: OverwriteOpt = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Write the Selected Goods campaign pool (L5 goods) with the reason each is in."""
    from training.tier.selected_goods import run as run_pool

    overrides = list(set_ or [])
    if quota is not None:
        overrides.append(f"tier.selected_goods.quota_per_category={quota}")
    if min_commission is not None:
        overrides.append(f"tier.selected_goods.min_commission={min_commission}")
    cfg = settings(preset, config, overrides)
    summary = run_pool(cfg.tier.selected_goods, tiers, data, out, overwrite=overwrite)
    typer.echo(
        f"{summary['pool']:,.0f} of {summary['selected_goods']:,.0f} Selected Goods in the pool "
        f"across {summary['categories']:.0f} categories (L5 cut {summary['l5_cut']:.3f})"
    )
    typer.echo(f"wrote {out}/selected_goods.parquet and summary.json")


# --- matching commands (train-matching, recommend) ---


@app.command("train-matching")
@fails_cleanly
def train_matching(
    data: Annotated[Path, typer.Option(help="data folder (contract tables)")],
    out: Annotated[Path, typer.Option(help="run folder to write")],
    tiers: TiersOpt = None,
    preset: PresetOpt = "small",
    overwrite: OverwriteOpt = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Fit the two-tower model and its baselines, evaluate (random, time, cold), log to MLflow."""
    from training.matching.bench import check_targets
    from training.matching.job import run as run_matching

    cfg = settings(preset, config, set_)
    metrics = run_matching(cfg, data, out, tiers=tiers, overwrite=overwrite)
    typer.echo((out / "metrics.md").read_text())
    show(check_targets(metrics))
    typer.echo(f"wrote {out}/model, metrics.json, metrics.md, recall_*.png (run id in run.json)")


@app.command()
@fails_cleanly
def tune(
    data: Annotated[Path | None, typer.Option(help="data folder (contract tables)")] = None,
    log_: Annotated[
        str | None,
        typer.Option("--log", help="or a public log, NAME=FORMAT:DIR as `bench quality` reads"),
    ] = None,
    trials: Annotated[
        int | None, typer.Option(help="trials per model (default tune.trials)")
    ] = None,
    minutes: Annotated[
        float | None, typer.Option(help="time budget of the two-tower study, in minutes")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="best two-tower settings (default tune/NAME.yaml)")
    ] = None,
    preset: PresetOpt = "small",
    overwrite: Annotated[bool, typer.Option(help="replace an existing --out file")] = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Tune the two-tower model, ALS and EASE with Optuna (same trials each); print the
    test table; write the best two-tower settings for `train-matching --config`."""
    from training.matching.quality import LogSpec
    from training.matching.tune import TuneError, table
    from training.matching.tune import run as run_tune

    if (data is None) == (log_ is None):
        raise TuneError("give one of --data DIR or --log NAME=FORMAT:DIR")
    source = LogSpec.parse(log_) if log_ is not None else data
    cfg = settings(preset, config, set_)
    summary = run_tune(cfg, source, out, trials, minutes, overwrite)  # type: ignore[arg-type]
    typer.echo(table(summary))
    typer.echo(f"wrote {summary['out']} (use: haowu train-matching --config {summary['out']})")


@app.command()
@fails_cleanly
def recommend(
    out: Annotated[Path, typer.Option(help="lists folder to write")],
    from_: FromOpt = None,
    data: Annotated[
        Path | None, typer.Option(help="data folder (already-promoted goods are excluded)")
    ] = None,
    model: ModelOpt = None,
    tiers: TiersOpt = None,
    k: Annotated[int, typer.Option(help="list length")] = 50,
    direction: Annotated[
        str, typer.Option(help="creator: goods per creator | product: creators per good")
    ] = "creator",
    exact: Annotated[bool, typer.Option(help="exact FAISS search, not the ANN index")] = False,
    engine: Annotated[str | None, typer.Option(help="local | ray (default: batch.engine)")] = None,
    workers: Annotated[int | None, typer.Option(help="processes / actors (batch.workers)")] = None,
    shard_size: Annotated[
        int | None,
        typer.Option(
            help="queries per part file (default: batch.shard_size; product lists "
            "batch.product_shard_size)"
        ),
    ] = None,
    expose_since: Annotated[
        str | None,
        typer.Option(
            help="creator lists: goods listed at or after this time (ISO, e.g. 2026-12-07) "
            "that no list holds get exposure slots"
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option("--force", "--overwrite", help="start over (also over another job's lists)"),
    ] = False,
    preset: PresetOpt = "small",
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Write top-k lists with the FAISS index and the platform's policy: OUT/part-*.parquet,
    then OUT/_SUCCESS; a rerun resumes."""
    from models.artifacts import job_inputs
    from serving.batch.exposure_pass import listed_since
    from serving.batch.job import ListsRequest
    from serving.batch.job import run as run_recommend

    cfg = settings(preset, config, set_)
    inputs = job_inputs(from_, data, model, tiers)
    request = ListsRequest(inputs.data, inputs.model, inputs.tiers, k, direction, exact)
    expose = None
    if expose_since is not None:
        if direction != "creator":
            raise ConfigError("--expose-since gives slots in creator lists (--direction creator)")
        expose = listed_since(inputs.data, _timestamp(expose_since, "--expose-since"))
        typer.echo(f"{len(expose):,} goods listed since {expose_since}: exposure slots if unlisted")
    manifest = run_recommend(
        cfg,
        request,
        out,
        overwrite=force,
        engine=engine,
        workers=workers,
        shard_size=shard_size,
        expose=expose,
    )
    index = manifest.get("products_index" if direction == "creator" else "creators_index") or {}
    typer.echo(
        f"{manifest['rows']:,} rows for {manifest['queries']:,} {direction}s in "
        f"{manifest['parts']} part(s), {manifest['seconds']}s "
        f"({index.get('kind', '?')} index, nprobe {index.get('nprobe', 0)}); wrote {out}"
    )
    if "peak_rss_gib" in manifest:
        typer.echo(
            f"{manifest['queries_per_s']:,} q/s, peak RSS {manifest['peak_rss_gib']} GiB, "
            f"CPU {manifest['cpu_utilisation']:.0%} of {manifest['cores']} cores; "
            f"{manifest['resumed_parts']} part(s) resumed"
        )
    if "exposure" in manifest:
        show(manifest["exposure"], "exposure ")


@app.command()
@fails_cleanly
def refresh(
    from_: Annotated[Path, typer.Option("--from", help="pipeline folder to bring up to date")],
    delta: Annotated[
        Path, typer.Option(help="folder of contract tables: what changed since the run")
    ],
    fine_tune: Annotated[
        bool,
        typer.Option(
            "--fine-tune",
            help="then fine-tune the champion on the delta's pairs; if the gate promotes "
            "it, it becomes DIR's model and every list is rewritten",
        ),
    ] = False,
    preset: PresetOpt = "small",
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """New goods, creators, interactions and flags into DIR without retraining: tiers,
    indexes and only the changed lists, all or nothing; then reload a running service."""
    from serving.refresh.job import run as run_refresh

    cfg = settings(preset, config, set_)
    manifest = run_refresh(cfg, from_, delta)
    if manifest.get("noop"):
        typer.echo(f"delta {manifest['delta_digest'][:12]} was applied at "
                   f"{manifest.get('applied_at')}: nothing to do")  # fmt: skip
    else:
        _echo_refresh(manifest)
    if fine_tune:
        _fine_tune(cfg, from_, delta, promote=True)


def _echo_refresh(manifest: dict[str, Any]) -> None:
    goods = manifest["indexes"]["products"]
    typer.echo(
        f"changes: {manifest['changes']}\n"
        f"tiering: {manifest['tiering']}\n"
        f"goods index: {goods['action']}, +{goods['added']} -{goods['removed']} "
        f"(probe recall {goods['probe_recall']}, list imbalance {goods['list_imbalance']})"
    )
    for direction, lists in manifest["lists"].items():
        typer.echo(f"{direction} lists: {lists['lists_rewritten']:,} rewritten "
                   f"{lists['reasons']}, {lists['parts_kept']} part(s) untouched")  # fmt: skip
    typer.echo(f"done in {manifest['seconds']}s; next: POST /admin/reload (or kill -HUP) "
               "a running `haowu serve --from` this folder")  # fmt: skip


def _fine_tune(cfg: Settings, from_: Path, delta: Path, promote: bool) -> None:
    """Fine-tune DIR's model on the delta; with `promote`, the gate, and if it passes the
    fine-tuned model installed as DIR's and every list rewritten with it."""
    from models.artifacts import MATCHING_MODEL
    from training.lifecycle.promotion import promote_run_dir
    from training.matching.fine_tune import run as run_fine_tune

    result = run_fine_tune(cfg, from_, delta)
    metrics, k = result["metrics"], max(cfg.matching.eval_k)
    typer.echo(
        f"fine-tuned on {int(metrics['train_pairs']):,} pairs ({int(metrics['new_pairs']):,} "
        f"new, {int(metrics['replayed_pairs']):,} replayed) in {metrics['train_seconds']:.1f}s; "
        f"held-out recall@{k}: champion {metrics[f'champion.recall@{k}']:.4f}, fine-tuned "
        f"{metrics[f'recall@{k}']:.4f}; wrote {result['run_dir']} (v{result['version']})"
    )
    if not promote:
        return
    verdict = promote_run_dir(MATCHING_MODEL, Path(result["run_dir"]), cfg.registry)
    if verdict["status"] != "champion":
        typer.echo(f"not promoted: {verdict['reason']}; DIR keeps its model and lists")
        return
    replaced, lists = _install(cfg, from_, Path(result["run_dir"]), delta)
    typer.echo(f"v{verdict['version']} is champion; DIR/matching replaced ({replaced} kept)")
    for direction, manifest in lists.items():
        slots = manifest.get("exposure", {}).get("slotted", 0)
        typer.echo(
            f"{direction} lists rewritten: {manifest['rows']:,} rows in {manifest['seconds']}s"
            + (f"; {slots} new goods in exposure slots" if slots else "")
        )


def _install(
    cfg: Settings, folder: Path, run_dir: Path, delta: Path
) -> tuple[Path, dict[str, dict[str, Any]]]:
    """A promoted fine-tuned run made DIR's model and every list rewritten by it, the
    delta's new goods keeping the exposure slots the refresh gave them."""
    import numpy as np

    from models.artifacts import PRODUCT_IDS, PipelineLayout, matching_model_folder
    from serving.refresh.delta import new_products
    from training.matching.fine_tune import install

    layout = PipelineLayout(folder)
    known = np.load(matching_model_folder(layout.matching) / PRODUCT_IDS)
    fresh = new_products(delta, known)
    replaced = install(layout, run_dir)
    return replaced, _rewrite_lists(cfg, folder, fresh)


def _rewrite_lists(
    cfg: Settings, folder: Path, expose: np.ndarray | None = None
) -> dict[str, dict[str, Any]]:
    """Every lists folder of pipeline folder `folder` written again by its (new) model,
    with the list length it had; `expose`: goods given exposure slots if no list holds
    them."""
    import json

    from models.artifacts import SUCCESS, PipelineLayout, job_inputs
    from serving.batch.job import ListsRequest
    from serving.batch.job import run as run_recommend

    layout, out = PipelineLayout(folder), {}
    inputs = job_inputs(folder, None, None, None)
    for direction, target in (("creator", layout.creator_lists), ("product", layout.product_lists)):
        if not (target / SUCCESS).is_file():
            continue
        k = int(json.loads((target / SUCCESS).read_text())["k"])
        request = ListsRequest(inputs.data, inputs.model, inputs.tiers, k, direction)
        out[direction] = run_recommend(
            cfg, request, target, overwrite=True, progress=False, expose=expose
        )
    return out


@app.command("fine-tune")
@fails_cleanly
def fine_tune(
    from_: Annotated[Path, typer.Option("--from", help="pipeline folder the delta was applied to")],
    delta: Annotated[Path, typer.Option(help="the delta `haowu refresh` applied")],
    promote: Annotated[
        bool, typer.Option(help="then the gate; promoted: DIR's model, every list rewritten")
    ] = False,
    preset: PresetOpt = "small",
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Fine-tune the two-tower train-matching made (DIR's fine-tunes descend from it) on the
    delta's pairs (warm start, replay of older pairs), judge it against DIR's model on the
    newest pairs, register a challenger."""
    _fine_tune(settings(preset, config, set_), from_, delta, promote)


# --- broker commands (match-brokers) ---


@app.command("match-brokers")
@fails_cleanly
def match_brokers(
    out: Annotated[Path, typer.Option(help="output folder")],
    from_: FromOpt = None,
    data: Annotated[
        Path | None, typer.Option(help="data folder (creators.broker_id, broker_products)")
    ] = None,
    model: ModelOpt = None,
    tiers: TiersOpt = None,
    preset: PresetOpt = "small",
    overwrite: OverwriteOpt = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Assign each broker's recruited goods to the creators on its roster (max expected value)."""
    from models.artifacts import job_inputs
    from serving.brokers.job import run as run_match_brokers

    cfg = settings(preset, config, set_)
    inputs = job_inputs(from_, data, model, tiers)
    metrics = run_match_brokers(
        cfg, inputs.data, inputs.model, out, tiers=inputs.tiers, overwrite=overwrite
    )
    shown = ("brokers", "brokers_matched", "brokers_empty", "assignments", "affinity_vs_random",
             "creator_capacity_use", "product_capacity_use", "greedy_gap", "seconds")  # fmt: skip
    show({key: metrics[key] for key in shown}, fmt=".4g")
    typer.echo(f"wrote {out}")


# --- lifecycle commands (promote, rollback) ---


def _run_id(run: str) -> str:
    """A run id, or a job's RUN_DIR whose run.json names it."""
    import json

    path = Path(run) / RUN_META
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
    from training.lifecycle.promotion import PromotionRefused
    from training.lifecycle.promotion import promote as run_promote

    cfg = settings(preset, config, set_)
    try:
        result = run_promote(model, _run_id(run), cfg.registry, force=force, reason=reason)
    except PromotionRefused as exc:  # a verdict, not a crash: its own exit code
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        raise typer.Exit(PROMOTION_REFUSED) from None
    if result.rows:
        typer.echo(result.table)
    was = f"(was v{result.previous})" if result.previous else "(first champion)"
    typer.echo(
        f"{model} v{result.version} is {cfg.registry.champion_alias} {was}"
        + (" [forced]" if result.forced else "")
    )


@app.command()
@fails_cleanly
def rollback(
    model: Annotated[str, typer.Option(help="registered model, e.g. haowu-matching")],
    preset: PresetOpt = "small",
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Restore the previous champion."""
    from training.lifecycle.promotion import rollback as run_rollback

    cfg = settings(preset, config, set_)
    old, new = run_rollback(model, cfg.registry)
    typer.echo(f"{model}: {cfg.registry.champion_alias} v{old} -> v{new}")


# --- online service (serve) ---


@app.command()
@fails_cleanly
def serve(
    from_: FromOpt = None,
    model: Annotated[
        str | None, typer.Option(help="matching RUN_DIR or models:/haowu-matching@champion")
    ] = None,
    data: Annotated[Path | None, typer.Option(help="data folder (catalog, promoted goods)")] = None,
    tiers: TiersOpt = None,
    lists: Annotated[Path | None, typer.Option(help="creator -> goods batch lists")] = None,
    product_lists: Annotated[Path | None, typer.Option(help="product -> creators lists")] = None,
    brokers: Annotated[Path | None, typer.Option(help="match-brokers output folder")] = None,
    host: Annotated[str | None, typer.Option(help="bind address (serve.host)")] = None,
    port: Annotated[int | None, typer.Option(help="port (serve.port)")] = None,
    workers: Annotated[int | None, typer.Option(help="worker processes (serve.workers)")] = None,
    preset: PresetOpt = "small",
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """The online lookup service (OpenAPI at /docs); SIGHUP or POST /admin/reload reloads."""
    from serving.api.server import run_server, sources_from_flags

    overrides = list(set_ or [])
    for key, value in (("host", host), ("port", port), ("workers", workers)):
        if value is not None:
            overrides.append(f"serve.{key}={value}")
    cfg = settings(preset, config, overrides)
    sources = sources_from_flags(
        from_,
        model,
        data=data,
        tiers=tiers,
        lists=lists,
        product_lists=product_lists,
        brokers=brokers,
    )
    run_server(cfg, sources, preset, config, overrides)


# --- benchmarks: `haowu bench ...` (each calls one `bench.py` module and prints) ---


@bench_app.command("tier")
@fails_cleanly
def bench_tier(
    rows: Annotated[int | None, typer.Option(help="rows (default tier.bench.rows)")] = None,
    model: Annotated[Path | None, typer.Option(help="a train-tier run (default: stand-in)")] = None,
    write: Annotated[bool, typer.Option(help="also write the tier table to Parquet")] = True,
    preset: PresetOpt = "small",
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Time tier scoring (score, tier, explanations) of N synthetic rows: rows/s and peak RSS."""
    from training.tier.bench import bench_tier as run_bench

    cfg = settings(preset, config, set_)
    model_dir = model / "model" if model else None
    result = run_bench(cfg.tier, rows or cfg.tier.bench.rows, model_dir, write)
    show(result)


@bench_app.command("train")
@fails_cleanly
def bench_train(
    preset: PresetOpt = "small",
    data: Annotated[Path | None, typer.Option(help="data folder (default: generate it)")] = None,
    out: Annotated[Path | None, typer.Option(help="where to write (default: temp)")] = None,
    epoch_preset: Annotated[
        str | None, typer.Option(help="also time one training epoch at this preset's scale")
    ] = "full",
    epoch_only: Annotated[bool, typer.Option(help="only the epoch timing")] = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Train matching on a preset, print recall vs baselines/oracle and the targets; time
    one epoch at full scale (sampled steps)."""
    import shutil
    import tempfile

    from training.matching.bench import bench_epoch
    from training.matching.bench import bench_train as run_bench

    if not epoch_only:
        target = out or Path(tempfile.mkdtemp(prefix=f"haowu-bench-train-{preset}-"))
        try:
            result = run_bench(settings(preset, config, set_), data, target)
        finally:
            if out is None:
                shutil.rmtree(target, ignore_errors=True)
        show(result)
    if epoch_preset:
        show(bench_epoch(settings(epoch_preset, config, set_)), prefix="epoch ")


@bench_app.command("brokers")
@fails_cleanly
def bench_brokers(
    preset: PresetOpt = "small",
    data: Annotated[Path | None, typer.Option(help="data folder (default: generate one)")] = None,
    model: Annotated[
        str | None, typer.Option(help="matching run (default: a stand-in scorer from truth/)")
    ] = None,
    tiers: Annotated[Path | None, typer.Option(help="tier run folder")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Time match-brokers over every broker and measure greedy's gap to the exact solver."""
    import shutil
    import tempfile

    from serving.brokers.bench import bench_brokers as run_bench

    cfg = settings(preset, config, set_)
    target = data
    if data is None:
        from features.synthetic import generate as run_generate

        target = Path(tempfile.mkdtemp(prefix=f"haowu-bench-{preset}-")) / "data"
        typer.echo(f"generating {preset} into {target} ...")
        run_generate(cfg.data, target, progress=False)
    try:
        result = run_bench(cfg, target, model, tiers)
    finally:
        if data is None:
            shutil.rmtree(target.parent, ignore_errors=True)
    show(result, fmt=".4g")


@bench_app.command("index")
@fails_cleanly
def bench_index(
    preset: PresetOpt = "small",
    k: Annotated[int, typer.Option(help="list length measured (recall@k, policy at k)")] = 100,
    queries: Annotated[int, typer.Option(help="held-out queries timed (ANN and exact)")] = 1000,
    direction: Annotated[
        list[str] | None, typer.Option(help="products | creators (default: both)")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="also write the figures as JSON here")] = None,
    diversity: Annotated[
        Path | None,
        typer.Option(help="also write the diversity curve (csv, png, json) to this folder"),
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option(help="diversity curve over this matching run (refit_all=false) and --data"),
    ] = None,
    data: Annotated[Path | None, typer.Option(help="the data --model was trained on")] = None,
    tiers: Annotated[Path | None, typer.Option(help="a train-tier run for --model")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Build, tune and time the FAISS index on synthetic embeddings of the preset's size;
    with --diversity, the accuracy-diversity curve of the policy's re-ranking."""
    import os

    from features.io import write_json
    from training.retrieval.bench import run as run_bench

    cfg = settings(preset, config, set_)
    directions = tuple(direction or ("products", "creators"))
    if queries > 0:
        result = run_bench(
            cfg.data, cfg.index, cfg.policy, k=k, n_eval=queries, directions=directions
        )
        show(result)
        if out is not None:
            write_json(result, out)
    if diversity is not None:
        from models.retrieval.synthetic import diversity_scenario
        from training.retrieval.diversity_curve import held_out_scenario
        from training.retrieval.diversity_curve import run as run_curve

        if model is not None:
            if data is None:
                raise HaowuError("--model needs --data (the data it was trained on)")
            scenario = held_out_scenario(data, model, tiers)
            title = f"held-out pairs of {model}"
        else:
            d = cfg.data
            scenario = diversity_scenario(
                n_products=d.n_products,
                n_l1=d.n_categories_l1,
                n_l2=d.n_categories_l2,
                n_leaf=d.n_leaf_categories,
                seed=d.seed,
            )
            title = f"synthetic scenario at {preset} scale"
        frame = run_curve(scenario, cfg.policy, diversity, title=title)
        typer.echo(f"load average {os.getloadavg()[0]:.2f}; {title}")
        typer.echo(frame.round(4).to_string(index=False))
        typer.echo(f"wrote {diversity}/diversity_curve.{{csv,png,json}}")


@bench_app.command("batch")
@fails_cleanly
def bench_batch(
    preset: PresetOpt = "small",
    direction: Annotated[
        list[str] | None,
        typer.Option(help="creator | product, repeatable (default: both; creator on full)"),
    ] = None,
    workers: Annotated[
        list[int] | None, typer.Option(help="workers to time, repeatable (default: batch.workers)")
    ] = None,
    engine: Annotated[str | None, typer.Option(help="local | ray (default: batch.engine)")] = None,
    workdir: Annotated[
        Path | None,
        typer.Option(help="keep vectors, indexes and lists here; a rerun reuses them"),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="also write the figures as JSON here")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Time the batch job (index, policy, Parquet) on synthetic embeddings of the preset's
    size; ANN recall and speed-up against exact search on a sample."""
    import shutil
    import tempfile

    from features.io import write_json
    from serving.batch.bench import run as run_bench

    cfg = settings(preset, config, set_)
    directions = tuple(direction or (("creator",) if preset == "full" else ("creator", "product")))
    bad = [d for d in directions if d not in ("creator", "product")]
    if bad:
        raise HaowuError(f"--direction {bad[0]}: choose creator or product")
    folder = workdir or Path(tempfile.mkdtemp(prefix=f"haowu-bench-batch-{preset}-"))
    try:
        result = run_bench(
            cfg,
            folder,
            directions,
            tuple(workers or (cfg.batch.workers,)),
            engine or cfg.batch.engine,
        )
    finally:
        if workdir is None:
            shutil.rmtree(folder, ignore_errors=True)
    show(result)
    if out is not None:
        write_json(result, out)


@bench_app.command("generate")
@fails_cleanly
def bench_generate(
    preset: PresetOpt = "tiny",
    out: Annotated[
        Path | None, typer.Option(help="where to write (default: a temp folder)")
    ] = None,
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
    show(result)


@bench_app.command("serve")
@fails_cleanly
def bench_serve(
    from_: Annotated[Path, typer.Option("--from", help="pipeline folder to serve")],
    rate: Annotated[float, typer.Option(help="GET goods requests per second (open loop)")] = 500,
    cold_rate: Annotated[float, typer.Option(help="POST /creators/goods per second")] = 20,
    seconds: Annotated[float, typer.Option(help="length of each timed scenario")] = 20,
    connections: Annotated[int, typer.Option(help="client connections (open loop)")] = 16,
    port: Annotated[int, typer.Option(help="loopback port for the service")] = 8765,
    out: Annotated[Path | None, typer.Option(help="also write the figures as JSON here")] = None,
    preset: PresetOpt = "small",
    set_: SetOpt = None,
) -> None:
    """Load-test `haowu serve --from DIR` on loopback: latency, capacity, cold start, reload."""
    from features.io import write_json
    from serving.api.bench import run_bench

    result = run_bench(
        from_,
        preset,
        rate=rate,
        cold_rate=cold_rate,
        seconds=seconds,
        connections=connections,
        port=port,
        overrides=list(set_ or []),
    )
    show(result)
    if out is not None:
        write_json(result, out)


@bench_app.command("quality")
@fails_cleanly
def bench_quality(
    log_: Annotated[
        list[str],
        typer.Option(
            "--log",
            help="NAME=FORMAT:DIR, FORMAT lastfm (train/test.txt, user item count), beauty "
            "(train.txt user:item item ..., test.txt user:item) or pairs (a data folder)",
        ),
    ],
    out: Annotated[Path | None, typer.Option(help="write the figures as JSON here")] = None,
    models: Annotated[
        str, typer.Option(help="comma list of two_tower, pop, itemknn, als, ease")
    ] = "two_tower,pop,itemknn,als,ease",
    preset: PresetOpt = "small",
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Two-tower vs Pop / ItemKNN / ALS / EASE on real logs with their own test split:
    every item ranked, training items masked; ALS and EASE tuned on a validation carved
    from train. Prints one table per log."""
    from features.io import write_json
    from training.matching.quality import LogSpec, run_quality, table

    specs = [LogSpec.parse(text) for text in log_]
    names = [m.strip() for m in models.split(",") if m.strip()]
    result = run_quality(specs, settings(preset, config, set_), names)
    for name, record in result.items():
        typer.echo(table(name, record) + "\n")
    if out is not None:
        write_json(result, out)
        typer.echo(f"wrote {out}")


def _full_pipeline(cfg: Settings, folder: Path, expose: np.ndarray | None = None) -> float:
    """What a daily full retrain runs on a pipeline folder's data, as `haowu pipeline`
    does (train-tier, train-matching, both recommend steps; no registry, no brokers);
    `expose`: the day's new goods, given exposure slots in the creator lists as
    `recommend --expose-since` gives them; returns its seconds."""
    from models.artifacts import PipelineLayout
    from serving.batch.job import ListsRequest
    from serving.batch.job import run as run_recommend
    from training.matching.job import run as run_matching
    from training.tier.job import run as run_tier

    d = PipelineLayout(folder)
    start = time.perf_counter()
    run_tier(cfg, d.data, d.tier, overwrite=True)
    run_matching(cfg, d.data, d.matching, tiers=d.tier, overwrite=True, progress=False,
                 register=False)  # fmt: skip
    for direction, lists in (("creator", d.creator_lists), ("product", d.product_lists)):
        request = ListsRequest(d.data, str(d.matching), str(d.tier), cfg.refresh.bench.k,
                               direction)  # fmt: skip
        run_recommend(cfg, request, lists, overwrite=True, progress=False, expose=expose)
    return time.perf_counter() - start


def _bench_arms(cfg: Settings) -> dict[str, Arm]:
    """`haowu bench refresh`'s ways of keeping a pipeline folder up to date, each a
    `simulation.Arm`: given its copy of the start folder, it returns its daily step.
    Adding an arm (e.g. a fine-tune) is one entry here."""
    from features.io import read_table
    from features.synthetic.timeline import add_later_rows, later_of
    from models.artifacts import MATCHING_MODEL, PipelineLayout
    from serving.refresh.delta import new_products
    from serving.refresh.job import run as run_refresh
    from serving.refresh.merge import merge_delta
    from serving.refresh.simulation import Advance, Arm, unchanged
    from training.lifecycle.promotion import fine_tuned_rows
    from training.matching.fine_tune import FineTuneError
    from training.matching.fine_tune import run as run_fine_tune

    def timed(step: Callable[[Path], Any]) -> Advance:
        def advance(delta: Path) -> float:
            start = time.perf_counter()
            step(delta)
            return time.perf_counter() - start

        return advance

    def refresh(folder: Path) -> Advance:
        return timed(lambda delta: run_refresh(cfg, folder, delta))

    def retrain(folder: Path) -> Advance:
        def step(delta: Path) -> None:
            layout = PipelineLayout(folder)
            known = read_table(layout.data, "products", columns=["product_id"])["product_id"]
            merge_delta(layout, delta)
            add_later_rows(layout.data, later_of(delta))  # the day's labels
            _full_pipeline(cfg, folder, expose=new_products(delta, known.to_numpy()))

        return timed(step)

    def fine_tune(folder: Path) -> Advance:
        def step(delta: Path) -> None:
            run_refresh(cfg, folder, delta)
            try:
                result = run_fine_tune(cfg, folder, delta, register=False)
            except FineTuneError as exc:  # e.g. too few new pairs today: the refresh stands
                logging.getLogger("haowu.bench").warning("no fine-tune today: %s", exc)
                return
            rows = fine_tuned_rows(result["metrics"], cfg.registry, MATCHING_MODEL)
            if all(row.passed for row in rows):  # the gate, without a registry
                _install(cfg, folder, Path(result["run_dir"]), delta)

        return timed(step)

    return {
        "never": Arm(unchanged, "the start lists, never changed"),
        "refresh": Arm(refresh, "haowu refresh with the day's delta"),
        "fine-tune": Arm(
            fine_tune,
            "refresh, then the trained model fine-tuned on the pairs up to the day; if it "
            "passes the gate, installed and every list rewritten",
        ),
        "retrain": Arm(retrain, "the delta merged, then a full pipeline on all the data"),
    }


@bench_app.command("refresh")
@fails_cleanly
def bench_refresh(
    preset: PresetOpt = "small",
    days: Annotated[int, typer.Option(help="days replayed after the start state")] = 7,
    data: Annotated[
        Path | None, typer.Option(help="data folder to replay (default: generate the preset)")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="write the rows and summary as JSON here (and a .png)")
    ] = None,
    workdir: Annotated[
        Path | None, typer.Option(help="keep the timeline and each arm's folder here")
    ] = None,
    arm: Annotated[
        list[str] | None,
        typer.Option(help="never | refresh | fine-tune | retrain, repeatable (default: all)"),
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Replay the last DAYS of a marketplace: each day's refresh vs a daily full retrain vs
    never retraining; Recall@k on the day's new pairs, freshness, flags and cost."""
    import os
    import shutil
    import tempfile

    from features.io import write_json
    from features.synthetic import generate as run_generate
    from features.synthetic.timeline import split_timeline
    from models.artifacts import PipelineLayout
    from serving.refresh import simulation

    base = settings(preset, config, set_)
    bench = base.refresh.bench
    # one fit per train-matching: no evaluation protocols, `bench.epochs` epochs
    matching = base.matching.model_copy(update={"protocols": [], "epochs": bench.epochs})
    cfg = base.model_copy(update={"matching": matching})
    arms = _bench_arms(cfg)
    unknown = [name for name in arm or () if name not in arms]
    if unknown:
        raise HaowuError(f"--arm {unknown[0]}: choose from {', '.join(arms)}")
    arms = {name: a for name, a in arms.items() if not arm or name in arm}
    work = workdir or Path(tempfile.mkdtemp(prefix=f"haowu-bench-refresh-{preset}-"))
    work.mkdir(parents=True, exist_ok=True)
    store = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{(work / 'mlflow.db').resolve()}"
    try:
        source = data
        if source is None:
            source = work / "source"
            typer.echo(f"generating {preset} into {source} ...")
            run_generate(cfg.data, source, overwrite=True, progress=False)
        timeline = split_timeline(source, work / "timeline", days, bench.seed, overwrite=True)
        typer.echo(f"T0 {timeline.t0}; flagged merchants by day {list(timeline.flagged)}")
        start_folder = work / "start"
        shutil.rmtree(start_folder, ignore_errors=True)
        shutil.copytree(timeline.start, PipelineLayout(start_folder).data)
        start_seconds = _full_pipeline(cfg, start_folder)
        typer.echo(f"start pipeline folder built in {start_seconds:.1f}s")
        shutil.rmtree(work / "arms", ignore_errors=True)
        rows = simulation.simulate(
            timeline, start_folder, arms, work / "arms", bench.k, echo=typer.echo
        )
    finally:
        if store is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = store
        if workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    summary = simulation.summary(rows, bench.k, start_seconds)
    typer.echo(f"\nload average {os.getloadavg()[0]:.2f}; {preset}, {days} days, "
               f"start pipeline {start_seconds:.1f}s")  # fmt: skip
    typer.echo(simulation.table(rows, bench.k) + "\n")
    show({k: v for k, v in summary.items() if k != "per_arm"})
    if out is not None:
        doc = {
            "preset": preset,
            "days": days,
            "k": bench.k,
            "epochs": bench.epochs,
            "t0": str(timeline.t0),
            "flagged_merchants": list(timeline.flagged),
            "arms": {name: a.note for name, a in arms.items()},
            "summary": summary,
            "rows": rows,
        }
        write_json(doc, out)
        title = f"haowu bench refresh: {preset}, {days} days"
        figure = simulation.plot(rows, bench.k, out.with_suffix(".png"), title)
        typer.echo(f"wrote {out} and {figure}")


if __name__ == "__main__":  # last: every command above is registered
    app()
