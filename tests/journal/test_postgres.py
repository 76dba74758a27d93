"""What only ``PostgresJournal`` does: URLs, secrets, its schema, several handles at once.

Against the session's real PostgreSQL (``tests/servers.py``), one new database per test; the
shared contract is in ``test_conformance.py``. Faults come from the server itself (a wrong
password, a port nobody listens on, a table in the way, a row saying a newer version).
"""

from __future__ import annotations

import contextlib

import anyio
import asyncpg
import pytest

from batchpump._errors import ClosedError, JournalCorruptError, JournalError, UsageError
from batchpump._journal import (
    PG_SCHEMA_VERSION,
    PostgresJournal,
    SqliteJournal,
    connect_journal,
    is_postgres_url,
    open_journal,
    redact_url,
)
from tests.journal.test_conformance import RUN, make_run, make_shard
from tests.servers import PostgresServer, free_port


def test_url_recognition_and_redaction() -> None:
    assert is_postgres_url("postgresql://u:p@h/db")
    assert is_postgres_url("postgres://h/db")
    assert not is_postgres_url("journal.sqlite3")
    assert not is_postgres_url("/tmp/postgresql://x")
    assert redact_url("postgresql://u:s3cret@h:5432/db?sslmode=require") == (
        "postgresql://u:***@h:5432/db?sslmode=require"
    )
    assert redact_url("postgresql://h/db?user=u&password=s3cret") == (
        "postgresql://h/db?user=u&password=***"
    )
    assert redact_url("postgresql://u@h/db") == "postgresql://u@h/db"


async def test_open_journal_dispatches_on_the_url(postgres_url: str, tmp_path: object) -> None:
    async with open_journal(postgres_url) as journal:
        assert isinstance(journal, PostgresJournal)
        await journal.open_run(make_run())
    journal2 = await connect_journal(postgres_url)
    try:
        assert isinstance(journal2, PostgresJournal)
        assert await journal2.get_run(RUN) == make_run()
    finally:
        await journal2.aclose()
    async with open_journal(f"{tmp_path}/j.sqlite3") as local:
        assert isinstance(local, SqliteJournal)


async def test_password_never_shows(postgres_server: PostgresServer, postgres_url: str) -> None:
    password = postgres_server.password
    async with open_journal(postgres_url) as journal:
        assert isinstance(journal, PostgresJournal)
        assert password not in repr(journal)
        assert "***" in repr(journal)
        assert password not in journal.statistics().path
        assert password not in journal.url
    wrong = postgres_url.replace(password, "not-the-password-123")
    with pytest.raises(JournalError, match="refused the login") as caught:
        await PostgresJournal.open(wrong)
    assert "not-the-password-123" not in str(caught.value)
    assert caught.value.__cause__ is None  # the driver's exception may quote the URL
    nobody = f"postgresql://batchpump:{password}@127.0.0.1:{free_port()}/db"
    with pytest.raises(JournalError, match="cannot reach the server") as caught:
        await PostgresJournal.open(nobody)
    assert password not in str(caught.value)


async def test_not_a_url_and_no_such_database(postgres_server: PostgresServer) -> None:
    with pytest.raises(UsageError, match="not a PostgreSQL URL"):
        await PostgresJournal.open("mysql://u:pw@h/db")
    with pytest.raises(JournalError, match="no such database"):
        await PostgresJournal.open(postgres_server.url_for("missing_db"))


async def test_schema_is_created_once_by_journals_opening_together(postgres_url: str) -> None:
    journals: list[PostgresJournal] = []

    async def open_one() -> None:
        journals.append(await PostgresJournal.open(postgres_url))

    async with anyio.create_task_group() as tg:
        for _ in range(6):
            tg.start_soon(open_one)
    try:
        for index, journal in enumerate(journals):
            await journal.open_run(make_run(f"run-{index}"))
        assert len(await journals[0].list_runs()) == 6
    finally:
        for journal in journals:
            await journal.aclose()
    conn = await asyncpg.connect(postgres_url)
    try:
        version = await conn.fetchval(
            "SELECT value FROM batchpump_meta WHERE key = 'schema_version'"
        )
    finally:
        await conn.close()
    assert version == str(PG_SCHEMA_VERSION)


