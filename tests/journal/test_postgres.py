"""What only ``PostgresJournal`` does: URLs, secrets, its schema, several handles at once.

Against the session's real PostgreSQL (``tests/servers.py``), one new database per test; the
shared contract is in ``test_contract.py``. Faults come from the server itself (a wrong
password, a port nobody listens on, a table in the way, a row saying a newer version).
"""

from __future__ import annotations

import contextlib

import anyio
import asyncpg
import msgspec
import pytest

from batchpump._errors import (
    BatchpumpInternalError,
    ClosedError,
    JournalCorruptError,
    JournalError,
    UsageError,
)
from batchpump._journal import (
    PG_SCHEMA_VERSION,
    LeaseLostError,
    PostgresJournal,
    SqliteJournal,
    connect_journal,
    is_postgres_url,
    open_journal,
    redact_url,
)
from batchpump._models import ResultCounts, ShardRecord
from tests.journal.records import RUN, make_run, make_shard
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


# ---------------------------------------------------------------------------------------------
# Run leases: one worker drives a run; a lapsed lease is taken over and fences the old holder.
# Lapses are made by moving the lease's expiry into the past in the database, not by waiting.


async def lapse(url: str, run_id: str = RUN, *, left: float = -1.0) -> None:
    """Set the run's lease to expire ``left`` seconds from now (server time)."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "UPDATE batchpump_leases SET expires_at = clock_timestamp()"
            " + make_interval(secs => $2) WHERE key = $1",
            f"run:{run_id}",
            left,
        )
    finally:
        await conn.close()


async def test_one_worker_holds_a_run_at_a_time(postgres_url: str) -> None:
    async with (
        await PostgresJournal.open(postgres_url) as first,
        await PostgresJournal.open(postgres_url) as second,
    ):
        assert first.owner != second.owner
        assert await first.acquire_run(RUN, 30) == 1
        assert await first.acquire_run(RUN, 30) == 1  # ours already: same generation
        assert await second.acquire_run(RUN, 30) is None
        holder = await second.run_holder(RUN)
        assert holder is not None
        assert holder.owner == first.owner
        assert 0 < holder.remaining <= 30
        assert await first.renew_run(RUN, 30)
        assert not await second.renew_run(RUN, 30)
        await first.release_run(RUN)
        assert await second.run_holder(RUN) is None
        assert await second.acquire_run(RUN, 30) == 2  # changed hands once


async def test_racing_workers_get_the_lease_once(postgres_url: str) -> None:
    journals = [await PostgresJournal.open(postgres_url) for _ in range(8)]
    got: list[int | None] = []
    try:

        async def take(journal: PostgresJournal) -> None:
            got.append(await journal.acquire_run(RUN, 30))

        async with anyio.create_task_group() as tg:
            for journal in journals:
                tg.start_soon(take, journal)
    finally:
        for journal in journals:
            await journal.aclose()
    assert sorted(got, key=lambda g: g is None) == [1] + [None] * 7


async def test_lapsed_lease_is_taken_over_and_fences_the_old_holder(postgres_url: str) -> None:
    async with (
        await PostgresJournal.open(postgres_url) as old,
        await PostgresJournal.open(postgres_url) as new,
    ):
        await old.open_run(make_run())
        assert await old.acquire_run(RUN, 30) == 1
        await old.commit(shards=[make_shard(0, state="creating", tag="bp-0")])  # fenced, fine
        await lapse(postgres_url)  # the old worker froze past its term
        assert await new.acquire_run(RUN, 30) == 2
        with pytest.raises(LeaseLostError, match="lease on run run-1 lapsed"):
            await old.commit(shards=[make_shard(0, state="submitted", batch_id="b-old")])
        assert not await old.renew_run(RUN, 30)
        (shard,) = await new.load_shards(RUN)
        assert (shard.state, shard.batch_id) == ("creating", None)  # the old write never landed
        await new.commit(shards=[make_shard(0, state="submitted", batch_id="b-new")])
        assert [s.batch_id for s in await new.load_shards(RUN)] == ["b-new"]
        # Runs the old worker holds no lease on are not fenced.
        await old.open_run(make_run("other"))
        await old.commit(shards=[make_shard(0, run_id="other")])


async def test_a_fenced_commit_needs_a_third_of_the_term_left(postgres_url: str) -> None:
    async with await PostgresJournal.open(postgres_url) as journal:
        await journal.open_run(make_run())
        assert await journal.acquire_run(RUN, 30) == 1
        await lapse(postgres_url, left=5.0)  # not lapsed, but under 10 s (a third) left
        with pytest.raises(LeaseLostError):
            await journal.commit(run=make_run(state="running"))
        assert await journal.get_run(RUN) == make_run()
        assert await journal.renew_run(RUN, 30)  # still ours: a renewal restores the margin
        await journal.commit(run=make_run(state="running"))
        assert await journal.get_run(RUN) == make_run(state="running")


async def test_v1_journal_is_migrated_to_v4(postgres_url: str) -> None:
    async with open_journal(postgres_url) as journal:
        await journal.open_run(make_run())
        await journal.commit(shards=[make_shard(0)])
    conn = await asyncpg.connect(postgres_url)
    try:  # what a v1 journal looked like: no leases table, no results table, no claims
        await conn.execute("DROP TABLE batchpump_leases")
        await conn.execute("DROP TABLE batchpump_results")
        for column in ("claim_owner", "claim_expires", "claim_taken"):
            await conn.execute(f"ALTER TABLE batchpump_shards DROP COLUMN {column}")
        await conn.execute("UPDATE batchpump_meta SET value = '1' WHERE key = 'schema_version'")
    finally:
        await conn.close()
    async with await PostgresJournal.open(postgres_url) as journal:
        assert await journal.load_shards(RUN) == [make_shard(0)]
        assert await journal.acquire_run(RUN, 30) == 1
        await journal.commit(run=make_run(out_offset=4), results=(0, b"{}\n\n"))
        assert await journal.read_results(RUN) == b"{}\n\n"
        journal.start_claims(RUN, 30)  # the claim columns came with version 4
        assert (await journal.claim(RUN, 5))[0] == [make_shard(0)]
    conn = await asyncpg.connect(postgres_url)
    try:
        version = await conn.fetchval(
            "SELECT value FROM batchpump_meta WHERE key = 'schema_version'"
        )
    finally:
        await conn.close()
    assert version == str(PG_SCHEMA_VERSION) == "4"


# ---------------------------------------------------------------------------------------------
# Results stored in the journal.


def result_lines(start: int, count: int) -> bytes:
    return b"".join(b'{"custom_id":"r%d","status":"succeeded"}\n' % i for i in range(start, count))


async def test_results_are_stored_with_the_commit_and_read_back_byte_for_byte(
    postgres_url: str,
) -> None:
    first, second = result_lines(0, 700), result_lines(700, 1000)
    async with await PostgresJournal.open(postgres_url) as journal:
        await journal.open_run(make_run())
        assert await journal.read_results(RUN) == b""
        await journal.commit(run=make_run(out_offset=len(first)), results=(0, first))
        run = make_run(out_offset=len(first) + len(second))
        await journal.commit(run=run, shards=[make_shard(0)], results=(len(first), second))
    async with await PostgresJournal.open(postgres_url) as journal:  # any other worker
        pages: list[bytes] = []
        offset = 0
        while page := await journal.read_results(RUN, offset, limit=4096):
            assert page.endswith(b"\n")
            pages.append(page)
            offset += len(page)
        assert len(pages) > 5
        assert b"".join(pages) == first + second
        assert offset == (await journal.get_run(RUN) or make_run()).out_offset
        assert await journal.read_results("other-run") == b""


async def test_concurrent_result_commits_are_grouped_and_all_stored(postgres_url: str) -> None:
    """Results from commits sharing a transaction go in with one COPY, none lost."""
    chunk = result_lines(0, 10)
    async with await PostgresJournal.open(postgres_url) as journal:
        await journal.open_run(make_run())

        async def commit(index: int) -> None:
            run = make_run(out_offset=(index + 1) * len(chunk))
            await journal.commit(run=run, results=(index * len(chunk), chunk))

        async with anyio.create_task_group() as tg:
            for index in range(50):
                tg.start_soon(commit, index)
        assert journal.statistics().transactions < 50
        assert await journal.read_results(RUN, limit=1 << 30) == chunk * 50


async def test_results_that_fail_to_store_roll_the_whole_commit_back(postgres_url: str) -> None:
    lines = result_lines(0, 3)
    async with await PostgresJournal.open(postgres_url) as journal:
        await journal.open_run(make_run())
        await journal.commit(run=make_run(out_offset=len(lines)), results=(0, lines))
        with pytest.raises(JournalError):  # the same bytes again: a duplicate key
            await journal.commit(
                run=make_run(out_offset=2 * len(lines)), shards=[make_shard(0)], results=(0, lines)
            )
        assert await journal.get_run(RUN) == make_run(out_offset=len(lines))
        assert await journal.load_shards(RUN) == []
        assert await journal.read_results(RUN) == lines
        with pytest.raises(BatchpumpInternalError, match="mid-line"):
            await journal.commit(run=make_run(), results=(len(lines), b'{"cut'))
        with pytest.raises(BatchpumpInternalError, match="without their run"):
            await journal.commit(results=(0, lines))


# ---------------------------------------------------------------------------------------------
# Claims on shard attempts: several workers split one run.


async def lapse_claims(url: str, *, left: float = -1.0) -> None:
    """Set every claim on run-1's attempts to expire ``left`` seconds from now (server time)."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "UPDATE batchpump_shards SET claim_expires = clock_timestamp()"
            " + make_interval(secs => $1) WHERE claim_owner IS NOT NULL",
            left,
        )
    finally:
        await conn.close()


