"""Everything one served model needs, loaded together: the unit the service swaps.

A `Bundle` is built in full before the service sees it (serving/online/state.py swaps the
reference), so a request always reads one consistent model. Retrieval is the batch
job's own `RetrievalRun` (models/retrieval/run.py) over the same data, model and config:
the same sides (new creators and goods embedded from their features, delisted goods
out), the same catalog and policy, and the same saved indexes (`MODEL/index/*`, built
and tuned on first use), so a live answer is the batch job's answer. Around it: the
towers for newcomers sent in a request, the goods each creator already promoted (both
ways), the tier table, the batch lists (by position) and the broker matches.

Batch lists belong to the model that wrote them: their `_SUCCESS` manifest names its
`model_digest` (models/artifacts.py). They are served only when it is the served
model's digest; otherwise (a retrain or a new champion whose lists are not written
yet) the service answers live, logs a warning naming both digests, and says so in
/readyz (`lists`) and /metrics (`haowu_batch_lists_in_use`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd
import scipy.sparse as sp

from features.errors import HaowuError
from features.idmap import IdMap
from features.io import has_table, read_table, table_columns, table_path
from features.settings import Settings
from models.artifacts import BROKER_SUMMARY as SUMMARY
from models.artifacts import (
    MATCHES,
    SUCCESS,
    TIERS,
    ModelInfo,
    model_digest,
    open_tier_run,
    resolve_matching,
)
from models.matching.cold_start import TowerEmbedder, load_embedder
from models.retrieval.catalog import IdLookup, ProductCatalog
from models.retrieval.directions import GoodsRetriever
from models.retrieval.index import EmbeddingIndex
from models.retrieval.index_kinds import set_threads
from models.retrieval.run import RetrievalRun, Side
from serving.online.batch_lists import ListStore, read_manifest
from serving.online.broker_matches import BrokerMatchStore
from serving.online.sources import ServeSources
from serving.online.tier_lookup import TierTable

log = logging.getLogger(__name__)

T = TypeVar("T")
MERCHANT_FEATURES = ("is_official_brand", "brand_awareness")


class ModelLoadError(HaowuError):
    """The sources cannot be served (a reload that raises it keeps the old model)."""


@dataclass
class Bundle:
    """One loaded model and everything served with it (read-only once built)."""

    info: ModelInfo
    sources: ServeSources
    creators: Side  # IDs by position, vectors (scaled by 1 / temperature), listed
    products: Side
    creator_map: IdMap | None  # the user's own IDs (imported data)
    product_map: IdMap | None
    catalog: ProductCatalog  # by product position
    retriever: GoodsRetriever  # product index + catalog + policy
    creator_index: EmbeddingIndex
    promoted: sp.csr_matrix  # creators x products: goods already promoted
    promoted_by_product: sp.csr_matrix  # products x creators
    embedder: TowerEmbedder | None  # towers for newcomers sent in a request
    tiers: TierTable | None
    lists: ListStore | None  # creator -> goods, by positions
    product_lists: ListStore | None  # product -> creators
    brokers: BrokerMatchStore | None
    merchants: pd.DataFrame | None  # merchant_id -> features a new product inherits
    seconds: dict[str, float]
    part_keys: dict[str, tuple] = dataclasses.field(default_factory=dict)  # see `_Parts`
    model_digest: str | None = None  # the served model's content (models/artifacts.py)
    # per direction: "batch", or "live (why)" when its batch lists are not served
    lists_status: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def selected_tier(self) -> int:
        return self.retriever.cfg.selected_tier

    def memory(self) -> dict[str, int]:
        """Bytes held per part; `*_mapped` parts are memory-mapped files (page cache)."""

        def csr(m: sp.csr_matrix) -> int:
            return int(m.data.nbytes + m.indices.nbytes + m.indptr.nbytes)

        def vectors(side: Side) -> int:  # memory-mapped: file pages, read on demand
            return 0 if isinstance(side.vectors, np.memmap) else side.vectors.nbytes

        catalog = self.catalog
        sizes = {
            "creator_vectors": vectors(self.creators),
            "product_vectors": vectors(self.products),
            "creator_vectors_mapped": self.creators.vectors.nbytes - vectors(self.creators),
            "product_vectors_mapped": self.products.vectors.nbytes - vectors(self.products),
            "product_index": self.retriever.index.nbytes,
            "creator_index": self.creator_index.nbytes,
            "catalog": sum(
                getattr(catalog, name).nbytes
                for name in ("product_ids", "tier", "flagged", "category_l1", "category_l2")
                + ("category_l3", "price_band", "commission")
            ),
            "id_positions": self.creators.ids.ids.nbytes + self.products.ids.ids.nbytes,
            "promoted": csr(self.promoted),
            "promoted_by_product": csr(self.promoted_by_product),
        }
        for name in ("tiers", "lists", "product_lists"):
            part = getattr(self, name)
            if part is not None:
                sizes[name] = part.nbytes
        return sizes


def _to_positions(side: Side, id_map: IdMap | None) -> Callable[[np.ndarray], np.ndarray]:
    """The user's IDs (as the batch job wrote them) -> positions of listed members, -1 else.

    A dense ID range is one gather per ID (`IdLookup`), not a binary search: the lists
    hold tens of millions of IDs.
    """
    lookup = IdLookup(side.ids.ids)

    def convert(ids: np.ndarray) -> np.ndarray:
        internal = ids if id_map is None else id_map.to_internal(ids, missing="minus_one")
        internal = np.asarray(internal, dtype=np.int64)
        pos, found = lookup(internal)
        found &= internal >= 0
        found[found] = side.listed[pos[found]]
        return np.where(found, pos, -1)

    return convert


def _mapped(side: Side, folder: Path, name: str) -> Side:
    """The side with its vectors memory-mapped from the model's embeddings file when they
    are exactly that file (no member embedded at load): the index holds its own copy, so
    the service needs only the rows it queries, and the kernel may drop the rest."""
    path = folder / f"{name}_embeddings.npy"
    refreshed = side.updated is not None and side.updated.any()  # not the file's rows
    if side.new.any() or refreshed or not path.is_file():
        return side
    mapped = np.load(path, mmap_mode="r")
    if mapped.shape != side.vectors.shape or mapped.dtype != side.vectors.dtype:
        return side
    return dataclasses.replace(side, vectors=mapped)


def _merchants(data_dir: Path) -> pd.DataFrame | None:
    if not has_table(data_dir, "merchants"):
        return None
    present = set(table_columns(data_dir, "merchants"))
    cols = [c for c in MERCHANT_FEATURES if c in present]
    if "merchant_id" not in present or not cols:
        return None
    frame = read_table(data_dir, "merchants", columns=["merchant_id", *cols])
    return frame.drop_duplicates("merchant_id").set_index("merchant_id")


def _stat(*paths: Path) -> tuple:
    """What a file-backed part was read from: paths, sizes, modification times."""
    out = []
    for path in paths:
        st = path.stat() if path.exists() else None
        out.append((str(path.resolve()), st and st.st_size, st and st.st_mtime_ns))
    return tuple(out)


def _side_key(side: Side) -> str:
    """Identity of a side's positions (list rows are stored by position)."""
    digest = hashlib.blake2b(np.ascontiguousarray(side.ids.ids).tobytes(), digest_size=16)
    digest.update(np.packbits(side.listed).tobytes())
    return digest.hexdigest()


