"""PKGDOC"""

from __future__ import annotations

from .leases import LeaseHolder, LeaseLostError
from .opening import connect_journal, open_journal
from .postgres import PG_SCHEMA_VERSION, PostgresJournal, is_postgres_url, redact_url
from .protocol import Journal, MemoryJournal
from .sqlite import SCHEMA_VERSION, SqliteJournal

__all__ = [
    "PG_SCHEMA_VERSION",
    "SCHEMA_VERSION",
    "Journal",
    "LeaseHolder",
    "LeaseLostError",
    "MemoryJournal",
    "PostgresJournal",
    "SqliteJournal",
    "connect_journal",
    "is_postgres_url",
    "open_journal",
    "redact_url",
]
