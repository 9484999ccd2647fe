"""Where the two-tower trains and embeds: `matching.device` = auto | cpu | cuda.

`auto` takes the GPU when PyTorch sees one and the CPU otherwise; `cuda` on a machine
without one is an error naming the setting, not a silent fall back to hours of CPU work.
"""

from __future__ import annotations

import torch

from features.errors import ConfigError


def resolve_device(setting: str, cuda_available: bool | None = None) -> torch.device:
    """The torch device `setting` asks for on this machine."""
    has_cuda = torch.cuda.is_available() if cuda_available is None else cuda_available
    if setting == "auto":
        return torch.device("cuda" if has_cuda else "cpu")
    if setting == "cuda" and not has_cuda:
        raise ConfigError(
            "matching.device=cuda, but PyTorch sees no GPU here (use matching.device=auto or cpu)"
        )
    if setting not in ("cpu", "cuda"):
        raise ConfigError(f"matching.device must be auto, cpu or cuda, got {setting!r}")
    return torch.device(setting)
