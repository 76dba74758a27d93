"""Open the journal a path or a URL names: SQLite for a path, PostgreSQL for a URL.

``open_journal`` is the one place that tells them apart, so the CLI's ``--journal`` and
``Pump(journal=...)`` accept either spelling: ``postgresql://USER:PASSWORD@HOST/DB`` (or
``postgres://``) opens a ``PostgresJournal``, anything else is a ``SqliteJournal`` file.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator

from .postgres import PostgresJournal, is_postgres_url
from .sqlite import SqliteJournal, Synchronous

__all__ = ["connect_journal", "open_journal"]


async def connect_journal(
    target: str | os.PathLike[str],
    *,
    synchronous: Synchronous = "NORMAL",
    check: bool = True,
) -> SqliteJournal | PostgresJournal:
    """Open the journal ``target`` names; the caller closes it (``aclose``).

    Args:
        target: a ``postgresql://`` URL, or the SQLite journal file.
        synchronous: SQLite only (see ``SqliteJournal.open``).
        check: SQLite only (see ``SqliteJournal.open``).
    """
    if is_postgres_url(target):
        assert isinstance(target, str)
        return await PostgresJournal.open(target)
    return await SqliteJournal.open(target, synchronous=synchronous, check=check)


@contextlib.asynccontextmanager
async def open_journal(
    target: str | os.PathLike[str],
    *,
    synchronous: Synchronous = "NORMAL",
    check: bool = True,
) -> AsyncIterator[SqliteJournal | PostgresJournal]:
    """Open the journal ``target`` names for the block, and close it (releasing it) after.

    Arguments as ``connect_journal``; errors as ``SqliteJournal.open`` or
    ``PostgresJournal.open``.
    """
    journal = await connect_journal(target, synchronous=synchronous, check=check)
    try:
        yield journal
    finally:
        await journal.aclose()
