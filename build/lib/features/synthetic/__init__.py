"""The synthetic marketplace: every contract table plus the hidden truth behind it.

`generate(cfg, out)` writes a marketplace whose structure (category tastes, price fit,
quality, heavy tails, cold goods, a non-linear hidden tier) is what the rest of the engine
has to recover; `Oracle` scores creators x products with the true propensities.
"""

from features.synthetic.generate import GENERATOR_VERSION, generate, run_generation
from features.synthetic.oracle import Oracle

__all__ = ["GENERATOR_VERSION", "Oracle", "generate", "run_generation"]
