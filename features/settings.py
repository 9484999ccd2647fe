"""Typed settings: YAML files under `configs/`, grouped by concern, plus `--set` overrides.

Resolution order (later wins): each group's `default.yaml`, the group files a preset
selects, the preset's own overrides, a user `--config FILE`, then `--set key=value`.
Unknown keys and wrong types are errors, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from features.errors import ConfigError

CONFIG_DIR = Path(os.environ.get("HAOWU_CONFIG_DIR", Path(__file__).resolve().parents[1] / "configs"))
PRESETS = ("tiny", "small", "full")


class StrictModel(BaseModel):
    """Settings block that rejects unknown keys and never coerces across types silently."""

    model_config = ConfigDict(extra="forbid", strict=False, frozen=True)


class DataConfig(StrictModel):
    """Shape of the synthetic marketplace (`haowu generate`)."""

    preset: str
    seed: int = 42
    n_creators: int = Field(gt=0)
    n_products: int = Field(gt=0)
    n_merchants: int = Field(gt=0)
    n_brokers: int = Field(ge=0)
    n_categories_l1: int = Field(gt=0)
    n_categories_l2: int = Field(gt=0)
    n_leaf_categories: int = Field(gt=0)
    interactions: int = Field(gt=0, description="target number of interaction rows")
    days: int = Field(180, gt=7)
    cold_days: int = Field(7, gt=0, description="products listed this recently have no sales history")
    new_product_share: float = Field(0.08, ge=0, le=1, description="products listed inside the log window")
    new_merchant_share: float = Field(0.12, ge=0, le=1)
    flagged_merchant_share: float = Field(0.03, ge=0, le=1)
    broker_creator_share: float = Field(0.3, ge=0, le=1)
    label_share: float = Field(0.07, gt=0, le=1)
    label_noise: float = Field(0.12, ge=0, le=1)
    tier_shares: list[float] = Field(default=[0.12, 0.26, 0.24, 0.19, 0.12, 0.07])
    latent_dim: int = Field(16, gt=0)
    candidates: int = Field(16, gt=1, description="proposal products scored per interaction")
    zipf_categories: float = Field(1.05, gt=0)
    chunk_rows: int = Field(2_000_000, gt=0, description="interaction rows per generated part")


class RegistryConfig(StrictModel):
    """Champion/challenger gate: a challenger must not be worse on these metrics."""

    champion_alias: str = "champion"
    tolerance: float = Field(0.005, ge=0, description="absolute slack allowed per gate metric")
    gates: dict[str, dict[str, Literal["higher", "lower"]]] = Field(
        default={"haowu-tier": {"qwk": "higher"}, "haowu-matching": {"recall@50": "higher"}}
    )


class Settings(StrictModel):
    """Every group a job may read. Later groups default so old configs keep loading."""

    data: DataConfig
    registry: RegistryConfig = RegistryConfig()


GROUPS: tuple[str, ...] = tuple(Settings.model_fields)


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(loaded).__name__}")
    return loaded


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; `update` wins, nested mappings merge key by key."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_override(item: str) -> dict[str, Any]:
    """`matching.epochs=3` -> {"matching": {"epochs": 3}}; the value is parsed as YAML."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects key=value, got {item!r}")
    value = yaml.safe_load(raw) if raw.strip() else None
    nested: dict[str, Any] = {}
    cursor = nested
    parts = key.strip().split(".")
    for part in parts[:-1]:
        cursor = cursor.setdefault(part, {})
    cursor[parts[-1]] = value
    return nested


def load_settings(
    preset: str = "small",
    config_file: Path | None = None,
    overrides: Iterable[str] = (),
    config_dir: Path | None = None,
) -> Settings:
    """Compose and validate the settings for one job."""
    root = config_dir or CONFIG_DIR
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    preset_doc = _read_yaml(root / "preset" / f"{preset}.yaml")
    selected = preset_doc.pop("defaults", {}) or {}
    raw: dict[str, Any] = {}
    for group in GROUPS:
        choice = selected.get(group, "default")
        raw[group] = _read_yaml(root / group / f"{choice}.yaml")
    raw = deep_merge(raw, preset_doc)
    if config_file is not None:
        raw = deep_merge(raw, _read_yaml(Path(config_file)))
    for item in overrides:
        raw = deep_merge(raw, parse_override(item))
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        lines = [
            f"  {'.'.join(str(p) for p in err['loc'])}: {err['msg']} (got {err.get('input')!r})"
            for err in exc.errors()
        ]
        raise ConfigError("invalid settings:\n" + "\n".join(lines)) from None