class _Parts:
    """File-backed parts reused from the bundle being replaced when they were read from
    the same unchanged files (and, for lists, the same positions): a reload after a new
    champion only re-reads what changed, and reused parts are shared, not held twice."""

    def __init__(self, previous: Bundle | None) -> None:
        self.previous, self.keys, self.reused = previous, {}, []  # type: ignore[var-annotated]

    def get(self, name: str, key: tuple | None, load: Callable[[], T]) -> T | None:
        if key is None:
            return None
        self.keys[name] = key
        old = self.previous
        if old is not None and old.part_keys.get(name) == key and getattr(old, name) is not None:
            self.reused.append(name)
            return getattr(old, name)
        return load()


def load_bundle(sources: ServeSources, cfg: Settings, previous: Bundle | None = None) -> Bundle:
    """Resolve the model (a registry alias names today's champion) and load everything;
    unchanged file-backed parts of `previous` (the bundle being replaced) are reused."""
    started = time.perf_counter()
    seconds: dict[str, float] = {}

    def lap(name: str, t0: float) -> float:
        now = time.perf_counter()
        seconds[name] = round(now - t0, 3)
        return now

    t = time.perf_counter()
    resolved = resolve_matching(sources.model, cfg.serve.model_cache_dir)
    data_dir = sources.data or resolved.data_dir
    tier_ref = sources.tiers or resolved.tier_dir  # a folder or models:/haowu-tier@ALIAS
    tier_dir = open_tier_run(tier_ref).root if tier_ref is not None else None
    if data_dir is None:
        raise ModelLoadError(
            f"{sources.model}: no data folder (give --data, or --from a pipeline folder)"
        )
    run = RetrievalRun.load(
        data_dir, resolved.info.folder, tier_dir, cfg.index, cfg.policy, exact=False
    )
    t = lap("retrieval_run", t)
    folder = resolved.info.folder
    retriever = run.retriever  # builds or loads MODEL/index/products.*
    creator_index = run.index("creators")
    set_threads(cfg.serve.threads)
    t = lap("indexes", t)
    creators, products = (
        _mapped(run.creators, folder, "creator"),
        _mapped(run.products, folder, "product"),
    )
    promoted = run.promoted.astype(bool)
    embedder = load_embedder(resolved.info.folder)
    parts = _Parts(previous)
    tiers = parts.get(
        "tiers",
        _stat(tier_dir / TIERS) if tier_dir else None,
        partial(TierTable.load, tier_dir),
    )
    t = lap("towers_tiers", t)
    creator_pos = _to_positions(creators, run.maps.get("creator"))
    product_pos = _to_positions(products, run.maps.get("product"))
    sides = (_side_key(creators), _side_key(products))
    digest = model_digest(folder)
    lists_status: dict[str, str] = {}

    def lists_key(direction: str, lists_dir: Path | None, use: bool) -> tuple | None:
        """The part key of these lists, or None (answer live) when there are none, they
        are turned off, or another model wrote them."""
        if lists_dir is None or not use:
            lists_status[direction] = "live (no batch lists)" if use else "live (turned off)"
            return None
        manifest = read_manifest(lists_dir)
        if not manifest:
            lists_status[direction] = f"live (no complete batch lists in {lists_dir})"
            log.warning("%s holds no complete batch lists (%s): answering live", lists_dir, SUCCESS)
            return None
        written = manifest.get("model_digest")
        if written != digest:
            lists_status[direction] = (
                f"live (lists were written by model {str(written)[:12]}, "
                f"serving model {digest[:12]})"
            )
            log.warning(
                "%s lists in %s were written by model %s, not the served model %s: "
                "answering live until lists of this model are written",
                direction, lists_dir, written or "unknown (no model_digest)", digest,
            )  # fmt: skip
            return None
        lists_status[direction] = "batch"
        return (*_stat(lists_dir / SUCCESS), *sides, digest)

    lists = parts.get(
        "lists",
        lists_key("creator", sources.lists, cfg.serve.use_batch_lists),
        partial(ListStore.load, sources.lists, creator_pos, product_pos, "creator"),
    )
    product_lists = parts.get(
        "product_lists",
        lists_key("product", sources.product_lists, cfg.serve.use_product_lists),
        partial(ListStore.load, sources.product_lists, product_pos, creator_pos, "product"),
    )
    brokers = parts.get(
        "brokers",
        _stat(sources.brokers / MATCHES, sources.brokers / SUMMARY) if sources.brokers else None,
        partial(BrokerMatchStore.load, sources.brokers),
    )
    merchants_file = table_path(data_dir, "merchants") or data_dir
    merchants = parts.get("merchants", _stat(merchants_file), partial(_merchants, data_dir))
    lap("lists_brokers", t)
    if parts.reused:
        log.info("reused unchanged %s", ", ".join(parts.reused))

    info = resolved.info
    info.load_seconds = round(time.perf_counter() - started, 3)
    info.loaded_at = time.time()
    log.info("loaded %s from %s in %.1fs %s", info.label, info.folder, info.load_seconds, seconds)
    return Bundle(
        info=info,
        sources=sources.with_overrides(data=data_dir, tiers=tier_dir),
        creators=creators,
        products=products,
        creator_map=run.maps.get("creator"),
        product_map=run.maps.get("product"),
        catalog=run.catalog,
        retriever=retriever,
        creator_index=creator_index,
        promoted=promoted,
        promoted_by_product=promoted.T.tocsr(),
        embedder=embedder,
        tiers=tiers,
        lists=lists,
        product_lists=product_lists,
        brokers=brokers,
        merchants=merchants,
        seconds=seconds,
        part_keys=parts.keys,
        model_digest=digest,
        lists_status=lists_status,
    )
