"""Leases on PostgreSQL: which worker drives a run, taken over when its worker stops renewing.

A lease is a row of ``batchpump_leases``: a key (``run:RUN_ID``), the owner (one id per open
journal: host, pid and a random part) and an expiry in the *server's* time, so workers' clocks
need not agree. ``acquire`` takes a free, expired or already-owned lease in one statement (an
upsert whose update only applies when the row is expired or ours; the row's lock orders
concurrent takers); ``renew`` extends it only while it is still ours and unexpired; ``release``
ends it now (the row stays). ``taken`` counts how many times the key changed hands (a fencing
generation).

**Fencing.** Renewing on time is not enough: a worker frozen past its lease (a stopped
process, a paused VM) wakes up believing it still drives. So every ``commit`` that touches a run
whose lease this journal holds first checks, *inside the commit's transaction* and with a
``FOR SHARE`` lock on the lease row, that the lease is still this journal's with at least
``FENCE_MARGIN_FRACTION`` of its term left; otherwise the transaction is rolled back and
``LeaseLostError`` raised. Every batch create is preceded by its write-ahead intent commit, so a
worker that lost its lease cannot create a batch; the worker that took over reconciles the
attempt by its tag (as a resume does) and adopts the batch if the old worker's create got out
just before.

The tables live in the journal's schema (version 2 added ``batchpump_leases``).
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

__all__ = ["FENCE_MARGIN_FRACTION", "LeaseHolder", "LeaseLostError", "new_owner"]

#: A fenced commit needs this fraction of the lease's term still left (renewals come every
#: third of it, so a live worker always has two thirds).
FENCE_MARGIN_FRACTION: Final = 1 / 3

LEASES_DDL: Final = (
    "CREATE TABLE batchpump_leases (key text PRIMARY KEY, owner text NOT NULL,"
    " expires_at timestamptz NOT NULL, taken integer NOT NULL DEFAULT 1)"
)

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
