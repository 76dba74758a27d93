"""``PostgresJournal``: the ``Journal`` on a PostgreSQL server, shared by several workers.

Same contract as ``SqliteJournal`` (one ``commit`` is one transaction; records are encoded on
the caller's task, so the journal keeps that snapshot), on a server every worker can reach, so
several processes on several machines can drive one run: the run's lease (``leases``) lets one
of them shard it, and the claims on its shard attempts (``leases``) split the attempts between
workers and fence the commits of a worker that lost one.

- **Driver: asyncpg**, chosen over psycopg 3's async connection by measuring this journal's
  typical transaction (upsert the run record and two shard records in one transaction, on one
  connection): asyncpg committed more per second, with ``fsync`` on and more so with it off,
  where the driver's own cost shows (figures in ``docs/workers.md``). Its binary protocol and
  pipelined ``executemany`` make the difference, and ``copy_records_to_table`` gives COPY-speed
  bulk inserts. It needs asyncio, which batchpump already needs (aiohttp). It is an optional
  extra: ``pip install 'batchpump[postgres]'``.
- **Connection.** One connection per journal; calls from many tasks take turns on it, and
  concurrent ``commit`` calls are grouped into one transaction (``GroupCommit``), as on SQLite.
  A call cancelled while its SQL runs waits for the server's answer (bounded by
  ``COMMAND_TIMEOUT``), so a transaction either happened or did not, then raises the
  cancellation. A connection lost between calls is opened again by the next call.
- **Schema** (tables ``batchpump_meta``, ``batchpump_runs``, ``batchpump_shards``, since
  version 2 ``batchpump_leases``, since version 3 ``batchpump_results``, since version 4 the
  claim columns of ``batchpump_shards``). The version
  is a row of ``batchpump_meta``; each table keeps the indexed columns beside the full record as
  msgspec JSON (``bytea``), so new optional record fields need no migration. Creating or
  migrating the schema happens in one transaction under a transaction-scoped advisory lock, so
  workers starting together create it once. A newer version, or tables that are not a
  journal's, raise ``JournalCorruptError`` and are left untouched.
- **Results.** A commit may carry result lines (``commit(results=...)``): they are stored, one
  row per line keyed by its byte offset in the results file, with ``COPY`` in the transaction
  that moves the run's ``out_offset``, so the stored results are exactly the committed ones and
  any worker can read them back (``read_results``) or write the file anew.
- **Runs worked by claims** (``start_claims``): several workers commit to the run at once, so
  its record is never simply replaced: each commit locks the stored row (``FOR UPDATE``) and
  merges into it (``_merge``): result lines given as ``append`` go at the stored
  ``out_offset``, their counts add to the stored counts, a cancel request, a finished state and
  the duplicate counts stick. The row lock orders the workers' result commits, so the stored
  lines stay one gapless sequence and each attempt's lines are stored in the transaction that
  marks it done, under its claim: once.
- **Secrets.** The URL's password never appears in a repr, an error or a log line: they all
  show ``redact_url(url)``.
"""

from __future__ import annotations

import contextlib
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, TypeVar, final

import anyio
import anyio.lowlevel
import msgspec

from .._errors import (
    BatchpumpInternalError,
    ClosedError,
    JournalCorruptError,
    JournalError,
    UsageError,
)
from .._group import GroupCommit
from .._models import ResultCounts, RunRecord, ShardRecord
from . import leases
from .leases import LeaseHolder, LeaseLostError
from .sqlite import JournalStatistics

if TYPE_CHECKING:
    import asyncpg

__all__ = [
    "PG_SCHEMA_VERSION",
    "PostgresJournal",
    "is_postgres_url",
    "redact_url",
]

#: The version of the layout this module writes (a row of ``batchpump_meta``).
PG_SCHEMA_VERSION: Final = 4
#: Seconds one statement may take before the call fails (a hung server must not hang a run).
COMMAND_TIMEOUT: Final = 60.0
#: Seconds to wait for the server when connecting.
CONNECT_TIMEOUT: Final = 30.0
#: ``pg_advisory_xact_lock`` key serializing schema creation and migration (ASCII ``bpmp``).
SCHEMA_LOCK: Final = 0x62706D70
_SCHEMES: Final = ("postgresql://", "postgres://")

_T = TypeVar("_T")
_enc: Final = msgspec.json.Encoder()
_run_dec: Final = msgspec.json.Decoder(RunRecord)
_shard_dec: Final = msgspec.json.Decoder(ShardRecord)

