"""Where the service loads from: a pipeline folder, individual folders, or the registry.

`haowu serve --from DIR` reads the pipeline layout (models/artifacts.py: data, tier,
matching, lists/creator, lists/product, brokers; lists and brokers are optional).
`--model models:/haowu-matching@champion` is resolved by the artifact contract at every
(re)load: the registered pyfunc carries the whole matching model folder, but not the
data (the catalog facts and the goods each creator already promoted), the tiers, the
batch lists or the broker matches. Those come from the flags; when `--data`/`--tiers`
are not given, the data and tier folders the registered run was trained on are used.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from models.artifacts import PipelineLayout


@dataclass(frozen=True)
class ServeSources:
    """Every input of the service; only `model` is required."""

    model: str
    data: Path | None = None
    tiers: Path | str | None = None  # a tier run folder or models:/haowu-tier@ALIAS
    lists: Path | None = None  # creator -> goods batch lists
    product_lists: Path | None = None  # product -> creators batch lists
    brokers: Path | None = None

    @classmethod
    def from_dir(cls, root: Path, model: str | None = None) -> ServeSources:
        """A pipeline folder's layout (DESIGN §6); absent optional parts stay None."""
        layout = PipelineLayout(root).require()
        return cls(
            model=model or str(layout.matching),
            data=layout.existing(layout.data),
            tiers=layout.existing(layout.tier),
            lists=layout.existing(layout.creator_lists),
            product_lists=layout.existing(layout.product_lists),
            brokers=layout.existing(layout.brokers),
        )

    def with_overrides(self, **values: Path | str | None) -> ServeSources:
        """These sources with the given (non-None) values replaced."""
        return replace(self, **{k: v for k, v in values.items() if v is not None})
