"""The tier job's plots (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from features.indicators import DIMENSIONS  # noqa: E402

TIER_NAMES = [f"L{t}" for t in range(6)]


def _save(fig: plt.Figure, path: Path, dpi: int) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def confusion_plot(matrices: dict[str, np.ndarray], path: Path, dpi: int) -> Path:
    """Row-normalised confusion matrices side by side (rows: label, columns: predicted)."""
    fig, axes = plt.subplots(1, len(matrices), figsize=(4.6 * len(matrices), 4.2), squeeze=False)
    for ax, (title, counts) in zip(axes[0], matrices.items(), strict=True):
        shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
        for (i, j), value in np.ndenumerate(counts):
            colour = "white" if shares[i, j] > 0.5 else "black"
            ax.text(j, i, f"{value}", ha="center", va="center", fontsize=8, color=colour)
        ax.set(
            title=title,
            xlabel="predicted tier",
            ylabel="labelled tier",
            xticks=range(6),
            yticks=range(6),
            xticklabels=TIER_NAMES,
            yticklabels=TIER_NAMES,
        )
    return _save(fig, path, dpi)


def distribution_plot(shares: dict[str, np.ndarray], path: Path, dpi: int) -> Path:
    """Tier shares of several populations as grouped bars."""
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(shares)
    for k, (label, values) in enumerate(shares.items()):
        ax.bar(np.arange(6) + (k - (len(shares) - 1) / 2) * width, values, width, label=label)
    ax.set(
        xticks=range(6),
        xticklabels=TIER_NAMES,
        ylabel="share of products",
        title="tier distribution",
    )
    ax.legend()
    return _save(fig, path, dpi)


def contributions_plot(mean_by_tier: np.ndarray, path: Path, dpi: int) -> Path:
    """Mean contribution of each dimension to the score, per tier (score = bias + sum)."""
    fig, ax = plt.subplots(figsize=(8, 4.2))
    width = 0.8 / len(DIMENSIONS)
    for k, dim in enumerate(DIMENSIONS):
        offset = (k - (len(DIMENSIONS) - 1) / 2) * width
        ax.bar(np.arange(6) + offset, mean_by_tier[:, k], width, label=dim)
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set(
        xticks=range(6),
        xticklabels=TIER_NAMES,
        ylabel="mean contribution to the score",
        title="what lifts and sinks each tier, by dimension",
    )
    ax.legend(ncol=len(DIMENSIONS), fontsize=8, loc="upper left")
    return _save(fig, path, dpi)
