"""``SqliteJournal``: the durable ``Journal``, one SQLite file per run directory.

Same contract as ``MemoryJournal`` (see ``_journal_base``), kept on disk:

- **Durability.** WAL mode with ``synchronous=NORMAL``: a ``commit`` that returned is in the
  WAL file, so it survives the process being killed (SIGKILL, OOM killer, a crash). After a
  power loss or OS crash the last commits may be rolled back, but the file stays consistent.
  ``synchronous="FULL"`` fsyncs every commit and survives power loss too, at a cost in speed.
- **Off the loop.** Every sqlite3 call runs in a worker thread, one at a time
  (``anyio.to_thread`` behind a ``CapacityLimiter(1)``), so the event loop never waits on the
  disk. Records are encoded on the caller's task when ``commit`` is called: the journal keeps
  that snapshot, whatever happens to the objects afterwards (as ``MemoryJournal`` does).
- **Files.** ``PATH`` is created 0600 before SQLite opens it; SQLite gives ``PATH-wal`` and
  ``PATH-shm`` the database file's mode, which is checked. ``PATH.lock`` carries an advisory
  ``flock`` while the journal is open and names its holder; the kernel drops the lock when the
  holder exits or dies, so a second holder gets ``JournalLockedError``, never a shared file.
- **Schema** (``PRAGMA user_version``). Each table keeps the indexed columns beside the full
  record as msgspec JSON, so new optional record fields need no migration. v0 is the
  pre-release layout (records only); it is migrated to v1 in one transaction. A newer version,
  a file that is not a journal, or a damaged file raise ``JournalCorruptError`` and are left
  untouched: a journal is never recreated silently, since that would resubmit every line.
- **Errors.** sqlite3 and OS errors surface as ``JournalError`` subclasses that say what
  happened and what to do, chained to the original.

This module opens, locks and closes the file. The reads, group commits and counters of an open
journal live in ``_journal_ops``; the lock and file modes in ``_journal_lock``; the schema,
migrations and sqlite error mapping in ``_journal_schema``.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from types import TracebackType
from typing import Final, Literal, TypeAlias, final

import anyio
import anyio.to_thread
import msgspec

from .._errors import JournalError, UsageError
from .lock import FILE_MODE as FILE_MODE
from .lock import _create_file, _Lock, _tighten_sidecars
from .ops import JournalStatistics, _JournalOps
from .schema import APPLICATION_ID as APPLICATION_ID
from .schema import (
    SCHEMA_VERSION,
    _corrupt,
    _inspect,
    _map_sqlite_error,
    _prepare_schema,
)

__all__ = ["SCHEMA_VERSION", "JournalStatistics", "SqliteJournal"]

Synchronous: TypeAlias = Literal["NORMAL", "FULL"]

#: How long one statement waits for another program's SQLite lock (e.g. the ``sqlite3`` shell).
BUSY_TIMEOUT_MS: Final = 5_000


def _connect(path: Path) -> sqlite3.Connection:
    """Open the SQLite connection (a seam: tests wrap it to inject faults or watch threads)."""
    return sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)


def _open_sync(
    path: Path, synchronous: Synchronous, check: bool
) -> tuple[sqlite3.Connection, _Lock]:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock = _Lock.acquire(path)
    try:
        _create_file(path)
        conn = _connect(path)
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            version, tables = _inspect(conn, path)
            if check and (problem := conn.execute("PRAGMA quick_check(1)").fetchone()[0]) != "ok":
                raise _corrupt(path, f"SQLite's integrity check failed: {problem}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise JournalError(
                    f"journal at {path}: SQLite cannot use WAL mode here (got {mode!r}); "
                    "put the journal on a local disk (--journal PATH)"
                )
            conn.execute(f"PRAGMA synchronous = {synchronous}")
            conn.execute("PRAGMA foreign_keys = ON")
            _prepare_schema(conn, version, fresh=not tables)
            _tighten_sidecars(path)
        except BaseException:
            conn.close()
            raise
    except BaseException:
        lock.release()
        raise
    return conn, lock


@final
class SqliteJournal(_JournalOps):
    """A ``Journal`` in one SQLite file. Open it with ``open_journal`` or ``SqliteJournal.open``.

    Every method runs its SQL off the event loop. Calls from many tasks are serialized; each
    ``commit`` is one transaction. A call cancelled while its SQL runs waits for it to finish
    (the transaction either happened or did not), then raises the cancellation.
    """

    def __init__(self, path: Path, conn: sqlite3.Connection, lock: _Lock) -> None:
        """Wrap an open connection; use ``SqliteJournal.open`` instead."""
        super().__init__(path, conn)
        self._lock = lock

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
                raise _map_sqlite_error(exc, where, "opening it") from exc
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise _corrupt(
                    where, f"a record cannot be read while migrating it ({exc})"
                ) from exc
            except OSError as exc:
                raise JournalError(
                    f"journal at {where}: cannot open it ({exc}); check the path, and that "
                    "this user may read and write the file and its directory"
                ) from exc
        return cls(where, conn, lock)

    async def aclose(self) -> None:
        """Finish pending calls, close the database and release the lock. Idempotent."""
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            try:
                await anyio.to_thread.run_sync(self._close_sync, limiter=self._limiter)
            except sqlite3.Error as exc:
                raise _map_sqlite_error(exc, self._path, "closing it") from exc

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
