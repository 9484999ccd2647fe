"""The search space of `haowu tune` (configs/tune/default.yaml): checked against the
matching settings before any training, and sampled per Optuna trial.

A space maps `matching.*` keys to distributions (`FloatRange`, `IntRange`, `Choice` in
features/settings.py). A key that is no matching setting, a range whose ends are not
valid values of the key (`temperature` up to 2, where it must be <= 1), or an empty
two-tower space is a one-line `ConfigError` naming it: a typo must not cost an hour of
trials before it shows.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import optuna
from pydantic import ValidationError

from features.errors import ConfigError
from features.settings import Choice, Distribution, FloatRange, IntRange, MatchingConfig, Settings

SPACES = ("two_tower", "als", "ease")  # one study each, in this order


def spaces(settings: Settings) -> dict[str, dict[str, Distribution]]:
    """Each model's checked search space (`tune.two_tower`, `tune.als`, `tune.ease`)."""
    out = {name: dict(getattr(settings.tune, name)) for name in SPACES}
    if not out["two_tower"]:
        raise ConfigError("tune.two_tower: empty search space, nothing to tune")
    base = settings.matching.model_dump()
    for name, space in out.items():
        for key, dist in space.items():
            _check(f"tune.{name}.{key}", key, dist, base)
    return out


def _check(where: str, key: str, dist: Distribution, base: dict[str, Any]) -> None:
    if key not in MatchingConfig.model_fields:
        raise ConfigError(
            f"{where}: {key!r} is not a matching setting (see configs/matching/default.yaml)"
        )
    if isinstance(dist, Choice):
        values = dist.choices
    else:
        if dist.low > dist.high:
            raise ConfigError(f"{where}: low {dist.low} is above high {dist.high}")
        if dist.log and dist.low <= 0:
            raise ConfigError(f"{where}: a log range needs low > 0 (got {dist.low})")
        values = [dist.low, dist.high]
    for value in values:
        try:
            MatchingConfig.model_validate({**base, key: value})
        except ValidationError as exc:
            reason = exc.errors()[0]["msg"]
            raise ConfigError(
                f"{where}: {value!r} is not a valid matching.{key} ({reason})"
            ) from None


def suggest(trial: optuna.Trial, space: Mapping[str, Distribution]) -> dict[str, Any]:
    """One trial's values of the space's keys."""
    out: dict[str, Any] = {}
    for key, dist in space.items():
        if isinstance(dist, FloatRange):
            out[key] = trial.suggest_float(key, dist.low, dist.high, log=dist.log)
        elif isinstance(dist, IntRange):
            out[key] = trial.suggest_int(key, dist.low, dist.high, step=dist.step, log=dist.log)
        elif all(isinstance(c, bool | int | float | str) or c is None for c in dist.choices):
            out[key] = trial.suggest_categorical(key, dist.choices)
        else:  # Optuna's choices are scalars: lists (`hidden: [[256], [128]]`) go by name
            names = [json.dumps(c) for c in dist.choices]
            out[key] = dist.choices[names.index(trial.suggest_categorical(key, names))]
    return out


def with_values(base: MatchingConfig, values: Mapping[str, Any]) -> MatchingConfig:
    """`base` with a trial's values, validated (a sampled value is checked like a file's)."""
    return MatchingConfig.model_validate({**base.model_dump(), **values})
