"""`haowu match-brokers`: each broker's recruited goods assigned to the creators on its roster.

For every broker: its roster (`creators.broker_id`) and its goods (`broker_products`),
minus goods that must never be handed out (flagged merchants, excluded tiers) and goods
missing from the catalog; the two-tower logits of roster x goods become an expected
value (models/brokers/expected_value.py); the capacity-limited assignment that maximises the
total is solved exactly (HiGHS LP) or, above `exact_max_pairs` candidate pairs, greedily
(models/brokers/assignment.py). Each broker is also given random feasible assignments under the
same capacities, the baseline of `affinity_vs_random`.

Output folder (written atomically): `matches.parquet` (broker_id, creator_id,
product_id, expected_value, affinity, rank: the good's rank among the creator's assigned
goods, 1 = best), `broker_summary.parquet` (one row per broker, with the reason when it
got nothing), `metrics.json`, `config.json`. IDs are the user's own (id_maps/ of imported
data). Skips, each logged and counted in metrics.json: brokers with no creators or no
goods, goods not in the products table, goods or creators the model does not know.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from features.idmap import load_id_maps
from features.io import atomic_output_dir, write_json
from features.logs import progress_bar
from features.settings import BrokersConfig, Settings
from models.artifacts import BROKER_SUMMARY as SUMMARY
from models.artifacts import MATCHES, METRICS, read_tiers
from models.brokers import assignment as solver
from models.brokers import expected_value as ev
from serving.brokers.inputs import broker_goods, broker_ids, load_catalog, rosters
from serving.brokers.scorer import load_scorer

log = logging.getLogger(__name__)

# (creator_ids, product_ids) -> (len(creator_ids), len(product_ids)) logits; NaN = unknown
Scorer = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass
class BrokerResult:
    """One broker's assignment (positions into `creator_ids` / `product_ids`) and stats."""

    broker_id: int
    creator_ids: np.ndarray
    product_ids: np.ndarray
    rows: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    cols: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    value: np.ndarray = field(default_factory=lambda: np.empty(0))
    affinity: np.ndarray = field(default_factory=lambda: np.empty(0))
    stats: dict[str, float | int | str] = field(default_factory=dict)


def _empty(broker_id: int, reason: str, **stats: float | int | str) -> BrokerResult:
    log.info("broker %d: nothing assigned: %s", broker_id, reason)
    return BrokerResult(
        broker_id,
        np.empty(0, np.int64),
        np.empty(0, np.int64),
        stats={"solver": "none", "reason": reason, **stats},
    )


