"""``SqliteJournal``: the durable ``Journal``, one SQLite file per run directory.

It keeps the contract of ``MemoryJournal`` (see ``protocol``) on disk:

- **Durability.** WAL mode with ``synchronous=NORMAL``: a ``commit`` that returned is in the
  WAL file, so it survives the process being killed (SIGKILL, OOM killer, a crash). After a
  power loss or OS crash the last commits may be rolled back, but the file stays consistent.
  ``synchronous="FULL"`` fsyncs every commit and survives power loss too, at a cost in speed.
- **Off the loop.** Every sqlite3 call runs in a worker thread, one at a time
  (``anyio.to_thread`` behind a ``CapacityLimiter(1)``), so the event loop never waits on the
  disk. Records are encoded on the caller's task when ``commit`` is called: the journal keeps
  that snapshot, whatever happens to the objects afterwards (as ``MemoryJournal`` does).
- **Group commit.** Commits that arrive while one is being written share the next
  transaction; each caller returns once its own records are durable.
- **One holder.** The file is created 0600 and locked while it is open (``lock``): a second
  holder gets ``JournalLockedError``, never a shared file.
- **Never recreated.** A newer schema, a file that is not a journal, or a damaged file raise
  ``JournalCorruptError`` and are left untouched (``schema``), since recreating a journal
  would resubmit every line. sqlite3 and OS errors surface as ``JournalError`` subclasses that
  say what happened and what to do, chained to the original.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Final, Literal, TypeAlias, TypeVar, final

import anyio
import anyio.to_thread
import msgspec

from .._errors import ClosedError, JournalError, UsageError
from .._group import GroupCommit
from .._models import RunRecord, ShardRecord
from .lock import JournalLock, create_journal_file, tighten_sidecars
from .schema import (
    INSERT_RUN,
    UPSERT_RUN,
    UPSERT_SHARD,
    RunRow,
    ShardRow,
    corrupt_error,
    encode_run,
    encode_shard,
    inspect_schema,
    map_sqlite_error,
    prepare_schema,
    run_decoder,
    shard_decoder,
)

__all__ = ["JournalStatistics", "SqliteJournal", "Synchronous"]

_T = TypeVar("_T")

Synchronous: TypeAlias = Literal["NORMAL", "FULL"]

#: How long one statement waits for another program's SQLite lock (e.g. the ``sqlite3`` shell).
BUSY_TIMEOUT_MS: Final = 5_000


def _connect(path: Path) -> sqlite3.Connection:
    """Open the SQLite connection (a seam: tests wrap it to inject faults or watch threads)."""
    return sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)


def _open_sync(
    path: Path, synchronous: Synchronous, check: bool
) -> tuple[sqlite3.Connection, JournalLock]:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock = JournalLock.acquire(path)
    try:
        create_journal_file(path)
        conn = _connect(path)
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            version, tables = inspect_schema(conn, path)
            if check and (problem := conn.execute("PRAGMA quick_check(1)").fetchone()[0]) != "ok":
                raise corrupt_error(path, f"SQLite's integrity check failed: {problem}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise JournalError(
                    f"journal at {path}: SQLite cannot use WAL mode here (got {mode!r}); "
                    "put the journal on a local disk (--journal PATH)"
                )
            conn.execute(f"PRAGMA synchronous = {synchronous}")
            conn.execute("PRAGMA foreign_keys = ON")
            prepare_schema(conn, version, fresh=not tables)
            tighten_sidecars(path)
        except BaseException:
            conn.close()
            raise
    except BaseException:
        lock.release()
        raise
    return conn, lock


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

    run_row: RunRow | None
    shard_rows: list[ShardRow]
    run_id: str


@final
class SqliteJournal:
    """A ``Journal`` in one SQLite file. Open it with ``open_journal`` or ``SqliteJournal.open``.

    Every method runs its SQL off the event loop. Calls from many tasks are serialized; each
    ``commit`` is one transaction. A call cancelled while its SQL runs waits for it to finish
    (the transaction either happened or did not), then raises the cancellation.
    """

    def __init__(self, path: Path, conn: sqlite3.Connection, lock: JournalLock) -> None:
        """Wrap an open connection; use ``SqliteJournal.open`` instead."""
        self._path = path
        self._conn: sqlite3.Connection | None = conn
        self._lock = lock
        self._limiter = anyio.CapacityLimiter(1)
        self._closed = False
        self._commits = 0
        self._groups = 0
        self._runs_written = 0
        self._shards_written = 0
        self._group: GroupCommit[_Pending] = GroupCommit(self._write_group)

    @classmethod
    async def open(
        cls,
        path: str | os.PathLike[str],
        *,
        synchronous: Synchronous = "NORMAL",
        check: bool = True,
    ) -> SqliteJournal:
        """Open (or create) the journal at ``path`` and take its lock.

        Args:
            path: the journal file; missing parent directories are created 0700.
            synchronous: ``"NORMAL"`` (survives a process kill) or ``"FULL"`` (also survives
                power loss; fsyncs every commit).
            check: run SQLite's ``quick_check`` on open, so damage is found before anything is
                resubmitted (it reads the whole file once).

        Raises:
            JournalLockedError: another process, or another open journal, holds it.
            JournalCorruptError: the file is damaged, not a journal, or from a newer batchpump.
            JournalError: it cannot be created, read or written (permissions, disk full...).
        """
        if synchronous not in ("NORMAL", "FULL"):
            raise UsageError(f"synchronous must be 'NORMAL' or 'FULL', got {synchronous!r}")
        where = Path(os.path.abspath(path))  # noqa: ASYNC240 (string work and getcwd, no disk)
        with anyio.CancelScope(shield=True):  # a cancelled open must not leak the lock
            try:
                conn, lock = await anyio.to_thread.run_sync(_open_sync, where, synchronous, check)
            except sqlite3.Error as exc:
                raise map_sqlite_error(exc, where, "opening it") from exc
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise corrupt_error(
                    where, f"a record cannot be read while migrating it ({exc})"
                ) from exc
            except OSError as exc:
                raise JournalError(
                    f"journal at {where}: cannot open it ({exc}); check the path, and that "
                    "this user may read and write the file and its directory"
                ) from exc
        return cls(where, conn, lock)

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
            raise map_sqlite_error(exc, self._path, doing, run_id) from exc
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise corrupt_error(
                self._path, f"a record cannot be read while {doing} ({exc})"
            ) from exc

    async def open_run(self, run: RunRecord) -> tuple[RunRecord, bool]:
        """Insert ``run`` unless a run with its id exists; return the stored one and
        whether it was created now."""
        row = encode_run(run)

        def job(conn: sqlite3.Connection) -> tuple[RunRecord, bool]:
            if conn.execute(INSERT_RUN, row).rowcount == 1:
                self._runs_written += 1
                return run_decoder.decode(row[2]), True
            (stored,) = conn.execute("SELECT record FROM runs WHERE run_id = ?", row[:1]).fetchone()
            return run_decoder.decode(stored), False

        return await self._call(job, doing="opening a run", run_id=run.run_id)

    async def get_run(self, run_id: str) -> RunRecord | None:
        """The stored run, or ``None``."""

        def job(conn: sqlite3.Connection) -> RunRecord | None:
            found = conn.execute("SELECT record FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            return None if found is None else run_decoder.decode(found[0])

        return await self._call(job, doing="reading a run", run_id=run_id)

    async def list_runs(self) -> list[RunRecord]:
        """Every run, oldest first."""

        def job(conn: sqlite3.Connection) -> list[RunRecord]:
            rows = conn.execute("SELECT record FROM runs ORDER BY rowid").fetchall()
            return [run_decoder.decode(record) for (record,) in rows]

        return await self._call(job, doing="listing runs")

    async def load_shards(self, run_id: str) -> list[ShardRecord]:
        """Every shard attempt of the run, ordered by ``(index, attempt)``."""

        def job(conn: sqlite3.Connection) -> list[ShardRecord]:
            rows = conn.execute(
                "SELECT record FROM shards WHERE run_id = ? ORDER BY idx, attempt", (run_id,)
            ).fetchall()
            return [shard_decoder.decode(record) for (record,) in rows]

        return await self._call(job, doing="loading shards", run_id=run_id)

    async def delete_run(self, run_id: str) -> bool:
        """Remove the run and its shard attempts in one transaction; whether it existed."""

        def job(conn: sqlite3.Connection) -> bool:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("DELETE FROM shards WHERE run_id = ?", (run_id,))
                found = conn.execute("DELETE FROM runs WHERE run_id = ?", (run_id,)).rowcount
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise
            return found == 1

        return await self._call(job, doing="deleting a run", run_id=run_id)

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
        run_row = None if run is None else encode_run(run)
        shard_rows = [encode_shard(shard) for shard in shards]
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
                    conn.execute(UPSERT_RUN, item.run_row)
                conn.executemany(UPSERT_SHARD, item.shard_rows)
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

    async def aclose(self) -> None:
        """Finish pending calls, close the database and release the lock. Idempotent."""
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            try:
                await anyio.to_thread.run_sync(self._close_sync, limiter=self._limiter)
            except sqlite3.Error as exc:
                raise map_sqlite_error(exc, self._path, "closing it") from exc

    def _close_sync(self) -> None:
        conn, self._conn = self._conn, None
        try:
            if conn is not None:
                conn.close()
        finally:
            self._lock.release()

    async def __aenter__(self) -> SqliteJournal:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<SqliteJournal path={str(self._path)!r} state={state} commits={self._commits}>"