async def claims_journals(url: str, count: int) -> list[PostgresJournal]:
    journals = [await PostgresJournal.open(url) for _ in range(count)]
    await journals[0].open_run(make_run(state="running"))
    for journal in journals:
        journal.start_claims(RUN, 30)
    return journals


async def test_workers_claim_disjoint_attempts(postgres_url: str) -> None:
    """Claims split the open attempts: no attempt twice, settled ones never, and the count
    of the rest tells a worker whether the run is finished everywhere."""
    first, second = await claims_journals(postgres_url, 2)
    try:
        shards = [make_shard(i, 0) for i in range(5)] + [make_shard(5, 0, state="done")]
        await first.commit(shards=shards)
        got, taken, left = await first.claim(RUN, 3)
        assert ([s.key for s in got], taken, left) == ([(0, 0), (1, 0), (2, 0)], 0, 2)
        got2, _, left2 = await second.claim(RUN, 3)
        assert ([s.key for s in got2], left2) == ([(3, 0), (4, 0)], 3)
        assert (await first.claim(RUN, 3))[0] == []  # the rest are held by a live worker
        assert first.held_claims(RUN) == [(0, 0), (1, 0), (2, 0)]

        async def race(journal: PostgresJournal, into: list[tuple[int, int]]) -> None:
            into += [s.key for s in (await journal.claim(RUN, 100))[0]]

        # Two workers claiming at once, the same free attempts: each attempt goes to one.
        await first.commit(shards=[make_shard(i, 1) for i in range(40)])
        seen: tuple[list[tuple[int, int]], list[tuple[int, int]]] = ([], [])
        async with anyio.create_task_group() as tg:
            tg.start_soon(race, first, seen[0])
            tg.start_soon(race, second, seen[1])
        assert not set(seen[0]) & set(seen[1])
        assert sorted(seen[0] + seen[1]) == [(i, 1) for i in range(40)]
        # Settled attempts leave the claims that need renewing.
        done = [msgspec.structs.replace(s, state="done") for s in got]
        await first.commit(shards=done)
        assert first.held_claims(RUN) == sorted(seen[0])
    finally:
        await first.aclose()
        await second.aclose()


