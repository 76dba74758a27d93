"""Reading a journal that another process may be writing: ``status`` while a run is active.

``JournalReader`` opens the SQLite file read-only and takes no holder lock: SQLite's WAL mode
lets readers see the last committed state while the holder keeps writing, so ``batchpump
status`` works from a second terminal. ``holder`` says which process has the journal open
(from its lock file), and ``find_run`` resolves a run id or a unique prefix of one.
"""

from __future__ import annotations

import os
import socket
import sqlite3
from pathlib import Path
from types import TracebackType
from typing import Final, final

import anyio.to_thread
import msgspec

from .._errors import UsageError
from .._models import RunRecord, ShardRecord
from .lock import _describe_holder
from .schema import map_sqlite_error, run_decoder, shard_decoder

__all__ = ["JournalReader"]

#: How long a read waits for the holder's write to finish.
READ_BUSY_TIMEOUT_MS: Final = 5_000


class _Holder(msgspec.Struct, frozen=True):
    pid: int
    hostname: str
    since: float


@final
class JournalReader:
    """A read-only view of the journal at ``path``; no lock, so it works beside a running run."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn
        self._limiter = anyio.CapacityLimiter(1)

    @classmethod
    async def open(cls, path: str | os.PathLike[str]) -> JournalReader:
        """Open the journal file ``path`` read-only.

        Raises:
            UsageError: there is no journal at ``path``.
            JournalError: it cannot be read.
        """
        where = Path(os.path.abspath(path))  # noqa: ASYNC240 (string work, no disk)

        def connect() -> sqlite3.Connection:
            if not where.is_file():
                raise UsageError(f"no journal at {where}; pass --journal DIR (the state directory)")
            conn = sqlite3.connect(
                f"file:{where}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
            )
            conn.execute(f"PRAGMA busy_timeout = {READ_BUSY_TIMEOUT_MS}")
            return conn

        try:
            conn = await anyio.to_thread.run_sync(connect)
        except sqlite3.Error as exc:
            raise map_sqlite_error(exc, where, "opening it to read") from exc
        return cls(where, conn)

    async def _query(self, sql: str, params: tuple[str, ...] = ()) -> list[tuple[str]]:
        def job() -> list[tuple[str]]:
            return self._conn.execute(sql, params).fetchall()

        try:
            return await anyio.to_thread.run_sync(job, limiter=self._limiter)
        except sqlite3.Error as exc:
            raise map_sqlite_error(exc, self.path, "reading it") from exc

    async def list_runs(self) -> list[RunRecord]:
        """Every run, oldest first."""
        rows = await self._query("SELECT record FROM runs ORDER BY rowid")
        return [run_decoder.decode(record) for (record,) in rows]

    async def find_run(self, id_or_prefix: str) -> RunRecord:
        """The run whose id is ``id_or_prefix``, or the only one that starts with it.

        Raises:
            UsageError: no run matches, or the prefix matches more than one.
        """
        runs = await self.list_runs()
        exact = [r for r in runs if r.run_id == id_or_prefix]
        matches = exact or [r for r in runs if id_or_prefix and r.run_id.startswith(id_or_prefix)]
        if len(matches) == 1:
            return matches[0]
        where = self.path.parent
        if not matches:
            known = ", ".join(r.run_id for r in runs[-5:]) or "none"
            raise UsageError(
                f"no run {id_or_prefix!r} in the journal at {where} (its latest runs: {known}); "
                "`batchpump status --journal DIR` lists the runs of another state directory"
            )
        ids = ", ".join(r.run_id for r in matches)
        raise UsageError(f"{id_or_prefix!r} matches {len(matches)} runs ({ids}); give more of it")

    async def load_shards(self, run_id: str) -> list[ShardRecord]:
        """Every shard attempt of the run, ordered by ``(index, attempt)``."""
        rows = await self._query(
            "SELECT record FROM shards WHERE run_id = ? ORDER BY idx, attempt", (run_id,)
        )
        return [shard_decoder.decode(record) for (record,) in rows]

    def holder(self) -> str | None:
        """Who has the journal open for writing (``"pid 12 on host since ..."``), or ``None``."""
        return journal_holder(self.path)

    async def aclose(self) -> None:
        await anyio.to_thread.run_sync(self._conn.close, limiter=self._limiter)

    async def __aenter__(self) -> JournalReader:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def journal_holder(path: Path) -> str | None:
    """Who holds the journal at ``path`` (read from its lock file, whose holder writes its
    name and empties it on release), or ``None``. A holder on this host that is no longer
    alive (killed before it could empty the file) does not count."""
    try:
        raw = path.with_name(path.name + ".lock").read_bytes()
    except OSError:
        return None
    if not raw:
        return None
    try:
        holder = msgspec.json.decode(raw, type=_Holder)
    except msgspec.DecodeError:
        return _describe_holder(raw)
    if holder.hostname == socket.gethostname():
        try:
            os.kill(holder.pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
    return _describe_holder(raw)
