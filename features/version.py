"""haowu's version: the installed distribution's, shown by `haowu --version`, `/healthz`
and every MLflow run's `haowu.version` tag."""

from __future__ import annotations

from functools import cache
from importlib.metadata import PackageNotFoundError, version


@cache
def haowu_version() -> str:
    try:
        return version("haowu")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


TOP_LEVEL = ("cli", "features", "models", "training", "serving")


def shadowing() -> list[str]:
    """haowu's top-level names are generic (`features`, `models`, ...): the other installed
    distributions that ship a package of the same name, one line each (empty: none)."""
    from importlib.metadata import packages_distributions

    owners = packages_distributions()
    return [
        f"{name!r} is also installed by {', '.join(sorted(set(others)))}"
        for name in TOP_LEVEL
        if (others := [d for d in owners.get(name, []) if d.lower() != "haowu"])
    ]
