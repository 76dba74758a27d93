"""Leases on PostgreSQL: which worker shards a run and which works each of its shard attempts,
taken over when that worker stops renewing.

A lease is a row of ``batchpump_leases``: a key (``run:RUN_ID``), the owner (one id per open
journal: host, pid and a random part) and an expiry in the *server's* time, so workers' clocks
need not agree. ``acquire`` takes a free, expired or already-owned lease in one statement (an
upsert whose update only applies when the row is expired or ours; the row's lock orders
concurrent takers); ``renew`` extends it only while it is still ours and unexpired; ``release``
ends it now (the row stays). ``taken`` counts how many times the key changed hands (a fencing
generation).

**Fencing.** Renewing on time is not enough: a worker frozen past its lease (a stopped
process, a paused VM) wakes up believing it still holds it. So every ``commit`` that touches a run
whose lease this journal holds first checks, *inside the commit's transaction* and with a
``FOR SHARE`` lock on the lease row, that the lease is still this journal's with at least
``FENCE_MARGIN_FRACTION`` of its term left; otherwise the transaction is rolled back and
``LeaseLostError`` raised. Every batch create is preceded by its write-ahead intent commit, so a
worker that lost its lease before the intent cannot create a batch; the worker that took over
reconciles the attempt by its tag (as a resume does) and adopts the batch if the old worker's
create got out just before.

**Claims** are the same idea per shard attempt, kept in three columns of the attempt's own row
of ``batchpump_shards`` (``claim_owner``, ``claim_expires``, ``claim_taken``; schema version
4): ``claim`` takes up to N open attempts of a run that nobody holds (never claimed, released,
or lapsed) in one ``UPDATE`` over a ``SELECT ... FOR UPDATE SKIP LOCKED``, so workers claiming
at once never wait on each other's rows and never get the same attempt; ``renew_claims``
extends the ones still ours in one statement; ``release_claims`` lapses them now. A commit that
writes an attempt of a run this journal works on by claims is fenced by that attempt's claim
(``fence_claims``, the attempt's row locked ``FOR UPDATE`` in the commit's transaction) exactly
as a run's commits are fenced by its lease.

The tables live in the journal's schema (version 2 added ``batchpump_leases``, version 4 the
claim columns).
"""

from __future__ import annotations

import os
import socket
import uuid
from typing import TYPE_CHECKING, Any, Final, final

import msgspec

from .._errors import JournalError

if TYPE_CHECKING:
    import asyncpg

__all__ = ["FENCE_MARGIN_FRACTION", "Claimed", "LeaseHolder", "LeaseLostError", "new_owner"]

#: A fenced commit needs this fraction of the lease's term still left (renewals come every
#: third of it, so a live worker always has two thirds).
FENCE_MARGIN_FRACTION: Final = 1 / 3

LEASES_DDL: Final = (
    "CREATE TABLE batchpump_leases (key text PRIMARY KEY, owner text NOT NULL,"
    " expires_at timestamptz NOT NULL, taken integer NOT NULL DEFAULT 1)"
)

#: Version 4: the claim of each shard attempt, on its own row.
CLAIMS_DDL: Final = (
    "ALTER TABLE batchpump_shards ADD COLUMN claim_owner text,"
    " ADD COLUMN claim_expires timestamptz, ADD COLUMN claim_taken integer NOT NULL DEFAULT 0"
)
#: Attempt states that need no more work (never claimable).
SETTLED_STATES: Final = ("done", "requeued")

