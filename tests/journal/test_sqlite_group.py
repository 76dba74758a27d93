"""``SqliteJournal``'s group commit: one writer thread, one transaction for what is queued.

Rules: real files under ``tmp_path`` and the journal's real writer thread. The writer is held
inside a transaction by an SQLite function that a trigger calls (registered through the
``_connect`` seam) and released by the test, so "queued while the writer is busy" is a fact,
not a timing; failures are injected with triggers. No sleeps; waits on thread events run in a
worker thread, bounded by ``anyio.fail_after``.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import anyio
import pytest

from batchpump._errors import ClosedError, JournalError
from batchpump._journal import SqliteJournal
from batchpump._journal import sqlite as sqlite_module  # defines _connect, patched below

from .records import RUN, make_run, make_shard, raw_db

#: A commit of a shard with this index holds the writer thread inside its transaction.
HOLD = 999
#: A commit of a shard with this index fails (its whole transaction rolls back).
BOOM = 666


class Gate:
    """Holds the writer thread in ``hold()`` (an SQLite function) until ``go`` is set."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.go = threading.Event()

    def hold(self) -> int:
        self.entered.set()
        self.go.wait(60)
        return 0

    async def writer_held(self) -> None:
        with anyio.fail_after(30):
            await anyio.to_thread.run_sync(self.entered.wait)


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Gate:
    gate = Gate()
    real_connect = sqlite_module._connect

    def connect(path: Path) -> sqlite3.Connection:
        conn = real_connect(path)
        conn.create_function("hold", 0, gate.hold)
        return conn

    monkeypatch.setattr(sqlite_module, "_connect", connect)
    return gate


@pytest.fixture
async def journal(tmp_path: Path, gate: Gate) -> AsyncIterator[SqliteJournal]:
    path = tmp_path / "j.sqlite"
    async with await SqliteJournal.open(path) as journal:
        await journal.open_run(make_run())
    with raw_db(path) as conn:
        conn.execute(
            f"CREATE TRIGGER hold BEFORE INSERT ON shards WHEN NEW.idx = {HOLD}"
            " BEGIN SELECT hold(); END"
        )
        conn.execute(
            f"CREATE TRIGGER boom BEFORE INSERT ON shards WHEN NEW.idx = {BOOM}"
            " BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
        )
    journal = await SqliteJournal.open(path)
    try:
        yield journal
    finally:
        gate.go.set()
        await journal.aclose()


def stored(journal: SqliteJournal) -> dict[int, str]:
    """``{index: state}`` of the shards in the file, read behind the journal's back."""
    with raw_db(journal.path) as conn:
        return dict(conn.execute("SELECT idx, state FROM shards WHERE run_id = ?", (RUN,)))


async def test_concurrent_commits_each_return_once_their_own_record_is_in_the_file(
    journal: SqliteJournal, gate: Gate
) -> None:
    seen: dict[int, bool] = {}

    async def commit(index: int) -> None:
        await journal.commit(shards=[make_shard(index)])
        seen[index] = index in stored(journal)  # read at once, before any other task runs

    async with anyio.create_task_group() as tg:
        tg.start_soon(commit, HOLD)
        await gate.writer_held()
        for index in range(100):
            tg.start_soon(commit, index)
        await anyio.wait_all_tasks_blocked()
        assert seen == {}  # all 101 wait: one in the held transaction, 100 queued behind it
        gate.go.set()
    assert seen == dict.fromkeys([HOLD, *range(100)], True)
    stats = journal.statistics()
    assert (stats.commits, stats.transactions) == (101, 2)  # the 100 queued took one
    assert stats.wakeups <= 1  # the held commit's; the queued ones found the writer busy


