"""``SqliteJournal``: the durable ``Journal``, one SQLite file per run directory.

It keeps the contract of ``MemoryJournal`` (see ``protocol``) on disk:

- **Durability.** WAL mode with ``synchronous=NORMAL``: a ``commit`` that returned is in the
  WAL file, so it survives the process being killed (SIGKILL, OOM killer, a crash). After a
  power loss or OS crash the last commits may be rolled back, but the file stays consistent.
  ``synchronous="FULL"`` fsyncs every commit and survives power loss too, at a cost in speed.
- **Off the loop.** Every sqlite3 call runs in the journal's one writer thread, in the order
  of the calls, so the event loop never waits on the disk. Records are encoded on the caller's
  task when ``commit`` is called: the journal keeps that snapshot, whatever happens to the
  objects afterwards (as ``MemoryJournal`` does).
- **Group commit.** Callers put their commits in a queue and wait; the writer takes everything
  queued at once and writes consecutive commits in one transaction, and tells all their
  callers with one hand-off to the event loop. Each caller returns once its own records are
  durable; every caller of a failed transaction raises its error, and the next transaction
  goes on as usual. Calls queued while the writer is busy are picked up without waking it (a
  thread wake-up costs the event loop more than the SQL). ``defer`` queues a record nobody
  waits for: it rides along with the next transaction.
- **One holder.** The file is created 0600 and locked while it is open (``lock``): a second
  holder gets ``JournalLockedError``, never a shared file.
- **Never recreated.** A newer schema, a file that is not a journal, or a damaged file raise
  ``JournalCorruptError`` and are left untouched (``schema``), since recreating a journal
  would resubmit every line. sqlite3 and OS errors surface as ``JournalError`` subclasses that
  say what happened and what to do, chained to the original.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final, Literal, TypeAlias, TypeVar, cast, final

import anyio
import anyio.to_thread
import msgspec

from .._errors import ClosedError, JournalError, UsageError
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
        commits: ``commit`` (and ``defer``) calls whose records were written.
        transactions: transactions those commits took (fewer when commits were grouped).
        runs_written: run records written by ``commit`` and ``open_run``.
        shards_written: shard records written by ``commit``.
        wakeups: times a caller woke the journal's writer thread (a thread hand-off; calls
            queued while it is busy ride along without one).
        deferred: records handed over with ``defer`` (written with the next transaction).
    """

    path: str
    state: Literal["open", "closed"]
    commits: int
    transactions: int = 0
    runs_written: int
    shards_written: int
    wakeups: int = 0
    deferred: int = 0


@dataclass(eq=False)
class _Job:
    """One call for the writer thread: a commit's rows, or a function of the connection.

    ``loop`` and ``done`` are ``None`` for a deferred commit: nobody waits for it.
    """

    loop: asyncio.AbstractEventLoop | None
    done: anyio.Event | None
    rows: tuple[RunRow | None, list[ShardRow]] | None = None
    call: Callable[[sqlite3.Connection], object] | None = None
    result: object = None
    error: BaseException | None = None


