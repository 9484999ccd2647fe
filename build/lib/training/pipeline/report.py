"""One self-contained HTML report of a pipeline folder: plots embedded as base64 PNG,
tables inline, no external files, so it can be mailed or opened from the MLflow UI.

Sections: key numbers and step times; tiers (distribution, confusion, model vs
baseline); matching (model vs baselines vs oracle, Recall@k curves, cold start);
diversity curve (when a job wrote one); lists (category coverage, tier mix and Selected
Goods share); promotion; brokers.
"""

from __future__ import annotations

import base64
import html
import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from models.artifacts import METRICS, SUCCESS, TIERS, PipelineLayout
from training.evaluation import list_stats
from training.pipeline import explore, report_plots
from training.pipeline.summary import collect, format_summary

log = logging.getLogger(__name__)

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { border-bottom: 2px solid #444; } h2 { margin-top: 2em; border-bottom: 1px solid #aaa; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th { background: #f0f0f0; } pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; }
img { max-width: 100%; margin: 0.4em 0; border: 1px solid #eee; }
.note { color: #666; font-style: italic; }
"""


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _img_file(path: Path) -> str:
    if not path.is_file():
        return _note(f"{path.name} was not written")
    return _img(path.read_bytes(), path.stem.replace("_", " "))


def _table(frame: pd.DataFrame, digits: int = 4) -> str:
    return frame.to_html(float_format=lambda v: f"{v:.{digits}f}", border=0, na_rep="-")


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def _section(title: str, *parts: str) -> str:
    return f"<h2>{html.escape(title)}</h2>\n" + "\n".join(parts)


def _overview(summary: dict[str, Any]) -> str:
    seconds = pd.Series(summary.get("seconds", {}), name="seconds").to_frame()
    return _section(
        "Summary",
        f"<pre>{html.escape(format_summary(summary))}</pre>",
        "<h3>time per step</h3>",
        _table(seconds, 1) if len(seconds) else _note("no step finished"),
    )


def _tiers(layout: PipelineLayout) -> str:
    if not (layout.tier / METRICS).is_file():
        return _section("Tiers", _note("train-tier has not run"))
    plots = layout.tier / "plots"
    return _section(
        "Tiers",
        "<h3>model vs hand-weighted baseline</h3>",
        _table(explore.tier_metrics(layout), 3),
        "<h3>distribution</h3>",
        _table(explore.tier_distribution(layout).to_frame().T, 0),
        _img_file(plots / "tier_distribution.png"),
        "<h3>confusion (test split)</h3>",
        _img_file(plots / "confusion_matrix.png"),
        _img_file(plots / "dimension_contributions.png"),
    )


def _matching(layout: PipelineLayout) -> str:
    if not (layout.matching / "metrics.csv").is_file():
        return _section("Matching", _note("train-matching has not run"))
    parts = []
    for protocol in explore.protocols(layout):
        table = explore.matching_table(layout, protocol)
        parts += [f"<h3>protocol {html.escape(protocol)}: model vs baselines</h3>", _table(table)]
        parts.append(_img_file(layout.matching / f"recall_{protocol}.png"))
    return _section("Matching", *parts)


def _diversity(layout: PipelineLayout) -> str:
    curve = explore.diversity_curve(layout)
    images = sorted(layout.root.glob("*/diversity_curve*.png")) + sorted(
        layout.root.glob("lists/*/diversity_curve*.png")
    )
    if curve is None and not images:
        return _section(
            "Diversity curve",
            _note(
                "no job of this pipeline wrote a diversity curve (diversity_curve*.csv/png); "
                "the lists section shows the categories per list that were served"
            ),
        )
    parts = [_img_file(p) for p in images]
    if curve is not None:
        parts.append(_table(curve, 3))
    return _section("Diversity curve", *parts)


def _lists(layout: PipelineLayout) -> str:
    if not (layout.creator_lists / SUCCESS).is_file():
        return _section("Lists", _note("the creator lists have not been written"))
    products = list_stats.catalog(layout.data, layout.tier / TIERS)
    lists = list_stats.read_lists(layout.creator_lists)
    parts = [
        "<h3>category coverage (category_l1: share of slots vs share of catalog)</h3>",
        _img(
            report_plots.to_png(
                report_plots.mix_plot(
                    list_stats.category_mix(lists, products),
                    "list slots by category",
                    "category_l1",
                )
            ),
            "category mix",
        ),
        _img(
            report_plots.to_png(
                report_plots.categories_per_list_plot(
                    list_stats.categories_per_list(lists, products)
                )
            ),
            "categories per list",
        ),
    ]
    if "tier" in lists.columns and "tier" in products.columns:
        by_rank = list_stats.selected_goods_by_rank(lists)
        catalog_share = float((products["tier"] == list_stats.SELECTED_GOODS_TIER).mean())
        parts += [
            "<h3>tiers and Selected Goods in the lists</h3>",
            _table(list_stats.tier_mix(lists, products), 3),
            _img(
                report_plots.to_png(
                    report_plots.mix_plot(
                        list_stats.tier_mix(lists, products), "list slots by tier", "tier"
                    )
                ),
                "tier mix",
            ),
            _img(
                report_plots.to_png(report_plots.selected_goods_rank_plot(by_rank, catalog_share)),
                "Selected Goods by rank",
            ),
        ]
    return _section("Lists", *parts)


def _promotion(summary: dict[str, Any]) -> str:
    parts = []
    for name, promo in summary.get("promotion", {}).items():
        status = promo.get("status")
        line = (
            f"v{promo.get('version')} is champion"
            if status == "champion"
            else f"refused: {promo.get('reason')}"
        )
        parts.append(f"<h3>{html.escape(name)}</h3><p>{html.escape(line)}</p>")
        if promo.get("table"):
            parts.append(f"<pre>{html.escape(promo['table'])}</pre>")
    return _section("Promotion", *(parts or [_note("promote has not run")]))


def _brokers(layout: PipelineLayout) -> str:
    path = layout.brokers / METRICS
    if not path.is_file():
        return _section("Brokers", _note("match-brokers has not run"))
    metrics = json.loads(path.read_text())
    return _section("Brokers", _table(pd.Series(metrics, name="value").to_frame(), 3))


def build_report(root: Path, summary: dict[str, Any] | None = None) -> Path:
    """Write ROOT/report.html; returns its path."""
    layout = PipelineLayout(Path(root))
    summary = summary if summary is not None else collect(layout.root)
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    body = [
        f"<h1>haowu pipeline report</h1><p>{html.escape(str(layout.root.resolve()))} "
        f"&middot; {stamp}</p>",
        _overview(summary),
        _tiers(layout),
        _matching(layout),
        _diversity(layout),
        _lists(layout),
        _promotion(summary),
        _brokers(layout),
    ]
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>haowu report</title><style>{STYLE}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
    layout.report.write_text(page, encoding="utf-8")
    log.info("report: %s (%.0f kB)", layout.report, len(page) / 1e3)
    return layout.report
