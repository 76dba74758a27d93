"""Shared fixtures. Every test runs offline: loopback only, port 0, hard timeouts.

PostgreSQL and Redis are real servers started once per session (``tests/servers.py``) on free
loopback ports; the tests that use them skip, saying why, only where they are not installed.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import servers
from tests.servers import PostgresServer, RedisServer

SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture
def shared_dir() -> Path:
    """The steering repo's shared/ folder (specs, provider notes), or skip."""
    if not SHARED.is_dir():
        pytest.skip(
            "the providers' API specs are not in this checkout "
            f"(they live in {SHARED}, beside the project in CI)"
        )
    return SHARED


# -- real servers (tests/servers.py): one PostgreSQL and one Redis per test session ----------


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """PostgreSQL 15 in a temporary directory on a free loopback port, for the session."""
    try:
        with servers.postgres_server() as server:
            yield server
    except servers.ServerUnavailable as exc:
        pytest.skip(f"no PostgreSQL here: {exc}")


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """The URL (with its password) of a new, empty database of the session's server."""
    return postgres_server.create_database(f"test_{next(_databases)}")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """redis-server on a free loopback port (no persistence), for the session."""
    try:
        with servers.redis_server(tmp_path_factory.mktemp("redis")) as server:
            yield server
    except servers.ServerUnavailable as exc:
        pytest.skip(f"no Redis here: {exc}")


_databases = itertools.count(1)
