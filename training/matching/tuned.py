"""The YAML `haowu tune` writes, the data it was tuned on, and the check `train-matching`
makes.

A tuned file carries `tuned_on:` (features/settings.py `TunedOn`): the data folder, its
fingerprint and the side-feature columns the towers read. Settings tuned for an ID-only
log are not the settings for a log with side features (other towers, other inputs), so
`train-matching` refuses a tuned file whose columns differ from its data's, before
anything is written. Another fingerprint with the same columns (the same source,
re-imported with more days) is fine: the settings still fit, and the log says so.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pandas as pd
import yaml

from features.errors import ConfigError
from features.settings import TunedOn

log = logging.getLogger(__name__)

# `--tiers` adds these to the product side: an input of the run, not of the data set
TIER_COLUMNS = ("tier", "tier_score")


def side_columns(creator_frame: pd.DataFrame, product_frame: pd.DataFrame) -> dict[str, list[str]]:
    """The data's side-feature columns, per tower (empty for an ID-only log)."""
    return {
        "creators": sorted(str(c) for c in creator_frame.columns),
        "products": sorted(str(c) for c in product_frame.columns if c not in TIER_COLUMNS),
    }


def tuned_yaml(values: Mapping[str, Any], tuned_on: TunedOn) -> str:
    """The best two-tower settings as `matching: {...}`, with the data they were tuned on."""
    header = (
        f"# `haowu tune` on {tuned_on.data}: the two-tower's best of {tuned_on.trials} trials.\n"
        "# Use: haowu train-matching --data DIR --out RUN --config THIS_FILE; it refuses\n"
        "# data whose side-feature columns differ from `tuned_on.columns`.\n"
    )
    doc = {"matching": dict(values), "tuned_on": tuned_on.model_dump()}
    return header + yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=100)


class _Dumper(yaml.SafeDumper):
    """Mappings as blocks, lists on one line (`creators: [category_pref, region]`)."""


_Dumper.add_representer(
    list, lambda dumper, value: dumper.represent_sequence("tag:yaml.org,2002:seq", value, True)
)


def check_tuned_on(
    tuned: TunedOn | None, columns: dict[str, list[str]], data: str, fingerprint: str | None
) -> None:
    """Refuse settings tuned on data with other side-feature columns (one line)."""
    if tuned is None:
        return
    if tuned.columns != columns:
        diffs = []
        for side in sorted(set(tuned.columns) | set(columns)):
            was, now = set(tuned.columns.get(side, [])), set(columns.get(side, []))
            if was - now:
                diffs.append(f"{side} lacks {_names(was - now)}")
            if now - was:
                diffs.append(f"{side} adds {_names(now - was)}")
        raise ConfigError(
            f"--config was tuned on {tuned.data}, whose columns differ from {data} "
            f"({'; '.join(diffs)}): run `haowu tune --data {data}` for this data set"
        )
    if fingerprint is not None and tuned.fingerprint not in (None, fingerprint):
        log.info(
            "tuned settings from %s (data %s) used on %s (data %s): same columns",
            tuned.data,
            tuned.fingerprint,
            data,
            fingerprint,
        )


def _names(columns: set[str], show: int = 4) -> str:
    """`a, b, c, d and 7 more`: the message stays one readable line."""
    names = sorted(columns)
    more = f" and {len(names) - show} more" if len(names) > show else ""
    return ", ".join(names[:show]) + more
