"""Batches the journal does not hold: late creates, 408/409, clock skew, a second state dir.

The in-memory ``FakeProvider`` plays a provider that makes a batch after the client gave up
(``late_create``), answers a create that it carried out with 408 or 409 (``status_after_create``),
runs its clock 330 s behind ours (``server_offset``) on an account another client also uses
(``foreign_newest``). The invariant: no shard attempt gets two batches that both run, every line
has exactly one result, and what the sweeps found is reported.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from batchpump import MemoryJournal, PollPolicy, Pump, RetryPolicy, RunOptions, Succeeded
from batchpump._engine import RunStatistics

from ..fakes import FakeProvider
from ..helpers import assert_exactly_once, read_results, write_requests


class Crash(BaseException):
    """Stands in for a kill -9 (BaseException: nothing may swallow it)."""


def options(*, settle: float) -> RunOptions:
    return RunOptions(
        max_lines=100,
        poll=PollPolicy(interval_min=0.001, interval_max=0.005),
        retry=RetryPolicy(
            attempts=4, wait_initial=0.0, wait_max=0.0, wait_jitter=0.0, create_settle=settle
        ),
        requeue_wait=0.0,
    )


async def run(
    tmp_path: Path,
    provider: FakeProvider,
    *,
    settle: float = 30.0,
    state: str = "state",
    lines: int = 1_000,
    overwrite: bool = False,
) -> tuple[list[str], RunStatistics]:
    src = tmp_path / "in.jsonl"
    ids = write_requests(src, lines)
    async with Pump(provider, journal=MemoryJournal(), state_dir=tmp_path / state) as pump:
        handle = await pump.submit(src, options=options(settle=settle), overwrite=overwrite)
        await handle.wait()
        stats = handle.statistics()
    results = read_results(src.with_name("in.results.jsonl"))
    assert_exactly_once(results, ids)
    assert all(isinstance(r, Succeeded) for r in results)
    return ids, stats


async def test_a_late_create_is_found_within_the_settle_window(tmp_path: Path) -> None:
    """The create of batch 2 times out; the server shows the batch only 20 list walks later.
    One look (the old behaviour) misses it and creates again: two billed batches."""
    provider = FakeProvider(late_create={2: 20})
    _, stats = await run(tmp_path, provider)
    assert len(provider.tags) == 10
    assert set(provider.tags.values()) == {1}
    assert provider.calls["create"] == 10
    assert stats.duplicates_found == 0


async def test_408_and_409_on_create_are_not_read_as_not_created(tmp_path: Path) -> None:
    """Both answers came after the server made the batch: it is adopted, not failed (409 used
    to error every line of the shard) and not fatal (408 used to fail the run)."""
    provider = FakeProvider(status_after_create={1: 409, 3: 408})
    await run(tmp_path, provider)
    assert set(provider.tags.values()) == {1}
    assert provider.calls["create"] == 10


async def test_a_create_made_after_the_settle_window_is_cancelled_and_reported(
    tmp_path: Path,
) -> None:
    """No settle window: one look misses the late batch, the attempt is created again, and the
    end-of-run sweep finds the late one, cancels it and reports it."""
    provider = FakeProvider(late_create={1: 1}, frozen={1})
    _, stats = await run(tmp_path, provider, settle=0.0)
    assert provider.calls["create"] == 11
    assert provider.batches["batch_1"].info.state == "cancelling"
    assert stats.duplicates_found == 1
    assert stats.duplicates_cancelled == 1


async def test_a_client_clock_ahead_of_the_provider_does_not_cut_the_reconcile_short(
    tmp_path: Path,
) -> None:
    """The provider's clock is 330 s behind ours and another client's batch is always newest.
    A window computed on our clock (intent - 300 s) stops at that batch, misses ours, and
    creates again; in the provider's time the walk reaches it."""
    provider = FakeProvider(lose_create_answer={1, 2, 5}, server_offset=-330.0, foreign_newest=True)
    await run(tmp_path, provider, settle=0.0)
    assert len(provider.tags) == 10
    assert set(provider.tags.values()) == {1}
    assert provider.calls["create"] == 10


async def test_a_second_state_directory_adopts_the_batches_of_the_first(tmp_path: Path) -> None:
    """The same job run again with another state directory (another journal): its tags are the
    same, so the run-start sweep adopts the existing batches instead of billing every line
    twice."""
    provider = FakeProvider()
    await run(tmp_path, provider, state="first")
    assert provider.calls["create"] == 10
    # The second journal never wrote the results file: replacing it is the user's explicit
    # choice (without it the submit is refused and nothing is sent).
    _, stats = await run(tmp_path, provider, state="second", overwrite=True)
    assert provider.calls["create"] == 10
    assert set(provider.tags.values()) == {1}
    assert stats.batches_adopted == 10
    assert stats.batches_created == 0


async def test_a_lost_state_directory_after_a_crash_creates_only_what_is_missing(
    tmp_path: Path,
) -> None:
    provider = FakeProvider()
    created = 0

    def crash(shard: object, batch: object) -> None:
        nonlocal created
        created += 1
        if created == 4:
            raise Crash

    provider.after_create = crash
    src = tmp_path / "in.jsonl"
    write_requests(src, 1_000)

    async def first_process() -> None:
        async with Pump(provider, journal=MemoryJournal(), state_dir=tmp_path / "a") as pump:
            handle = await pump.submit(src, options=options(settle=0.0))
            await handle.wait()

    with pytest.raises(Crash):
        await first_process()
    provider.after_create = None
    _, stats = await run(tmp_path, provider, state="b")
    assert set(provider.tags.values()) == {1}
    assert len(provider.tags) == 10
    assert stats.batches_adopted >= 4