async def test_a_failed_transaction_fails_exactly_its_callers_and_later_commits_work(
    journal: SqliteJournal, gate: Gate
) -> None:
    outcome: dict[int, str] = {}

    async def commit(index: int) -> None:
        try:
            await journal.commit(shards=[make_shard(index)])
        except JournalError as exc:
            outcome[index] = str(exc)
        else:
            outcome[index] = "ok"

    async with anyio.create_task_group() as tg:
        tg.start_soon(commit, HOLD)
        await gate.writer_held()
        for index in (1, BOOM, 2):  # queued together: one transaction, which fails
            tg.start_soon(commit, index)
        await anyio.wait_all_tasks_blocked()
        gate.go.set()
    assert outcome[HOLD] == "ok"
    assert all("injected failure" in outcome[i] for i in (1, BOOM, 2))
    assert stored(journal) == {HOLD: "ready"}  # the failed group left nothing
    await journal.commit(shards=[make_shard(3)])
    async with anyio.create_task_group() as tg:  # a later group after a failure: all fine
        for index in (4, 5):
            tg.start_soon(partial(journal.commit, shards=[make_shard(index)]))
    assert set(stored(journal)) == {HOLD, 3, 4, 5}
    assert await journal.get_run(RUN) == make_run()


async def test_a_cancelled_caller_returns_only_after_its_transaction_ran(
    journal: SqliteJournal, gate: Gate
) -> None:
    at_cancel: list[dict[int, str]] = []

    async def commit_then_cancelled(scope: anyio.CancelScope) -> None:
        with scope:
            try:
                await journal.commit(shards=[make_shard(7)])
            except anyio.get_cancelled_exc_class():
                at_cancel.append(stored(journal))
                raise

    scope = anyio.CancelScope()
    async with anyio.create_task_group() as tg:
        tg.start_soon(partial(journal.commit, shards=[make_shard(HOLD)]))
        await gate.writer_held()
        tg.start_soon(commit_then_cancelled, scope)
        await anyio.wait_all_tasks_blocked()
        scope.cancel()
        await anyio.wait_all_tasks_blocked()
        assert at_cancel == []  # still waiting for the held writer
        gate.go.set()
    assert at_cancel == [{HOLD: "ready", 7: "ready"}]  # cancelled, but its commit happened


async def test_deferred_records_ride_with_the_next_call_in_order(journal: SqliteJournal) -> None:
    journal.defer(shards=[make_shard(1, state="submitted", batch_id="b1")])
    journal.defer(shards=[make_shard(2, state="submitted", batch_id="b2")])
    wakeups = journal.statistics().wakeups
    assert stored(journal) == {}  # nobody waits for them: not written, the writer not woken
    await journal.commit(shards=[make_shard(2, state="done", batch_id="b2")])
    assert stored(journal) == {1: "submitted", 2: "done"}  # in call order: the commit wins
    stats = journal.statistics()
    assert (stats.deferred, stats.commits, stats.transactions) == (2, 3, 1)
    assert stats.wakeups == wakeups + 1


async def test_deferred_records_are_written_before_a_read_and_on_close(
    journal: SqliteJournal,
) -> None:
    journal.defer(shards=[make_shard(1, state="submitted")])
    assert [s.index for s in await journal.load_shards(RUN)] == [1]
    journal.defer(run=make_run(state="running"), shards=[make_shard(2, state="submitted")])
    await journal.aclose()
    assert stored(journal) == {1: "submitted", 2: "submitted"}
    with raw_db(journal.path) as conn:
        assert conn.execute("SELECT state FROM runs").fetchall() == [("running",)]
    with pytest.raises(ClosedError):
        journal.defer(shards=[make_shard(3)])


async def test_a_deferred_record_that_fails_is_raised_by_the_next_commit(
    journal: SqliteJournal,
) -> None:
    journal.defer(shards=[make_shard(BOOM)])
    assert await journal.get_run(RUN) == make_run()  # wrote the deferred record first: it failed
    with pytest.raises(JournalError, match="injected failure"):
        await journal.commit(shards=[make_shard(1)])
    await journal.commit(shards=[make_shard(2)])
    assert stored(journal) == {2: "ready"}
