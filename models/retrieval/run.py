"""Retrieval over a matching run as the batch job uses it: both sides, catalog, indexes.

`RetrievalRun.load` joins a `haowu train-matching` run with a data folder:

- sides: the model's creators and products, plus members of DATA's `creators` /
  `products` tables the model never saw (new creators, goods of new merchants), embedded
  from their features by the towers (models/matching/cold_start.py). A good the model knows that
  DATA's products table no longer lists is delisted: never recommended, never queried.
  Positions are sorted internal IDs (`IdIndex`); vectors are held by position.
- catalog: tier (the tier run's, else the model's `products.parquet`), flagged merchant,
  categories, price band and commission, by product position.
- promoted: creator x product pairs of DATA's interactions (goods already promoted).
- indexes: the model's own goods and creators are indexed once and saved beside the
  model, `MODEL/index/{products,creators}.*` (built and tuned on first use under a
  file lock; the service loads the same files). New items are then added and delisted
  ones removed in memory, without retraining. `exact=True` searches IndexFlatIP instead.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pandas as pd
import scipy.sparse as sp

from features.idmap import IdMap, load_id_maps
from features.io import has_table, iter_table, read_table, table_columns
from features.matching_data import IdIndex, creator_frame, product_frame
from features.product_facts import product_facts
from features.settings import IndexConfig, PolicyConfig
from models.artifacts import (
    INDEX_DIR,
    REFRESHED_CREATORS,
    ModelInfo,
    open_matching_run,
    read_tiers,
)
from models.retrieval.catalog import ProductCatalog, RequestFilters
from models.retrieval.directions import GoodsRetriever, creators_for_products
from models.retrieval.index import EmbeddingIndex, RetrievalError, UnknownIdError
from models.retrieval.index_kinds import set_threads
from models.retrieval.policy import RankedLists
from models.retrieval.saved_index import model_index

log = logging.getLogger(__name__)

CATALOG_COLUMNS = ("category_l1", "category_l2", "category_l3", "price", "commission_rate")


@dataclass
class Side:
    """One side (creators or products): IDs by position, their vectors, what is new."""

    ids: IdIndex  # sorted internal IDs; position = row
    vectors: np.ndarray  # (n, d) float32
    new: np.ndarray  # (n,) bool: unknown to the model, embedded from features
    listed: np.ndarray  # (n,) bool: has a vector and DATA lists it (queried, retrievable)
    updated: np.ndarray | None = None  # (n,) bool: vector re-embedded by `haowu refresh`

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def queries(self) -> np.ndarray:
        """Positions the batch job writes lists for."""
        return np.flatnonzero(self.listed)


def _side(
    model_ids: np.ndarray,
    model_vectors: np.ndarray,
    data_ids: np.ndarray | None,
    embed: Callable[[IdIndex], np.ndarray] | None,
    what: str,
    delist: bool,
) -> Side:
    """The model's members plus DATA's new ones; `delist`: members DATA lacks are out."""
    all_ids = model_ids if data_ids is None else np.union1d(model_ids, data_ids)
    index = IdIndex(np.asarray(all_ids, dtype=np.int64))
    at = index.positions(model_ids)
    vectors = np.zeros((len(index), model_vectors.shape[1]), np.float32)
    vectors[at] = model_vectors
    new = np.ones(len(index), bool)
    new[at] = False
    has_vector = ~new
    if new.any():
        if embed is None:
            log.warning(
                "%d new %s cannot be embedded (no towers in the run): left out",
                int(new.sum()),
                what,
            )
        else:
            vectors[new] = embed(IdIndex(index.ids[new]))
            has_vector[:] = True
            log.info("embedded %d new %s from their features", int(new.sum()), what)
    listed = has_vector
    if delist and data_ids is not None:
        listed = has_vector & np.isin(index.ids, data_ids)
    return Side(index, vectors, new, listed)


def _refreshed(side: Side, path: Path) -> Side:
    """The side with the vectors `haowu refresh` re-embedded (creators with new
    interactions, from their updated history: MODEL/index/REFRESHED_CREATORS)."""
    if not path.is_file():
        return side
    with np.load(path) as saved:
        ids, vectors = saved["ids"], saved["vectors"]
    pos = side.ids.positions(ids, strict=False)
    known = (pos >= 0) & ~side.new[np.maximum(pos, 0)]
    if vectors.shape[1:] != side.vectors.shape[1:]:
        raise RetrievalError(f"{path}: vectors of dim {vectors.shape[1:]}, not the model's")
    side.vectors[pos[known]] = vectors[known]
    updated = np.zeros(len(side), bool)
    updated[pos[known]] = True
    log.info("%d creators carry vectors re-embedded by a refresh (%s)", int(known.sum()), path)
    return Side(side.ids, side.vectors, side.new, side.listed, updated)


def _table_ids(data_dir: Path, table: str, key: str) -> np.ndarray | None:
    if not has_table(data_dir, table) or key not in table_columns(data_dir, table):
        return None
    return np.unique(read_table(data_dir, table, columns=[key])[key].to_numpy(np.int64))


def load_catalog(
    data_dir: Path, products: IdIndex, tiers: pd.DataFrame | None, info: pd.DataFrame | None
) -> ProductCatalog:
    """The policy's per-product facts by position (unknown values stay unknown)."""
    frame = pd.DataFrame({"product_id": products.ids})
    facts = product_facts(data_dir, CATALOG_COLUMNS)
    if facts is not None:
        frame = frame.merge(facts, on="product_id", how="left")
        if "flagged_low_quality" in frame:
            frame["flagged_low_quality"] = frame["flagged_low_quality"].fillna(False).astype(bool)
    elif info is not None:
        keep = [c for c in info.columns if c != "tier"]
        frame = frame.merge(info[keep], on="product_id", how="left")
    source = tiers if tiers is not None else info
    if source is not None and "tier" in source.columns:
        tier = source[["product_id", "tier"]].drop_duplicates("product_id")
        frame = frame.merge(tier, on="product_id", how="left")
    return ProductCatalog.from_frame(frame)


