"""The journal contract, one suite run against every journal implementation (see ``stores``).

``journal`` runs a test against each implementation: ``MemoryJournal``, ``SqliteJournal`` and
``PostgresJournal``; ``store`` runs it against each durable one (SQLite, PostgreSQL), which can
be closed and opened again on the same records. What only one journal does is in
``test_sqlite.py`` (files, lock, schema) and ``test_postgres.py`` (URLs, schema, leases).

Rules: real files under ``tmp_path``, a real PostgreSQL server (``tests/servers.py``), real
worker threads; no sleeps; every journal is closed (``filterwarnings = error``).
"""

from __future__ import annotations

import random
from typing import Any, cast

import anyio
import pytest

from batchpump._errors import BatchpumpInternalError, ClosedError
from batchpump._journal import Journal, MemoryJournal
from batchpump._models import ResultCounts, ShardState

from .records import RUN, make_run, make_shard
from .stores import DurableJournal, Store


def commits_of(journal: Journal) -> int:
    """How many ``commit`` calls ``journal`` completed."""
    if isinstance(journal, MemoryJournal):
        return journal.commits
    return cast(DurableJournal, journal).statistics().commits


# ---------------------------------------------------------------------------------------------
# The contract, against every journal.


async def test_is_a_journal(journal: Journal) -> None:
    assert isinstance(journal, Journal)


async def test_open_run_inserts_once_and_returns_the_stored_run(journal: Journal) -> None:
    run = make_run()
    stored, created = await journal.open_run(run)
    assert created
    assert stored == run
    assert stored is not run
    again, created = await journal.open_run(make_run(provider="anthropic"))
    assert not created
    assert again == run


async def test_get_and_list_runs(journal: Journal) -> None:
    assert await journal.get_run("nope") is None
    assert await journal.list_runs() == []
    runs = [make_run(f"run-{i}") for i in (3, 1, 2)]
    for run in runs:
        await journal.open_run(run)
    await journal.commit(run=make_run("run-1", state="running", total_lines=7))
    await journal.commit(run=make_run("run-0"))
    assert [r.run_id for r in await journal.list_runs()] == ["run-3", "run-1", "run-2", "run-0"]
    assert await journal.get_run("run-1") == make_run("run-1", state="running", total_lines=7)


async def test_commit_upserts_by_key_and_loads_in_order(journal: Journal) -> None:
    await journal.open_run(make_run())
    await journal.open_run(make_run("other"))
    keys = [(2, 1), (0, 2), (1, 1), (0, 1), (2, 3), (10, 1)]
    await journal.commit(shards=[make_shard(i, a) for i, a in keys])
    await journal.commit(shards=[make_shard(0, 1, run_id="other")])
    await journal.commit(shards=[make_shard(1, 1, state="submitted", batch_id="batch_1")])
    loaded = await journal.load_shards(RUN)
    assert [s.key for s in loaded] == sorted(keys)
    assert loaded[2] == make_shard(1, 1, state="submitted", batch_id="batch_1")
    assert [s.key for s in await journal.load_shards("other")] == [(0, 1)]
    assert await journal.load_shards("nope") == []


async def test_shard_walks_its_states_through_commits(journal: Journal) -> None:
    """Each write-ahead step replaces the attempt's record; the last one is what loads."""
    await journal.open_run(make_run())
    steps: list[dict[str, Any]] = [
        {"state": "ready"},
        {"state": "uploading"},
        {"state": "uploaded", "input_ref": "file-1"},
        {"state": "creating", "input_ref": "file-1", "tag": "bp-1", "intent_at": 5.0},
        {"state": "submitted", "input_ref": "file-1", "tag": "bp-1", "batch_id": "batch_1"},
        {"state": "collecting", "tag": "bp-1", "batch_id": "batch_1", "batch_state": "completed"},
        {"state": "done", "tag": "bp-1", "batch_id": "batch_1", "batch_state": "completed"},
    ]
    for step in steps:
        await journal.commit(shards=[make_shard(0, **step)])
        assert await journal.load_shards(RUN) == [make_shard(0, **step)]
    retry = make_shard(0, 2, state="ready", requeues=1, not_before=9.0)
    await journal.commit(run=make_run(state="running"), shards=[retry])
    assert [s.state for s in await journal.load_shards(RUN)] == ["done", "ready"]


