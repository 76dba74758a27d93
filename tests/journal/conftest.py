"""Fixtures of the journal tests: a journal of each implementation, a store of each durable one.

``journal`` runs a test against ``MemoryJournal`` and every durable journal; ``store`` against
every durable journal (``stores.DURABLE_STORES``: SQLite and PostgreSQL), which can be closed
and opened again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from batchpump._journal import Journal, MemoryJournal

from .stores import DURABLE_STORES, Store


@pytest.fixture(params=sorted(DURABLE_STORES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """An empty store of each durable journal."""
    return DURABLE_STORES[request.param](request, tmp_path)


@pytest.fixture(params=["memory", *sorted(DURABLE_STORES)])
async def journal(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Journal]:
    """An open, empty journal of each implementation, ``MemoryJournal`` included."""
    if request.param == "memory":
        yield MemoryJournal()
    else:
        async with DURABLE_STORES[request.param](request, tmp_path).open() as durable:
            yield durable
