"""Per-indicator contributions of a LightGBM booster, from per-leaf tables.

LightGBM's `pred_contrib` (TreeSHAP) runs at a few thousand rows a second per core: far
too slow for 10M products. Instead every leaf of every tree gets, once, the change in
expected value along its root-to-leaf path, credited to the feature each split tested
(path attribution). Explaining a row then needs only the leaf it reaches in each tree.

Both explanations sum to the score: bias + sum of contributions = raw prediction. When
every tree splits on the indicators of one dimension only (the tier model's interaction
constraints), the sum over a dimension equals `pred_contrib` summed over that dimension
exactly: each tree moves the score by `leaf - E[tree]`, and both methods give all of it to
that tree's dimension. Within a dimension the split between indicators is path
attribution, which is what picks the top indicator for and against.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np

from features.indicators import DIMENSIONS

# the per-dimension columns of an explanation, in `DIMENSIONS` order (tiers.parquet, pyfunc)
CONTRIBUTION_COLUMNS = tuple(f"contrib_{dim}" for dim in DIMENSIONS)


@dataclass(frozen=True)
class Leaf:
    """One leaf: its output, its path credit and the box of inputs that reach it."""

    index: int
    value: float
    credit: dict[int, float]  # feature -> change of expected value credited to it
    # feature -> (low, high, missing_ok): values in (low, high], NaN allowed or not
    region: dict[int, tuple[float, float, bool]] = field(default_factory=dict)


def _missing_goes_left(node: dict[str, Any]) -> bool:
    """Where LightGBM sends NaN at this split: the default side when it saw NaN in
    training, else NaN is read as 0.0 and compared with the threshold."""
    if node.get("missing_type") == "NaN":
        return bool(node["default_left"])
    return 0.0 <= float(node["threshold"])


def _expected(node: dict[str, Any]) -> tuple[float, float]:
    """Set node["expected"] (leaf values weighted by training counts, as TreeSHAP does);
    returns (expected, count)."""
    if "split_feature" not in node:  # a leaf (a one-leaf tree has no leaf_index)
        node["expected"] = float(node["leaf_value"])
        return node["expected"], float(node.get("leaf_count", 0))
    left, n_left = _expected(node["left_child"])
    right, n_right = _expected(node["right_child"])
    count = n_left + n_right
    node["expected"] = (left * n_left + right * n_right) / count if count else (left + right) / 2
    return node["expected"], count


def tree_leaves(structure: dict[str, Any]) -> tuple[list[Leaf], float]:
    """Every leaf of one dumped tree, and the tree's expected value (its share of the bias)."""
    root, _ = _expected(structure)
    leaves: list[Leaf] = []
    stack: list[tuple[dict[str, Any], dict[int, float], dict[int, tuple[float, float, bool]]]]
    stack = [(structure, {}, {})]
    while stack:
        node, credit, region = stack.pop()
        if "split_feature" not in node:
            leaves.append(
                Leaf(int(node.get("leaf_index", 0)), float(node["leaf_value"]), credit, region)
            )
            continue
        feature, threshold = int(node["split_feature"]), float(node["threshold"])
        if node.get("decision_type") != "<=" or node.get("missing_type") == "Zero":
            raise ValueError(
                f"unsupported split {node.get('decision_type')!r} on feature {feature}"
            )
        low, high, missing_ok = region.get(feature, (-np.inf, np.inf, True))
        nan_left = _missing_goes_left(node)
        sides = (
            ("left_child", (low, min(high, threshold), missing_ok and nan_left)),
            ("right_child", (max(low, threshold), high, missing_ok and not nan_left)),
        )
        for side, bounds in sides:
            child = node[side]
            moved = dict(credit)
            moved[feature] = moved.get(feature, 0.0) + child["expected"] - node["expected"]
            stack.append((child, moved, region | {feature: bounds}))
    return leaves, root


class LeafAttribution:
    """Per-leaf path credits of a booster: `from_leaves(pred_leaf)` -> (rows, features)."""

    def __init__(self, booster: lgb.Booster) -> None:
        dump = booster.dump_model()
        self.n_features = len(dump["feature_names"])
        self.trees: list[list[Leaf]] = []
        self.bias = 0.0
        for info in dump["tree_info"]:
            leaves, expected = tree_leaves(info["tree_structure"])
            self.trees.append(leaves)
            self.bias += expected
        # Per feature: one flat credit table over the trees that split on it, so a row's
        # contribution is a gather and a sum instead of a Python loop over trees.
        self._plan: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []
        for feature in range(self.n_features):
            using, offsets, tables, start = [], [], [], 0
            for t, leaves in enumerate(self.trees):
                if not any(feature in leaf.credit for leaf in leaves):
                    continue
                table = np.zeros(max(leaf.index for leaf in leaves) + 1)
                for leaf in leaves:
                    table[leaf.index] = leaf.credit.get(feature, 0.0)
                using.append(t)
                offsets.append(start)
                tables.append(table)
                start += len(table)
            if using:
                self._plan.append(
                    (
                        feature,
                        np.asarray(using, dtype=np.int64),
                        np.asarray(offsets, dtype=np.int32),
                        np.concatenate(tables),
                    )
                )

    def from_leaves(self, leaves: np.ndarray, block_rows: int) -> np.ndarray:
        """(rows, trees) leaf indices from `predict(pred_leaf=True)` -> (rows, features),
        `block_rows` rows at a time so the (rows, trees) gathers stay small."""
        out = np.zeros((len(leaves), self.n_features))
        for lo in range(0, len(leaves), block_rows):
            block = leaves[lo : lo + block_rows]
            for feature, trees, offsets, table in self._plan:
                index = block[:, trees] + offsets  # (block, trees using the feature)
                out[lo : lo + len(block), feature] = table[index].sum(axis=1)
        return out