async def test_commit_writes_run_and_shards_together(journal: Journal) -> None:
    await journal.open_run(make_run())
    run = make_run(state="running", out_offset=99, counts=ResultCounts(succeeded=3, errored=1))
    shards = [make_shard(0, state="done"), make_shard(0, 2, requeues=1, not_before=12.5)]
    await journal.commit(run=run, shards=shards)
    assert await journal.get_run(RUN) == run
    assert await journal.load_shards(RUN) == shards


async def test_records_are_snapshots(journal: Journal) -> None:
    run = make_run()
    stored, _ = await journal.open_run(run)
    shard = make_shard(0)
    await journal.commit(run=run, shards=[shard])
    run.state = "failed"
    shard.state = "done"
    stored.state = "cancelled"
    assert (await journal.get_run(RUN)) == make_run()
    assert (await journal.load_shards(RUN)) == [make_shard(0)]


async def test_every_field_round_trips(journal: Journal) -> None:
    run = make_run(
        state="done",
        total_lines=5,
        out_offset=4096,
        counts=ResultCounts(expired=2),
        input_hash="ab" * 16,
    )
    shard = make_shard(
        3,
        2,
        model="gpt-4o-mini",
        tokens=77,
        state="collecting",
        input_ref="file-1",
        batch_id="batch_9",
        tag="bp-run-1-3-2",
        batch_state="finalizing",
        not_before=1.5,
        requeues=1,
        intent_at=1_700_000_001.25,
    )
    await journal.commit(run=run, shards=[shard])
    loaded = await journal.get_run(RUN)
    assert loaded == run
    assert loaded is not None
    assert bytes(loaded.options) == b'{"max_attempts":3}'
    assert await journal.load_shards(RUN) == [shard]


async def test_empty_commit_writes_nothing(journal: Journal) -> None:
    await journal.commit()
    assert await journal.list_runs() == []


async def test_concurrent_commits_all_land(journal: Journal) -> None:
    await journal.open_run(make_run())

    async def submitter(worker: int) -> None:
        for attempt in range(1, 11):
            await journal.commit(run=make_run(), shards=[make_shard(worker, attempt)])

    async with anyio.create_task_group() as tg:
        for worker in range(20):
            tg.start_soon(submitter, worker)
    assert len(await journal.load_shards(RUN)) == 200
    assert commits_of(journal) == 200


async def test_closed_journal_refuses_every_call(journal: Journal) -> None:
    await journal.aclose()
    await journal.aclose()  # idempotent
    with pytest.raises(ClosedError):
        await journal.open_run(make_run())
    with pytest.raises(ClosedError):
        await journal.get_run(RUN)
    with pytest.raises(ClosedError):
        await journal.list_runs()
    with pytest.raises(ClosedError):
        await journal.load_shards(RUN)
    with pytest.raises(ClosedError):
        await journal.commit(run=make_run())


# ---------------------------------------------------------------------------------------------
# Durable journals: what one commits, the next one opened on the same store reads.