async def test_a_lapsed_claim_is_taken_over_and_fences_its_old_holder(postgres_url: str) -> None:
    old, new = await claims_journals(postgres_url, 2)
    try:
        await old.commit(shards=[make_shard(0, 0), make_shard(1, 0)])
        (shard, other), _, _ = await old.claim(RUN, 2)
        shard.state, shard.tag = "creating", "tag-0"
        await old.commit(shards=[shard])  # the intent, under the claim
        await lapse_claims(postgres_url)  # the old worker froze past its term
        taken, count, _ = await new.claim(RUN, 5)
        assert [s.key for s in taken] == [(0, 0), (1, 0)]
        assert count == 2
        assert taken[0].state == "creating"  # the taker sees the intent: it reconciles by tag
        late = msgspec.structs.replace(shard, state="submitted", batch_id="b-late")
        with pytest.raises(LeaseLostError, match="shard 0 attempt 0"):
            await old.commit(shards=[late])  # the old worker's record is refused
        with pytest.raises(LeaseLostError):  # with a run record too: nothing of it lands
            await old.commit(run=make_run(state="running", total_lines=7), shards=[other])
        assert [s.batch_id for s in await new.load_shards(RUN)] == [None, None]
        assert (await new.get_run(RUN) or make_run()).total_lines == 0
        renewed, lost = await old.renew_claims(RUN)
        assert (renewed, lost) == (set(), {(0, 0), (1, 0)})
        adopted = msgspec.structs.replace(taken[0], state="submitted", batch_id="b-1")
        await new.commit(shards=[adopted])
        assert [s.batch_id for s in await new.load_shards(RUN)] == ["b-1", None]
    finally:
        await old.aclose()
        await new.aclose()


