"""What a refresh says about itself: the lists' `_SUCCESS` brought up to date, and the
refresh manifest (`DIR/lists/refresh.json`: what changed and why, counts per reason,
the digests before and after)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from features.errors import HaowuError
from models.artifacts import SUCCESS


class RefreshError(HaowuError):
    """The pipeline folder cannot be refreshed as it is (missing parts, stale lists)."""


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def lists_manifest(folder: Path) -> dict[str, Any]:
    """A lists folder's `_SUCCESS` (the batch job's manifest); refused when absent."""
    path = Path(folder) / SUCCESS
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        raise RefreshError(
            f"{folder} holds no complete batch lists ({SUCCESS}); run `haowu recommend` first"
        ) from None
    if not isinstance(doc, dict):
        raise RefreshError(f"{path}: not a batch manifest")
    return doc


def check_model(manifest: dict[str, Any], folder: Path, digest: str) -> None:
    """Lists refreshed with one model must have been written by it."""
    written = manifest.get("model_digest")
    if written != digest:
        raise RefreshError(
            f"{folder} was written by model {str(written)[:12]}, the pipeline folder's model "
            f"is {digest[:12]}: rerun `haowu recommend` for it before refreshing"
        )


def check_policy(manifest: dict[str, Any], folder: Path, policy: dict[str, Any]) -> None:
    """Lists refreshed under one policy must have been written under it (the same
    settings as the pipeline: pass its --preset and --set)."""
    written = manifest.get("policy")
    if written is not None and written != policy:
        changed = sorted(k for k in set(written) | set(policy) if written.get(k) != policy.get(k))
        raise RefreshError(
            f"{folder} was written under another policy ({', '.join(changed[:4])} differ): "
            "refresh with the pipeline's settings (--preset, --config, --set)"
        )


def updated_success(
    manifest: dict[str, Any], digests: dict[str, str | None], rows: int, summary: dict[str, Any]
) -> dict[str, Any]:
    """The lists' `_SUCCESS` after a refresh: the same model, the refreshed data and
    tiers, the rows now held, and what this refresh rewrote."""
    return {**manifest, **digests, "rows": rows, "refreshed_at": now(), "refresh": summary}