def _creator_logits(
    scorer: Scorer,
    creator_ids: np.ndarray,
    product_ids: np.ndarray,
    normaliser_ids: np.ndarray | None,
    catalog_size: int,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Logits of the roster x goods and, with a normaliser sample, each creator's
    catalog log-normaliser (one scorer call for both)."""
    wanted = (
        product_ids if normaliser_ids is None else np.concatenate([product_ids, normaliser_ids])
    )
    logits = np.asarray(scorer(creator_ids, wanted), dtype=np.float64)
    if logits.shape != (len(creator_ids), len(wanted)):
        raise ValueError(
            f"scorer returned {logits.shape}, expected {(len(creator_ids), len(wanted))}"
        )
    goods = logits[:, : len(product_ids)]
    if normaliser_ids is None:
        return goods, None
    sample = logits[:, len(product_ids) :]
    return goods, ev.log_normaliser(np.where(np.isfinite(sample), sample, -np.inf), catalog_size)


def match_broker(
    broker_id: int,
    creator_ids: np.ndarray,
    followers_rel: np.ndarray,
    product_ids: np.ndarray,
    product_value: np.ndarray,
    scorer: Scorer,
    cfg: BrokersConfig,
    rng: np.random.Generator,
    normaliser_ids: np.ndarray | None = None,
    catalog_size: int = 0,
) -> BrokerResult:
    """Score, value and assign one broker's eligible goods to its roster."""
    if len(creator_ids) == 0:
        return _empty(broker_id, "no creators on the roster")
    if len(product_ids) == 0:
        return _empty(broker_id, "no eligible goods", creators=len(creator_ids))
    logits, log_z = _creator_logits(scorer, creator_ids, product_ids, normaliser_ids, catalog_size)
    unknown = ~np.isfinite(logits)
    logits = np.where(unknown, -np.inf, logits)
    scored_rows = ~unknown.all(axis=1)
    if not scored_rows.any():
        return _empty(
            broker_id, "no roster creator is known to the model", creators=len(creator_ids)
        )
    with np.errstate(invalid="ignore", divide="ignore"):
        if log_z is None:
            aff = np.zeros_like(logits)
            aff[scored_rows] = ev.affinity(logits[scored_rows])
        else:
            aff = ev.affinity(logits, np.where(np.isfinite(log_z), log_z, np.inf))
    aff = np.nan_to_num(aff, nan=0.0, posinf=0.0)
    values = ev.expected_value(aff, product_value, followers_rel, cfg.reach_weight)
    creator_cap = ev.creator_capacity(
        followers_rel,
        cfg.max_goods_per_creator,
        cfg.capacity_followers_exponent,
        cfg.creator_capacity_limit,
    )
    creator_cap = np.where(scored_rows, creator_cap, 0)
    product_cap = np.full(len(product_ids), cfg.max_creators_per_product, dtype=np.int64)

    start = time.perf_counter()
    n_pairs = len(solver.candidate_pairs(values, creator_cap, product_cap)[0])
    exact = n_pairs <= cfg.exact_max_pairs
    if exact:
        rows, cols = solver.solve_exact(values, creator_cap, product_cap)
    else:
        rows, cols = solver.solve_greedy(values, creator_cap, product_cap)
    seconds = time.perf_counter() - start
    solver.check_feasible((rows, cols), creator_cap, product_cap)

    total = float(values[rows, cols].sum())
    stats: dict[str, float | int | str] = {
        "solver": "exact" if exact else "greedy",
        "reason": "",
        "creators": len(creator_ids),
        "creators_unscored": int((~scored_rows).sum()),
        "goods": len(product_ids),
        "candidate_pairs": n_pairs,
        "assignments": len(rows),
        "creator_capacity": int(creator_cap.sum()),
        "product_capacity": int(product_cap.sum()),
        "expected_value": total,
        "affinity": float(aff[rows, cols].sum()),
        "solve_seconds": seconds,
    }
    if exact and cfg.measure_greedy_gap:
        greedy = solver.solve_greedy(values, creator_cap, product_cap)
        stats["greedy_value"] = solver.total_value(values, greedy)
    random_aff, random_value = [], []
    for _ in range(cfg.random_repeats):
        rand = solver.random_feasible(values, creator_cap, product_cap, rng)
        random_aff.append(aff[rand].sum())
        random_value.append(values[rand].sum())
    stats["random_affinity"] = float(np.mean(random_aff))
    stats["random_expected_value"] = float(np.mean(random_value))
    log.debug("broker %d: %s", broker_id, stats)
    return BrokerResult(
        broker_id, creator_ids, product_ids, rows, cols, values[rows, cols], aff[rows, cols], stats
    )


def match_brokers(
    data_dir: Path,
    scorer: Scorer,
    settings: Settings,
    tiers: pd.DataFrame | None = None,
    progress: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, float]]:
    """Every broker of `data_dir`: (matches, per-broker summary, metrics)."""
    start = time.perf_counter()
    data_dir = Path(data_dir)
    cfg = settings.brokers
    catalog = load_catalog(data_dir, settings, tiers)
    team = rosters(data_dir)
    roster = team.creators
    goods = broker_goods(data_dir)
    rng = np.random.default_rng(cfg.seed)
    normaliser_ids = None
    if cfg.affinity_normalisation == "catalog":
        normaliser_ids = catalog.normaliser_sample(cfg.normaliser_sample, rng)
    rel = ev.relative_followers(roster["followers"].to_numpy(np.float64), team.median_followers)
    roster = roster.assign(rel=rel)
    by_broker = dict(tuple(roster.groupby("broker_id", sort=True)))
    goods_by_broker = dict(tuple(goods.groupby("broker_id", sort=True)))

    results: list[BrokerResult] = []
    skipped = {"goods_not_in_catalog": 0, "goods_excluded_flagged": 0, "goods_excluded_tier": 0}
    for broker_id in progress_bar(broker_ids(data_dir, roster, goods), progress, desc="brokers"):
        members = by_broker.get(broker_id, roster.iloc[:0])
        creator_ids = members["creator_id"].to_numpy(np.int64)
        product_ids = goods_by_broker.get(broker_id, goods.iloc[:0])["product_id"].to_numpy(
            np.int64
        )
        if len(product_ids) == 0:
            results.append(_empty(int(broker_id), "no goods recruited", creators=len(creator_ids)))
            continue
        eligible, counts = catalog.eligible(int(broker_id), product_ids)
        for key, n in counts.items():
            skipped[key] += n
        pos = catalog.positions(product_ids[eligible])
        result = match_broker(
            int(broker_id),
            creator_ids,
            members["rel"].to_numpy(),
            product_ids[eligible],
            catalog.value[pos],
            scorer,
            cfg,
            rng,
            normaliser_ids,
            len(catalog),
        )
        result.stats["goods_recruited"] = len(product_ids)
        results.append(result)

    matches = _matches_frame(results)
    summary = pd.DataFrame([{"broker_id": r.broker_id, **r.stats} for r in results])
    metrics = _metrics(results, skipped)
    metrics["seconds"] = time.perf_counter() - start
    return matches, summary, metrics


