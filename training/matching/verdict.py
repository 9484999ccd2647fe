"""Which matching model won on validation, and by how much.

Every model of a protocol is scored on the same validation pairs (Recall@early_stop_k,
training pairs masked), so the run says plainly whether the two-tower beat its baselines
before anyone reads the test table. The two-tower chose its epoch count on these pairs,
which favours it slightly; the test table is the unbiased comparison.
"""

from __future__ import annotations

from dataclasses import dataclass

MODEL = "two_tower"
NOT_BASELINES = (MODEL, "oracle")
PROTOCOL_PREFIX = {"random": "", "time": "time_", "cold": "cold_"}


@dataclass(frozen=True)
class Verdict:
    protocol: str
    metric: str
    scores: dict[str, float]  # model -> validation metric
    winner: str
    best_baseline: str
    ratio: float  # two-tower / best baseline

    def line(self) -> str:
        return (
            f"{self.protocol}: {self.winner} won on validation {self.metric}; two-tower "
            f"{self.scores[MODEL]:.4f} vs best baseline {self.best_baseline} "
            f"{self.scores[self.best_baseline]:.4f} ({self.ratio:.2f}x)"
        )


def verdict(protocol: str, metric: str, scores: dict[str, float]) -> Verdict | None:
    """None when the two-tower or every baseline is missing."""
    baselines = {name: v for name, v in scores.items() if name not in NOT_BASELINES}
    if MODEL not in scores or not baselines:
        return None
    best = max(baselines, key=lambda name: baselines[name])
    ratio = scores[MODEL] / baselines[best] if baselines[best] else float("inf")
    winner = MODEL if scores[MODEL] >= baselines[best] else best
    return Verdict(protocol, metric, dict(scores), winner, best, ratio)


def val_metric(k: int) -> str:
    return f"val_recall@{k}"


def metric_name(protocol: str, model: str, metric: str) -> str:
    """`val_recall@50` of `als` under `time` -> `time_als_val_recall@50` (DESIGN §6 style)."""
    return PROTOCOL_PREFIX[protocol] + ("" if model == MODEL else f"{model}_") + metric


def from_metrics(
    metrics: dict[str, float], protocol: str, models: tuple[str, ...]
) -> Verdict | None:
    """The verdict read back from a run's flat metrics (metrics.json)."""
    stem = metric_name(protocol, MODEL, "val_recall@")
    ks = [key.removeprefix(stem) for key in metrics if key.startswith(stem)]
    if not ks:
        return None
    metric = val_metric(int(ks[0]))
    scores = {
        m: metrics[metric_name(protocol, m, metric)]
        for m in models
        if metric_name(protocol, m, metric) in metrics
    }
    return verdict(protocol, metric, scores)
