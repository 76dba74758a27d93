"""The stream's own SQLite file: its accepted-id index, its segments, its acks.

A stream keeps what the run journal has no place for in ``streams/<name>/stream.sqlite3``
beside it:

- ``ids``: one row per accepted ``custom_id``, keyed by its 16-byte blake2b digest split into
  two integers (``WITHOUT ROWID``: about 30 bytes a line on disk, nothing in memory). A match on
  all 128 bits is taken as the same id: two different ids collide with odds of 2^-128, so a
  valid line is never refused by a collision in practice. The row keeps when the id was
  accepted, for the duplicate's message.
- ``segments``: the segments not yet handed to the journal as shards (``open`` ones still take
  lines; ``sealed`` ones were cut and wait for their shard record), with the committed length of
  each segment file. Bytes past it were never acknowledged to a caller and are cut off on open.
- ``meta``: the stream's endpoint, lines accepted, the next segment index and how far the
  results file is acknowledged; ``acks``: results acknowledged out of order past that point.

The store is not what a put waits for: the segment files are the write-ahead record (a put
returns once its lines are fsynced there). Rounds of puts write their ids, segment lengths and
counts into one write transaction that stays open across rounds (``begin``), so a later put
sees every id accepted before it, and it is committed lazily (``settle``): every
``SETTLE_LINES`` lines, with the acks, on close, and durably (``settle(durable=True)``) before a
segment is handed to the journal as a shard. A kill -9 loses the part not committed; opening the
stream again reads it back from the segment files past their committed lengths (``SegmentLog``).

WAL with ``synchronous=NORMAL``: a commit survives a kill -9 but may be lost, as a whole, on a
power loss; ``settle(durable=True)`` checkpoints the WAL, which fsyncs it first. Every call runs
in one worker thread at a time.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Final, TypeVar, final

import anyio
import anyio.to_thread

from .._errors import ClosedError, JournalError, UsageError

__all__ = ["SETTLE_LINES", "SegmentRow", "StreamMeta", "StreamStore", "begin", "rollback"]

_T = TypeVar("_T")

#: Lines accepted after which the open transaction is committed (bounds what a restart reads
#: back from the segment files).
SETTLE_LINES: Final = 65_536

_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v)",
    "CREATE TABLE IF NOT EXISTS ids (h1 INTEGER NOT NULL, h2 INTEGER NOT NULL,"
    " accepted_at REAL NOT NULL, PRIMARY KEY (h1, h2)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS segments (idx INTEGER PRIMARY KEY, key TEXT, model TEXT,"
    " mixed INTEGER NOT NULL, state TEXT NOT NULL, lines INTEGER NOT NULL,"
    " bytes INTEGER NOT NULL, body_bytes INTEGER NOT NULL, first_at REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS acks (start INTEGER PRIMARY KEY, stop INTEGER NOT NULL)",
)

#: ``(idx, key, model, mixed, state, lines, bytes, body_bytes, first_at)``
SegmentRow = tuple[int, str | None, str | None, int, str, int, int, int, float]
_Span = tuple[int, int]


class StreamMeta:
    """What ``meta`` holds, read on open."""

    __slots__ = ("accepted", "acked_to", "endpoint", "next_index", "run_id")

    def __init__(
        self,
        endpoint: str | None,
        run_id: str | None,
        accepted: int,
        next_index: int,
        acked_to: int,
    ) -> None:
        self.endpoint = endpoint
        self.run_id = run_id
        self.accepted = accepted
        self.next_index = next_index
        self.acked_to = acked_to


@final
class StreamStore:
    """One stream's SQLite file, used from one event loop."""

    def __init__(self, path: Path, conn: sqlite3.Connection, lock: int) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = conn
        self._lock_fd = lock
        self._limiter = anyio.CapacityLimiter(1)

    @classmethod
    async def open(cls, path: Path) -> StreamStore:
        """Open (or create) the store at ``path``; its directory is created 0700."""
        with anyio.CancelScope(shield=True):  # a cancelled open must not leak the lock
            try:
                conn, lock = await anyio.to_thread.run_sync(_open_sync, path)
            except (sqlite3.Error, OSError) as exc:
                raise JournalError(f"stream store at {path}: cannot open it ({exc})") from exc
        return cls(path, conn, lock)

    async def call(self, fn: Callable[[sqlite3.Connection], _T], *, doing: str) -> _T:
        """Run ``fn(connection)`` in the store's thread, one call at a time.

        A cancelled caller waits for ``fn`` to return (the transaction happened or not).
        """
        conn = self._conn
        if conn is None:
            raise ClosedError(f"stream store at {self.path} is closed")
        try:
            return await anyio.to_thread.run_sync(fn, conn, limiter=self._limiter)
        except sqlite3.Error as exc:
            raise JournalError(f"stream store at {self.path}: {doing} failed ({exc})") from exc

    async def load(self) -> tuple[StreamMeta, list[SegmentRow], list[_Span]]:
        """The meta values, the segments not yet shards, and the out-of-order acks."""

        def job(conn: sqlite3.Connection) -> tuple[StreamMeta, list[SegmentRow], list[_Span]]:
            meta = dict(conn.execute("SELECT k, v FROM meta").fetchall())
            segments = conn.execute("SELECT * FROM segments ORDER BY idx").fetchall()
            acks = conn.execute("SELECT start, stop FROM acks ORDER BY start").fetchall()
            found = StreamMeta(
                meta.get("endpoint"),
                meta.get("run_id"),
                int(meta.get("accepted", 0)),
                int(meta.get("next_index", 0)),
                int(meta.get("acked_to", 0)),
            )
            return found, segments, acks

        return await self.call(job, doing="reading the stream")

    async def set_identity(self, endpoint: str, run_id: str) -> None:
        """Record, once, the stream's endpoint and its run in the journal."""

        def job(conn: sqlite3.Connection) -> None:
            begin(conn)
            conn.executemany(
                "INSERT OR REPLACE INTO meta VALUES (?, ?)",
                [("endpoint", endpoint), ("run_id", run_id)],
            )
            _settle(conn, durable=True)

        await self.call(job, doing="recording the stream")

    async def forget_segment(self, index: int) -> None:
        """The segment is a shard in the journal now: drop its row (committed lazily: a row
        left by a crash is dropped again on open, the journal having the shard)."""

        def job(conn: sqlite3.Connection) -> None:
            begin(conn)
            conn.execute("DELETE FROM segments WHERE idx = ?", (index,))

        await self.call(job, doing="handing a segment to the journal")

    async def save_acks(
        self,
        acked_to: int,
        ahead: list[tuple[int, int]],
        merged: list[tuple[int, int]],
    ) -> None:
        """Record the acknowledged prefix of the results file and acks past it, committed
        (with whatever the open transaction holds) when this returns. Each span of
        ``merged`` replaces the acks within it (the results file's part there is removed)."""

        def job(conn: sqlite3.Connection) -> None:
            begin(conn)
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('acked_to', ?)", (acked_to,))
            conn.executemany("INSERT OR IGNORE INTO acks VALUES (?, ?)", ahead)
            conn.executemany("DELETE FROM acks WHERE start >= ? AND start < ?", merged)
            conn.executemany("INSERT INTO acks VALUES (?, ?)", merged)
            conn.execute("DELETE FROM acks WHERE start < ?", (acked_to,))
            _settle(conn, durable=False)

        await self.call(job, doing="recording acks")

    async def settle(self, *, durable: bool) -> None:
        """Commit the open transaction; with ``durable``, so that it survives a power loss."""
        await self.call(lambda conn: _settle(conn, durable=durable), doing="committing")

    async def aclose(self) -> None:
        """Close the file (idempotent)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with anyio.CancelScope(shield=True):
                try:
                    await anyio.to_thread.run_sync(_close, conn, limiter=self._limiter)
                finally:
                    os.close(self._lock_fd)  # drops the flock


def _open_sync(path: Path) -> tuple[sqlite3.Connection, int]:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
    lock = os.open(path.with_name(path.name + ".lock"), flags, 0o600)
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(
                f"stream at {path.parent} is open already (in this process or another); "
                "close it there first"
            ) from None
        os.close(os.open(path, flags, 0o600))
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")  # see the module docstring
            for statement in _SCHEMA:
                conn.execute(statement)
        except BaseException:
            conn.close()
            raise
    except BaseException:
        os.close(lock)
        raise
    return conn, lock


def begin(conn: sqlite3.Connection) -> None:
    """Open the store's write transaction unless it is open."""
    if not conn.in_transaction:
        conn.execute("BEGIN IMMEDIATE")


def _settle(conn: sqlite3.Connection, *, durable: bool) -> None:
    if conn.in_transaction:
        conn.execute("COMMIT")
    if durable:  # a checkpoint fsyncs the WAL before it copies it into the database
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")


def _close(conn: sqlite3.Connection) -> None:
    """Commit what the open transaction holds, then close (a failed commit is rolled back:
    the segment files have it)."""
    try:
        if conn.in_transaction:
            conn.execute("COMMIT")
    except sqlite3.Error:
        rollback(conn)
    finally:
        conn.close()


def rollback(conn: sqlite3.Connection) -> None:
    """Roll back an open transaction, keeping the error that got us here."""
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