@final
class SqliteJournal:
    """A ``Journal`` in one SQLite file. Open it with ``open_journal`` or ``SqliteJournal.open``.

    Every method runs its SQL in the journal's one writer thread, in the order of the calls;
    concurrent ``commit`` calls share transactions (group commit). A call cancelled while it
    waits for the writer still waits for its SQL to finish (it either happened or did not),
    then raises the cancellation.
    """

    def __init__(self, path: Path, conn: sqlite3.Connection, lock: JournalLock) -> None:
        """Wrap an open connection; use ``SqliteJournal.open`` instead."""
        self._path = path
        self._conn: sqlite3.Connection | None = conn
        self._lock = lock
        self._closed = False
        self._commits = 0  # counted by the writer thread
        self._empty_commits = 0  # counted on the event loop
        self._transactions = 0
        self._runs_written = 0
        self._shards_written = 0
        self._wakeups = 0
        self._deferred = 0
        #: Guards the queue and the writer's state; held for list operations only.
        self._wakeup = threading.Condition(threading.Lock())
        self._queue: list[_Job] = []
        self._awaited = 0  # jobs in the queue that a caller waits for
        self._sleeping = False
        self._stopping = False
        #: A deferred commit that failed with nobody waiting: the next commit raises it.
        self._lost: BaseException | None = None
        self._writer = threading.Thread(
            target=self._serve, name=f"batchpump-journal {path.name}", daemon=True
        )
        self._writer.start()

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
        """Run ``fn(connection)`` in the writer thread, mapping errors to ``JournalError``."""
        job = await self._run(_Job(None, None, call=fn), doing=doing, run_id=run_id)
        return cast(_T, job.result)

    async def _run(self, job: _Job, *, doing: str, run_id: str | None) -> _Job:
        """Queue ``job`` for the writer thread and wait until it ran; raise what it raised."""
        if self._closed:
            raise ClosedError(f"journal at {self._path} is closed")
        job.loop = asyncio.get_running_loop()
        job.done = done = anyio.Event()
        self._enqueue(job)
        try:
            await done.wait()
        except BaseException:
            with anyio.CancelScope(shield=True):  # it runs anyway: wait for its outcome
                await done.wait()
            raise
        if (exc := job.error) is None:
            return job
        if isinstance(exc, sqlite3.Error):
            raise map_sqlite_error(exc, self._path, doing, run_id) from exc
        if isinstance(exc, msgspec.DecodeError | msgspec.ValidationError):
            raise corrupt_error(
                self._path, f"a record cannot be read while {doing} ({exc})"
            ) from exc
        raise exc

    def _enqueue(self, job: _Job) -> None:
        """Put ``job`` in the queue; wake the writer if it sleeps and someone waits for ``job``."""
        with self._wakeup:
            self._queue.append(job)
            if job.done is None:
                return
            self._awaited += 1
            if self._sleeping:
                self._sleeping = False
                self._wakeups += 1
                self._wakeup.notify()

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

        The records are encoded now: the journal keeps this snapshot. Commits queued while the
        writer thread is busy share its next transaction (group commit); each caller returns
        only once its own records are durable. A transaction is all-or-nothing: every caller
        whose commit was in a failed one raises, and later commits go on as usual.

        Raises:
            TypeError: a record holds a value msgspec cannot encode; nothing was written.
            JournalError: the write failed (disk full, read-only...); nothing was written.
        """
        rows = _encode(run, shards)
        if rows is None:
            self._empty_commits += 1  # nothing to write, as MemoryJournal counts it
            return
        run_id = run.run_id if run is not None else shards[0].run_id
        await self._run(_Job(None, None, rows=rows), doing="committing", run_id=run_id)

    def defer(self, *, run: RunRecord | None = None, shards: Sequence[ShardRecord] = ()) -> None:
        """Queue ``run`` and ``shards`` to be written with the next transaction; do not wait.

        For a record the promise does not need durable at once (a batch id: a resume that
        finds the attempt still ``creating`` looks for its batch by tag). It wakes nobody: it
        is written, in call order, with the next call that is waited for (a ``commit``, a
        read), or on close. If that write fails, the next ``commit`` raises the error.

        Raises:
            TypeError: a record holds a value msgspec cannot encode; nothing was queued.
            ClosedError: the journal is closed.
        """
        if self._closed:
            raise ClosedError(f"journal at {self._path} is closed")
        rows = _encode(run, shards)
        if rows is not None:
            self._deferred += 1
            self._enqueue(_Job(None, None, rows=rows))

    # -- the writer thread ---------------------------------------------------------------------

    def _serve(self) -> None:
        """The writer thread: run queued jobs in order until the journal is closed."""
        while True:
            with self._wakeup:
                while not self._awaited and not self._stopping:
                    self._sleeping = True
                    self._wakeup.wait()
                jobs, self._queue = self._queue, []
                self._awaited = 0
                stopping = self._stopping
            self._work(jobs)
            if stopping and not self._queue:
                return

    def _work(self, jobs: list[_Job]) -> None:
        """Run ``jobs``: consecutive commits in one transaction, calls one by one; then tell
        their callers, one hand-off per event loop."""
        start = 0
        while start < len(jobs):
            end = start
            while end < len(jobs) and jobs[end].rows is not None:
                end += 1
            if end > start:
                self._write(jobs[start:end])
                start = end
                continue
            job = jobs[start]
            assert job.call is not None
            try:
                if self._conn is None:
                    raise ClosedError(f"journal at {self._path} is closed")
                job.result = job.call(self._conn)
            except BaseException as exc:  # handed to the caller
                job.error = exc
            start += 1
        by_loop: dict[asyncio.AbstractEventLoop, list[anyio.Event]] = {}
        for job in jobs:
            if job.loop is not None and job.done is not None:
                by_loop.setdefault(job.loop, []).append(job.done)
        for loop, events in by_loop.items():
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                loop.call_soon_threadsafe(_set_all, events)

    def _write(self, group: list[_Job]) -> None:
        """One transaction for the commits of ``group``; on failure each of them gets the error."""
        conn = self._conn
        try:
            if self._lost is not None:  # a deferred record was not written: say so now
                lost, self._lost = self._lost, None
                raise lost
            if conn is None:
                raise ClosedError(f"journal at {self._path} is closed")
            conn.execute("BEGIN IMMEDIATE")
            try:
                for job in group:
                    assert job.rows is not None
                    run_row, shard_rows = job.rows
                    if run_row is not None:
                        conn.execute(UPSERT_RUN, run_row)
                    conn.executemany(UPSERT_SHARD, shard_rows)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise
        except BaseException as exc:  # handed to the callers
            for job in group:
                job.error = exc
            if all(job.done is None for job in group):
                self._lost = exc
            return
        self._commits += len(group)
        self._transactions += 1
        for job in group:
            assert job.rows is not None
            self._runs_written += job.rows[0] is not None
            self._shards_written += len(job.rows[1])

    def statistics(self) -> JournalStatistics:
        """A snapshot of what this journal has done since it was opened."""
        return JournalStatistics(
            path=str(self._path),
            state="closed" if self._closed else "open",
            commits=self._commits + self._empty_commits,
            transactions=self._transactions,
            runs_written=self._runs_written,
            shards_written=self._shards_written,
            wakeups=self._wakeups,
            deferred=self._deferred,
        )

    async def aclose(self) -> None:
        """Write what is queued (deferred records too), close the database and release the
        lock. Idempotent.

        Raises:
            JournalError: a deferred record could not be written, or closing failed.
        """
        if self._closed:
            return
        job = _Job(None, None, call=self._close_sync)
        job.loop = asyncio.get_running_loop()
        job.done = done = anyio.Event()
        with self._wakeup:
            self._stopping = True
            self._queue.append(job)
            self._awaited += 1
            if self._sleeping:
                self._sleeping = False
                self._wakeup.notify()
        self._closed = True
        with anyio.CancelScope(shield=True):
            await done.wait()
        if isinstance(job.error, sqlite3.Error):
            raise map_sqlite_error(job.error, self._path, "closing it") from job.error
        if job.error is not None:
            raise job.error

    def _close_sync(self, _conn: sqlite3.Connection) -> None:
        conn, self._conn = self._conn, None
        try:
            lost, self._lost = self._lost, None
            if conn is not None:
                conn.close()
            if lost is not None:
                raise lost
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
        commits = self._commits + self._empty_commits
        return f"<SqliteJournal path={str(self._path)!r} state={state} commits={commits}>"


def _encode(
    run: RunRecord | None, shards: Sequence[ShardRecord]
) -> tuple[RunRow | None, list[ShardRow]] | None:
    """The rows of a commit (``None`` if it writes nothing), encoded on the caller's task."""
    run_row = None if run is None else encode_run(run)
    shard_rows = [encode_shard(shard) for shard in shards]
    if run_row is None and not shard_rows:
        return None
    return run_row, shard_rows


def _set_all(events: list[anyio.Event]) -> None:
    for event in events:
        event.set()
