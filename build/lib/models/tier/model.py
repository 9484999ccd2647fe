"""The tier model: LightGBM learns a tier score from labelled products, cut-points turn it
into L0..L5, and per-leaf tables explain it by dimension and indicator.

Every indicator arrives oriented higher-is-better, so every monotone constraint is +1.
Two ordinal treatments (`params.ordinal`):

- cumulative (default): five binary boosters, booster k fitted on `tier > k`; the score
  is the sum of their probabilities, the expected tier. A monotone constraint is exact
  here, unlike multiclass where one sign would apply to every class's raw score.
- regression: one booster regresses the label; its raw output is the score.

Cut-points are fitted on validation to maximise quadratic weighted kappa, then the L5 cut
is moved to a target precision (`models.tier.cuts`). With `interactions="dimension"`
every tree splits on the indicators of one dimension only, so each booster's raw score is
bias + five dimension functions and its `pred_contrib` summed by dimension is exact.
Explanations: for regression, the per-indicator contributions of the booster; for
cumulative, booster k's contributions scaled by the secant slope of its sigmoid between
its bias and the product's raw score, so that contributions sum exactly to score - base.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd

from features.contract import INDICATORS
from features.indicators import DIMENSIONS, HISTORY
from features.settings import TierModelParams
from models.tier.cuts import N_TIERS, apply_cuts, fit_cuts
from models.tier.leaf_tables import CompiledBooster

log = logging.getLogger(__name__)

FEATURES: tuple[str, ...] = INDICATORS
META_FILE = "tier_model.json"
FORMAT_VERSION = 2
REASON_MODEL = "model"
REASON_FLAGGED = "flagged_low_quality_merchant"
_SECANT_EPS = 1e-9  # below this change of raw score the sigmoid's secant is its derivative


@dataclass(frozen=True)
class Explanation:
    """Per product: score = base + indicators.sum(axis=1) = base + dimensions.sum(axis=1);
    top_* index FEATURES (-1: no indicator pushes that way)."""

    score: np.ndarray  # (n,)
    tier: np.ndarray  # (n,) int64, before rules
    base: float  # the score of a product whose every contribution is 0
    dimensions: np.ndarray  # (n, 5) in DIMENSIONS order
    indicators: np.ndarray  # (n, 11) in FEATURES order
    top_for: np.ndarray  # (n,) int64: the indicator pushing the score up most
    top_against: np.ndarray  # (n,) int64: the indicator pulling it down most


def feature_matrix(indicators: pd.DataFrame) -> np.ndarray:
    """(rows, 11) float64 in FEATURES order; NaN stays NaN (LightGBM routes it)."""
    return indicators.loc[:, list(FEATURES)].to_numpy(dtype=np.float64, na_value=np.nan)


def dimension_groups() -> list[list[int]]:
    """Feature positions of each dimension, in DIMENSIONS order."""
    return [[FEATURES.index(name) for name in names] for names in DIMENSIONS.values()]


def assign_tiers(model_tier: np.ndarray, flagged: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The business rule over the model: goods of flagged merchants are L0, with the reason."""
    flagged = np.asarray(flagged, dtype=bool)
    tier = np.where(flagged, 0, model_tier).astype(np.int64)
    reason = np.where(flagged, REASON_FLAGGED, REASON_MODEL)
    return tier, reason


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free logistic