def promoted_pairs(data_dir: Path, creators: IdIndex, products: IdIndex) -> sp.csr_matrix:
    """Creators x products (positions) of every pair in DATA's interactions, streamed."""
    rows, cols = [], []
    if has_table(data_dir, "interactions"):
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
    matrix.data[:] = 1.0
    return matrix


def _searchable(
    base: EmbeddingIndex | None, side: Side, cfg: IndexConfig, exact: bool
) -> EmbeddingIndex:
    """`base` (the model's items) with new items added and delisted ones removed."""
    listed = side.queries
    if exact or base is None:
        return EmbeddingIndex.build(
            side.vectors[listed], side.ids.ids[listed], cfg.model_copy(update={"kind": "flat"})
        )
    # a saved index that `haowu refresh` updated already holds its new items and lacks its
    # removed ones: add and remove only what it does not reflect yet
    gone = ~side.listed & ~side.new
    gone[gone] = base.contains(side.ids.ids[gone])
    if gone.any():
        base.remove(side.ids.ids[gone])
    fresh = side.new & side.listed
    fresh[fresh] = ~base.contains(side.ids.ids[fresh])
    if fresh.any():
        base.add(side.vectors[fresh], side.ids.ids[fresh], cfg.add_batch)
    return base


# ------------------------------------------------------------------------ the run
@dataclass
class RetrievalRun:
    """Everything both directions of retrieval need, by position; see the module doc."""

    folder: Path  # RUN_DIR/model
    creators: Side
    products: Side
    catalog: ProductCatalog  # by product position
    promoted: sp.csr_matrix  # creators x products
    maps: dict[str, IdMap]
    index_cfg: IndexConfig
    policy_cfg: PolicyConfig
    exact: bool
    info: ModelInfo | None = None  # which model: its URI, registered name and version
    # the model's own vectors by side (sorted IDs): what its saved indexes are made from,
    # whatever a refresh re-embedded since
    model_vectors: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    _indexes: dict[str, EmbeddingIndex] = field(default_factory=dict, repr=False)
    _by_product: sp.csr_matrix | None = field(default=None, repr=False)

    @classmethod
    def load(
        cls,
        data_dir: Path,
        model: Path | str,
        tiers: Path | None = None,
        index_cfg: IndexConfig | None = None,
        policy_cfg: PolicyConfig | None = None,
        exact: bool = False,
    ) -> RetrievalRun:
        started = time.perf_counter()
        data_dir = Path(data_dir)
        index_cfg, policy_cfg = index_cfg or IndexConfig(), policy_cfg or PolicyConfig()
        art = open_matching_run(model)
        creator_vectors = np.load(art.path / "creator_embeddings.npy", mmap_mode="r")
        product_vectors = np.load(art.path / "product_embeddings.npy", mmap_mode="r")
        if creator_vectors.shape[1] != product_vectors.shape[1]:
            raise RetrievalError(
                f"{art.path}: creator vectors have dim {creator_vectors.shape[1]}, "
                f"product vectors dim {product_vectors.shape[1]}"
            )
        tier_frame = read_tiers(tiers)
        embedder = _embedder(art.model)
        embed_products = embed_creators = None
        if embedder is not None:

            def embed_products(ids: IdIndex) -> np.ndarray:
                return embedder.products(product_frame(data_dir, ids, tier_frame))

            def embed_creators(ids: IdIndex) -> np.ndarray:
                return embedder.creators(creator_frame(data_dir, ids))

        creators = _side(
            art.creators.ids,
            creator_vectors,
            _table_ids(data_dir, "creators", "creator_id"),
            embed_creators,
            "creators",
            delist=False,  # a creator without a creators row still gets its list
        )
        creators = _refreshed(creators, art.path / INDEX_DIR / REFRESHED_CREATORS)
        products = _side(
            art.products.ids,
            product_vectors,
            _table_ids(data_dir, "products", "product_id"),
            embed_products,
            "products",
            delist=True,  # goods no longer in the products table are delisted
        )
        info = art.product_info
        run = cls(
            folder=art.path,
            creators=creators,
            products=products,
            catalog=load_catalog(data_dir, products.ids, tier_frame, info),
            promoted=promoted_pairs(data_dir, creators.ids, products.ids),
            maps=load_id_maps(art.path) or load_id_maps(data_dir),
            index_cfg=index_cfg,
            policy_cfg=policy_cfg,
            exact=exact,
            info=art.info,
            model_vectors={"creators": creator_vectors, "products": product_vectors},
        )
        log.info(
            "retrieval over %s: %d creators (%d new), %d goods (%d new, %d delisted) in %.1fs",
            art.path,
            len(creators),
            int(creators.new.sum()),
            len(products),
            int(products.new.sum()),
            int((~products.listed & ~products.new).sum()),
            time.perf_counter() - started,
        )
        return run

    # -------------------------------------------------------------- indexes
    def _sides(self, name: str) -> tuple[Side, Side]:
        """(indexed side, query side) of the "products" or "creators" index."""
        if name not in ("products", "creators"):
            raise RetrievalError(f"no {name!r} index; choose products or creators")
        if name == "products":
            return self.products, self.creators
        return self.creators, self.products

    def saved_index(self, name: str, folder: Path | None = None) -> EmbeddingIndex:
        """The index saved beside the model (`MODEL/index/NAME.*`, built and tuned on
        first use), as saved: without this data's new items added or delisted ones
        removed (`haowu refresh` updates it and saves it back). `folder` reads (and on
        first use writes) another copy of `MODEL/index` (a refresh's staged one)."""
        side, other = self._sides(name)
        threads = faiss.omp_get_max_threads()  # a batch worker's share: keep it
        model = ~side.new
        rng = np.random.default_rng(self.index_cfg.seed)
        known = np.flatnonzero(~other.new)
        sample = np.sort(
            rng.choice(known, min(len(known), self.index_cfg.tune_queries), replace=False)
        )
        own = self.model_vectors.get(name)
        if own is None or len(own) != int(model.sum()):
            own = side.vectors if model.all() else side.vectors[model]
        base = model_index(
            folder or self.folder / INDEX_DIR,
            name,
            side.ids.ids[model],
            own,
            other.vectors[sample],
            self.index_cfg,
        )
        set_threads(threads)
        return base

    def use_index(self, name: str, index: EmbeddingIndex) -> None:
        """Search `index` for NAME from now on (an index updated by `haowu refresh`)."""
        self._sides(name)
        self._indexes[name] = index

    def index(self, name: str) -> EmbeddingIndex:
        """ "products" (creator -> goods) or "creators" (product -> creators), searchable."""
        if name not in self._indexes:
            side, _ = self._sides(name)
            threads = faiss.omp_get_max_threads()
            base = None if self.exact else self.saved_index(name)
            self._indexes[name] = _searchable(base, side, self.index_cfg, self.exact)
            set_threads(threads)
        return self._indexes[name]

    @property
    def retriever(self) -> GoodsRetriever:
        return GoodsRetriever(self.index("products"), self.catalog, self.policy_cfg)

    def candidate_set(self) -> np.ndarray:
        """(n_products,) bool: goods DATA lists that the policy may show in any list
        (not an excluded tier such as L0, no flagged merchant)."""
        p = self.policy_cfg
        return self.products.listed & self.catalog.eligible(
            None, tuple(p.exclude_tiers), p.exclude_flagged
        )

    # ------------------------------------------------------------- queries
    def creator_positions(self, ids: np.ndarray) -> np.ndarray:
        """Internal creator IDs -> positions; UnknownIdError names the unknown ones."""
        return _positions(self.creators, ids, "creator")

    def product_positions(self, ids: np.ndarray) -> np.ndarray:
        return _positions(self.products, ids, "product")

    def goods_for_creators(
        self, positions: np.ndarray, k: int, filters: RequestFilters | None = None
    ) -> RankedLists:
        """Top-k goods under the policy for creators at these positions."""
        positions = np.asarray(positions, dtype=np.int64)
        seen = self.promoted[positions] if self.policy_cfg.exclude_seen else None
        return self.retriever.recommend(self.creators.vectors[positions], k, seen, filters)

    def creators_for_products(
        self, positions: np.ndarray, k: int, exclude_promoted: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k creators (internal IDs, scores) for goods at these positions; creators
        already promoting a good are left out."""
        positions = np.asarray(positions, dtype=np.int64)
        index = self.index("creators")
        exclude = None
        if exclude_promoted and self.promoted.nnz:
            if self._by_product is None:
                self._by_product = self.promoted.T.tocsr()
            exclude = self._by_product[positions]
        return creators_for_products(
            index,
            self.products.vectors[positions],
            min(k, len(index)),
            exclude=exclude,
            creator_ids=self.creators.ids.ids,
            overfetch=self.policy_cfg.overfetch,
        )

    def external(self, side: str, ids: np.ndarray) -> np.ndarray:
        """Internal IDs -> the user's own IDs where `haowu import` kept a map."""
        return self.maps[side].to_external(ids) if side in self.maps else ids

    def describe(self, indexes: tuple[str, ...] | None = None) -> dict[str, Any]:
        """Counts and the settings of the `indexes` built (None: all built so far) for the
        batch manifest: a job names the one it searches, so that an index a later pass
        builds does not change the job's identity."""
        out: dict[str, Any] = {
            "creators": len(self.creators),
            "new_creators": int(self.creators.new.sum()),
            "products": len(self.products),
            "new_products": int(self.products.new.sum()),
            "delisted_products": int((~self.products.listed & ~self.products.new).sum()),
        }
        for name, index in self._indexes.items():
            if indexes is not None and name not in indexes:
                continue
            tune = index.params.get("tune") or {}
            out[f"{name}_index"] = {
                "kind": index.kind,
                "items": len(index),
                "nlist": index.params.get("nlist", 0),
                "nprobe": index.params.get("nprobe", 0),
                "tuned_recall": tune.get("recall"),
            }
        return out


def _positions(side: Side, ids: np.ndarray, what: str) -> np.ndarray:
    pos = side.ids.positions(np.asarray(ids, dtype=np.int64), strict=False)
    bad = pos < 0
    bad[~bad] = ~side.listed[pos[~bad]]
    if bad.any():
        unknown = np.asarray(ids)[bad]
        raise UnknownIdError(f"{int(bad.sum())} unknown {what} id(s), e.g. {unknown[:5].tolist()}")
    return pos


def _embedder(model: Any) -> Any:
    """The towers of a two-tower run (models/matching/cold_start.py), else None."""
    towers, encoders = getattr(model, "model", None), getattr(model, "encoders", None)
    if towers is None or encoders is None:
        return None
    from models.matching.cold_start import TowerEmbedder

    return TowerEmbedder(towers, encoders)
