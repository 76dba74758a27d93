"""The journal: the durable record of runs and shard attempts that makes a run resumable.

The engine writes every state change through ``Journal.commit`` before the action it enables,
so after a crash ``batchpump resume`` finds each shard where it was and resubmits nothing that
was already submitted. ``Journal`` is the protocol the engine depends on; ``MemoryJournal``
keeps it in memory (tests, benchmarks); ``SqliteJournal`` keeps it in one locked SQLite file
(``open_journal``). Modules: ``protocol`` (the protocol and ``MemoryJournal``), ``sqlite``
(``SqliteJournal``), ``schema`` (its tables, row encoding, migrations and error mapping),
``lock`` (its single-holder lock and file modes), ``reader`` (``JournalReader``: a read-only
view that takes no lock, for ``status`` beside a running run).
"""

from __future__ import annotations

from .protocol import Journal, MemoryJournal
from .reader import JournalReader, journal_holder
from .schema import SCHEMA_VERSION
from .sqlite import JournalStatistics, SqliteJournal, open_journal

__all__ = [
    "SCHEMA_VERSION",
    "Journal",
    "JournalReader",
    "JournalStatistics",
    "MemoryJournal",
    "SqliteJournal",
    "journal_holder",
    "open_journal",
]