async def test_a_claimed_commit_needs_a_third_of_the_term_left(postgres_url: str) -> None:
    (journal,) = await claims_journals(postgres_url, 1)
    try:
        await journal.commit(shards=[make_shard(0, 0)])
        (shard,), _, _ = await journal.claim(RUN, 1)
        await lapse_claims(postgres_url, left=5.0)  # not lapsed, but under 10 s left
        shard.state = "creating"
        with pytest.raises(LeaseLostError):
            await journal.commit(shards=[shard])
        renewed, lost = await journal.renew_claims(RUN)
        assert (renewed, lost) == ({(0, 0)}, set())
        await journal.commit(shards=[shard])
        assert [s.state for s in await journal.load_shards(RUN)] == ["creating"]
    finally:
        await journal.aclose()


async def test_released_claims_and_new_attempts_are_claimable_by_others(
    postgres_url: str,
) -> None:
    first, second = await claims_journals(postgres_url, 2)
    try:
        await first.commit(shards=[make_shard(0, 0), make_shard(1, 0)])
        (a, _unsettled), _, _ = await first.claim(RUN, 2)
        a.state = "done"
        retry = make_shard(0, 1)  # a retry a collector spawned: committed unclaimed
        await first.commit(shards=[a, retry])
        got, _, left = await second.claim(RUN, 5)
        assert ([s.key for s in got], left) == ([(0, 1)], 1)
        await first.release_claims(RUN)  # a stopping worker gives the rest up at once
        got, taken, left = await second.claim(RUN, 5)
        assert ([s.key for s in got], taken, left) == ([(1, 0)], 1, 0)
    finally:
        await first.aclose()
        await second.aclose()


async def test_workers_merge_their_run_commits_and_append_results(postgres_url: str) -> None:
    """Workers commit their results to one run at once, each with its own stale copy of the
    record: the stored lines stay gapless, the counts add up, a finished state sticks."""
    journals = await claims_journals(postgres_url, 3)
    try:
        await journals[0].commit(shards=[make_shard(i, 0) for i in range(30)])
        claimed = [(await j.claim(RUN, 10))[0] for j in journals]

        async def settle(journal: PostgresJournal, shards: list[ShardRecord]) -> None:
            run = make_run(state="running")  # each worker's own copy, never refreshed
            for shard in shards:
                shard.state = "done"
                lines = result_lines(shard.index * 10, shard.index * 10 + 10)
                await journal.commit(
                    run=run, shards=[shard], append=(lines, ResultCounts(succeeded=10))
                )
            assert run.counts.succeeded >= 10 * len(shards)  # refreshed from the merge

        async with anyio.create_task_group() as tg:
            for journal, shards in zip(journals, claimed, strict=True):
                tg.start_soon(settle, journal, shards)
        stored = await journals[0].get_run(RUN) or make_run()
        data = await journals[0].read_results(RUN, limit=1 << 30)
        assert stored.out_offset == len(data) == len(result_lines(0, 300))
        assert stored.counts.succeeded == 300
        assert sorted(data.splitlines()) == sorted(result_lines(0, 300).splitlines())
        await journals[1].commit(run=make_run(state="done"))
        await journals[2].commit(run=make_run(state="running", cancel_requested=True))
        stored = await journals[0].get_run(RUN) or make_run()
        assert (stored.state, stored.cancel_requested, stored.counts.succeeded) == (
            "done",
            True,
            300,
        )
        with pytest.raises(BatchpumpInternalError, match="outside a run worked by claims"):
            await journals[0].commit(
                run=make_run("other"), append=(b"{}\n", ResultCounts(succeeded=1))
            )
        assert await journals[0].join_number(RUN) == 1
        assert await journals[1].join_number(RUN) == 2
    finally:
        for journal in journals:
            await journal.aclose()