def _matches_frame(results: list[BrokerResult]) -> pd.DataFrame:
    parts = [r for r in results if len(r.rows)]
    if not parts:
        return pd.DataFrame(
            {
                "broker_id": pd.Series([], dtype="int64"),
                "creator_id": pd.Series([], dtype="int64"),
                "product_id": pd.Series([], dtype="int64"),
                "expected_value": pd.Series([], dtype="float64"),
                "affinity": pd.Series([], dtype="float64"),
                "rank": pd.Series([], dtype="int64"),
            }
        )
    df = pd.DataFrame(
        {
            "broker_id": np.concatenate(
                [np.full(len(r.rows), r.broker_id, np.int64) for r in parts]
            ),
            "creator_id": np.concatenate([r.creator_ids[r.rows] for r in parts]),
            "product_id": np.concatenate([r.product_ids[r.cols] for r in parts]),
            "expected_value": np.concatenate([r.value for r in parts]),
            "affinity": np.concatenate([r.affinity for r in parts]),
        }
    )
    df = df.sort_values(
        ["broker_id", "creator_id", "expected_value", "product_id"],
        ascending=[True, True, False, True],
        ignore_index=True,
    )
    df["rank"] = df.groupby(["broker_id", "creator_id"]).cumcount().astype(np.int64) + 1
    return df


def _ratio(a: float, b: float) -> float:
    return float(a / b) if b > 0 else float("nan")


def _metrics(results: list[BrokerResult], skipped: dict[str, int]) -> dict[str, float]:
    s = pd.DataFrame([r.stats for r in results])
    get = lambda col: s[col].fillna(0).sum() if col in s else 0.0  # noqa: E731
    exact = s[s["solver"] == "exact"] if len(s) else s
    greedy_gap = greedy_gap_max = float("nan")
    if "greedy_value" in s and len(exact) and exact["expected_value"].sum() > 0:
        greedy_gap = 1.0 - exact["greedy_value"].sum() / exact["expected_value"].sum()
        per = 1.0 - exact["greedy_value"] / exact["expected_value"].where(
            exact["expected_value"] > 0
        )
        greedy_gap_max = float(per.max())
    metrics = {
        "brokers": float(len(results)),
        "brokers_matched": float((s["assignments"].fillna(0) > 0).sum())
        if "assignments" in s
        else 0.0,
        "brokers_empty": float((s["solver"] == "none").sum()) if len(s) else 0.0,
        "brokers_exact": float((s["solver"] == "exact").sum()) if len(s) else 0.0,
        "brokers_greedy": float((s["solver"] == "greedy").sum()) if len(s) else 0.0,
        "assignments": float(get("assignments")),
        "total_expected_value": float(get("expected_value")),
        "total_affinity": float(get("affinity")),
        "random_total_affinity": float(get("random_affinity")),
        "random_total_expected_value": float(get("random_expected_value")),
        "affinity_vs_random": _ratio(get("affinity"), get("random_affinity")),
        "expected_value_vs_random": _ratio(get("expected_value"), get("random_expected_value")),
        "creator_capacity_use": _ratio(get("assignments"), get("creator_capacity")),
        "product_capacity_use": _ratio(get("assignments"), get("product_capacity")),
        "greedy_gap": float(greedy_gap),
        "greedy_gap_max": float(greedy_gap_max),
        "creators_unscored": float(get("creators_unscored")),
        "solve_seconds": float(get("solve_seconds")),
    }
    metrics.update({k: float(v) for k, v in skipped.items()})
    return metrics


def _external_ids(matches: pd.DataFrame, data_dir: Path) -> pd.DataFrame:
    """Imported data: creator and product IDs back to the user's own."""
    maps = load_id_maps(data_dir)
    out = {}
    if "creator" in maps:
        out["creator_id"] = maps["creator"].to_external(matches["creator_id"].to_numpy())
    if "product" in maps:
        out["product_id"] = maps["product"].to_external(matches["product_id"].to_numpy())
    return matches.assign(**out) if out else matches


def run(
    cfg: Settings,
    data_dir: Path,
    model: Path | str | Scorer,
    out: Path,
    tiers: Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, float]:
    """The job: match every broker of `data_dir` and write `out` atomically."""
    data_dir, out = Path(data_dir), Path(out)
    scorer = model if callable(model) else load_scorer(model, data_dir)
    tier_frame = read_tiers(tiers)
    with atomic_output_dir(out, overwrite=overwrite) as staging:
        matches, summary, metrics = match_brokers(data_dir, scorer, cfg, tier_frame, progress)
        matches = _external_ids(matches, data_dir)
        matches.to_parquet(staging / MATCHES, index=False)
        summary.to_parquet(staging / SUMMARY, index=False)
        write_json(
            {"brokers": cfg.brokers.model_dump(), "policy": cfg.policy.model_dump()},
            staging / "config.json",
        )
        write_json(metrics, staging / METRICS)
    log.info(
        "match-brokers: %d assignments over %d brokers, affinity %.2fx random, %.1f s -> %s",
        metrics["assignments"],
        metrics["brokers"],
        metrics["affinity_vs_random"],
        metrics["seconds"],
        out,
    )
    return metrics
