"""`reangle db upgrade`: bring the PostgreSQL schema up to date (a server or worker also does it when it
starts, through `upgrade_schema`)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from reangle.settings import Settings

if TYPE_CHECKING:
    from reangle.store.pg_schema import Migration


def add_db_commands(commands: argparse._SubParsersAction[Any]) -> None:
    db = commands.add_parser("db", help="manage the database schema")
    actions = db.add_subparsers(metavar="ACTION", required=True)
    upgrade = actions.add_parser("upgrade", help="apply the missing schema migrations (PostgreSQL)")
    upgrade.set_defaults(run=run_db_upgrade)


def run_db_upgrade(_args: argparse.Namespace, settings: Settings) -> int:
    if not settings.database_url:
        print("reangle: the SQLite database needs no upgrade (its tables are made when it opens)")
        return 0
    applied = upgrade_schema(settings)
    for migration in applied:
        print(f"applied migration {migration.version}: {migration.description}")
    if not applied:
        print("the database schema is up to date")
    return 0


def upgrade_schema(settings: Settings) -> list[Migration]:
    """Apply the migrations the PostgreSQL database lacks; those applied (none on SQLite)."""
    if not settings.database_url:
        return []
    import psycopg

    from reangle.compose import check_database_url
    from reangle.store.pg_schema import upgrade
    from reangle.store.postgres import connection_failure, database_address

    check_database_url(settings)
    try:
        return upgrade(settings.database_url)
    except psycopg.OperationalError as exc:
        raise connection_failure(database_address(settings.database_url), exc) from None
