"""Figures of a pipeline folder's lists and embeddings, for the report and the notebooks.

Each function returns a matplotlib Figure (Agg backend); `to_png` turns one into bytes
for embedding in HTML.
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def to_png(fig: plt.Figure, dpi: int = 100) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    return buffer.getvalue()


def mix_plot(mix: pd.DataFrame, title: str, xlabel: str) -> plt.Figure:
    """Grouped bars: share of list slots vs share of the catalog per group."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    x = np.arange(len(mix))
    width = 0.8 / len(mix.columns)
    for k, column in enumerate(mix.columns):
        ax.bar(x + (k - (len(mix.columns) - 1) / 2) * width, mix[column], width, label=column)
    ax.set(xticks=x, title=title, xlabel=xlabel, ylabel="share")
    ax.set_xticklabels([str(i) for i in mix.index])
    ax.legend()
    return fig


def selected_goods_rank_plot(by_rank: pd.Series, catalog_share: float | None) -> plt.Figure:
    """Selected Goods share of list slots up to each rank, against the catalog's share."""
    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.plot(range(len(by_rank)), by_rank.to_numpy(), marker="o", label="lists")
    if catalog_share is not None:
        ax.axhline(catalog_share, color="grey", linestyle="--", label="catalog")
    ax.set(
        xticks=range(len(by_rank)),
        title="Selected Goods (L5) share of list slots",
        ylabel="share of slots",
    )
    ax.set_xticklabels(by_rank.index)
    ax.set_ylim(bottom=0)
    ax.legend()
    return fig


def categories_per_list_plot(per_list: pd.Series) -> plt.Figure:
    """Histogram of distinct leaf categories in one creator's list."""
    fig, ax = plt.subplots(figsize=(6, 3.4))
    top = int(per_list.max()) if len(per_list) else 1
    ax.hist(per_list.to_numpy(), bins=np.arange(0.5, top + 1.5), color="tab:green")
    ax.axvline(per_list.mean(), color="black", linestyle="--", label=f"mean {per_list.mean():.1f}")
    ax.set(
        title="leaf categories per creator list",
        xlabel="distinct leaf categories",
        ylabel="creators",
    )
    ax.legend()
    return fig


def embedding_map_plot(points: pd.DataFrame, colour: str = "category_l1") -> plt.Figure:
    """2-D map of embeddings (columns x, y), one colour per value of `colour`."""
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    for value, group in points.groupby(colour):
        ax.scatter(group["x"], group["y"], s=4, alpha=0.6, label=str(value))
    ax.set(title=f"product embeddings (PCA), coloured by {colour}", xlabel="PC 1", ylabel="PC 2")
    ax.legend(markerscale=3, fontsize=7, title=colour, loc="best")
    return fig


def metric_bars_plot(table: pd.DataFrame, metric: str) -> plt.Figure:
    """One bar per model for `metric` in a (model x metric) table."""
    fig, ax = plt.subplots(figsize=(6, 3.4))
    values = table[metric].sort_values()
    colours = ["tab:red" if m == "two_tower" else "tab:blue" for m in values.index]
    ax.barh(values.index, values.to_numpy(), color=colours)
    ax.set(title=metric, xlabel=metric)
    return fig
