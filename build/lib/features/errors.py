"""Named failures of the domain, reported by the CLI as one clear message, no traceback."""

from __future__ import annotations

from collections.abc import Sequence


class HaowuError(Exception):
    """Base class: anything the user can fix from the message alone."""


class ConfigError(HaowuError):
    """A configuration file or `--set` override is unknown, mistyped or out of range."""


class OutputExistsError(HaowuError):
    """An output folder already holds something and `--overwrite` was not given."""


class ContractError(HaowuError):
    """A table breaks the data contract: names the table, column, rule and a few rows."""

    def __init__(
        self,
        table: str,
        rule: str,
        column: str | None = None,
        rows: Sequence[object] | None = None,
        path: str | None = None,
        total: int | None = None,
    ) -> None:
        self.table, self.rule, self.column = table, rule, column
        self.rows = list(rows or [])[:5]
        self.path, self.total = path, total
        super().__init__(self._message())

    def _message(self) -> str:
        where = f"table '{self.table}'"
        if self.path:
            where += f" ({self.path})"
        if self.column:
            where += f", column '{self.column}'"
        msg = f"{where}: {self.rule}"
        if self.total is not None:
            msg += f" [{self.total} offending row(s)]"
        if self.rows:
            msg += "\n  e.g. " + "\n       ".join(str(r) for r in self.rows)
        return msg
