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
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import os
import socket
import sqlite3
import stat
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Final, Literal, TypeAlias, TypeVar, final

import anyio
import anyio.to_thread
import msgspec

from ._errors import (
    BatchpumpInternalError,
    ClosedError,
    JournalCorruptError,
    JournalError,
    JournalLockedError,
    UsageError,
)
from ._models import RunRecord, ShardRecord

__all__ = ["SCHEMA_VERSION", "JournalStatistics", "SqliteJournal", "open_journal"]

Synchronous: TypeAlias = Literal["NORMAL", "FULL"]

#: ``PRAGMA user_version`` of the layout this module writes.
SCHEMA_VERSION: Final = 1
#: ``PRAGMA application_id`` marking a batchpump journal (ASCII ``bpmp``).
APPLICATION_ID: Final = 0x62706D70

#: Mode of the journal file and its ``-wal``, ``-shm`` and ``.lock`` siblings.
FILE_MODE: Final = 0o600
#: How long one statement waits for another program's SQLite lock (e.g. the ``sqlite3`` shell).
BUSY_TIMEOUT_MS: Final = 5_000

_T = TypeVar("_T")
_enc: Final = msgspec.json.Encoder()
_run_dec: Final = msgspec.json.Decoder(RunRecord)
_shard_dec: Final = msgspec.json.Decoder(ShardRecord)

_INSERT_RUN: Final = (
    "INSERT INTO runs (run_id, state, record) VALUES (?, ?, CAST(? AS TEXT))"
    " ON CONFLICT (run_id) DO NOTHING"
)
_UPSERT_RUN: Final = (
    "INSERT INTO runs (run_id, state, record) VALUES (?, ?, CAST(? AS TEXT))"
    " ON CONFLICT (run_id) DO UPDATE SET state = excluded.state, record = excluded.record"
)
_UPSERT_SHARD: Final = (
    "INSERT INTO shards (run_id, idx, attempt, state, batch_id, tag, record)"
    " VALUES (?, ?, ?, ?, ?, ?, CAST(? AS TEXT))"
    " ON CONFLICT (run_id, idx, attempt) DO UPDATE SET state = excluded.state,"
    " batch_id = excluded.batch_id, tag = excluded.tag, record = excluded.record"
)

_RunRow: TypeAlias = tuple[str, str, bytes]
_ShardRow: TypeAlias = tuple[str, int, int, str, str | None, str | None, bytes | str]


class JournalStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of one journal's activity since it was opened.

    Attributes:
        path: the journal file.
        state: ``"open"`` or ``"closed"``.
        commits: ``commit`` calls that completed.
        runs_written: run records written by ``commit`` and ``open_run``.
        shards_written: shard records written by ``commit``.
    """

    path: str
    state: Literal["open", "closed"]
    commits: int
    runs_written: int
    shards_written: int


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


def _corrupt(path: Path, problem: str) -> JournalCorruptError:
    return JournalCorruptError(
        f"journal at {path}: {problem}. It was left as it is and nothing was resubmitted; "
        f"restore a backup of it, or {_FRESH_START}"
    )


def _map_sqlite_error(
    exc: sqlite3.Error, path: Path, doing: str, run_id: str | None = None
) -> JournalError | BatchpumpInternalError:
    """Turn a sqlite3 error into the ``JournalError`` a caller can act on."""
    name: str = exc.sqlite_errorname or type(exc).__name__
    where = f"journal at {path}"
    resume = f"`batchpump resume {run_id or 'RUN_ID'}`"
    if name.startswith("SQLITE_FULL"):
        return JournalError(f"{where}: disk is full while {doing}; free space and run {resume}")
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
        return _corrupt(path, f"the file is damaged or not an SQLite database ({exc})")
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


class _Holder(msgspec.Struct, frozen=True):
    pid: int
    hostname: str
    since: float


@final
class _Lock:
    """The advisory ``flock`` on ``<journal>.lock``; the kernel drops it when the holder dies."""

    __slots__ = ("_fd", "path")

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd

    @classmethod
    def acquire(cls, journal: Path) -> _Lock:
        path = journal.with_name(journal.name + ".lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        try:
            if stat.S_IMODE(os.fstat(fd).st_mode) != FILE_MODE:
                os.fchmod(fd, FILE_MODE)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                held_by = _describe_holder(os.pread(fd, 4096, 0))
                raise JournalLockedError(
                    f"journal at {journal} is in use by {held_by} (lock file {path}); wait for "
                    "that batchpump to finish or stop it. The lock goes away by itself when "
                    "that process exits, even if it crashed"
                ) from None
            me = _Holder(pid=os.getpid(), hostname=socket.gethostname(), since=time.time())
            os.ftruncate(fd, 0)
            os.pwrite(fd, _enc.encode(me), 0)
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd)

    def release(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)  # forget the holder; the lock itself is what counts
            os.close(fd)  # drops the flock


def _describe_holder(raw: bytes) -> str:
    try:
        holder = msgspec.json.decode(raw, type=_Holder)
    except msgspec.DecodeError:
        return "another process (it has not written its name yet)"
    since = datetime.datetime.fromtimestamp(holder.since, tz=datetime.UTC)
    return f"pid {holder.pid} on {holder.hostname} since {since.isoformat(timespec='seconds')}"


def _connect(path: Path) -> sqlite3.Connection:
    """Open the SQLite connection (a seam: tests wrap it to inject faults or watch threads)."""
    return sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)


def _create_file(path: Path) -> None:
    """Create ``path`` 0600 (or tighten an existing one to 0600) before SQLite touches it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise JournalError(f"journal at {path}: not a regular file")
        if stat.S_IMODE(info.st_mode) != FILE_MODE:
            os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)


