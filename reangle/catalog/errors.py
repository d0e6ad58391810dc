"""The one error a catalog can raise: a single line naming the file, the entry and the field."""

from __future__ import annotations

import json

from reangle.errors import ReangleError


class CatalogError(ReangleError):
    """The model catalog is invalid."""

    code = "catalog_error"

    def __init__(
        self,
        source: str,
        problem: str,
        *,
        entry: str | None = None,
        field: str | None = None,
        position: str | None = None,
    ) -> None:
        self.source = source
        self.entry = entry
        self.field = field
        self.problem = problem
        parts = [f"catalog {source}", position, entry, field, problem]
        # one line whatever the file held: `reangle serve` prints it as is
        message = ": ".join(part for part in parts if part).replace("\r", "\\r").replace("\n", "\\n")
        super().__init__(message)


def shown(value: object) -> str:
    """A value as a message quotes it, on one line: TOML strings in double quotes."""
    return json.dumps(value, ensure_ascii=False, default=str)


def entry_label(model_id: str | None, index: int) -> str:
    """How messages name an entry: by its id once that is known to be valid, else by its place in the file."""
    return f"model {shown(model_id)}" if model_id is not None else f"model[{index}]"