_ACQUIRE: Final = (
    "INSERT INTO batchpump_leases AS l (key, owner, expires_at)"
    " VALUES ($1, $2, clock_timestamp() + make_interval(secs => $3))"
    " ON CONFLICT (key) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at,"
    " taken = l.taken + (l.owner <> excluded.owner)::int"
    " WHERE l.expires_at < clock_timestamp() OR l.owner = excluded.owner"
    " RETURNING taken"
)
_RENEW: Final = (
    "UPDATE batchpump_leases SET expires_at = clock_timestamp() + make_interval(secs => $3)"
    " WHERE key = $1 AND owner = $2 AND expires_at > clock_timestamp() RETURNING taken"
)
_HOLDER: Final = (
    "SELECT owner, extract(epoch FROM expires_at - clock_timestamp())::float8"
    " FROM batchpump_leases WHERE key = $1"
)
_FENCE: Final = (
    "SELECT 1 FROM batchpump_leases WHERE key = $1 AND owner = $2"
    " AND expires_at > clock_timestamp() + make_interval(secs => $3) FOR SHARE"
)


_CLAIM: Final = (
    "WITH free AS (SELECT idx, attempt FROM batchpump_shards"
    " WHERE run_id = $1 AND state <> ALL($5::text[])"
    " AND (claim_owner IS NULL OR claim_expires < clock_timestamp())"
    " ORDER BY idx, attempt LIMIT $3 FOR UPDATE SKIP LOCKED)"
    " UPDATE batchpump_shards s SET claim_owner = $2,"
    " claim_expires = clock_timestamp() + make_interval(secs => $4),"
    " claim_taken = s.claim_taken + 1"
    " FROM free WHERE s.run_id = $1 AND s.idx = free.idx AND s.attempt = free.attempt"
    " RETURNING s.record, s.claim_taken"
)
_OPEN_ELSEWHERE: Final = (
    "SELECT count(*) FROM batchpump_shards WHERE run_id = $1 AND state <> ALL($3::text[])"
    " AND (claim_owner IS DISTINCT FROM $2 OR claim_expires < clock_timestamp())"
)
_RENEW_CLAIMS: Final = (
    "UPDATE batchpump_shards SET claim_expires = clock_timestamp() + make_interval(secs => $3)"
    " WHERE run_id = $1 AND claim_owner = $2 AND claim_expires > clock_timestamp()"
    " AND (idx, attempt) IN (SELECT * FROM unnest($4::int[], $5::int[]))"
    " RETURNING idx, attempt"
)
_RELEASE_CLAIMS: Final = (
    "UPDATE batchpump_shards SET claim_expires = clock_timestamp() - interval '1 second'"
    " WHERE run_id = $1 AND claim_owner = $2 AND claim_expires > clock_timestamp()"
)
_FENCE_CLAIMS: Final = (
    "SELECT idx, attempt, claim_owner = $2"
    " AND claim_expires > clock_timestamp() + make_interval(secs => $3)"
    " FROM batchpump_shards"
    " WHERE run_id = $1 AND (idx, attempt) IN (SELECT * FROM unnest($4::int[], $5::int[]))"
    " FOR UPDATE"
)


class LeaseLostError(JournalError):
    """Another worker holds the run now (this one stopped renewing in time); nothing was
    written. The other worker carries on with the run."""


@final
class LeaseHolder(msgspec.Struct, frozen=True):
    """Who holds a lease and for how many more seconds (server time)."""

    owner: str
    remaining: float


