"""The numbers a pipeline run ends with, read back from its folder (DESIGN §6 layout).

`collect` gathers them (metrics.json of each job, list statistics, promotion outcome,
step times) into one JSON-able dict; `format_summary` prints it as the closing table of
`haowu pipeline` and the report shows the same numbers.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from features.steps import StepLedger
from models.artifacts import METRICS, SUCCESS, TIERS, PipelineLayout
from training.evaluation import list_stats
from training.matching.verdict import MODEL, PROTOCOL_PREFIX, from_metrics, metric_name

log = logging.getLogger(__name__)

STEPS = (
    "generate",
    "validate",
    "train-tier",
    "train-matching",
    "promote",
    "recommend-creator",
    "recommend-product",
    "match-brokers",
    "report",
)
TIER_KEYS = ("qwk", "macro_f1", "accuracy", "l5_precision", "l5_recall")
MATCHING_MODELS = ("two_tower", "pop", "als", "ease", "itemknn", "oracle")
BROKER_KEYS = (
    "brokers",
    "brokers_matched",
    "assignments",
    "affinity_vs_random",
    "creator_capacity_use",
    "product_capacity_use",
)


def _json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _matching(metrics: dict[str, float], k: int = 50) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for protocol in PROTOCOL_PREFIX:
        row = {}
        for model in MATCHING_MODELS:
            name = metric_name(protocol, model, f"recall@{k}")
            if name in metrics:
                row[model] = metrics[name]
        if row:
            out[protocol] = row
    for key in (f"coverage@{k}", f"category_coverage@{k}", f"oracle_ratio@{k}", f"ndcg@{k}"):
        if key in metrics:
            out[key] = metrics[key]
    verdicts = {}
    for protocol in ("random", "time"):
        found = from_metrics(metrics, protocol, MATCHING_MODELS)
        if found is not None:
            verdicts[protocol] = {
                "winner": found.winner,
                "best_baseline": found.best_baseline,
                "ratio": found.ratio,
            }
    if verdicts:
        out["validation"] = verdicts
    half_lives = {}
    for protocol in ("random", "time"):
        half_life = metrics.get(metric_name(protocol, MODEL, "history_half_life"))
        if half_life:  # shown where the history has an order
            half_lives[protocol] = half_life
    if half_lives:
        out["history_half_life"] = half_lives
    return out


def collect(root: Path) -> dict[str, Any]:
    """Everything the summary and the report show, from what the steps wrote."""
    layout = PipelineLayout(Path(root))
    ledger = StepLedger(layout.root)
    summary: dict[str, Any] = {"folder": str(layout.root.resolve())}
    tier = _json(layout.tier / METRICS)
    if tier:
        summary["tier"] = {
            key: {"model": tier.get(key), "baseline": tier.get(f"baseline_{key}")}
            for key in TIER_KEYS
        }
        summary["tier"]["selected_goods"] = tier.get("selected_goods")
        summary["tier"]["products_scored"] = tier.get("products_scored")
    matching = _json(layout.matching / METRICS)
    if matching:
        summary["matching"] = _matching(matching)
    summary["promotion"] = ledger.summary("promote") or {}
    data = layout.data
    if (layout.creator_lists / SUCCESS).is_file():
        products = list_stats.catalog(data, layout.tier / TIERS)
        lists = list_stats.read_lists(
            layout.creator_lists, ["creator_id", "rank", "product_id", "tier"]
        )
        summary["creator_lists"] = list_stats.creator_list_stats(lists, products)
    if (layout.product_lists / SUCCESS).is_file():
        lists = list_stats.read_lists(layout.product_lists, ["product_id", "rank", "creator_id"])
        n_creators = (_json(data / "_meta.json") or {}).get("counts", {}).get("creators")
        summary["product_lists"] = list_stats.product_list_stats(lists, n_creators)
    brokers = _json(layout.brokers / METRICS)
    if brokers:
        summary["brokers"] = {k: brokers[k] for k in BROKER_KEYS if k in brokers}
    summary["seconds"] = {
        name: ledger.seconds(name) for name in STEPS if ledger.seconds(name) is not None
    }
    summary["seconds"]["total"] = round(sum(summary["seconds"].values()), 2)
    return summary


def _n(value: Any) -> str:
    """A count."""
    return "-" if value is None else f"{value:,.0f}"


def _r(value: Any, digits: int = 3) -> str:
    """A rate or score."""
    return "-" if value is None else f"{value:.{digits}f}"


def format_summary(summary: dict[str, Any]) -> str:
    """The closing table: key metrics, counts and times."""
    lines: list[str] = []

    def row(label: str, text: str) -> None:
        lines.append(f"  {label:<34}{text}")

    tier = summary.get("tier")
    if tier:
        lines.append(f"{'tier model (test split)':<36}model | hand-weighted baseline")
        for key in ("qwk", "macro_f1", "l5_precision"):
            row(key, f"{_r(tier[key]['model'])} | {_r(tier[key]['baseline'])}")
        row(
            "Selected Goods (L5)",
            f"{_n(tier.get('selected_goods'))} of {_n(tier.get('products_scored'))} products",
        )
    matching = summary.get("matching")
    if matching:
        lines.append(f"{'matching recall@50':<36}two-tower | pop | als | ease/itemknn | oracle")
        for protocol in ("random", "time", "cold"):
            r = matching.get(protocol)
            if r:
                cells = [
                    r.get("two_tower"),
                    r.get("pop"),
                    r.get("als"),
                    r.get("ease", r.get("itemknn")),
                    r.get("oracle"),
                ]
                row(
                    f"{protocol} split" if protocol != "cold" else "cold-start goods",
                    " | ".join(_r(c) for c in cells),
                )
        if "oracle_ratio@50" in matching:
            row("two-tower / oracle", _r(matching["oracle_ratio@50"]))
        for protocol, v in matching.get("validation", {}).items():
            row(
                f"validation winner ({protocol})",
                f"{v['winner']}: two-tower {v['ratio']:.2f}x best baseline ({v['best_baseline']})",
            )
        for protocol, half_life in matching.get("history_half_life", {}).items():
            row(f"history in time order ({protocol})", f"half-life {half_life:g} goods")
    promotion = summary.get("promotion", {})
    if promotion:
        lines.append("registry")
    for name, promo in promotion.items():
        if promo.get("status") == "champion":
            was = f"was v{promo['previous']}" if promo.get("previous") else "first champion"
            row(name, f"v{promo['version']} is champion ({was})")
        else:
            row(name, f"not promoted: {promo.get('reason')}")
    lists = summary.get("creator_lists")
    if lists:
        lines.append("lists")
        row(
            "creator lists",
            f"{_n(lists['rows'])} rows, {_n(lists['creators'])} creators, k={_n(lists['k'])}",
        )
        row(
            "catalog coverage",
            f"{_r(lists['catalog_coverage'])} of goods, "
            f"{_r(lists['category_coverage'])} of leaf categories",
        )
        row("leaf categories per list", _r(lists["categories_per_list"], 1))
        if "selected_goods_share" in lists:
            row(
                "Selected Goods share of slots",
                f"{_r(lists['selected_goods_share'])} "
                f"(catalog {_r(lists['catalog_selected_goods_share'])})",
            )
    plists = summary.get("product_lists")
    if plists:
        row(
            "product lists",
            f"{_n(plists['rows'])} rows, {_n(plists['products'])} goods, "
            f"{_n(plists['distinct_creators'])} distinct creators",
        )
    brokers = summary.get("brokers")
    if brokers:
        lines.append("brokers")
        row(
            "brokers matched",
            f"{_n(brokers.get('brokers_matched'))} of "
            f"{_n(brokers.get('brokers'))}, {_n(brokers.get('assignments'))} assignments",
        )
        row("affinity vs random assignment", f"{_r(brokers.get('affinity_vs_random'), 2)}x")
    seconds = summary.get("seconds", {})
    if seconds:
        lines.append("seconds per step")
        for name in (*STEPS, "total"):
            if name in seconds:
                row(name, f"{seconds[name]:.1f}")
    return "\n".join(lines)


def write_summary(root: Path) -> dict[str, Any]:
    """Collect the summary and write it to ROOT/summary.json."""
    from features.io import write_json

    summary = collect(root)
    write_json(summary, PipelineLayout(Path(root)).summary)
    return summary
