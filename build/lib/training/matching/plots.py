"""Recall@k curves of the two-tower model, its baselines and the oracle."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_recall_curves(curves: dict[str, np.ndarray], path: Path, title: str = "Recall@k") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, curve in curves.items():
        ks = np.arange(1, len(curve) + 1)
        style = "--" if name == "oracle" else "-"
        ax.plot(ks, curve, style, label=name, linewidth=2 if name == "two_tower" else 1.2)
    ax.set_xlabel("k")
    ax.set_ylabel("recall@k")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
