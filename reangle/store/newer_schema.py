"""The refusal of a database that a newer reangle has upgraded: this one would misread its rows (and fail the
jobs that newer one accepted), so it does not start on it."""

from __future__ import annotations

from reangle.errors import ReangleError


class NewerSchema(ReangleError):
    """The database's schema is newer than this reangle knows."""

    code = "newer_schema"


def newer_schema(database: str, found: int, known: int) -> NewerSchema:
    return NewerSchema(
        f"{database} has schema version {found}, from a newer reangle; this one knows versions up to {known}",
        hint="run that newer reangle on it, or restore the backup taken before the upgrade",
    )