class TierModel:
    """fit / predict_score / predict_tier / explain / save / load."""

    def __init__(
        self,
        params: TierModelParams,
        boosters: list[lgb.Booster] | None = None,
        cuts: np.ndarray | None = None,
    ) -> None:
        self.params = params
        self.boosters = boosters or []
        self.cuts = None if cuts is None else np.asarray(cuts, dtype=np.float64)
        self._compiled: list[CompiledBooster] | None = None

    @property
    def cumulative(self) -> bool:
        return self.params.ordinal == "cumulative"

    @property
    def num_trees(self) -> int:
        return sum(b.num_trees() for b in self.boosters)

    # -- fitting ---------------------------------------------------------------------

    def _lgb_params(self) -> dict:
        params = dict(self.params.lightgbm)
        if self.cumulative:
            params["objective"] = "binary"
        params["monotone_constraints"] = [1] * len(FEATURES)
        params["num_threads"] = self.params.train_threads
        if self.params.interactions == "dimension":
            params["interaction_constraints"] = dimension_groups()
        return params

    def _with_cold_copies(
        self, x: np.ndarray, y: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Append copies of a share of the rows with their sales history masked, labels
        kept: few labelled products are new, and this teaches the trees where a product
        without history belongs given what else is known about it."""
        share = self.params.cold_augment_share
        if share <= 0:
            return x, y
        rows = rng.choice(len(x), size=int(round(share * len(x))), replace=False)
        copies = x[rows].copy()
        copies[:, [FEATURES.index(name) for name in HISTORY]] = np.nan
        return np.vstack([x, copies]), np.concatenate([y, y[rows]])

    def _targets(self, labels: np.ndarray) -> list[np.ndarray]:
        labels = np.asarray(labels, dtype=np.float64)
        if self.cumulative:
            return [(labels > k).astype(np.float64) for k in range(N_TIERS - 1)]
        return [labels]

    def fit(
        self,
        train: pd.DataFrame,
        train_labels: np.ndarray,
        valid: pd.DataFrame,
        valid_labels: np.ndarray,
        seed: int,
    ) -> TierModel:
        """Boost on `train` with early stopping on `valid`; fit the cut-points on `valid`."""
        x_train, y_train = self._with_cold_copies(
            feature_matrix(train), np.asarray(train_labels), np.random.default_rng(seed)
        )
        x_valid = feature_matrix(valid)
        names = list(FEATURES)
        self.boosters, self._compiled = [], None
        for target, valid_target in zip(
            self._targets(y_train), self._targets(valid_labels), strict=True
        ):
            train_set = lgb.Dataset(x_train, target, feature_name=names)
            valid_set = lgb.Dataset(x_valid, valid_target, feature_name=names, reference=train_set)
            booster = lgb.train(
                self._lgb_params(),
                train_set,
                num_boost_round=self.params.num_boost_round,
                valid_sets=[valid_set],
                callbacks=[lgb.early_stopping(self.params.early_stopping_rounds, verbose=False)],
            )
            best = booster.best_iteration or booster.current_iteration()
            # keep only the trees in use, so predict, dump and save all agree
            self.boosters.append(lgb.Booster(model_str=booster.model_to_string(num_iteration=best)))
        log.info("tier model: %d booster(s), %d trees", len(self.boosters), self.num_trees)
        self.cuts = fit_cuts(
            self._score(x_valid),
            valid_labels,
            rounds=self.params.cut_rounds,
            candidates=self.params.cut_candidates,
            top_precision=self.params.l5_target_precision,
            top_min_support=self.params.l5_min_support,
        )
        log.info("tier cut-points %s", np.round(self.cuts, 4).tolist())
        return self

    # -- scoring ---------------------------------------------------------------------

    def _score(self, x: np.ndarray) -> np.ndarray:
        threads = self.params.score_threads
        raw = [b.predict(x, raw_score=True, num_threads=threads) for b in self.boosters]
        return sum(_sigmoid(r) for r in raw) if self.cumulative else raw[0]

    def _fitted_cuts(self) -> np.ndarray:
        if not self.boosters or self.cuts is None:
            raise RuntimeError("TierModel is not fitted; call fit() or load()")
        return self.cuts

    def predict_score(self, indicators: pd.DataFrame) -> np.ndarray:
        """The tier score: expected tier (cumulative) or the regressed label."""
        self._fitted_cuts()
        return self._score(feature_matrix(indicators))

    def predict_tier(self, indicators: pd.DataFrame) -> np.ndarray:
        """L0..L5 from the model alone (apply `assign_tiers` for the flagged-merchant rule)."""
        return apply_cuts(self.predict_score(indicators), self._fitted_cuts())

    @property
    def compiled(self) -> list[CompiledBooster]:
        """Each booster with its explanation tables, built once."""
        if self._compiled is None:
            self._fitted_cuts()
            p = self.params
            self._compiled = [
                CompiledBooster(
                    b, dimension_groups(), p.max_table_cells, p.explain_block_rows, p.score_threads
                )
                for b in self.boosters
            ]
        return self._compiled

    @property
    def base(self) -> float:
        """The score with every contribution 0."""
        biases = np.asarray([c.bias for c in self.compiled])
        return float(_sigmoid(biases).sum()) if self.cumulative else float(biases[0])

    def explain(self, indicators: pd.DataFrame) -> Explanation:
        """Score, tier and per-dimension / per-indicator contributions of every row."""
        cuts = self._fitted_cuts()
        x = feature_matrix(indicators)
        contributions = np.zeros((len(x), len(FEATURES)))  # (rows, 11)
        for booster in self.compiled:
            part = booster.contributions(x)  # (rows, 11) in raw-score units
            if self.cumulative:  # to probability units: the sigmoid's secant slope
                change = part.sum(axis=1)
                low, high = _sigmoid(booster.bias), _sigmoid(booster.bias + change)
                derivative = high * (1.0 - high)
                safe = np.where(np.abs(change) > _SECANT_EPS, change, 1.0)
                slope = np.where(np.abs(change) > _SECANT_EPS, (high - low) / safe, derivative)
                part = part * slope[:, None]
            contributions += part
        score = self.base + contributions.sum(axis=1)
        dimensions = np.column_stack(
            [contributions[:, group].sum(axis=1) for group in dimension_groups()]
        )  # (rows, 5)
        top_for = np.where(contributions.max(axis=1) > 0, contributions.argmax(axis=1), -1)
        top_against = np.where(contributions.min(axis=1) < 0, contributions.argmin(axis=1), -1)
        return Explanation(
            score=score,
            tier=apply_cuts(score, cuts),
            base=self.base,
            dimensions=dimensions,
            indicators=contributions,
            top_for=top_for.astype(np.int64),
            top_against=top_against.astype(np.int64),
        )

    # -- persistence -----------------------------------------------------------------

    def save(self, folder: Path) -> Path:
        """`FOLDER/booster_K.txt` and `FOLDER/tier_model.json` (resolved params, cuts)."""
        cuts = self._fitted_cuts()
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        files = [f"booster_{k}.txt" for k in range(len(self.boosters))]
        for booster, name in zip(self.boosters, files, strict=True):
            booster.save_model(str(folder / name))
        meta = {
            "format_version": FORMAT_VERSION,
            "features": list(FEATURES),
            "dimensions": {dim: list(names) for dim, names in DIMENSIONS.items()},
            "boosters": files,
            "cuts": cuts.tolist(),
            "base": self.base,
            "params": self.params.model_dump(),
        }
        (folder / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        return folder

    @classmethod
    def load(cls, folder: Path) -> TierModel:
        folder = Path(folder)
        meta = json.loads((folder / META_FILE).read_text())
        if meta.get("format_version") != FORMAT_VERSION or meta["features"] != list(FEATURES):
            raise ValueError(f"{folder}: tier model of another format or feature set")
        boosters = [lgb.Booster(model_file=str(folder / name)) for name in meta["boosters"]]
        params = TierModelParams.model_validate(meta["params"])
        return cls(params, boosters, np.asarray(meta["cuts"]))