async def test_newer_schema_is_refused_and_left_alone(postgres_url: str) -> None:
    async with open_journal(postgres_url) as journal:
        await journal.open_run(make_run())
    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute("UPDATE batchpump_meta SET value = '99' WHERE key = 'schema_version'")
        with pytest.raises(JournalCorruptError, match=r"schema version 99.*newer batchpump"):
            await PostgresJournal.open(postgres_url)
        assert await conn.fetchval("SELECT count(*) FROM batchpump_runs") == 1
    finally:
        await conn.close()


async def test_foreign_tables_are_refused(postgres_url: str) -> None:
    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute("CREATE TABLE batchpump_runs (x int)")
    finally:
        await conn.close()
    with pytest.raises(JournalCorruptError, match="not a batchpump journal"):
        await PostgresJournal.open(postgres_url)


async def test_damaged_record_is_reported_as_corrupt(postgres_url: str) -> None:
    async with open_journal(postgres_url) as journal:
        await journal.open_run(make_run())
        await journal.commit(shards=[make_shard(0)])
    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute("UPDATE batchpump_shards SET record = '\\x7b'::bytea")
    finally:
        await conn.close()
    async with open_journal(postgres_url) as journal:
        with pytest.raises(JournalCorruptError, match="cannot be read while loading shards"):
            await journal.load_shards(RUN)


async def test_two_workers_commit_to_one_run_at_once(postgres_url: str) -> None:
    """Two handles (as two processes would) write disjoint shards; both sets are there."""
    async with open_journal(postgres_url) as first, open_journal(postgres_url) as second:
        _, created_first = await first.open_run(make_run())
        _, created_second = await second.open_run(make_run(provider="other"))
        assert (created_first, created_second) == (True, False)

        async def write(journal: PostgresJournal | SqliteJournal, start: int) -> None:
            for index in range(start, 100, 2):
                await journal.commit(shards=[make_shard(index, state="submitted")])

        assert isinstance(first, PostgresJournal)
        assert isinstance(second, PostgresJournal)
        async with anyio.create_task_group() as tg:
            tg.start_soon(write, first, 0)
            tg.start_soon(write, second, 1)
        assert [s.index for s in await first.load_shards(RUN)] == list(range(100))


async def test_lost_connection_is_reopened_by_the_next_call(postgres_url: str) -> None:
    async with open_journal(postgres_url) as journal:
        assert isinstance(journal, PostgresJournal)
        await journal.open_run(make_run())
        conn = await asyncpg.connect(postgres_url)
        try:  # the server ends every other session of this database (a restart, a failover)
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        finally:
            await conn.close()
        # The next call either notices the closed connection first (and opens a new one) or
        # races the server's goodbye and fails saying so; the call after it works either way.
        with contextlib.suppress(JournalError):
            await journal.commit(shards=[make_shard(0)])
        await journal.commit(shards=[make_shard(1)])
        assert [s.index for s in await journal.load_shards(RUN)] in ([0, 1], [1])


async def test_cancelled_commit_either_happened_or_not(postgres_url: str) -> None:
    async with open_journal(postgres_url) as journal:
        await journal.open_run(make_run())
        with anyio.CancelScope() as scope:
            scope.cancel()
            await journal.commit(shards=[make_shard(0)])
        assert scope.cancelled_caught
        shards = await journal.load_shards(RUN)
        assert [s.index for s in shards] in ([], [0])
        await journal.commit(shards=[make_shard(1)])  # the connection is still usable
        assert [s.index for s in await journal.load_shards(RUN)][-1] == 1
    with pytest.raises(ClosedError):
        await journal.get_run(RUN)