_INSERT_RUN: Final = (
    "INSERT INTO batchpump_runs (run_id, state, record) VALUES ($1, $2, $3)"
    " ON CONFLICT (run_id) DO NOTHING RETURNING record"
)
_UPSERT_RUN: Final = (
    "INSERT INTO batchpump_runs (run_id, state, record) VALUES ($1, $2, $3)"
    " ON CONFLICT (run_id) DO UPDATE SET state = excluded.state, record = excluded.record"
)
_UPSERT_SHARD: Final = (
    "INSERT INTO batchpump_shards (run_id, idx, attempt, state, batch_id, tag, record)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7)"
    " ON CONFLICT (run_id, idx, attempt) DO UPDATE SET state = excluded.state,"
    " batch_id = excluded.batch_id, tag = excluded.tag, record = excluded.record"
)

_SCHEMA_V1: Final = (
    "CREATE TABLE batchpump_runs (run_id text PRIMARY KEY,"
    " seq bigint GENERATED ALWAYS AS IDENTITY, state text NOT NULL, record bytea NOT NULL)",
    "CREATE TABLE batchpump_shards (run_id text NOT NULL REFERENCES batchpump_runs (run_id),"
    " idx integer NOT NULL, attempt integer NOT NULL, state text NOT NULL,"
    " batch_id text, tag text, record bytea NOT NULL, PRIMARY KEY (run_id, idx, attempt))",
    "CREATE INDEX batchpump_shards_by_state ON batchpump_shards (run_id, state)",
    "CREATE INDEX batchpump_shards_by_batch_id ON batchpump_shards (batch_id)"
    " WHERE batch_id IS NOT NULL",
    "CREATE INDEX batchpump_shards_by_tag ON batchpump_shards (tag) WHERE tag IS NOT NULL",
)
#: A run's results, one row per line: ``pos`` is the line's byte offset in the results file, so
#: the lines in ``pos`` order are that file, byte for byte (since version 3).
_RESULTS_DDL: Final = (
    "CREATE TABLE batchpump_results (run_id text NOT NULL REFERENCES batchpump_runs (run_id),"
    " pos bigint NOT NULL, line bytea NOT NULL, PRIMARY KEY (run_id, pos))"
)
_RESULT_COLUMNS: Final = ("run_id", "pos", "line")
_TABLES: Final = frozenset(
    {
        "batchpump_meta",
        "batchpump_runs",
        "batchpump_shards",
        "batchpump_leases",
        "batchpump_results",
    }
)


async def _migrate_v1(conn: asyncpg.Connection[Any]) -> None:
    """v1 -> v2: the leases that let several workers share the journal (``leases``)."""
    await conn.execute(leases.LEASES_DDL)


async def _migrate_v2(conn: asyncpg.Connection[Any]) -> None:
    """v2 -> v3: the results, stored in the journal so that any worker can serve them."""
    await conn.execute(_RESULTS_DDL)


async def _migrate_v3(conn: asyncpg.Connection[Any]) -> None:
    """v3 -> v4: the claims on shard attempts, so several workers split one run."""
    await conn.execute(leases.CLAIMS_DDL)


#: ``_MIGRATIONS[v]`` turns a version ``v`` schema into version ``v + 1`` (inside the
#: transaction that holds ``SCHEMA_LOCK``).
_MIGRATIONS: Final[dict[int, Callable[[asyncpg.Connection[Any]], Awaitable[None]]]] = {
    1: _migrate_v1,
    2: _migrate_v2,
    3: _migrate_v3,
}


def is_postgres_url(target: object) -> bool:
    """Whether ``target`` names a PostgreSQL journal (``postgresql://`` or ``postgres://``)."""
    return isinstance(target, str) and target.startswith(_SCHEMES)


def redact_url(url: str) -> str:
    """``url`` with its password (in the authority or as a ``password=`` parameter) hidden."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, sep, _password = userinfo.partition(":")
        netloc = f"{user}{':***' if sep else ''}@{hostport}"
    query = "&".join(
        f"{key}=***" if key.lower() == "password" else f"{key}={value}"
        for key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    )
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _secrets_of(url: str) -> list[str]:
    parts = urllib.parse.urlsplit(url)
    found = [parts.password] if parts.password else []
    found += [
        value
        for key, value in urllib.parse.parse_qsl(parts.query)
        if key.lower() == "password" and value
    ]
    # Both the raw and the percent-decoded spelling may show up in a driver's message.
    return [s for secret in found for s in {secret, urllib.parse.unquote(secret)}]


@dataclass(eq=False)
class _Pending:
    """One caller's commit waiting for the next group transaction."""

    run_row: tuple[str, str, bytes] | None
    shard_rows: list[tuple[str, int, int, str, str | None, str | None, bytes]]
    run_id: str
    result_rows: list[tuple[str, int, bytes]]
    #: Claims mode: lines to append at the stored ``out_offset`` and the counts they add.
    append: tuple[bytes, ResultCounts] | None = None
    #: Claims mode: the run record as merged and written (set by the transaction).
    merged: RunRecord | None = None


