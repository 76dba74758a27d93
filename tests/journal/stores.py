"""The durable journals the contract suite (``test_contract.py``) runs against.

``DURABLE_STORES`` names every journal that keeps its records outside the object, with how to
make an empty store for one test: SQLite (a file in the test's ``tmp_path``) and PostgreSQL (a
new database on the session's real server, ``tests/servers.py``; its tests skip, saying why,
where PostgreSQL is not installed). A new journal adds a ``Store`` class and one entry, and
every contract test runs against it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest

from batchpump._journal import Journal, JournalStatistics, open_journal

__all__ = ["DURABLE_STORES", "DurableJournal", "PostgresStore", "SqliteStore", "Store"]


class DurableJournal(Journal, Protocol):
    """A journal whose records outlive it, and which counts what it did."""

    def statistics(self) -> JournalStatistics: ...


class Store(Protocol):
    """Where a durable journal keeps its records; ``open`` may be called again after a close."""

    def open(self) -> contextlib.AbstractAsyncContextManager[DurableJournal]: ...


@dataclass(frozen=True)
class SqliteStore:
    """A ``SqliteJournal`` file."""

    path: Path

    def open(self) -> contextlib.AbstractAsyncContextManager[DurableJournal]:
        return open_journal(self.path)


@dataclass(frozen=True)
class PostgresStore:
    """A ``PostgresJournal`` database, named by its URL (with the password)."""

    url: str

    def open(self) -> contextlib.AbstractAsyncContextManager[DurableJournal]:
        return open_journal(self.url)


def _postgres_store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    url: str = request.getfixturevalue("postgres_url")  # skips where PostgreSQL is missing
    return PostgresStore(url)


#: Each durable journal, and how to make an empty store for one test (its request and
#: ``tmp_path``; a store on a server takes the server's fixture from the request).
DURABLE_STORES: dict[str, Callable[[pytest.FixtureRequest, Path], Store]] = {
    "sqlite": lambda request, tmp_path: SqliteStore(tmp_path / "journal.sqlite"),
    "postgresql": _postgres_store,
}