def _tighten_sidecars(path: Path) -> None:
    """Make sure ``-wal`` and ``-shm`` are 0600 (SQLite copies the database file's mode)."""
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        with contextlib.suppress(FileNotFoundError):
            if stat.S_IMODE(side.stat().st_mode) != FILE_MODE:
                side.chmod(FILE_MODE)


def _inspect(conn: sqlite3.Connection, path: Path) -> tuple[int, set[str]]:
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
        raise _corrupt(path, f"not a batchpump journal (SQLite application_id {app_id:#x})")
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
        raise _corrupt(path, f"not a batchpump journal v{version} (tables: {found})")
    return version, tables


def _migrate_v0(conn: sqlite3.Connection) -> None:
    """v0 -> v1: v0 kept ``runs (run_id PRIMARY KEY, record)`` and ``shards (run_id, idx,
    attempt, record)``; v1 adds the indexed state, batch id and tag columns and the run key."""
    conn.execute("ALTER TABLE runs RENAME TO runs_v0")
    conn.execute("ALTER TABLE shards RENAME TO shards_v0")
    for statement in _SCHEMA_V1:
        conn.execute(statement)
    for (record,) in conn.execute("SELECT record FROM runs_v0 ORDER BY rowid").fetchall():
        run = _run_dec.decode(record)
        conn.execute(_UPSERT_RUN, (run.run_id, run.state, record))
    shards = conn.execute("SELECT record FROM shards_v0").fetchall()
    conn.executemany(_UPSERT_SHARD, (_shard_row(_shard_dec.decode(r), r) for (r,) in shards))
    conn.execute("DROP TABLE shards_v0")
    conn.execute("DROP TABLE runs_v0")


#: ``_MIGRATIONS[v]`` turns a version ``v`` journal into version ``v + 1``.
_MIGRATIONS: Final[dict[int, Callable[[sqlite3.Connection], None]]] = {0: _migrate_v0}


def _prepare_schema(conn: sqlite3.Connection, version: int, *, fresh: bool) -> None:
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


def _run_row(run: RunRecord) -> _RunRow:
    return (run.run_id, run.state, _enc.encode(run))


def _shard_row(shard: ShardRecord, record: bytes | str | None = None) -> _ShardRow:
    return (
        shard.run_id,
        shard.index,
        shard.attempt,
        shard.state,
        shard.batch_id,
        shard.tag,
        _enc.encode(shard) if record is None else record,
    )


@final
class SqliteJournal:
    """A ``Journal`` in one SQLite file. Open it with ``open_journal`` or ``SqliteJournal.open``.

    Every method runs its SQL off the event loop. Calls from many tasks are serialized; each
    ``commit`` is one transaction. A call cancelled while its SQL runs waits for it to finish
    (the transaction either happened or did not), then raises the cancellation.
    """

    def __init__(self, path: Path, conn: sqlite3.Connection, lock: _Lock) -> None:
        """Wrap an open connection; use ``SqliteJournal.open`` instead."""
        self._path = path
        self._conn: sqlite3.Connection | None = conn
        self._lock = lock
        self._limiter = anyio.CapacityLimiter(1)
        self._closed = False
        self._commits = 0
        self._runs_written = 0
        self._shards_written = 0

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

        Raises:
            TypeError: a record holds a value msgspec cannot encode; nothing was written.
            JournalError: the write failed (disk full, read-only...); nothing was written.
        """
        run_row = None if run is None else _run_row(run)
        shard_rows = [_shard_row(shard) for shard in shards]
        run_id = run.run_id if run is not None else (shards[0].run_id if shards else None)

        def job(conn: sqlite3.Connection) -> None:
            if run_row is not None or shard_rows:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    if run_row is not None:
                        conn.execute(_UPSERT_RUN, run_row)
                    conn.executemany(_UPSERT_SHARD, shard_rows)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        with contextlib.suppress(sqlite3.Error):
                            conn.execute("ROLLBACK")
                    raise
            self._commits += 1
            self._runs_written += run_row is not None
            self._shards_written += len(shard_rows)

        await self._call(job, doing="committing", run_id=run_id)

    def statistics(self) -> JournalStatistics:
        """A snapshot of what this journal has done since it was opened."""
        return JournalStatistics(
            path=str(self._path),
            state="closed" if self._closed else "open",
            commits=self._commits,
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


@contextlib.asynccontextmanager
async def open_journal(
    path: str | os.PathLike[str], *, synchronous: Synchronous = "NORMAL", check: bool = True
) -> AsyncIterator[SqliteJournal]:
    """Open the journal at ``path`` for the block, and close it (releasing the lock) after.

    Arguments and errors as ``SqliteJournal.open``.
    """
    journal = await SqliteJournal.open(path, synchronous=synchronous, check=check)
    try:
        yield journal
    finally:
        await journal.aclose()
