"""The saved FAISS indexes patched for a delta: new members added, excluded goods removed.

The goods index holds the candidate set: goods DATA lists that the policy may show
(not L0, no flagged merchant). A refresh adds what entered it (new goods, embedded from
their features by the saved towers; goods eligible again) and removes what left it
(goods of a newly flagged merchant, goods tiered L0 now, delisted goods) with the
index's own `add` / `remove`: no retraining, no rebuild. The creators index gains the
new creators. The coarse quantizer stays as trained, so two measured signals decide
whether the patched index is still fit to serve, and it is rebuilt (and tuned again)
only when one says no:

- recall probe: recall@k of the patched index against its own exact search on a fixed
  sample of query vectors (`refresh.probe_queries`, `refresh.seed`), below
  `index.target_recall`;
- list imbalance (IVF kinds): the largest inverted list over the mean list size, above
  `refresh.max_list_imbalance` (adds crowding a few cells slow every probe of them).

The updated index is saved under the name and stamp of the model's saved index, so the
batch job and the service load it as they load that one (models/retrieval/saved_index.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from features.settings import Settings
from models.retrieval.index import EmbeddingIndex, ann_recall
from models.retrieval.run import RetrievalRun, Side

log = logging.getLogger(__name__)


@dataclass
class IndexUpdate:
    """What happened to one index: members added and removed (by reason), the signals."""

    name: str
    index: EmbeddingIndex
    added: np.ndarray  # IDs
    removed: np.ndarray  # IDs
    removed_why: dict[str, int] = field(default_factory=dict)
    recall: float = 1.0
    imbalance: float = 0.0
    rebuilt: bool = False
    rebuild_reason: str | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.index.kind,
            "items": len(self.index),
            "added": len(self.added),
            "removed": len(self.removed),
            "removed_why": self.removed_why,
            "probe_recall": round(self.recall, 4),
            "list_imbalance": round(self.imbalance, 2),
            "action": "rebuilt" if self.rebuilt else "patched (add/remove, no rebuild)",
            "rebuild_reason": self.rebuild_reason,
        }


def _probe(index: EmbeddingIndex, queries: np.ndarray, k: int) -> float:
    """recall@k of the index's search against its exact search on `queries`."""
    if index.kind == "flat" or not len(queries):
        return 1.0
    k = min(k, len(index))
    found, _ = index.search(queries, k)
    truth, _ = index.exact(queries, k)
    return ann_recall(found, truth)


def _imbalance(index: EmbeddingIndex) -> float:
    sizes = index.list_sizes()
    return float(sizes.max() / max(sizes.mean(), 1e-9)) if len(sizes) else 0.0


def _sample(side: Side, n: int, seed: int) -> np.ndarray:
    """A fixed sample of one side's vectors (the probe's queries), the same every run."""
    rng = np.random.default_rng(seed)
    known = np.flatnonzero(side.listed)
    pick = np.sort(rng.choice(known, min(len(known), n), replace=False))
    return np.asarray(side.vectors[pick], np.float32)


def _check(update: IndexUpdate, side: Side, queries: np.ndarray, cfg: Settings) -> None:
    """Measure both signals; rebuild and tune the index when one is past its bound."""
    update.recall = _probe(update.index, queries, cfg.refresh.probe_k)
    update.imbalance = _imbalance(update.index)
    reasons = []
    if update.recall < cfg.index.target_recall:
        reasons.append(f"probe recall {update.recall:.4f} < target {cfg.index.target_recall}")
    if update.imbalance > cfg.refresh.max_list_imbalance:
        reasons.append(
            f"list imbalance {update.imbalance:.1f} > bound {cfg.refresh.max_list_imbalance}"
        )
    if not reasons:
        return
    old = update.index
    members = old.ids
    vectors = np.asarray(side.vectors[side.ids.positions(members)], np.float32)
    index = EmbeddingIndex.build_tuned(vectors, members, cfg.index, queries)
    index.params["source"] = old.params.get("source")  # loaded as the model's saved index
    update.index, update.rebuilt, update.rebuild_reason = index, True, "; ".join(reasons)
    update.recall, update.imbalance = _probe(index, queries, cfg.refresh.probe_k), _imbalance(index)
    log.info("rebuilt the %s index: %s", update.name, update.rebuild_reason)


def update_goods_index(run: RetrievalRun, cfg: Settings, saved: Path) -> IndexUpdate:
    """The saved goods index holding exactly the candidate set (see the module doc);
    `saved`: a staged view of MODEL/index (an index built there stays staged)."""
    side, policy = run.products, cfg.policy
    index = run.saved_index("products", saved)
    eligible = run.candidate_set()
    held = index.contains(side.ids.ids)
    add, remove = eligible & ~held, held & ~eligible
    why = {
        "delisted": int((remove & ~side.listed).sum()),
        "flagged_merchant": int((remove & side.listed & run.catalog.flagged).sum()),
        "excluded_tier": int(
            (remove & side.listed & np.isin(run.catalog.tier, policy.exclude_tiers)).sum()
        ),
    }
    if remove.any():
        index.remove(side.ids.ids[remove])
    if add.any():
        index.add(np.asarray(side.vectors[add], np.float32), side.ids.ids[add], cfg.index.add_batch)
    update = IndexUpdate("products", index, side.ids.ids[add], side.ids.ids[remove], why)
    _check(update, side, _sample(run.creators, cfg.refresh.probe_queries, cfg.refresh.seed), cfg)
    run.use_index("products", update.index)
    return update


def update_creators_index(
    run: RetrievalRun, cfg: Settings, saved: Path, moved: np.ndarray | None = None
) -> IndexUpdate:
    """The saved creators index with the new creators added and the `moved` ones
    (re-embedded from their history) replaced by their new vectors."""
    side = run.creators
    index = run.saved_index("creators", saved)
    replaced = np.empty(0, np.int64) if moved is None else moved[index.contains(moved)]
    if len(replaced):
        index.remove(replaced)  # added back below with the new vectors
    add = side.listed & ~index.contains(side.ids.ids)
    if add.any():
        index.add(np.asarray(side.vectors[add], np.float32), side.ids.ids[add], cfg.index.add_batch)
    update = IndexUpdate(
        "creators", index, side.ids.ids[add], replaced, {"reembedded": len(replaced)}
    )
    _check(update, side, _sample(run.products, cfg.refresh.probe_queries, cfg.refresh.seed), cfg)
    run.use_index("creators", update.index)
    return update


def save_index(update: IndexUpdate, folder: Path) -> None:
    """Write the updated index into `folder` (a staged MODEL/index)."""
    update.index.save(folder, update.name)
