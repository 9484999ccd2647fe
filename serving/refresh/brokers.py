"""Broker matches refreshed: every broker's goods assigned to its creators again, scored
by the refreshed vectors (new goods embedded from their features, busy creators from
their new history) under the refreshed tiers, so a flagged merchant's goods leave the
broker matches the same day they leave the lists. Matching every broker takes seconds
(5 s on `small`), so it is run whole rather than patched.
"""

from __future__ import annotations

from pathlib import Path

from features.settings import Settings
from models.retrieval.run import RetrievalRun
from serving.brokers.job import run as run_brokers
from serving.brokers.scorer import EmbeddingScorer


def rematch(
    cfg: Settings, run: RetrievalRun, data_dir: Path, tiers: Path, out: Path
) -> dict[str, float]:
    """`haowu match-brokers` over the refreshed data, tiers and vectors, into `out`."""
    scorer = EmbeddingScorer(
        run.creators.ids.ids, run.products.ids.ids, run.creators.vectors, run.products.vectors
    )
    return run_brokers(cfg, data_dir, scorer, out, tiers=tiers, overwrite=True, progress=False)