@dataclass(eq=False)
class _Claims:
    """The claims this journal holds on one run's attempts (``start_claims``)."""

    ttl: float
    held: set[tuple[int, int]]


def _merge(
    stored: RunRecord, ours: RunRecord, added: int, counts: ResultCounts | None
) -> RunRecord:
    """The run record a claims-mode commit writes: ``ours`` on top of ``stored`` (the row as
    locked in the transaction), keeping what other workers moved."""
    merged = ResultCounts()
    merged.merge(stored.counts)
    if counts is not None:
        merged.merge(counts)
    ours.counts = merged
    ours.out_offset = stored.out_offset + added
    ours.cancel_requested = ours.cancel_requested or stored.cancel_requested
    ours.duplicates_found = max(ours.duplicates_found, stored.duplicates_found)
    ours.duplicates_cancelled = max(ours.duplicates_cancelled, stored.duplicates_cancelled)
    ours.total_lines = max(ours.total_lines, stored.total_lines)
    ours.out_taken_by = ours.out_taken_by or stored.out_taken_by
    if stored.state in ("done", "cancelled"):
        ours.state = stored.state
    return ours


def _result_rows(run_id: str, start: int, data: bytes) -> list[tuple[str, int, bytes]]:
    """``data`` (complete JSONL lines found at byte ``start`` of the results) as table rows."""
    if data and not data.endswith(b"\n"):
        raise BatchpumpInternalError(f"run {run_id}: results to store end mid-line")
    rows: list[tuple[str, int, bytes]] = []
    pos = 0
    while pos < len(data):
        end = data.index(b"\n", pos) + 1
        rows.append((run_id, start + pos, data[pos:end]))
        pos = end
    return rows


def _shard_row(shard: ShardRecord) -> tuple[str, int, int, str, str | None, str | None, bytes]:
    return (
        shard.run_id,
        shard.index,
        shard.attempt,
        shard.state,
        shard.batch_id,
        shard.tag,
        _enc.encode(shard),
    )


