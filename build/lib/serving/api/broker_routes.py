"""Brokers: a broker's recruited goods assigned to the creators on its roster."""

from __future__ import annotations

from fastapi import APIRouter

from serving.api.read_common import (
    ERRORS,
    BrokerId,
    BundleDep,
)
from serving.api.security import ReadAuth
from serving.online import lookup
from serving.online.broker_matches import BrokerMatches

brokers = APIRouter(prefix="/brokers", tags=["brokers"], responses=ERRORS)


@brokers.get("/{broker_id}/matches")
async def broker_matches(broker_id: BrokerId, bundle: BundleDep, _: ReadAuth) -> BrokerMatches:
    """A broker's recruited goods assigned to the creators on its roster."""
    return lookup.broker_matches(bundle, broker_id)