def new_owner() -> str:
    """An id for one open journal: readable (host, pid) and unique (a random part)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def run_key(run_id: str) -> str:
    return f"run:{run_id}"


def joins_key(run_id: str) -> str:
    """The row counting the workers that joined ``run_id`` (a counter, never held)."""
    return f"joins:{run_id}"


async def count(conn: asyncpg.Connection[Any], key: str) -> int:
    """Add one to the counter ``key`` (a lease row nobody holds); its new value."""
    value = await conn.fetchval(
        "INSERT INTO batchpump_leases AS l (key, owner, expires_at)"
        " VALUES ($1, '', clock_timestamp()) ON CONFLICT (key) DO UPDATE SET taken = l.taken + 1"
        " RETURNING taken",
        key,
    )
    return int(value)


async def acquire(conn: asyncpg.Connection[Any], key: str, owner: str, ttl: float) -> int | None:
    """Take ``key`` for ``ttl`` seconds if free, expired or ours; its generation, else None."""
    taken = await conn.fetchval(_ACQUIRE, key, owner, ttl)
    return None if taken is None else int(taken)


async def renew(conn: asyncpg.Connection[Any], key: str, owner: str, ttl: float) -> bool:
    """Extend ``key`` by ``ttl`` seconds from now if it is still ours and unexpired."""
    return await conn.fetchval(_RENEW, key, owner, ttl) is not None


async def release(conn: asyncpg.Connection[Any], key: str, owner: str) -> None:
    """Drop ``key`` if it is ours (a finished or stopped worker frees the run at once)."""
    await conn.execute(
        "UPDATE batchpump_leases SET expires_at = clock_timestamp() - interval '1 second'"
        " WHERE key = $1 AND owner = $2",
        key,
        owner,
    )


async def holder(conn: asyncpg.Connection[Any], key: str) -> LeaseHolder | None:
    """Who holds ``key`` now, or None if nobody does."""
    row = await conn.fetchrow(_HOLDER, key)
    if row is None or row[1] <= 0:
        return None
    return LeaseHolder(str(row[0]), float(row[1]))


async def fence(conn: asyncpg.Connection[Any], key: str, owner: str, margin: float) -> bool:
    """Inside a transaction: lock ``key`` (shared) and say whether it is ours for ``margin``
    more seconds at least."""
    return await conn.fetchval(_FENCE, key, owner, margin) is not None


@final
class Claimed(msgspec.Struct, frozen=True):
    """What one ``claim`` got: the attempts' records (``record`` bytes, decoded by the
    journal), and how many open attempts of the run are left that this worker does not hold
    (claimed by a live worker, or still free beyond the limit)."""

    records: list[bytes]
    taken_over: int
    open_elsewhere: int


async def claim(
    conn: asyncpg.Connection[Any], run_id: str, owner: str, limit: int, ttl: float
) -> Claimed:
    """Claim up to ``limit`` open attempts of ``run_id`` nobody holds, for ``ttl`` seconds."""
    async with conn.transaction():
        rows = await conn.fetch(_CLAIM, run_id, owner, limit, ttl, list(SETTLED_STATES))
        left = await conn.fetchval(_OPEN_ELSEWHERE, run_id, owner, list(SETTLED_STATES))
    return Claimed(
        records=[bytes(row[0]) for row in rows],
        taken_over=sum(1 for row in rows if int(row[1]) > 1),
        open_elsewhere=int(left),
    )


async def renew_claims(
    conn: asyncpg.Connection[Any],
    run_id: str,
    owner: str,
    ttl: float,
    keys: list[tuple[int, int]],
) -> set[tuple[int, int]]:
    """Extend the claims on ``keys`` still ours and unexpired; the keys renewed."""
    if not keys:
        return set()
    rows = await conn.fetch(
        _RENEW_CLAIMS, run_id, owner, ttl, [k[0] for k in keys], [k[1] for k in keys]
    )
    return {(int(row[0]), int(row[1])) for row in rows}


async def release_claims(conn: asyncpg.Connection[Any], run_id: str, owner: str) -> None:
    """Lapse every claim ``owner`` holds on ``run_id``'s attempts now (a stopping worker)."""
    await conn.execute(_RELEASE_CLAIMS, run_id, owner)


async def fence_claims(
    conn: asyncpg.Connection[Any],
    run_id: str,
    owner: str,
    margin: float,
    keys: list[tuple[int, int]],
) -> list[tuple[int, int]]:
    """Inside a transaction: lock the rows of ``keys`` that exist and return those that are
    NOT claimed by ``owner`` for ``margin`` more seconds (rows that do not exist yet are new
    attempts: nobody's claim covers them)."""
    rows = await conn.fetch(
        _FENCE_CLAIMS, run_id, owner, margin, [k[0] for k in keys], [k[1] for k in keys]
    )
    return [(int(row[0]), int(row[1])) for row in rows if not row[2]]
