"""Creators with new interactions, embedded again from their updated history.

The served creator tower reads each creator's history (models/matching/history_embed.py);
a refresh feeds it the creator's goods in DIR/data after the merge, oldest first, so the
creators who just promoted something move towards it without retraining. Their vectors
are kept beside the saved indexes (`MODEL/index/creators.refreshed.npz`, every creator a
refresh has moved so far), where the batch job and the service read them back
(models/retrieval/run.py), and the creators index is patched with them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from features.io import iter_table
from features.matching_data import IdIndex, creator_frame
from models.artifacts import open_matching_run
from models.matching.history_embed import embed_with_history
from models.retrieval.run import RetrievalRun

log = logging.getLogger(__name__)

INTERACTION_COLUMNS = ["creator_id", "product_id", "ts"]


@dataclass
class Reembedded:
    """Creators moved by this refresh and every creator moved so far (the overlay)."""

    moved: np.ndarray  # IDs moved now
    shift: float  # mean cosine between each moved creator's vector before and after
    overlay_ids: np.ndarray
    overlay_vectors: np.ndarray

    def describe(self) -> dict[str, float | int]:
        return {
            "creators_reembedded": len(self.moved),
            "mean_cosine_to_before": round(self.shift, 4),
            "creators_carrying_refreshed_vectors": len(self.overlay_ids),
        }


def _histories(data_dir: Path, creators: np.ndarray, products: IdIndex) -> list[np.ndarray]:
    """Each creator's goods (model product positions, -1 unknown), oldest first, each
    once at its first time (as training reads the pairs)."""
    frames = [
        batch[batch["creator_id"].isin(creators)]
        for batch in iter_table(data_dir, "interactions", columns=INTERACTION_COLUMNS)
    ]
    frame = pd.concat(frames, ignore_index=True).sort_values(["creator_id", "ts"], kind="stable")
    frame = frame.drop_duplicates(["creator_id", "product_id"])  # keeps the first time
    goods = products.positions(frame["product_id"].to_numpy(np.int64), strict=False)
    owner = frame["creator_id"].to_numpy(np.int64)  # sorted
    lo, hi = np.searchsorted(owner, creators, "left"), np.searchsorted(owner, creators, "right")
    return [goods[a:b] for a, b in zip(lo, hi, strict=True)]


def reembed(
    run: RetrievalRun, model_folder: Path, data_dir: Path, busy: np.ndarray
) -> Reembedded | None:
    """Move the model's creators among `busy` to their updated-history vectors (in `run`);
    None when the model's creator tower reads no history."""
    side = run.creators
    pos = side.ids.positions(busy, strict=False)
    pos = pos[(pos >= 0) & ~side.new[np.maximum(pos, 0)]]
    art = open_matching_run(model_folder)
    ids = side.ids.ids[pos]
    vectors = None
    if len(ids):
        model_pos = art.creators.positions(ids)
        frame = creator_frame(data_dir, IdIndex(ids))
        vectors = embed_with_history(
            art.model, model_pos, frame, _histories(data_dir, ids, art.products)
        )
    if vectors is None:
        return None
    before = np.asarray(side.vectors[pos], np.float32)
    cos = (before * vectors).sum(1) / (
        np.linalg.norm(before, axis=1) * np.linalg.norm(vectors, axis=1) + 1e-12
    )
    side.vectors[pos] = vectors
    updated = side.updated if side.updated is not None else np.zeros(len(side), bool)
    updated[pos] = True
    side.updated = updated
    overlay = np.flatnonzero(updated)
    log.info("re-embedded %d creators from their updated history", len(ids))
    return Reembedded(
        ids, float(cos.mean()), side.ids.ids[overlay], np.asarray(side.vectors[overlay], np.float32)
    )


def save_overlay(result: Reembedded, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        np.savez(handle, ids=result.overlay_ids, vectors=result.overlay_vectors)
