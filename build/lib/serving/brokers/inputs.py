"""What broker matchmaking reads: rosters, recruited goods, and per-good facts
(exclusions and the creator-independent factor of the expected value)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from features.errors import ContractError
from features.io import has_table, read_table, table_columns
from features.product_facts import product_facts
from features.settings import Settings
from models.brokers import expected_value as ev
from models.retrieval.catalog import ProductCatalog
from models.retrieval.policy import Policy

log = logging.getLogger(__name__)

MAX_SHOWN = 5


def _columns(data_dir: Path, table: str, wanted: list[str]) -> list[str]:
    present = set(table_columns(data_dir, table))
    return [c for c in wanted if c in present]


def _require(data_dir: Path, table: str, columns: list[str], why: str) -> pd.DataFrame:
    if not has_table(data_dir, table):
        raise ContractError(
            table, f"table not found: {why}", path=str(Path(data_dir) / f"{table}.parquet")
        )
    missing = [c for c in columns if c not in table_columns(data_dir, table)]
    if missing:
        raise ContractError(table, f"missing column(s) {missing}: {why}", column=missing[0])
    return read_table(data_dir, table, columns=columns)


@dataclass
class Roster:
    """Rostered creators (creator_id, broker_id, followers) and the median followers of
    every creator, the unit of `reach`."""

    creators: pd.DataFrame
    median_followers: float


def rosters(data_dir: Path) -> Roster:
    """Creators with a broker_id; followers NaN when the table has none."""
    why = "match-brokers needs each creator's broker_id"
    if not has_table(data_dir, "creators"):
        raise ContractError("creators", f"table not found: {why}")
    cols = ["creator_id", "broker_id"] + _columns(data_dir, "creators", ["followers"])
    df = _require(data_dir, "creators", cols, why)
    followers = (
        df["followers"].to_numpy(np.float64) if "followers" in df else np.full(len(df), np.nan)
    )
    seen = np.isfinite(followers)
    median = float(np.median(followers[seen])) if seen.any() else 1.0
    df = df.assign(followers=followers)
    df = df[df["broker_id"].notna()].astype({"broker_id": "int64"})
    df = df.drop_duplicates("creator_id").sort_values(
        ["broker_id", "creator_id"], ignore_index=True
    )
    return Roster(df, median)


def broker_goods(data_dir: Path) -> pd.DataFrame:
    """broker_products (broker_id, product_id), duplicates dropped."""
    df = _require(
        data_dir,
        "broker_products",
        ["broker_id", "product_id"],
        "match-brokers needs the goods each broker recruited",
    )
    return df.drop_duplicates().sort_values(["broker_id", "product_id"], ignore_index=True)


def broker_ids(data_dir: Path, roster: pd.DataFrame, goods: pd.DataFrame) -> np.ndarray:
    """Every broker: the brokers table, plus any broker a roster or the goods refer to."""
    ids = [roster["broker_id"].to_numpy(np.int64), goods["broker_id"].to_numpy(np.int64)]
    if has_table(data_dir, "brokers"):
        listed = read_table(data_dir, "brokers", columns=["broker_id"])["broker_id"].to_numpy(
            np.int64
        )
        stray = np.setdiff1d(np.concatenate(ids), listed)
        if len(stray):
            log.warning(
                "%d broker(s) not in the brokers table, matched anyway, e.g. %s",
                len(stray),
                stray[:MAX_SHOWN].tolist(),
            )
        ids.append(listed)
    return np.unique(np.concatenate(ids))


@dataclass
class Catalog:
    """Per product (sorted product_id): its EV factor and why it may not be handed out."""

    product_id: np.ndarray  # (n,) sorted int64
    value: np.ndarray  # (n,) conversion ** w * (price * commission) ** w
    allowed: np.ndarray  # (n,) bool: the policy lets it be recommended
    flagged: np.ndarray  # (n,) bool: excluded for its flagged merchant

    def __len__(self) -> int:
        return len(self.product_id)

    def positions(self, ids: np.ndarray) -> np.ndarray:
        """Product IDs -> positions, -1 for IDs not in the catalog."""
        ids = np.asarray(ids, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self.product_id, ids), max(len(self) - 1, 0))
        found = self.product_id[pos] == ids if len(self) else np.zeros(len(ids), bool)
        return np.where(found, pos, -1)

    def eligible(
        self, broker_id: int, product_ids: np.ndarray
    ) -> tuple[np.ndarray, dict[str, int]]:
        """Which of a broker's goods may be assigned, and how many each rule removed."""
        pos = self.positions(product_ids)
        known = pos >= 0
        if not known.all():
            log.warning(
                "broker %d: %d good(s) not in the products table, skipped, e.g. %s",
                broker_id,
                int((~known).sum()),
                product_ids[~known][:MAX_SHOWN].tolist(),
            )
        safe = np.where(known, pos, 0)
        allowed = known & self.allowed[safe]
        flagged = known & self.flagged[safe]
        counts = {
            "goods_not_in_catalog": int((~known).sum()),
            "goods_excluded_flagged": int(flagged.sum()),
            "goods_excluded_tier": int((known & ~allowed & ~flagged).sum()),
        }
        return allowed, counts

    def normaliser_sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """A uniform sample of product IDs (all of them when the catalog is small)."""
        if n >= len(self):
            return self.product_id
        return np.sort(rng.choice(self.product_id, size=n, replace=False))


