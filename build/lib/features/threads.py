"""OpenMP threads that yield the CPU when they wait.

PyTorch's CPU kernels (and FAISS, and BLAS) run on OpenMP, whose threads by default spin
at every barrier. On a machine shared with another busy process, a spinning thread burns
the time slice its partner needs, and each of the thousands of small parallel kernels of
a training step waits for a descheduled thread: measured on small's two-tower step on
2 cores with two other jobs running, 2,647 ms a step spinning against 297 ms with
`OMP_WAIT_POLICY=PASSIVE` (and 363 ms on one thread). The policy is read once, when the
OpenMP runtime starts, so it is set before torch is first imported.
"""

from __future__ import annotations

import os
import sys

DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE"}


def yield_when_waiting() -> bool:
    """Set the defaults (a user's own setting wins); False when too late to take effect."""
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
    return "torch" not in sys.modules
