"""Expected value of handing one good to one creator, and each creator's capacity.

    EV(c, p) = affinity(c, p)                 P(c promotes p), from the two-tower logits
             * conversion(p) ** w_conv        tier-adjusted: orders per view
             * (price(p) * commission(p)) ** w_comm   commission earned per order
             * reach(c) ** w_reach            followers / median followers

With every weight 1 this is the expected commission of the pairing (probability the
creator takes the good up x orders per view x money per order x audience), the quantity
a broker is paid on. The weights are exponents so each factor can be damped (0 drops
it) without changing units; the defaults (configs/brokers/default.yaml) keep affinity and
conversion whole and damp money and reach, because price spans two orders of magnitude
and would otherwise decide the assignment on its own.

Affinity: the two-tower score is a logit (cosine / temperature) identified only up to a
per-creator constant, so it is normalised per creator:
- `catalog` (default): over the whole catalog, log Z(c) estimated from a uniform sample
  of products: affinity = P(p | c), comparable across creators (a creator whose taste lies
  outside the broker's goods gets little), which is what expected sales need;
- `broker`: a softmax over the broker's eligible goods only: P(c picks p | offered these).

Tier-adjusted conversion: the observed 30-day conversion rate is shrunk towards the mean
rate of the product's tier (the global median when the tier is unknown), with weight
n / (n + strength), n = active promoters in 30 days (a proxy for how many views the rate
rests on). New goods (no stats yet) get their tier's rate: tiering is what tells a new
good's quality (DESIGN §1, problem 1).
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp

N_TIERS = 6


def log_normaliser(sample_logits: np.ndarray, catalog_size: int) -> np.ndarray:
    """log sum over the catalog of exp(logit), from a uniform sample of its products:
    (n_creators, n_sample) -> (n_creators,)."""
    n_sample = sample_logits.shape[1]
    if n_sample == 0:
        raise ValueError("need at least one sampled product to estimate the normaliser")
    return logsumexp(sample_logits, axis=1) + np.log(catalog_size / n_sample)


def affinity(logits: np.ndarray, log_z: np.ndarray | None = None) -> np.ndarray:
    """(n_creators, n_goods) logits -> probabilities. With `log_z` (one per creator):
    exp(logit - log_z), P(p | c) over the catalog; without it: softmax over the goods."""
    logits = np.asarray(logits, dtype=np.float64)
    if log_z is None:
        log_z = logsumexp(logits, axis=1) if logits.shape[1] else np.zeros(len(logits))
    return np.exp(logits - np.asarray(log_z, dtype=np.float64)[:, None])


def tier_conversion_prior(conversion: np.ndarray, tier: np.ndarray) -> tuple[np.ndarray, float]:
    """Mean observed conversion per tier (NaN where a tier has none) and the global median.
    `tier` is float with NaN for unknown; computed once over the whole catalog."""
    conversion = np.asarray(conversion, dtype=np.float64)
    tier = np.asarray(tier, dtype=np.float64)
    seen = np.isfinite(conversion)
    overall = float(np.median(conversion[seen])) if seen.any() else 0.0
    by_tier = np.full(N_TIERS, np.nan)
    for t in range(N_TIERS):
        mask = seen & (tier == t)
        if mask.any():
            by_tier[t] = conversion[mask].mean()
    return by_tier, overall


def tier_adjusted_conversion(
    conversion: np.ndarray,
    evidence: np.ndarray,
    tier: np.ndarray,
    prior_by_tier: np.ndarray,
    overall: float,
    strength: float,
) -> np.ndarray:
    """Observed rate shrunk towards the tier's rate: w * observed + (1 - w) * prior,
    w = n / (n + strength); NaN rate or evidence counts as n = 0."""
    conversion = np.asarray(conversion, dtype=np.float64)
    tier = np.asarray(tier, dtype=np.float64)
    known = np.isfinite(tier) & (tier >= 0) & (tier < N_TIERS)
    prior = np.full(len(conversion), overall)
    prior[known] = prior_by_tier[tier[known].astype(np.int64)]
    prior = np.where(np.isfinite(prior), prior, overall)
    n = np.nan_to_num(np.asarray(evidence, dtype=np.float64), nan=0.0)
    n = np.where(np.isfinite(conversion), np.maximum(n, 0.0), 0.0)
    w = n / (n + strength) if strength > 0 else (n > 0).astype(np.float64)
    return w * np.nan_to_num(conversion, nan=0.0) + (1.0 - w) * prior


def _fill(values: np.ndarray) -> np.ndarray:
    """Missing (NaN) entries -> the median of the known ones (1.0 when none is known)."""
    values = np.asarray(values, dtype=np.float64)
    seen = np.isfinite(values)
    if seen.all():
        return values
    return np.where(seen, values, np.median(values[seen]) if seen.any() else 1.0)


def product_value(
    conversion: np.ndarray,
    price: np.ndarray,
    commission_rate: np.ndarray,
    conversion_weight: float,
    commission_weight: float,
) -> np.ndarray:
    """The creator-independent factor of EV, one per good (missing price or commission
    take the median of the goods passed in)."""
    money = _fill(price) * _fill(commission_rate)
    return np.power(np.maximum(conversion, 0.0), conversion_weight) * np.power(
        np.maximum(money, 0.0), commission_weight
    )


def relative_followers(followers: np.ndarray, median: float) -> np.ndarray:
    """followers / median followers (missing -> 1, i.e. a median creator)."""
    followers = np.asarray(followers, dtype=np.float64)
    rel = followers / max(median, 1.0)
    return np.where(np.isfinite(rel), np.maximum(rel, 0.0), 1.0)


def expected_value(
    affinity: np.ndarray, product_value: np.ndarray, reach: np.ndarray, reach_weight: float
) -> np.ndarray:
    """(n_creators, n_goods) EV = affinity * product value * reach ** reach_weight."""
    return affinity * product_value[None, :] * np.power(reach, reach_weight)[:, None]


def creator_capacity(reach: np.ndarray, base: int, exponent: float, limit: int) -> np.ndarray:
    """Goods each creator can take: `base` for a median creator, scaled by
    (followers / median) ** exponent, clipped to 1..limit (exponent 0: all `base`)."""
    if base <= 0 or limit <= 0:
        raise ValueError(f"capacities must be positive, got base={base}, limit={limit}")
    if exponent == 0:
        return np.full(len(reach), base, dtype=np.int64)
    scaled = np.round(base * np.power(np.maximum(reach, 1e-12), exponent))
    return np.clip(scaled, 1, limit).astype(np.int64)