def _products(data_dir: Path, tiers: pd.DataFrame | None) -> pd.DataFrame:
    """products (+ merchants' flag, + tier), one row per product, sorted by product_id."""
    products = product_facts(data_dir, ["price", "commission_rate"])
    if products is None:
        _require(data_dir, "products", ["product_id"], "goods are valued from it")
    assert products is not None
    products = products.sort_values("product_id", ignore_index=True)
    if tiers is not None:
        tier = tiers.drop_duplicates("product_id").set_index("product_id")["tier"]
        products["tier"] = tier.reindex(products["product_id"]).to_numpy(
            np.float64, na_value=np.nan
        )
    return products


def _stats(data_dir: Path, product_ids: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Observed conversion rate and active promoters (NaN / 0 where unknown)."""
    n = len(product_ids)
    conversion, evidence = np.full(n, np.nan), np.zeros(n)
    if not has_table(data_dir, "product_stats"):
        return conversion, evidence
    wanted = ["product_id", "conversion_rate", "active_promoters_30d"]
    cols = _columns(data_dir, "product_stats", wanted)
    if "product_id" not in cols or len(cols) == 1:
        return conversion, evidence
    stats = read_table(data_dir, "product_stats", columns=cols).drop_duplicates("product_id")
    stats = stats.set_index("product_id").reindex(product_ids)
    if "conversion_rate" in stats:
        conversion = stats["conversion_rate"].to_numpy(np.float64, na_value=np.nan)
    if "active_promoters_30d" in stats:
        evidence = stats["active_promoters_30d"].to_numpy(np.float64, na_value=np.nan)
    return conversion, evidence


def load_catalog(data_dir: Path, cfg: Settings, tiers: pd.DataFrame | None = None) -> Catalog:
    """Every product's EV factor (models/brokers/expected_value.py) and the policy's verdict."""
    data_dir = Path(data_dir)
    products = _products(data_dir, tiers)
    policy_catalog = ProductCatalog.from_frame(products)
    allowed = Policy(cfg.policy).eligible(policy_catalog, None)
    flagged = policy_catalog.flagged & cfg.policy.exclude_flagged

    b = cfg.brokers
    tier = (
        products["tier"].to_numpy(np.float64)
        if "tier" in products
        else np.full(len(products), np.nan)
    )
    conversion, evidence = _stats(data_dir, products["product_id"])
    prior, overall = ev.tier_conversion_prior(conversion, tier)
    if not np.isfinite(conversion).any():
        overall = 1.0  # no stats at all: conversion drops out of the value
    conv = ev.tier_adjusted_conversion(
        conversion, evidence, tier, prior, overall, b.conversion_prior_strength
    )

    def column(name: str) -> np.ndarray:
        if name not in products:
            return np.full(len(products), np.nan)
        return products[name].to_numpy(np.float64, na_value=np.nan)

    value = ev.product_value(
        conv, column("price"), column("commission_rate"), b.conversion_weight, b.commission_weight
    )
    log.info(
        "catalog: %d products, %d excluded by the policy (%d of flagged merchants)",
        len(products),
        int((~allowed).sum()),
        int(flagged.sum()),
    )
    return Catalog(products["product_id"].to_numpy(np.int64), value, allowed, flagged)
