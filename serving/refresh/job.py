"""`haowu refresh`: a pipeline folder brought up to date with a delta, without retraining.

    haowu refresh --from DIR --delta DELTA_DIR

In order, each step reading what the one before staged (serving/refresh/staging.py):

1. the delta is read and checked as a whole (delta.py); a bad one stops here, DIR
   untouched. A delta applied before (same content digest) is a no-op;
2. DIR/data gets the delta merged in (merge.py);
3. new and changed products are tiered by the saved tier model (tiering.py);
4. the saved goods and creators indexes are patched with `add` / `remove`, or rebuilt
   when the recall probe or the list balance says so (index_update.py);
5. only the lists whose inputs changed are recomputed (lists.py); the lists' `_SUCCESS`
   and `DIR/lists/refresh.json` say what changed and why (manifest.py);
6. the broker matches, when DIR has them, are computed again over the refreshed state
   (brokers.py);
7. the plan is committed and every file moved into place.

A running service picks the new state up on its next reload (`POST /admin/reload` or
SIGHUP): same model digest, so the rewritten lists are served as batch lists.
The saved champion models are used as they are; nothing here imports training/.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from features.io import files_digest, write_json
from features.settings import Settings
from models.artifacts import (
    INDEX_DIR,
    MATCHES,
    REFRESHED_CREATORS,
    SUCCESS,
    TIERS,
    PipelineLayout,
    data_digest,
    matching_model_folder,
    model_digest,
)
from models.retrieval.run import RetrievalRun
from serving.batch.folder_lock import output_lock
from serving.refresh.brokers import rematch
from serving.refresh.creators import reembed, save_overlay
from serving.refresh.delta import Delta, read_delta
from serving.refresh.index_update import save_index, update_creators_index, update_goods_index
from serving.refresh.lists import Rewrite, rewrite_creator_lists, rewrite_product_lists
from serving.refresh.manifest import (
    RefreshError,
    check_model,
    check_policy,
    lists_manifest,
    now,
    updated_success,
)
from serving.refresh.merge import DATA, stage_data
from serving.refresh.staging import Staging, read_applied
from serving.refresh.tiering import TIER, stage_tiers

log = logging.getLogger(__name__)


def _require(layout: PipelineLayout) -> None:
    for what, path in (
        ("data", layout.data),
        ("tier run", layout.tier),
        ("matching run", layout.matching),
        ("creator lists", layout.creator_lists),
    ):
        if not path.is_dir():
            raise RefreshError(f"--from {layout.root}: no {what} at {path} (run the pipeline)")


def _exposure(cfg: Settings) -> tuple[int, int] | None:
    r = cfg.refresh
    return (r.new_good_creators, r.new_good_slots_per_list) if r.new_good_creators else None


def run(cfg: Settings, from_dir: Path, delta_dir: Path) -> dict[str, Any]:
    """Refresh pipeline folder `from_dir` with `delta_dir`; returns the refresh manifest."""
    layout = PipelineLayout(Path(from_dir)).require()
    _require(layout)
    staging = Staging(layout)
    with contextlib.ExitStack() as locks:
        # one refresh per folder, and no batch job writing the lists meanwhile
        for folder in (layout.refresh, layout.creator_lists, layout.product_lists):
            if folder == layout.refresh or folder.is_dir():
                locks.enter_context(output_lock(folder, "refresh"))
        recovered = staging.recover()
        delta = read_delta(Path(delta_dir), layout.data)  # all checks, nothing written yet
        for record in read_applied(layout):
            if record.get("delta_digest") == delta.digest:
                log.info("delta %s was applied at %s: nothing to do", delta.digest[:12],
                         record.get("applied_at"))  # fmt: skip
                return {"noop": True, **record}
        try:
            manifest = _refresh(cfg, layout, staging, delta, recovered)
        except BaseException:
            staging.discard()  # not committed: DIR is as it was
            raise
        # the commit point: from here a failure is finished by the next run, not undone
        staging.commit(
            {
                "delta_digest": delta.digest,
                "delta": str(Path(delta_dir).resolve()),
                "applied_at": manifest["finished_at"],
                "lists_rewritten": manifest["lists"]["creator"]["lists_rewritten"],
            }
        )
    return manifest


def _refresh(
    cfg: Settings, layout: PipelineLayout, staging: Staging, delta: Delta, recovered: str | None
) -> dict[str, Any]:
    started, started_at = time.perf_counter(), now()
    seconds: dict[str, float] = {}

    def lap(name: str, t0: float) -> float:
        t = time.perf_counter()
        seconds[name] = round(t - t0, 3)
        return t

    model_folder = matching_model_folder(layout.matching)
    digest = model_digest(model_folder)
    creator_manifest = lists_manifest(layout.creator_lists)
    check_model(creator_manifest, layout.creator_lists, digest)
    check_policy(creator_manifest, layout.creator_lists, cfg.policy.model_dump(mode="json"))
    product_manifest = None
    if layout.product_lists.is_dir():
        product_manifest = lists_manifest(layout.product_lists)
        check_model(product_manifest, layout.product_lists, digest)
    t = time.perf_counter()

    changes = stage_data(staging, layout.data, delta)
    data_view = staging.folder(DATA)
    t = lap("data", t)

    tier_folder = staging.path(Path(TIER) / TIERS).parent
    retiered = stage_tiers(tier_folder, layout.tier, data_view, changes)
    t = lap("tiering", t)

    retrieval = RetrievalRun.load(data_view, model_folder, tier_folder, cfg.index, cfg.policy)
    index_rel = model_folder.resolve().relative_to(layout.root.resolve()) / INDEX_DIR
    reembedded = reembed(retrieval, model_folder, data_view, changes.interaction_creators)
    t = lap("creator_history", t)
    saved = staging.folder(index_rel, copy=True)  # built here on first use
    goods = update_goods_index(retrieval, cfg, saved)
    moved = reembedded.moved if reembedded is not None else None
    creators = update_creators_index(retrieval, cfg, saved, moved)
    for update in (goods, creators):
        save_index(update, staging.path(index_rel / SUCCESS).parent)
    if reembedded is not None:
        save_overlay(reembedded, staging.path(index_rel / REFRESHED_CREATORS))
    t = lap("indexes", t)

    def remove(path: Path) -> None:
        staging.remove(path.relative_to(layout.root))

    out_of_lists = np.union1d(goods.removed, retiered.changed())
    lists: dict[str, Rewrite] = {
        "creator": rewrite_creator_lists(
            retrieval,
            layout.creator_lists,
            staging.path(layout.creator_lists.relative_to(layout.root) / SUCCESS).parent,
            int(creator_manifest["k"]),
            changes.interaction_creators,
            goods.added,
            out_of_lists,
            remove,
            _exposure(cfg),
        )
    }
    if product_manifest is not None:
        lists["product"] = rewrite_product_lists(
            retrieval,
            layout.product_lists,
            staging.path(layout.product_lists.relative_to(layout.root) / SUCCESS).parent,
            int(product_manifest["k"]),
            goods.added,
            # the goods this delta took out (a good L0 before keeps its invitation list)
            np.intersect1d(goods.removed, retiered.product_ids),
            remove,
            np.setdiff1d(creators.added, creators.removed),  # new, not re-embedded
        )
    t = lap("lists", t)

    brokers = None
    if layout.brokers.is_dir():
        out = staging.path(layout.brokers.relative_to(layout.root) / MATCHES).parent
        brokers = rematch(cfg, retrieval, data_view, tier_folder, out)
        t = lap("brokers", t)

    digests = {
        "data_digest": data_digest(data_view),
        "tiers_digest": files_digest([(TIERS, tier_folder / TIERS)]),
    }
    summary = {
        "delta_digest": delta.digest,
        "changes": changes.counts(),
        "tiering": retiered.counts(),
        "indexes": {"products": goods.describe(), "creators": creators.describe()},
        "creator_history": reembedded.describe() if reembedded is not None else None,
        "lists": {name: rewrite.describe() for name, rewrite in lists.items()},
        "brokers": None
        if brokers is None
        else {k: brokers[k] for k in ("brokers", "assignments", "seconds") if k in brokers},
    }
    for name, rewrite in lists.items():
        folder = layout.creator_lists if name == "creator" else layout.product_lists
        before = creator_manifest if name == "creator" else product_manifest
        assert before is not None
        doc = updated_success(before, digests, rewrite.rows, summary)
        write_json(doc, staging.path(folder.relative_to(layout.root) / SUCCESS))
    lap("manifests", t)
    manifest = {
        "job": "refresh",
        "from": str(layout.root.resolve()),
        "delta": str(delta.root.resolve()),
        "model_digest": digest,
        "data_digest_before": creator_manifest.get("data_digest"),
        "tiers_digest_before": creator_manifest.get("tiers_digest"),
        **digests,
        **summary,
        "started_at": started_at,
        "finished_at": now(),
        "seconds": round(time.perf_counter() - started, 3),
        "step_seconds": seconds,
        "recovered": recovered,  # what was left of an earlier refresh: finished, discarded
    }
    write_json(manifest, staging.path(layout.refresh_manifest.relative_to(layout.root)))
    log.info(
        "refresh of %s: %d creator lists rewritten in %.1fs",
        layout.root,
        lists["creator"].queries,
        manifest["seconds"],
    )
    return manifest
