"""The interaction log's time window, in unix seconds."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time

from features.synthetic.params import DataConfig

DAY = 86_400


@dataclass(frozen=True)
class Window:
    start: int  # first second of the log (inclusive)
    end: int  # end of the log (exclusive): midnight of cfg.end_date
    days: int

    @classmethod
    def from_config(cls, cfg: DataConfig) -> Window:
        end = int(datetime.combine(cfg.end_date, time(), tzinfo=UTC).timestamp())
        return cls(start=end - cfg.days * DAY, end=end, days=cfg.days)