@final
class PostgresJournal:
    """A ``Journal`` on PostgreSQL. Open it with ``PostgresJournal.open(url)``.

    Every call runs on the journal's one connection, one at a time; each ``commit`` is one
    transaction (concurrent ones share it). Several journals (in several processes or
    machines) may be open on one database at once: that is what it is for.
    """

    def __init__(self, url: str, conn: asyncpg.Connection[Any]) -> None:
        """Wrap an open connection; use ``PostgresJournal.open`` instead."""
        self._url = url
        self._shown = redact_url(url)
        self._secrets = _secrets_of(url)
        self._conn: asyncpg.Connection[Any] | None = conn
        self._lock = anyio.Lock()
        self._closed = False
        self._commits = 0
        self._groups = 0
        self._runs_written = 0
        self._shards_written = 0
        self._group: GroupCommit[_Pending] = GroupCommit(self._write_group)
        self.owner: Final = leases.new_owner()
        self._fenced: dict[str, float] = {}  # run id -> lease term, for runs this one drives
        self._claims: dict[str, _Claims] = {}  # run id -> claims, for runs worked by claims

    @property
    def url(self) -> str:
        """The server's URL with its password hidden."""
        return self._shown

    @classmethod
    async def open(cls, url: str) -> PostgresJournal:
        """Connect to the database at ``url`` and create or migrate the journal's tables.

        Args:
            url: ``postgresql://USER:PASSWORD@HOST:PORT/DATABASE`` (libpq's URL form; query
                parameters such as ``sslmode`` are passed on).

        Raises:
            UsageError: ``url`` is not a PostgreSQL URL, or asyncpg is not installed.
            JournalCorruptError: the database holds a newer journal, or tables of that name
                that are not a journal's.
            JournalError: the server cannot be reached or refuses the login.
        """
        if not is_postgres_url(url):
            raise UsageError(f"not a PostgreSQL URL: {redact_url(url)!r}")
        journal = cls(url, await _connect(url, _secrets_of(url)))
        try:
            await journal._call(
                partial(_prepare_schema, shown=journal.url), doing="preparing the schema"
            )
        except BaseException:
            await journal.aclose()
            raise
        return journal

    # -- calls ----------------------------------------------------------------------------------

    def _error(self, exc: BaseException, doing: str, run_id: str | None = None) -> Exception:
        return _map_error(exc, self._shown, self._secrets, doing, run_id)

    async def _call(
        self,
        fn: Callable[[asyncpg.Connection[Any]], Awaitable[_T]],
        *,
        doing: str,
        run_id: str | None = None,
    ) -> _T:
        """Run ``fn(connection)`` alone on the connection; errors become ``JournalError``s.

        The call is shielded: a cancelled caller waits for the server's answer (at most
        ``COMMAND_TIMEOUT``), so a transaction is never left half-sent, then re-raises.
        """
        if self._closed:
            raise ClosedError(f"journal at {self._shown} is closed")

        async with self._lock:
            with anyio.CancelScope(shield=True):
                try:
                    if self._conn is None or self._conn.is_closed():
                        self._conn = await _connect(self._url, self._secrets)
                    result = await fn(self._conn)
                except BaseException as exc:
                    if _breaks_connection(exc):  # the next call starts on a new connection
                        conn, self._conn = self._conn, None
                        if conn is not None:
                            conn.terminate()
                    if isinstance(exc, _driver_errors()):
                        raise self._error(exc, doing, run_id) from None
                    if isinstance(exc, msgspec.DecodeError | msgspec.ValidationError):
                        raise JournalCorruptError(
                            f"journal at {self._shown}: a record cannot be read while {doing} "
                            f"({exc}); it was left as it is and nothing was resubmitted"
                        ) from exc
                    raise
                except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                    raise JournalCorruptError(
                        f"journal at {self._shown}: a record cannot be read while {doing} "
                        f"({exc}); it was left as it is and nothing was resubmitted"
                    ) from exc
        await anyio.lowlevel.checkpoint_if_cancelled()
        return result

    async def open_run(self, run: RunRecord) -> tuple[RunRecord, bool]:
        """Insert ``run`` unless a run with its id exists; return the stored one and
        whether it was created now (by this call: another worker may have raced it)."""
        record = _enc.encode(run)

        async def job(conn: asyncpg.Connection[Any]) -> tuple[RunRecord, bool]:
            inserted = await conn.fetchval(_INSERT_RUN, run.run_id, run.state, record)
            if inserted is not None:
                self._runs_written += 1
                return _run_dec.decode(inserted), True
            stored = await conn.fetchval(
                "SELECT record FROM batchpump_runs WHERE run_id = $1", run.run_id
            )
            return _run_dec.decode(stored), False

        return await self._call(job, doing="opening a run", run_id=run.run_id)

    async def get_run(self, run_id: str) -> RunRecord | None:
        """The stored run, or ``None``."""

        async def job(conn: asyncpg.Connection[Any]) -> RunRecord | None:
            found = await conn.fetchval(
                "SELECT record FROM batchpump_runs WHERE run_id = $1", run_id
            )
            return None if found is None else _run_dec.decode(found)

        return await self._call(job, doing="reading a run", run_id=run_id)

    async def list_runs(self) -> list[RunRecord]:
        """Every run, oldest first."""

        async def job(conn: asyncpg.Connection[Any]) -> list[RunRecord]:
            rows = await conn.fetch("SELECT record FROM batchpump_runs ORDER BY seq")
            return [_run_dec.decode(row[0]) for row in rows]

        return await self._call(job, doing="listing runs")

    async def delete_run(self, run_id: str) -> bool:
        """Remove the run, its shard attempts, results and lease in one transaction; whether
        it existed (a submit that failed before the run started leaves nothing behind)."""

        async def job(conn: asyncpg.Connection[Any]) -> bool:
            async with conn.transaction():
                await conn.execute("DELETE FROM batchpump_results WHERE run_id = $1", run_id)
                await conn.execute("DELETE FROM batchpump_shards WHERE run_id = $1", run_id)
                await conn.execute(
                    "DELETE FROM batchpump_leases WHERE key = ANY($1::text[])",
                    [leases.run_key(run_id), leases.joins_key(run_id)],
                )
                status = await conn.execute("DELETE FROM batchpump_runs WHERE run_id = $1", run_id)
            return bool(status == "DELETE 1")

        return await self._call(job, doing="deleting a run", run_id=run_id)

    async def load_shards(self, run_id: str) -> list[ShardRecord]:
        """Every shard attempt of the run, ordered by ``(index, attempt)``."""

        async def job(conn: asyncpg.Connection[Any]) -> list[ShardRecord]:
            rows = await conn.fetch(
                "SELECT record FROM batchpump_shards WHERE run_id = $1 ORDER BY idx, attempt",
                run_id,
            )
            return [_shard_dec.decode(row[0]) for row in rows]

        return await self._call(job, doing="loading shards", run_id=run_id)

    async def commit(
        self,
        *,
        run: RunRecord | None = None,
        shards: Sequence[ShardRecord] = (),
        results: tuple[int, bytes] | None = None,
        append: tuple[bytes, ResultCounts] | None = None,
    ) -> None:
        """Write ``run`` and ``shards`` (inserted or replaced by key) in one transaction.

        ``results`` (beyond the ``Journal`` protocol): ``(start, data)``, result lines found at
        byte ``start`` of the run's results, stored in the same transaction (with ``COPY``),
        so the results in the journal and the run's ``out_offset`` move together. It needs
        ``run``.

        For a run worked by claims (``start_claims``) the shard attempts written must be
        claimed by this journal (new attempts excepted), and ``run`` is merged into the stored
        record (``_merge``) instead of replacing it; ``append`` is ``(data, counts)``: result
        lines stored at the run's stored ``out_offset``, and the counts they add. Once
        committed, ``run``'s ``out_offset``, counts and state are the merged ones.

        Commits that arrive while another is being written share the next transaction; each
        caller returns once its own records are committed, and every caller of a failed group
        raises.

        Raises:
            TypeError: a record holds a value msgspec cannot encode; nothing was written.
            LeaseLostError: the run's lease, or the claim of an attempt written, is not this
                journal's (any more); nothing was written.
            JournalError: the write failed (server gone, disk full...); nothing was written,
                or (the connection dropped during COMMIT) it is unknown whether it was:
                ``batchpump resume`` reconciles either way.
        """
        if self._closed:
            raise ClosedError(f"journal at {self._shown} is closed")
        run_row = None if run is None else (run.run_id, run.state, _enc.encode(run))
        shard_rows = [_shard_row(shard) for shard in shards]
        if run_row is None and not shard_rows:
            if results is not None or append is not None:
                raise BatchpumpInternalError("results committed without their run")
            self._commits += 1
            return
        run_id = run.run_id if run is not None else shards[0].run_id
        if append is not None and (run is None or run_id not in self._claims):
            raise BatchpumpInternalError("results appended outside a run worked by claims")
        result_rows = [] if results is None else _result_rows(run_id, *results)
        pending = _Pending(run_row, shard_rows, run_id, result_rows, append)
        await self._group.submit(pending)
        if run is not None and pending.merged is not None:
            merged = pending.merged
            run.out_offset, run.counts, run.state = merged.out_offset, merged.counts, merged.state
            run.cancel_requested = merged.cancel_requested
            run.duplicates_found = merged.duplicates_found
            run.duplicates_cancelled = merged.duplicates_cancelled

    async def _write_group(self, group: list[_Pending]) -> None:
        fenced = {i.run_id: self._fenced[i.run_id] for i in group if i.run_id in self._fenced}
        claimed = {i.run_id: self._claims[i.run_id] for i in group if i.run_id in self._claims}

        async def job(conn: asyncpg.Connection[Any]) -> None:
            async with conn.transaction():
                for run_id, ttl in fenced.items():
                    margin = ttl * leases.FENCE_MARGIN_FRACTION
                    if not await leases.fence(conn, leases.run_key(run_id), self.owner, margin):
                        raise LeaseLostError(
                            f"journal at {self._shown}: this worker's lease on run {run_id} "
                            "lapsed (it stopped renewing in time) and nothing more was written; "
                            "another worker carries the run on"
                        )
                for run_id, claims in claimed.items():
                    await self._fence_claims(conn, group, run_id, claims.ttl)
                merged: dict[str, RunRecord] = {}
                result_rows: list[tuple[str, int, bytes]] = []
                for item in group:
                    if item.run_row is not None and item.run_id in claimed:
                        stored = merged.get(item.run_id) or await _locked_run(conn, item.run_id)
                        data, counts = item.append or (b"", None)
                        result_rows += _result_rows(item.run_id, stored.out_offset, data)
                        item.merged = merged[item.run_id] = _merge(
                            stored, _run_dec.decode(item.run_row[2]), len(data), counts
                        )
                    elif item.run_row is not None:
                        await conn.execute(_UPSERT_RUN, *item.run_row)
                    result_rows += item.result_rows
                for record in merged.values():
                    await conn.execute(
                        _UPSERT_RUN, record.run_id, record.state, _enc.encode(record)
                    )
                shard_rows = [row for item in group for row in item.shard_rows]
                if shard_rows:
                    await conn.executemany(_UPSERT_SHARD, shard_rows)
                if result_rows:
                    await conn.copy_records_to_table(
                        "batchpump_results", records=result_rows, columns=_RESULT_COLUMNS
                    )

        await self._call(job, doing="committing", run_id=group[0].run_id)
        for run_id, claims in claimed.items():  # settled attempts need no renewal any more
            for item in group:
                if item.run_id == run_id:
                    for row in item.shard_rows:
                        if row[3] in leases.SETTLED_STATES:
                            claims.held.discard((row[1], row[2]))
        self._commits += len(group)
        self._groups += 1
        self._runs_written += sum(item.run_row is not None for item in group)
        self._shards_written += sum(len(item.shard_rows) for item in group)

    async def _fence_claims(
        self, conn: asyncpg.Connection[Any], group: list[_Pending], run_id: str, ttl: float
    ) -> None:
        keys = [
            (row[1], row[2]) for item in group if item.run_id == run_id for row in item.shard_rows
        ]
        if not keys:
            return
        margin = ttl * leases.FENCE_MARGIN_FRACTION
        lost = await leases.fence_claims(conn, run_id, self.owner, margin, keys)
        if lost:
            index, attempt = lost[0]
            raise LeaseLostError(
                f"journal at {self._shown}: this worker's claim on shard {index} attempt "
                f"{attempt} of run {run_id} lapsed (it stopped renewing in time) and nothing "
                "more was written; another worker carries the attempt on"
            )

    async def read_results(self, run_id: str, start: int = 0, *, limit: int = 1 << 20) -> bytes:
        """The run's stored result lines from byte ``start`` on, about ``limit`` bytes of them
        (whole lines, at least one if there is one); ``b""`` past the end.

        ``start`` must be where a line starts (0, or the end of what an earlier call returned).
        """

        async def job(conn: asyncpg.Connection[Any]) -> bytes:
            rows = await conn.fetch(
                "SELECT pos, line FROM batchpump_results WHERE run_id = $1 AND pos >= $2"
                " ORDER BY pos LIMIT $3",
                run_id,
                start,
                max(1, limit // 64),
            )
            out = bytearray()
            expected = start
            for pos, line in rows:
                if pos != expected:
                    raise JournalCorruptError(
                        f"journal at {self._shown}: run {run_id}'s stored results have a gap "
                        f"at byte {expected}; they were left as they are"
                    )
                out += line
                expected += len(line)
                if len(out) >= limit:
                    break
            return bytes(out)

        return await self._call(job, doing="reading results", run_id=run_id)

    # -- leases (see ``leases``) ---------------------------------------------------------------

    async def acquire_run(self, run_id: str, ttl: float) -> int | None:
        """Take the lease on ``run_id`` for ``ttl`` seconds if nobody else holds it; return its
        generation (how many times it changed hands), or None. While held, every commit to
        the run is fenced by it."""

        async def job(conn: asyncpg.Connection[Any]) -> int | None:
            return await leases.acquire(conn, leases.run_key(run_id), self.owner, ttl)

        taken = await self._call(job, doing="taking a run's lease", run_id=run_id)
        if taken is not None:
            self._fenced[run_id] = ttl
        return taken

    async def renew_run(self, run_id: str, ttl: float) -> bool:
        """Extend this journal's lease on ``run_id``; False if it lapsed (it is not ours)."""

        async def job(conn: asyncpg.Connection[Any]) -> bool:
            return await leases.renew(conn, leases.run_key(run_id), self.owner, ttl)

        return await self._call(job, doing="renewing a run's lease", run_id=run_id)

    async def release_run(self, run_id: str) -> None:
        """Give the lease on ``run_id`` up (if ours): another worker may take the run at once."""
        self._fenced.pop(run_id, None)

        async def job(conn: asyncpg.Connection[Any]) -> None:
            await leases.release(conn, leases.run_key(run_id), self.owner)

        await self._call(job, doing="releasing a run's lease", run_id=run_id)

    async def run_holder(self, run_id: str) -> LeaseHolder | None:
        """Who drives ``run_id`` now (an unexpired lease), or None."""

        async def job(conn: asyncpg.Connection[Any]) -> LeaseHolder | None:
            return await leases.holder(conn, leases.run_key(run_id))

        return await self._call(job, doing="reading a run's lease", run_id=run_id)

    # -- claims on shard attempts (see ``leases``) -----------------------------------------

    def start_claims(self, run_id: str, ttl: float) -> None:
        """Work ``run_id`` by claims from now on: its commits are fenced by the claims of the
        attempts they write, and its record is merged (``commit``)."""
        self._claims.setdefault(run_id, _Claims(ttl, set()))

    def stop_claims(self, run_id: str) -> None:
        """Stop working ``run_id`` by claims (claims still held lapse on their own, or are
        released by ``release_claims`` first)."""
        self._claims.pop(run_id, None)

    def claiming(self, run_id: str) -> bool:
        """Whether this journal works ``run_id`` by claims (``start_claims``)."""
        return run_id in self._claims

    async def join_number(self, run_id: str) -> int:
        """A number no other call for ``run_id`` got (1, 2, ...): each worker that joins the
        run takes one, to make shard indexes of its own (the halves of split shards)."""

        async def job(conn: asyncpg.Connection[Any]) -> int:
            return await leases.count(conn, leases.joins_key(run_id))

        return await self._call(job, doing="joining a run", run_id=run_id)

    def held_claims(self, run_id: str) -> list[tuple[int, int]]:
        """The ``(index, attempt)`` of the open attempts of ``run_id`` this journal claimed."""
        claims = self._claims.get(run_id)
        return sorted(claims.held) if claims else []

    async def claim(self, run_id: str, limit: int) -> tuple[list[ShardRecord], int, int]:
        """Claim up to ``limit`` open attempts of ``run_id`` nobody holds (free, released or
        lapsed), for the run's claim term; return them (as stored), how many of them were
        taken over from another claim, and how many open attempts of the run are left that
        this journal does not hold."""
        claims = self._claims.get(run_id)
        if claims is None:
            raise BatchpumpInternalError(f"run {run_id} is not worked by claims here")

        async def job(conn: asyncpg.Connection[Any]) -> leases.Claimed:
            return await leases.claim(conn, run_id, self.owner, max(0, limit), claims.ttl)

        got = await self._call(job, doing="claiming shard attempts", run_id=run_id)
        shards = [_shard_dec.decode(record) for record in got.records]
        claims.held.update(shard.key for shard in shards)
        return shards, got.taken_over, got.open_elsewhere

    async def renew_claims(self, run_id: str) -> tuple[set[tuple[int, int]], set[tuple[int, int]]]:
        """Extend this journal's claims on ``run_id``'s open attempts; return the keys renewed
        and the keys lost (held here, but lapsed or taken by another worker)."""
        claims = self._claims.get(run_id)
        if claims is None:
            return set(), set()
        keys = sorted(claims.held)

        async def job(conn: asyncpg.Connection[Any]) -> set[tuple[int, int]]:
            return await leases.renew_claims(conn, run_id, self.owner, claims.ttl, keys)

        renewed = await self._call(job, doing="renewing claims", run_id=run_id)
        lost = (set(keys) - renewed) & claims.held  # an attempt settled meanwhile is not lost
        return renewed, lost

    async def release_claims(self, run_id: str) -> None:
        """Give up every claim this journal holds on ``run_id``: other workers take the
        attempts at once."""
        claims = self._claims.get(run_id)
        if claims is not None:
            claims.held.clear()

        async def job(conn: asyncpg.Connection[Any]) -> None:
            await leases.release_claims(conn, run_id, self.owner)

        await self._call(job, doing="releasing claims", run_id=run_id)

    def statistics(self) -> JournalStatistics:
        """A snapshot of what this journal has done since it was opened."""
        return JournalStatistics(
            path=self._shown,
            state="closed" if self._closed else "open",
            commits=self._commits,
            transactions=self._groups,
            runs_written=self._runs_written,
            shards_written=self._shards_written,
        )

    # -- lifecycle ------------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Finish pending calls and close the connection. Idempotent."""
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            async with self._lock:
                conn, self._conn = self._conn, None
                if conn is not None and not conn.is_closed():
                    with contextlib.suppress(Exception):
                        await conn.close(timeout=COMMAND_TIMEOUT)

    async def __aenter__(self) -> PostgresJournal:
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
        return f"<PostgresJournal url={self._shown!r} state={state} commits={self._commits}>"


async def _locked_run(conn: asyncpg.Connection[Any], run_id: str) -> RunRecord:
    """Inside a transaction: the stored run, its row locked until the transaction ends."""
    found = await conn.fetchval(
        "SELECT record FROM batchpump_runs WHERE run_id = $1 FOR UPDATE", run_id
    )
    if found is None:
        raise BatchpumpInternalError(f"run {run_id} was committed to after it was deleted")
    return _run_dec.decode(found)


def _driver_errors() -> tuple[type[BaseException], ...]:
    """What asyncpg and the socket raise (imported late: asyncpg is an optional extra)."""
    import asyncpg

    return (
        asyncpg.PostgresError,
        asyncpg.InterfaceError,
        asyncpg.InternalClientError,
        OSError,
        TimeoutError,
    )


def _breaks_connection(exc: BaseException) -> bool:
    """Whether the connection may be unusable after ``exc`` (anything but a server's answer
    to one statement, such as a constraint violation, which leaves the session as it was)."""
    import asyncpg

    if isinstance(exc, msgspec.DecodeError | msgspec.ValidationError | JournalError):
        return False
    lost = asyncpg.PostgresConnectionError | asyncpg.OperatorInterventionError
    return not isinstance(exc, asyncpg.PostgresError) or isinstance(exc, lost)


def _scrub(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


async def _connect(url: str, secrets: Sequence[str]) -> asyncpg.Connection[Any]:
    try:
        import asyncpg
    except ImportError:
        raise UsageError(
            "a PostgreSQL journal needs asyncpg: pip install 'batchpump[postgres]'"
        ) from None
    shown = redact_url(url)
    try:
        return await asyncpg.connect(url, timeout=CONNECT_TIMEOUT, command_timeout=COMMAND_TIMEOUT)
    except _driver_errors() as exc:
        # ``from None``: the driver's own exception may quote the URL it was given.
        raise _map_error(exc, shown, secrets, "connecting") from None
    except ValueError as exc:  # a malformed URL (asyncpg's parser)
        raise UsageError(f"bad PostgreSQL URL {shown!r}: {_scrub(str(exc), secrets)}") from None


def _map_error(
    exc: BaseException, shown: str, secrets: Sequence[str], doing: str, run_id: str | None = None
) -> Exception:
    """Turn a driver or socket error into the ``JournalError`` a caller can act on."""
    import asyncpg

    where = f"journal at {shown}"
    detail = _scrub(f"{type(exc).__name__}: {exc}", secrets)
    resume = f"`batchpump resume {run_id or 'RUN_ID'}`"
    if isinstance(exc, asyncpg.ForeignKeyViolationError):
        return BatchpumpInternalError(f"{where}: a shard was committed before its run was opened")
    if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):
        return JournalError(f"{where}: the server refused the login ({detail}); check the URL")
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return JournalError(f"{where}: no such database ({detail}); create it (createdb NAME)")
    if isinstance(exc, asyncpg.InsufficientPrivilegeError):
        return JournalError(
            f"{where}: not allowed while {doing} ({detail}); this user needs to create tables "
            "in the database and write them"
        )
    if isinstance(exc, asyncpg.DiskFullError):
        return JournalError(f"{where}: the server's disk is full while {doing}; then run {resume}")
    if isinstance(exc, asyncpg.ReadOnlySQLTransactionError):
        return JournalError(
            f"{where}: the server is read-only (a standby?) while {doing}; point --journal at "
            f"the primary and run {resume}"
        )
    lost = (
        OSError,
        TimeoutError,
        asyncpg.InterfaceError,
        asyncpg.InternalClientError,
        asyncpg.PostgresConnectionError,
        asyncpg.OperatorInterventionError,
    )
    if isinstance(exc, lost):
        return JournalError(
            f"{where}: cannot reach the server while {doing} ({detail}); check that it runs "
            f"and the URL, then run {resume}"
        )
    return JournalError(f"{where}: {doing} failed: {detail}")


async def _prepare_schema(conn: asyncpg.Connection[Any], *, shown: str) -> None:
    """Create the tables in a new database, or migrate older ones, in one transaction."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK)
        rows = await conn.fetch(
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = current_schema() AND table_name LIKE 'batchpump\\_%'"
        )
        tables = {row[0] for row in rows}
        if not tables:
            await conn.execute(
                "CREATE TABLE batchpump_meta (key text PRIMARY KEY, value text NOT NULL)"
            )
            for statement in _SCHEMA_V1:
                await conn.execute(statement)
            await conn.execute(leases.LEASES_DDL)
            await conn.execute(_RESULTS_DDL)
            await conn.execute(leases.CLAIMS_DDL)
            await conn.execute(
                "INSERT INTO batchpump_meta VALUES ('schema_version', $1)", str(PG_SCHEMA_VERSION)
            )
            return
        if "batchpump_meta" not in tables:
            raise JournalCorruptError(
                f"journal at {shown}: tables {', '.join(sorted(tables))} exist but are not "
                "a batchpump journal; use another database (or schema), nothing was changed"
            )
        raw = await conn.fetchval("SELECT value FROM batchpump_meta WHERE key = 'schema_version'")
        version = int(raw) if raw is not None and str(raw).isdigit() else -1
        if not 1 <= version <= PG_SCHEMA_VERSION:
            raise JournalCorruptError(
                f"journal at {shown} has schema version {raw}, but this batchpump reads versions 1 "
                f"to {PG_SCHEMA_VERSION}: it was written by a newer batchpump. Upgrade batchpump "
                "(pip install -U batchpump) and run the same command again; the journal was not "
                "changed"
            )
        for step in range(version, PG_SCHEMA_VERSION):
            await _MIGRATIONS[step](conn)
        if version != PG_SCHEMA_VERSION:
            await conn.execute(
                "UPDATE batchpump_meta SET value = $1 WHERE key = 'schema_version'",
                str(PG_SCHEMA_VERSION),
            )
        elif missing := _TABLES - tables:
            raise JournalCorruptError(
                f"journal at {shown} is missing {', '.join(sorted(missing))}; restore a backup, or "
                "use another database and start over (this resubmits every line)"
            )
