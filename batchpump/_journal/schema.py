"""The journal's SQLite schema: DDL, row encoding, version checks, migrations, error mapping.

``SqliteJournal`` stores runs and shard attempts with what this module defines: the tables and
the statements that write them, how a record becomes a row, how an existing file is recognised
and migrated, and which ``JournalError`` a sqlite3 error becomes.

The version is ``PRAGMA user_version``. Each table keeps the indexed columns beside the full
record as msgspec JSON, so new optional record fields need no migration. v0 is the pre-release
layout (records only); it is migrated to v1 in one transaction. A newer version, a file that is
not a journal, or a damaged file raise ``JournalCorruptError`` and are left untouched.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Final, TypeAlias

import msgspec

from .._errors import (
    BatchpumpInternalError,
    JournalCorruptError,
    JournalError,
    JournalLockedError,
)
from .._models import RunRecord, ShardRecord

__all__ = [
    "APPLICATION_ID",
    "INSERT_RUN",
    "SCHEMA_VERSION",
    "UPSERT_RUN",
    "UPSERT_SHARD",
    "RunRow",
    "ShardRow",
    "corrupt_error",
    "encode_run",
    "encode_shard",
    "inspect_schema",
    "map_sqlite_error",
    "prepare_schema",
    "run_decoder",
    "shard_decoder",
]

#: ``PRAGMA user_version`` of the layout this module writes.
SCHEMA_VERSION: Final = 1
#: ``PRAGMA application_id`` marking a batchpump journal (ASCII ``bpmp``).
APPLICATION_ID: Final = 0x62706D70

_enc: Final = msgspec.json.Encoder()
#: Decodes the ``record`` column of ``runs``.
run_decoder: Final = msgspec.json.Decoder(RunRecord)
#: Decodes the ``record`` column of ``shards``.
shard_decoder: Final = msgspec.json.Decoder(ShardRecord)

#: Insert a run row unless its ``run_id`` exists (``open_run``).
INSERT_RUN: Final = (
    "INSERT INTO runs (run_id, state, record) VALUES (?, ?, CAST(? AS TEXT))"
    " ON CONFLICT (run_id) DO NOTHING"
)
#: Insert or replace a run row by ``run_id``.
UPSERT_RUN: Final = (
    "INSERT INTO runs (run_id, state, record) VALUES (?, ?, CAST(? AS TEXT))"
    " ON CONFLICT (run_id) DO UPDATE SET state = excluded.state, record = excluded.record"
)
#: Insert or replace a shard row by ``(run_id, idx, attempt)``.
UPSERT_SHARD: Final = (
    "INSERT INTO shards (run_id, idx, attempt, state, batch_id, tag, record)"
    " VALUES (?, ?, ?, ?, ?, ?, CAST(? AS TEXT))"
    " ON CONFLICT (run_id, idx, attempt) DO UPDATE SET state = excluded.state,"
    " batch_id = excluded.batch_id, tag = excluded.tag, record = excluded.record"
)

#: Parameters of ``INSERT_RUN`` / ``UPSERT_RUN``: run id, state, record JSON.
RunRow: TypeAlias = tuple[str, str, bytes]
#: Parameters of ``UPSERT_SHARD``: run id, index, attempt, state, batch id, tag, record JSON.
ShardRow: TypeAlias = tuple[str, int, int, str, str | None, str | None, bytes | str]


_SCHEMA_V1: Final = (
    "CREATE TABLE runs (run_id TEXT PRIMARY KEY, state TEXT NOT NULL, record TEXT NOT NULL)",
    "CREATE TABLE shards (run_id TEXT NOT NULL REFERENCES runs (run_id),"
    " idx INTEGER NOT NULL, attempt INTEGER NOT NULL, state TEXT NOT NULL,"
    " batch_id TEXT, tag TEXT, record TEXT NOT NULL,"
    " PRIMARY KEY (run_id, idx, attempt)) WITHOUT ROWID",
    "CREATE INDEX shards_by_state ON shards (run_id, state)",
    "CREATE INDEX shards_by_batch_id ON shards (batch_id) WHERE batch_id IS NOT NULL",
    "CREATE INDEX shards_by_tag ON shards (tag) WHERE tag IS NOT NULL",
)
_FRESH_START: Final = (
    "start over with --fresh or another --journal PATH (this resubmits every line)"
)


def corrupt_error(path: Path, problem: str) -> JournalCorruptError:
    """The error for a journal file that cannot be used as it is, saying how to recover."""
    return JournalCorruptError(
        f"journal at {path}: {problem}. It was left as it is and nothing was resubmitted; "
        f"restore a backup of it, or {_FRESH_START}"
    )


def map_sqlite_error(
    exc: sqlite3.Error, path: Path, doing: str, run_id: str | None = None
) -> JournalError | BatchpumpInternalError:
    """Turn a sqlite3 error into the ``JournalError`` a caller can act on."""
    name: str = exc.sqlite_errorname or type(exc).__name__
    where = f"journal at {path}"
    resume = f"`batchpump resume {run_id or 'RUN_ID'}`"
    if name.startswith("SQLITE_FULL"):
        return JournalError(f"{where}: disk is full while {doing}; free space and run {resume}")
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
        return corrupt_error(path, f"the file is damaged or not an SQLite database ({exc})")
    if name.startswith("SQLITE_READONLY"):
        return JournalError(
            f"{where}: cannot write while {doing}, the file or its directory is read-only "
            f"({exc}); make both writable by this user and run {resume}"
        )
    if name.startswith(("SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_AUTH")):
        return JournalError(f"{where}: cannot open it ({exc}); check the path and permissions")
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return JournalLockedError(
            f"{where}: another program holds an SQLite lock on it ({exc}); close it (a "
            f"`sqlite3` shell?) and run {resume}"
        )
    if name.startswith("SQLITE_IOERR"):
        return JournalError(
            f"{where}: disk I/O error while {doing} ({exc}); check the disk and run {resume}"
        )
    if name == "SQLITE_CONSTRAINT_FOREIGNKEY":
        return BatchpumpInternalError(f"{where}: a shard was committed before its run was opened")
    return JournalError(f"{where}: {doing} failed: {name}: {exc}")


def encode_run(run: RunRecord) -> RunRow:
    """Encode ``run`` as the parameters of a run statement."""
    return (run.run_id, run.state, _enc.encode(run))


def encode_shard(shard: ShardRecord, record: bytes | str | None = None) -> ShardRow:
    """Encode ``shard`` as ``UPSERT_SHARD`` parameters (``record``: its JSON, if already known)."""
    return (
        shard.run_id,
        shard.index,
        shard.attempt,
        shard.state,
        shard.batch_id,
        shard.tag,
        _enc.encode(shard) if record is None else record,
    )


def inspect_schema(conn: sqlite3.Connection, path: Path) -> tuple[int, set[str]]:
    """Read the schema version and tables, refusing what is not a journal we understand."""
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    tables = {
        name
        for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite%'"
        )
    }
    if app_id not in (0, APPLICATION_ID):
        raise corrupt_error(path, f"not a batchpump journal (SQLite application_id {app_id:#x})")
    if not 0 <= version <= SCHEMA_VERSION:
        raise JournalCorruptError(
            f"journal at {path} has schema version {version}, but this batchpump reads "
            f"versions 0 to {SCHEMA_VERSION}: it was written by a newer batchpump. Upgrade "
            "batchpump (pip install -U batchpump) and run the same command again; the "
            "journal was not changed"
        )
    expected = {"runs", "shards"} if tables or version else set()
    if tables != expected:
        found = ", ".join(sorted(tables)) or "none"
        raise corrupt_error(path, f"not a batchpump journal v{version} (tables: {found})")
    return version, tables


def _migrate_v0(conn: sqlite3.Connection) -> None:
    """v0 -> v1: v0 kept ``runs (run_id PRIMARY KEY, record)`` and ``shards (run_id, idx,
    attempt, record)``; v1 adds the indexed state, batch id and tag columns and the run key."""
    conn.execute("ALTER TABLE runs RENAME TO runs_v0")
    conn.execute("ALTER TABLE shards RENAME TO shards_v0")
    for statement in _SCHEMA_V1:
        conn.execute(statement)
    for (record,) in conn.execute("SELECT record FROM runs_v0 ORDER BY rowid").fetchall():
        run = run_decoder.decode(record)
        conn.execute(UPSERT_RUN, (run.run_id, run.state, record))
    shards = conn.execute("SELECT record FROM shards_v0").fetchall()
    conn.executemany(UPSERT_SHARD, (encode_shard(shard_decoder.decode(r), r) for (r,) in shards))
    conn.execute("DROP TABLE shards_v0")
    conn.execute("DROP TABLE runs_v0")


#: ``_MIGRATIONS[v]`` turns a version ``v`` journal into version ``v + 1``.
_MIGRATIONS: Final[dict[int, Callable[[sqlite3.Connection], None]]] = {0: _migrate_v0}


def prepare_schema(conn: sqlite3.Connection, version: int, *, fresh: bool) -> None:
    """Create the schema in a new file, or migrate an old one, in one transaction."""
    if version == SCHEMA_VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        if fresh:
            for statement in _SCHEMA_V1:
                conn.execute(statement)
        else:
            for step in range(version, SCHEMA_VERSION):
                _MIGRATIONS[step](conn)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
