"""A worker's Procrastinate connections have TCP keepalives and a user timeout, as the event bus's do: a
database host gone silent breaks them in seconds instead of holding the worker for many minutes."""

from __future__ import annotations

import asyncio

import procrastinate

from reangle.runtime.worker import build_app
from tests.pg_cluster import tcp_options


def test_procrastinates_connections_have_tcp_keepalives(pg_url: str) -> None:
    async def scenario() -> dict[str, int]:
        app = build_app(pg_url, "0 * * * *")
        async with app.open_async():
            connector = app.connector
            assert isinstance(connector, procrastinate.PsycopgConnector)
            async with connector.pool.connection() as connection:
                return tcp_options(connection)

    options = asyncio.run(scenario())
    assert options == {"keepalive": 1, "idle": 5, "interval": 2, "count": 3, "user_timeout_ms": 10_000}
