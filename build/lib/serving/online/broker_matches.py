"""What `GET /brokers/{broker_id}/matches` answers: one broker's assignment, read from a
`haowu match-brokers` output folder and held in memory (a few rows per rostered creator)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel

from features.errors import HaowuError
from models.artifacts import BROKER_SUMMARY as SUMMARY
from models.artifacts import MATCHES


class UnknownBrokerError(HaowuError):
    """The broker is not in the match-brokers output (the service answers 404)."""


class BrokerMatch(BaseModel):
    creator_id: int | str
    product_id: int | str
    expected_value: float
    affinity: float
    rank: int  # among the creator's assigned goods, 1 = best


class BrokerMatches(BaseModel):
    broker_id: int
    solver: str  # exact | greedy | none
    reason: str  # why nothing was assigned ("" otherwise)
    matches: list[BrokerMatch]


class BrokerMatchStore:
    """Every broker's matches, sorted by broker, then creator, then rank."""

    def __init__(self, matches: pd.DataFrame, summary: pd.DataFrame) -> None:
        self._matches = matches.sort_values(["broker_id", "creator_id", "rank"], ignore_index=True)
        self._brokers = self._matches["broker_id"].to_numpy(np.int64)
        self._summary = summary.set_index("broker_id")

    @classmethod
    def load(cls, folder: Path) -> BrokerMatchStore:
        folder = Path(folder)
        if not (folder / MATCHES).is_file() or not (folder / SUMMARY).is_file():
            raise HaowuError(f"{folder} is not a match-brokers output ({MATCHES} missing)")
        return cls(pd.read_parquet(folder / MATCHES), pd.read_parquet(folder / SUMMARY))

    @property
    def broker_ids(self) -> list[int]:
        return [int(b) for b in self._summary.index]

    def get(self, broker_id: int) -> BrokerMatches:
        if broker_id not in self._summary.index:
            raise UnknownBrokerError(f"broker {broker_id} is not in the match-brokers output")
        lo, hi = np.searchsorted(self._brokers, [broker_id, broker_id + 1])
        rows = self._matches.iloc[lo:hi]
        info = self._summary.loc[broker_id]
        return BrokerMatches(
            broker_id=broker_id,
            solver=str(info.get("solver", "")),
            reason=str(info.get("reason", "") or ""),
            matches=[
                BrokerMatch(
                    creator_id=_plain(r.creator_id),
                    product_id=_plain(r.product_id),
                    expected_value=float(r.expected_value),
                    affinity=float(r.affinity),
                    rank=int(r.rank),
                )
                for r in rows.itertuples(index=False)
            ],
        )


def _plain(value: object) -> int | str:
    """numpy ints -> int (JSON); the user's string IDs stay strings."""
    return value if isinstance(value, str) else int(value)  # type: ignore[call-overload]
