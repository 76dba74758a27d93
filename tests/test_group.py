"""``GroupCommit``: concurrent submissions share rounds; failures and cancellation are safe.

Rules: no I/O, no timers; each test is bounded by the pytest timeout.
"""

from __future__ import annotations

import anyio
import anyio.lowlevel

from batchpump._group import GroupCommit


async def test_concurrent_items_share_rounds_and_each_waits_for_its_own() -> None:
    rounds: list[list[int]] = []
    gate = anyio.Event()

    async def write(items: list[int]) -> None:
        rounds.append(items)
        if len(rounds) == 1:
            await gate.wait()  # hold the first round open while the others queue up

    group: GroupCommit[int] = GroupCommit(write)
    async with anyio.create_task_group() as tg:
        tg.start_soon(group.submit, 0)
        await anyio.wait_all_tasks_blocked()
        for i in range(1, 10):
            tg.start_soon(group.submit, i)
        await anyio.wait_all_tasks_blocked()
        gate.set()
    assert sorted(i for r in rounds for i in r) == list(range(10))
    assert rounds[0] == [0]
    assert len(rounds) == 2  # the nine that arrived during round one went together


async def test_callers_released_by_a_round_join_the_next_one() -> None:
    rounds: list[list[int]] = []

    async def write(items: list[int]) -> None:
        rounds.append(items)
        await anyio.lowlevel.checkpoint()

    group: GroupCommit[int] = GroupCommit(write)

    async def twice(i: int) -> None:
        await group.submit(i)
        await group.submit(10 + i)

    async with anyio.create_task_group() as tg:
        for i in range(5):
            tg.start_soon(twice, i)
    assert rounds == [[0, 1, 2, 3, 4], [10, 11, 12, 13, 14]]  # not split by who came first


async def test_a_failed_round_fails_every_caller_in_it() -> None:
    async def write(items: list[int]) -> None:
        raise OSError("disk full")

    group: GroupCommit[int] = GroupCommit(write)
    errors: list[BaseException] = []

    async def submit(i: int) -> None:
        try:
            await group.submit(i)
        except OSError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        for i in range(5):
            tg.start_soon(submit, i)
    assert len(errors) == 5


async def test_a_waiting_caller_takes_over_when_the_writer_is_cancelled() -> None:
    written: list[int] = []

    async def write(items: list[int]) -> None:
        if items == [0]:
            await anyio.sleep_forever()  # the first writer hangs until it is cancelled
        written.extend(items)

    group: GroupCommit[int] = GroupCommit(write)
    writer_scope = anyio.CancelScope()

    async def first() -> None:
        with writer_scope:
            await group.submit(0)

    async with anyio.create_task_group() as tg:
        tg.start_soon(first)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(group.submit, 1)  # queued behind the hanging round
        await anyio.wait_all_tasks_blocked()
        writer_scope.cancel()
    assert written == [1]
    assert group.rounds == 2
