"""`haowu recommend`: the batch job writing top-k goods for every creator.

A shard function (`recommend_shard`: creator positions -> rows) and a driver (`run`:
chunks of creators -> `OUT/part-NNNNN.parquet`, then `OUT/_SUCCESS` last). Search is
exact (a matrix product and top-k per chunk); goods a creator already promoted (any
interaction in DATA) are excluded. Outputs carry the user's own IDs when DATA holds
ID maps from `haowu import`. The shard/driver split is where FAISS, the business
policy, resume and Ray plug in later.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from tqdm.auto import tqdm

from features.errors import HaowuError
from features.idmap import load_id_maps
from features.io import atomic_output_dir, iter_table, write_json, write_part
from features.matching_data import IdIndex
from models.recommender import Recommender

log = logging.getLogger(__name__)

SUCCESS = "_SUCCESS"


@dataclass
class MatchingArtifacts:
    """What a matching run folder serves: the recommender and its position <-> ID maps."""

    model: Recommender
    creators: IdIndex
    products: IdIndex
    product_info: pd.DataFrame | None  # by product position: category_l1, tier when known
    path: Path


def load_matching_run(model: Path | str) -> MatchingArtifacts:
    """Load `RUN_DIR` (or `RUN_DIR/model`) written by `haowu train-matching`."""
    if str(model).startswith("models:/"):
        raise HaowuError(
            "registry URIs (models:/NAME@ALIAS) are not supported yet; pass the run folder"
        )
    folder = Path(model)
    if (folder / "model").is_dir():
        folder = folder / "model"
    if not (folder / "creator_ids.npy").is_file():
        raise HaowuError(f"{model} is not a train-matching run folder (no model/creator_ids.npy)")
    info_path = folder / "products.parquet"
    info = pd.read_parquet(info_path) if info_path.is_file() else None
    return MatchingArtifacts(
        Recommender.load(folder),
        IdIndex(np.load(folder / "creator_ids.npy")),
        IdIndex(np.load(folder / "product_ids.npy")),
        info,
        folder,
    )


def promoted_matrix(data_dir: Path, creators: IdIndex, products: IdIndex) -> sp.csr_matrix:
    """Creator x product matrix of every pair in DATA's interactions (streamed); IDs the
    model does not know are ignored."""
    rows, cols = [], []
    for df in iter_table(data_dir, "interactions", columns=["creator_id", "product_id"]):
        c = creators.positions(df["creator_id"].to_numpy(np.int64), strict=False)
        p = products.positions(df["product_id"].to_numpy(np.int64), strict=False)
        keep = (c >= 0) & (p >= 0)
        rows.append(c[keep])
        cols.append(p[keep])
    r = np.concatenate(rows) if rows else np.empty(0, np.int64)
    c = np.concatenate(cols) if cols else np.empty(0, np.int64)
    matrix = sp.csr_matrix(
        (np.ones(len(r), np.float32), (r, c)), shape=(len(creators), len(products))
    )
    matrix.sum_duplicates()
    return matrix


def recommend_shard(
    art: MatchingArtifacts, creators: np.ndarray, k: int, promoted: sp.csr_matrix | None
) -> pd.DataFrame:
    """Top-k rows (creator_id, rank, product_id, score, [tier, category_l1]) for positions."""
    exclude = promoted[creators] if promoted is not None else None
    positions, scores = art.model.recommend(creators, k, exclude=exclude)
    valid = np.isfinite(scores)  # fewer than k eligible goods: drop the padding
    rank = np.broadcast_to(np.arange(1, k + 1, dtype=np.int64), positions.shape)
    row_creator = np.broadcast_to(art.creators.ids[creators][:, None], positions.shape)
    picked = positions[valid]
    out = pd.DataFrame(
        {
            "creator_id": row_creator[valid],
            "rank": rank[valid],
            "product_id": art.products.ids[picked],
            "score": scores[valid].astype(np.float32),
        }
    )
    if art.product_info is not None:
        for column in ("tier", "category_l1"):
            if column in art.product_info.columns:
                out[column] = art.product_info[column].to_numpy()[picked]
    return out


def _to_external(df: pd.DataFrame, maps: dict[str, Any]) -> pd.DataFrame:
    """Internal IDs -> the user's IDs, where `haowu import` kept maps."""
    for name in ("creator", "product"):
        if name in maps:
            df[f"{name}_id"] = maps[name].to_external(df[f"{name}_id"].to_numpy())
    return df


def run(
    data_dir: Path,
    model: Path | str,
    out: Path,
    k: int = 50,
    direction: str = "creator",
    exact: bool = True,
    overwrite: bool = False,
    chunk: int = 4096,
    progress: bool = True,
) -> dict[str, Any]:
    """Write top-k goods for every creator the model knows; returns the manifest."""
    if direction != "creator":
        raise HaowuError(
            f"--direction {direction}: not yet (product-direction lists come with the index issue)"
        )
    if k < 1:
        raise HaowuError(f"--k must be >= 1, got {k}")
    if not exact:
        log.warning("approximate search is not available yet; using exact search")
    started = time.perf_counter()
    art = load_matching_run(model)
    promoted = promoted_matrix(Path(data_dir), art.creators, art.products)
    # the maps saved with the model win; else DATA's (a model trained before maps were kept)
    maps = load_id_maps(art.path) or load_id_maps(data_dir)
    creators = np.arange(len(art.creators))
    rows = 0
    with atomic_output_dir(Path(out), overwrite) as staging:
        starts = range(0, len(creators), chunk)
        for part, start in enumerate(tqdm(starts, desc="recommend", disable=not progress)):
            df = recommend_shard(art, creators[start : start + chunk], k, promoted)
            write_part(_to_external(df, maps), staging, part)
            rows += len(df)
        manifest = {
            "model": str(art.path.resolve()),
            "model_kind": art.model.kind,
            "direction": direction,
            "k": k,
            "exact": True,
            "creators": int(len(creators)),
            "rows": int(rows),
            "parts": len(starts),
            "excluded_promoted_pairs": int(promoted.nnz),
            "seconds": round(time.perf_counter() - started, 2),
        }
        write_json(manifest, staging / SUCCESS)  # last: its presence means complete
    return manifest
