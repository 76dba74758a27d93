"""The journal: the durable record of runs and shard attempts that makes a run resumable.

The engine writes every state change through ``Journal.commit`` before the action it enables,
so after a crash ``batchpump resume`` finds each shard where it was and resubmits nothing that
was already submitted. ``Journal`` is the protocol the engine depends on; ``MemoryJournal``
keeps it in memory (tests, benchmarks); ``SqliteJournal`` keeps it in one locked SQLite file
on one machine; ``PostgresJournal`` keeps it in a PostgreSQL database that several workers
share. ``open_journal`` opens either, from a path or a ``postgresql://`` URL. Modules:
``protocol`` (the protocol and ``MemoryJournal``), ``sqlite`` (``SqliteJournal``), ``schema``
(its tables, row encoding, migrations and error mapping), ``lock`` (its single-holder lock and
file modes), ``postgres`` (``PostgresJournal``), ``leases`` (the run lease: one worker
shards a run; the claims on its shard attempts: workers split it), ``opening``
(``open_journal``), ``reader`` (``JournalReader``: a read-only view that takes no lock, for
``status`` beside a running run).
"""

from __future__ import annotations

from .leases import FENCE_MARGIN_FRACTION, LeaseHolder, LeaseLostError
from .opening import connect_journal, open_journal
from .postgres import PG_SCHEMA_VERSION, PostgresJournal, is_postgres_url, redact_url
from .protocol import Journal, MemoryJournal
from .reader import JournalReader, journal_holder
from .schema import SCHEMA_VERSION
from .sqlite import JournalStatistics, SqliteJournal

__all__ = [
    "FENCE_MARGIN_FRACTION",
    "PG_SCHEMA_VERSION",
    "SCHEMA_VERSION",
    "Journal",
    "JournalReader",
    "JournalStatistics",
    "LeaseHolder",
    "LeaseLostError",
    "MemoryJournal",
    "PostgresJournal",
    "SqliteJournal",
    "connect_journal",
    "is_postgres_url",
    "journal_holder",
    "open_journal",
    "redact_url",
]
