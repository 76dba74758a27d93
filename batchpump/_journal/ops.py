"""The journal's operations: reads, group commits and counters, on the journal's SQLite thread.

``_JournalOps`` is the part of ``SqliteJournal`` that works on an open connection: every call
runs in a worker thread, one at a time (``anyio.to_thread`` behind a ``CapacityLimiter(1)``),
with sqlite3 and decode errors mapped to ``JournalError`` subclasses; ``commit`` encodes its
records on the caller's task and groups concurrent commits into one transaction. Opening,
locking and closing the file are ``SqliteJournal``'s, in ``_journal``.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal, TypeVar

import anyio
import anyio.to_thread
import msgspec

from .._errors import ClosedError
from .._group import GroupCommit
from .._models import RunRecord, ShardRecord
from .schema import (
    _INSERT_RUN,
    _UPSERT_RUN,
    _UPSERT_SHARD,
    _corrupt,
    _map_sqlite_error,
    _run_dec,
    _run_row,
    _RunRow,
    _shard_dec,
    _shard_row,
    _ShardRow,
)

__all__ = ["JournalStatistics"]

_T = TypeVar("_T")


class JournalStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of one journal's activity since it was opened.

    Attributes:
        path: the journal file.
        state: ``"open"`` or ``"closed"``.
        commits: ``commit`` calls that completed.
        transactions: transactions those commits took (fewer when commits were grouped).
        runs_written: run records written by ``commit`` and ``open_run``.
        shards_written: shard records written by ``commit``.
    """

    path: str
    state: Literal["open", "closed"]
    commits: int
    transactions: int = 0
    runs_written: int
    shards_written: int


@dataclass(eq=False)
class _Pending:
    """One caller's commit waiting for the next group transaction."""

    run_row: _RunRow | None
    shard_rows: list[_ShardRow]
    run_id: str


class _JournalOps:
    """The operations of an open journal; ``SqliteJournal`` adds opening and closing."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self._path = path
        self._conn: sqlite3.Connection | None = conn
        self._limiter = anyio.CapacityLimiter(1)
        self._closed = False
        self._commits = 0
        self._groups = 0
        self._runs_written = 0
        self._shards_written = 0
        self._group: GroupCommit[_Pending] = GroupCommit(self._write_group)

    @property
    def path(self) -> Path:
        """The journal file."""
        return self._path

    async def _call(
        self, fn: Callable[[sqlite3.Connection], _T], *, doing: str, run_id: str | None = None
    ) -> _T:
        """Run ``fn(connection)`` in the journal's thread, mapping errors to ``JournalError``."""
        if self._closed:
            raise ClosedError(f"journal at {self._path} is closed")

        def job() -> _T:
            if self._conn is None:
                raise ClosedError(f"journal at {self._path} is closed")
            return fn(self._conn)

        try:
            return await anyio.to_thread.run_sync(job, limiter=self._limiter)
        except sqlite3.Error as exc:
            raise _map_sqlite_error(exc, self._path, doing, run_id) from exc
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise _corrupt(self._path, f"a record cannot be read while {doing} ({exc})") from exc

    async def open_run(self, run: RunRecord) -> tuple[RunRecord, bool]:
        """Insert ``run`` unless a run with its id exists; return the stored one and
        whether it was created now."""
        row = _run_row(run)

        def job(conn: sqlite3.Connection) -> tuple[RunRecord, bool]:
            if conn.execute(_INSERT_RUN, row).rowcount == 1:
                self._runs_written += 1
                return _run_dec.decode(row[2]), True
            (stored,) = conn.execute("SELECT record FROM runs WHERE run_id = ?", row[:1]).fetchone()
            return _run_dec.decode(stored), False

        return await self._call(job, doing="opening a run", run_id=run.run_id)

    async def get_run(self, run_id: str) -> RunRecord | None:
        """The stored run, or ``None``."""

        def job(conn: sqlite3.Connection) -> RunRecord | None:
            found = conn.execute("SELECT record FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            return None if found is None else _run_dec.decode(found[0])

        return await self._call(job, doing="reading a run", run_id=run_id)

    async def list_runs(self) -> list[RunRecord]:
        """Every run, oldest first."""

        def job(conn: sqlite3.Connection) -> list[RunRecord]:
            rows = conn.execute("SELECT record FROM runs ORDER BY rowid").fetchall()
            return [_run_dec.decode(record) for (record,) in rows]

        return await self._call(job, doing="listing runs")

    async def load_shards(self, run_id: str) -> list[ShardRecord]:
        """Every shard attempt of the run, ordered by ``(index, attempt)``."""

        def job(conn: sqlite3.Connection) -> list[ShardRecord]:
            rows = conn.execute(
                "SELECT record FROM shards WHERE run_id = ? ORDER BY idx, attempt", (run_id,)
            ).fetchall()
            return [_shard_dec.decode(record) for (record,) in rows]

        return await self._call(job, doing="loading shards", run_id=run_id)

    async def commit(
        self, *, run: RunRecord | None = None, shards: Sequence[ShardRecord] = ()
    ) -> None:
        """Write ``run`` and ``shards`` (inserted or replaced by key) in one transaction.

        Commits that arrive while another is being written are grouped into the next single
        transaction (group commit): each caller still returns only once its own records are
        durable, and a group is all-or-nothing, so every caller of a failed group raises.

        Raises:
            TypeError: a record holds a value msgspec cannot encode; nothing was written.
            JournalError: the write failed (disk full, read-only...); nothing was written.
        """
        run_row = None if run is None else _run_row(run)
        shard_rows = [_shard_row(shard) for shard in shards]
        if run_row is None and not shard_rows:
            self._commits += 1  # nothing to write, as MemoryJournal counts it
            return
        run_id = run.run_id if run is not None else shards[0].run_id
        await self._group.submit(_Pending(run_row, shard_rows, run_id))

    async def _write_group(self, group: list[_Pending]) -> None:
        await self._call(
            partial(self._write, group=group), doing="committing", run_id=group[0].run_id
        )

    def _write(self, conn: sqlite3.Connection, *, group: list[_Pending]) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            for item in group:
                if item.run_row is not None:
                    conn.execute(_UPSERT_RUN, item.run_row)
                conn.executemany(_UPSERT_SHARD, item.shard_rows)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise
        self._commits += len(group)
        self._groups += 1
        self._runs_written += sum(item.run_row is not None for item in group)
        self._shards_written += sum(len(item.shard_rows) for item in group)

    def statistics(self) -> JournalStatistics:
        """A snapshot of what this journal has done since it was opened."""
        return JournalStatistics(
            path=str(self._path),
            state="closed" if self._closed else "open",
            commits=self._commits,
            transactions=self._groups,
            runs_written=self._runs_written,
            shards_written=self._shards_written,
        )