async def test_random_operations_agree_with_memory_journal(store: Store) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    memory = MemoryJournal()
    states: list[ShardState] = ["ready", "uploading", "creating", "submitted", "done", "requeued"]
    async with store.open() as durable:
        for step in range(300):
            run_id = f"run-{rng.randrange(4)}"
            choice = rng.random()
            got: list[object]
            if choice < 0.2:
                run = make_run(run_id, total_lines=rng.randrange(100))
                got = [await j.open_run(run) for j in (memory, durable)]
            elif choice < 0.7:
                await memory.open_run(make_run(run_id))
                await durable.open_run(make_run(run_id))
                shards = [
                    make_shard(rng.randrange(8), rng.randrange(1, 4), run_id=run_id)
                    for _ in range(rng.randrange(4))
                ]
                for shard in shards:
                    shard.state = rng.choice(states)
                    shard.batch_id = f"batch_{rng.randrange(50)}" if rng.random() < 0.5 else None
                update = make_run(run_id, out_offset=step) if rng.random() < 0.5 else None
                for j in (memory, durable):
                    await j.commit(run=update, shards=shards)
                got = [None, None]
            elif choice < 0.85:
                got = [await j.load_shards(run_id) for j in (memory, durable)]
            else:
                got = [await j.list_runs() for j in (memory, durable)]
            assert got[0] == got[1], f"step {step}, seed {seed}"
        assert durable.statistics().commits == memory.commits, f"seed {seed}"


async def test_reopen_after_close_keeps_everything(store: Store) -> None:
    shards = [make_shard(i, a, state="submitted", tag=f"t{i}") for i in range(200) for a in (1, 2)]
    async with store.open() as journal:
        await journal.open_run(make_run("a"))
        await journal.commit(run=make_run(state="running"), shards=shards)
    async with store.open() as journal:
        assert [r.run_id for r in await journal.list_runs()] == ["a", RUN]
        assert await journal.get_run(RUN) == make_run(state="running")
        assert await journal.load_shards(RUN) == shards
        stored, created = await journal.open_run(make_run(state="sharding"))
        assert (stored.state, created) == ("running", False)  # resume finds the run as it was


async def test_commit_that_cannot_encode_writes_nothing(store: Store) -> None:
    async with store.open() as journal:
        await journal.open_run(make_run())
        bad = make_shard(1)
        bad.model = object()  # type: ignore[assignment]
        with pytest.raises(TypeError):
            await journal.commit(run=make_run(state="running"), shards=[make_shard(0), bad])
        assert await journal.get_run(RUN) == make_run()
        assert await journal.load_shards(RUN) == []
        assert journal.statistics().commits == 0


async def test_shard_before_its_run_is_a_bug_and_writes_nothing(store: Store) -> None:
    async with store.open() as journal:
        with pytest.raises(BatchpumpInternalError, match="before its run"):
            await journal.commit(shards=[make_shard(0)])
        await journal.open_run(make_run("other"))
        with pytest.raises(BatchpumpInternalError, match="before its run"):
            await journal.commit(run=make_run("other", state="done"), shards=[make_shard(0)])
        assert await journal.get_run("other") == make_run("other")  # the group rolled back
        await journal.commit(run=make_run(), shards=[make_shard(0)])  # together is fine
        assert len(await journal.load_shards(RUN)) == 1


async def test_concurrent_commits_are_grouped_and_each_is_durable(store: Store) -> None:
    """Commits arriving while one is written share the next transaction (group commit)."""
    async with store.open() as journal:
        await journal.open_run(make_run("run-1"))

        async def commit(index: int) -> None:
            await journal.commit(shards=[make_shard(index)])

        async with anyio.create_task_group() as tg:
            for index in range(200):
                tg.start_soon(commit, index)
        stats = journal.statistics()
    assert stats.commits == 200
    assert stats.transactions < stats.commits
    assert stats.shards_written == 200
    async with store.open() as reopened:
        assert [s.index for s in await reopened.load_shards("run-1")] == list(range(200))


async def test_two_handles_on_one_store_see_each_others_commits(store: Store) -> None:
    """What one handle committed, a handle opened after it reads (a resumed process)."""
    async with store.open() as first:
        await first.open_run(make_run())
        await first.commit(shards=[make_shard(0, state="creating", tag="bp-0")])
    async with store.open() as second:
        (shard,) = await second.load_shards(RUN)
        assert (shard.state, shard.tag) == ("creating", "bp-0")
        await second.commit(shards=[make_shard(0, state="submitted", tag="bp-0", batch_id="b")])
    async with store.open() as third:
        assert [s.batch_id for s in await third.load_shards(RUN)] == ["b"]
