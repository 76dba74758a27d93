"""The durable journals the contract suite (``test_contract.py``) runs against.

``DURABLE_STORES`` names every journal that keeps its records outside the object, with how to
make an empty store for one test. A new journal (PostgreSQL) adds a ``Store`` class and one
entry, and every contract test runs against it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from batchpump._journal import Journal, JournalStatistics, open_journal

__all__ = ["DURABLE_STORES", "DurableJournal", "SqliteStore", "Store"]


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


#: Each durable journal, and how to make an empty store for it in a test's ``tmp_path``.
DURABLE_STORES: dict[str, Callable[[Path], Store]] = {
    "sqlite": lambda tmp_path: SqliteStore(tmp_path / "journal.sqlite"),
}
