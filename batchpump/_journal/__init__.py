"""PKGDOC"""

from __future__ import annotations

from .protocol import Journal, MemoryJournal
from .sqlite import SCHEMA_VERSION, SqliteJournal, open_journal

__all__ = ["SCHEMA_VERSION", "Journal", "MemoryJournal", "SqliteJournal", "open_journal"]
