"""The base of every settings block: unknown keys are errors, values are frozen.

Its own module so that the generator's parameters (features/synthetic/params.py) and the
jobs' settings (features/settings.py) share it without importing each other.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Settings block that rejects unknown keys and never coerces across types silently."""

    model_config = ConfigDict(extra="forbid", strict=False, frozen=True)
