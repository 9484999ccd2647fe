"""Training the two-tower model behind the recommender interface.

`TwoTowerTrainer.fit(train, val)`: fit the encoders on the training rows, then
AdamW (MLPs) + row-wise Adagrad (embedding tables) over shuffled training pairs, in-batch
sampled softmax with logQ correction, early stopping on validation Recall@K, keeping
the best epoch's weights. After fitting, every creator and product is embedded once
(`export`), so scoring is a matrix product: the serve-time form is an
`EmbeddingRecommender`.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from features.encoders import IdEncoder, SideEncoder, TowerEncoders
from features.logs import progress_bar
from features.settings import MatchingConfig
from features.threads import CpuShare, fit_threads
from models.matching.creator_history import CreatorHistory
from models.matching.device import resolve_device
from models.matching.recommender import RecommenderError
from models.matching.two_tower import (
    TwoTower,
    cosine_contrastive_loss,
    full_softmax_loss,
    in_batch_softmax_loss,
    split_heads,
)
from models.matching.two_tower_served import (
    TowerInputs,
    TwoTowerRecommender,
    build_two_tower,
    tower_spec,
)
from training.matching.optim import RowWiseAdagrad, load_optimizer_state, optimizer_state
from training.matching.warm_start import WarmStart

log = logging.getLogger(__name__)
THREADS_PROBE_S = 0.25  # how long the trainer watches the machine before its first epoch


def optimizers(model: TwoTower, cfg: MatchingConfig) -> tuple[torch.optim.AdamW, RowWiseAdagrad]:
    """AdamW for the MLPs, row-wise Adagrad for the embedding tables."""
    dense = torch.optim.AdamW(model.dense_parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sparse = RowWiseAdagrad(
        model.sparse_parameters(), lr=cfg.embedding_lr, weight_decay=cfg.embedding_weight_decay
    )
    return dense, sparse


def train_step(
    model: TwoTower,
    optimisers: tuple[torch.optim.Optimizer, ...],
    creator_inputs: tuple,
    product_inputs: tuple,
    product_keys: torch.Tensor,
    log_q: torch.Tensor | None,
    negatives: tuple | None = None,
    negatives_log_q: torch.Tensor | None = None,
    cfg: MatchingConfig | None = None,
    catalog: tuple | None = None,
) -> float:
    """One optimisation step of the two-tower model; the trainer and `haowu bench train`
    both run this, so the bench times the step training runs (logQ, extra negatives, the
    configured loss: `cfg.loss`, softmax when no config is given)."""
    heads = model.cfg.heads
    u = split_heads(model.creator_tower(*creator_inputs), heads)  # each (B, d)
    if catalog is not None:  # every good is a candidate: `product_keys` are positions
        goods = split_heads(model.product_tower(*catalog), heads)
        losses = [
            full_softmax_loss(u_h, goods_h, product_keys, model.temperature)
            for u_h, goods_h in zip(u, goods, strict=True)
        ]
    else:
        v = split_heads(model.product_tower(*product_inputs), heads)  # each (B, d)
        extra = (
            split_heads(model.product_tower(*negatives), heads)  # each (M, d)
            if negatives is not None
            else [None] * heads
        )
        losses = [
            _sampled_loss(model, cfg, u[h], v[h], extra[h], product_keys, log_q, negatives_log_q)
            for h in range(heads)
        ]
    return _optimise(torch.stack(losses).mean(), optimisers)  # heads: independent models


def _sampled_loss(
    model: TwoTower,
    cfg: MatchingConfig | None,
    u: torch.Tensor,
    v: torch.Tensor,
    extra: torch.Tensor | None,
    product_keys: torch.Tensor,
    log_q: torch.Tensor | None,
    extra_log_q: torch.Tensor | None,
) -> torch.Tensor:
    """One head's loss over the batch's goods (and the extra negatives): `cfg.loss`."""
    if cfg is not None and cfg.loss == "cosine_contrastive":
        return cosine_contrastive_loss(
            u,
            v,
            cfg.margin,
            cfg.neg_weight,
            product_keys=product_keys,
            extra=extra,
            log_q=log_q,
            extra_log_q=extra_log_q,
            in_batch=cfg.in_batch_negatives,
        )
    return in_batch_softmax_loss(
        u,
        v,
        log_q,
        model.temperature,
        product_keys=product_keys,
        extra=extra,
        extra_log_q=extra_log_q,
    )


def _optimise(loss: torch.Tensor, optimisers: tuple[torch.optim.Optimizer, ...]) -> float:
    for optimiser in optimisers:
        optimiser.zero_grad(set_to_none=True)
    loss.backward()
    for optimiser in optimisers:
        optimiser.step()
    return float(loss.item())


class TwoTowerTrainer(TwoTowerRecommender):
    """Fits a `TwoTowerRecommender`; what it saves loads as the served class."""

    on_epoch: Callable[[dict[str, float]], None] | None = None  # called after each epoch
    # (creator, product) positions -> when each pair was first seen, for the history's
    # recency weights (`history_half_life`); None when the log has no times
    pair_times: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None

    # --- fitting -----------------------------------------------------------------------

    def fit(
        self,
        train: sp.csr_matrix,
        val: sp.csr_matrix | None = None,
        warm: WarmStart | None = None,
        history: sp.csr_matrix | None = None,
    ) -> TwoTowerRecommender:
        """Train on `train`; `val` (held-out pairs, same shape) drives early stopping.
        `warm`: start from these weights and encoders (training/matching/warm_start.py)
        instead of fitting new ones; `history`: the pairs the creator tower reads as each
        creator's history, when they are more than the pairs trained on (fine-tuning
        trains on a day's pairs, but a creator's history is everything it promoted)."""
        if self.cfg.history_half_life == "auto":  # a saved model says the half-life it read
            if self.pair_times is not None:
                raise ValueError(
                    "history_half_life: auto is decided on a validation before training "
                    "(MatchingJob.resolve_half_life), not by the trainer"
                )
            self.cfg = self.cfg.model_copy(update={"history_half_life": 0.0})  # no times: a mean
        threads = torch.get_num_threads()
        torch.set_num_threads(self.cfg.threads)  # 2 cores: more threads only contend
        try:
            return self._fit(train, val, warm, train if history is None else history)
        finally:
            torch.set_num_threads(threads)

    def _fit(
        self,
        train: sp.csr_matrix,
        val: sp.csr_matrix | None,
        warm: WarmStart | None,
        history_pairs: sp.csr_matrix,
    ) -> TwoTowerRecommender:
        cfg = self.cfg
        self._check_frames(train.shape)
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        coo = train.tocoo()
        creator, product = coo.row.astype(np.int64), coo.col.astype(np.int64)
        if len(creator) == 0:
            raise RecommenderError("no training pairs")
        if cfg.max_train_pairs and len(creator) > cfg.max_train_pairs:
            keep = rng.choice(len(creator), cfg.max_train_pairs, replace=False)
            creator, product = creator[keep], product[keep]
        if warm is None:
            encoders = self._encoders(creator, product)
            with_history = cfg.creator_history
            warm = WarmStart(
                build_two_tower(
                    cfg,
                    creator=tower_spec(
                        encoders.creator_ids,
                        encoders.creator_side,
                        encoders.product_ids.vocab_size if with_history else 0,
                    ),
                    product=tower_spec(encoders.product_ids, encoders.product_side),
                ),
                encoders,
                {},
            )
        creators_in, products_in = self._start(warm, history_pairs, rng)
        log.info("two-tower trains on %s", products_in.device)
        self._train_loop(creator, product, creators_in, products_in, train, val, rng)
        self._embed_all(creators_in, products_in)
        return self

    def adopt(self, warm: WarmStart, history: sp.csr_matrix) -> TwoTowerRecommender:
        """The warm-started model as it stands, embedded without training: what the
        champion answers on the new catalog (its new rows read as cold items)."""
        self._check_frames(history.shape)
        creators_in, products_in = self._start(warm, history, np.random.default_rng(self.cfg.seed))
        self._embed_all(creators_in, products_in)
        return self

    def _check_frames(self, shape: tuple[int, int]) -> None:
        n_creators, n_products = shape
        if self.creator_frame is None:
            self.creator_frame = pd.DataFrame(index=range(n_creators))
        if self.product_frame is None:
            self.product_frame = pd.DataFrame(index=range(n_products))
        if len(self.creator_frame) != n_creators or len(self.product_frame) != n_products:
            raise RecommenderError(
                f"side frames have {len(self.creator_frame)}/{len(self.product_frame)} rows "
                f"for a {n_creators}x{n_products} matrix"
            )

    def _start(
        self, warm: WarmStart, history_pairs: sp.csr_matrix, rng: np.random.Generator
    ) -> tuple[TowerInputs, TowerInputs]:
        """Take `warm`'s model and encoders; the towers' inputs for every position."""
        cfg = self.cfg
        assert self.creator_frame is not None and self.product_frame is not None
        self.encoders, self.model = enc, model = warm.encoders, warm.model
        self._warm_optimizer = warm.optimizer
        history = (
            self._creator_history(history_pairs, rng)
            if cfg.creator_history and model.creator_tower.history is not None
            else None
        )
        creators_in = TowerInputs(
            enc.creator_ids, enc.creator_side.transform(self.creator_frame), history
        )
        products_in = TowerInputs(enc.product_ids, enc.product_side.transform(self.product_frame))
        log.info(
            "two-tower inputs: creator %s + %s, product %s + %s",
            list(enc.creator_side.categorical),
            list(enc.creator_side.numeric),
            list(enc.product_side.categorical),
            list(enc.product_side.numeric),
        )
        self.n_products = len(products_in)
        device = resolve_device(cfg.device)
        model.to(device)
        creators_in.device = products_in.device = device
        self._inputs = creators_in, products_in
        return creators_in, products_in

    def embed_with_history(self, pairs: sp.csr_matrix) -> None:
        """Embed every creator and good again, each creator's history read from `pairs`
        (after a fit that held some pairs out of the histories, for evaluation)."""
        creators_in, products_in = self._inputs
        if creators_in.history is not None:
            creators_in.history = self._creator_history(pairs, np.random.default_rng(self.cfg.seed))
        self._embed_all(creators_in, products_in)

    def _creator_history(self, pairs: sp.csr_matrix, rng: np.random.Generator) -> CreatorHistory:
        """Each creator's goods in `pairs`, as the creator tower reads them."""
        cfg = self.cfg
        assert self.encoders is not None
        if cfg.history_half_life > 0 and self.pair_times is None:
            log.warning("history_half_life: the pairs have no times, so the history is a mean")
            # the saved settings say what the model did, so the served re-embedding agrees
            self.cfg = cfg = cfg.model_copy(update={"history_half_life": 0.0})
        times = None
        if cfg.history_half_life > 0:
            assert self.pair_times is not None
            coo = pairs.tocoo()
            times = self.pair_times(coo.row, coo.col)
        return CreatorHistory(
            pairs,
            self.encoders.product_ids.rows,
            cfg.history_max_items,
            rng,
            cfg.history_pooling,
            times,
            cfg.history_half_life,
            cfg.history_dropout,
        )

    def _encoders(self, creator: np.ndarray, product: np.ndarray) -> TowerEncoders:
        """Encoders fitted on the training pairs' creators and goods."""
        cfg = self.cfg
        assert self.creator_frame is not None and self.product_frame is not None
        creator_side = SideEncoder.fit(
            self.creator_frame, np.unique(creator), cfg.creator_categorical, cfg.creator_numeric
        )
        # an ID-only creator tower with a history reads the history alone: a creator's own
        # ID row memorises its training goods and overfits (every creator maps to the OOV row)
        id_free = (
            cfg.creator_history
            and cfg.history_replaces_creator_id
            and not (creator_side.categorical or creator_side.numeric)
        )
        n_creators, n_products = len(self.creator_frame), len(self.product_frame)
        return TowerEncoders(
            IdEncoder.fit(n_creators, creator[:0] if id_free else creator, cfg.min_id_count),
            IdEncoder.fit(n_products, product, cfg.min_id_count),
            creator_side,
            SideEncoder.fit(
                self.product_frame,
                np.unique(product),
                cfg.product_categorical,
                cfg.product_numeric,
            ),
        )

    def _log_q(self, product: np.ndarray, n_products: int) -> torch.Tensor:
        """log of each product's expected count among one batch's candidates."""
        cfg = self.cfg
        share = np.bincount(product, minlength=n_products) / len(product)
        expected = cfg.batch_size * share + cfg.extra_negatives / n_products
        return torch.from_numpy(np.log(np.maximum(expected, 1e-12)).astype(np.float32))

    def _train_loop(
        self,
        creator: np.ndarray,
        product: np.ndarray,
        creators_in: TowerInputs,
        products_in: TowerInputs,
        train: sp.csr_matrix,
        val: sp.csr_matrix | None,
        rng: np.random.Generator,
    ) -> None:
        from training.evaluation.evaluate import EvalTask, evaluate

        cfg, model = self.cfg, self.model
        assert model is not None
        dense_opt, sparse_opt = optimizers(model, cfg)
        if self._warm_optimizer is not None:  # go on with the step sizes training reached
            loaded = load_optimizer_state(model, (dense_opt, sparse_opt), self._warm_optimizer)
            log.info("optimizer state carried for %d parameter(s)", loaded)
        device = products_in.device
        log_q = self._log_q(product, len(products_in)).to(device) if cfg.logq else None
        creator_t, product_t = torch.from_numpy(creator), torch.from_numpy(product)

        val_task = None
        if val is not None and val.nnz and cfg.patience >= 0:
            rows = np.flatnonzero(np.diff(val.indptr) > 0)
            sample = cfg.val_sample(val.shape[1])
            if sample and len(rows) > sample:
                rows = np.sort(rng.choice(rows, sample, replace=False))
            val_task = EvalTask("val", rows, val, train)
        best_state, best_recall, stale = None, -1.0, 0
        n_batches = max(len(creator) // cfg.batch_size, 1)  # drop the ragged last batch
        catalog = None  # every good's inputs, gathered once: the whole-catalog softmax
        if 0 < len(products_in) <= cfg.full_softmax_max_products:
            catalog = products_in.take(torch.arange(len(products_in)))
            log.info("softmax over the whole catalog (%d goods)", len(products_in))
        self.history, started = [], time.perf_counter()
        share = CpuShare() if cfg.adaptive_threads else None
        if share is not None:
            time.sleep(THREADS_PROBE_S)  # a first window to see what else runs
        for epoch in range(1, cfg.epochs + 1):
            threads = fit_threads(cfg.threads, share.others()) if share else cfg.threads
            torch.set_num_threads(threads)
            model.train()
            order = torch.from_numpy(rng.permutation(len(creator)))
            total, t0 = 0.0, time.perf_counter()
            bar = progress_bar(range(n_batches), self.progress, desc=f"epoch {epoch}", leave=False)
            for b in bar:
                idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
                c, p = creator_t[idx], product_t[idx]
                negatives = neg_log_q = None
                if cfg.extra_negatives:
                    neg = torch.randint(0, len(products_in), (cfg.extra_negatives,))
                    negatives = products_in.take(neg)
                    neg_log_q = log_q[neg.to(device)] if log_q is not None else None
                loss = train_step(
                    model,
                    (dense_opt, sparse_opt),
                    creators_in.take(c, leave_out=p),
                    products_in.take(p),
                    p.to(device),
                    log_q[p] if log_q is not None else None,
                    negatives,
                    neg_log_q,
                    cfg,
                    catalog,
                )
                total += loss
                if b % 50 == 0:
                    bar.set_postfix(loss=f"{total / (b + 1):.3f}")
            record = {
                "epoch": epoch,
                "loss": total / n_batches,
                "seconds": time.perf_counter() - t0,
                "threads": threads,
            }
            if val_task is not None:
                self._embed_all(creators_in, products_in, creators=val_task.creators)
                result = evaluate(self.export(), val_task, [cfg.early_stop_k], batch=cfg.eval_batch)
                record["val_recall"] = result.metrics[f"recall@{cfg.early_stop_k}"]
            self.history.append(record)
            if self.on_epoch is not None:  # e.g. MLflow metrics with step = epoch
                self.on_epoch(record)
            log.info("epoch %d: %s", epoch, {k: round(v, 4) for k, v in record.items()})
            self._checkpoint(epoch, record)
            if val_task is None:
                self.best_epoch = epoch
                if epoch == cfg.epochs:
                    self.optimizer_state = optimizer_state(model, (dense_opt, sparse_opt))
                continue
            gain = record["val_recall"] - best_recall
            if gain > 0:  # the best model is kept even when its gain is too small to go on
                best_recall, self.best_epoch = record["val_recall"], epoch
                best_state = copy.deepcopy(model.state_dict())
                self.optimizer_state = optimizer_state(model, (dense_opt, sparse_opt))
            stale = 0 if gain > 0 and gain >= cfg.min_gain else stale + 1
            if stale > cfg.patience:
                log.info(
                    "early stop: no val recall gain of %g or more for %d epoch(s)",
                    cfg.min_gain,
                    stale,
                )
                break
        if best_state is not None:
            model.load_state_dict(best_state)
        self.seconds_per_epoch = (time.perf_counter() - started) / max(len(self.history), 1)

    def _checkpoint(self, epoch: int, record: dict[str, float]) -> None:
        if self.checkpoint_dir is None or self.model is None:
            return
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        torch.save(
            {"epoch": epoch, "record": record, "model": self.model.state_dict()},
            self.checkpoint_dir / "last.pt",
        )
