"""The provider conformance suite: every adapter in ``cases.CASES`` passes the same tests.

Rules:

- Loopback only: each test serves its own emulator in-process on 127.0.0.1, port 0 (a free
  port), mounting the surfaces its case names. Nothing leaves the machine; the key is fake.
- Scaled clock: the emulator runs on a ``ScaledClock`` (1000x, so a batch takes ~7 ms; 10^6x
  where the fixed 24 h completion window must run out; 1x where a token bucket's Retry-After
  must mean the same seconds to both sides). The client sweeps every 5 ms and retries at once
  (``RetryPolicy.no_wait``); provider-side waits are a few ms.
- Hard timeout: every test is bounded by pytest-timeout (``TIMEOUT`` seconds). No sleep stands
  in for synchronisation (hooks in a spying wrapper fire at exact points: after the n-th create,
  before the n-th call of a verb), and nothing asserts on the wall clock.
- Invariants, counted by the emulator itself: every input line gets exactly one final result;
  no shard attempt has two batches (and every batch belongs to one attempt); no line is billed
  twice, and a line is billed exactly when its final result is ``Succeeded``.
- Capabilities decide: what the adapter declares in ``provider.capabilities`` (cancel,
  metadata_tag, inline_input, list_batches) and its line checker select the checks, never the
  case's name.

Item providers (whose ``line_checker`` is the item checker: LlamaCloud documents, GT Studio
annotation jobs) differ from request batches in three ways the tests branch on, each through a
predicate of the adapter defined below:

- ``_requests_per_line``: every line costs its own calls (an upload or a job POST, then one or
  more downloads), so a run is hundreds of requests instead of ~30. The rate-limit test lowers
  its 429 storm rate for them (still ~10 storms per run, P(none) < 1e-4), or the storms'
  pauses (LlamaCloud's answers carry only a whole-second ``retry-after``) would dominate.
- ``_creates_per_item``: items sent inline (``inline_input``) are created one call per item
  (a GT Studio job POST), and every such call is a create whose answer the emulator's
  ``reset_after_create`` fault can lose. The server-error test then counts one lost answer per
  batch *and* per item (each item still created exactly once) instead of one per batch. And a
  retryable line error meets such an item at its own create call, which retries it on the
  spot, so the partial-failure test does not require a line to succeed on a later attempt.
- ``_has_completion_window``: documents and human annotation jobs have no completion window
  (neither API has an ``expired`` state), so the expiry test does not apply and is skipped.
  ``Capabilities`` has no field for this yet; taking items stands for it.

Where an adapter has no ``cancel``, the cancel-run test does not stretch its batches to an
hour (nothing can stop them: the engine waits them out, so they only cost time).

Add a provider with one ``ProviderCase`` in ``tests/conformance/cases.py``.
"""

from __future__ import annotations

import math
from collections import Counter
from contextlib import aclosing
from pathlib import Path
from typing import Final

import msgspec
import pytest

from batchpump import (
    BatchInfo,
    Canceled,
    Errored,
    Expired,
    Provider,
    Pump,
    Result,
    Run,
    Succeeded,
    UsageError,
)
from batchpump._engine import RECONCILE_SLACK
from batchpump._input import ItemLineChecker
from batchpump._journal import SqliteJournal
from batchpump._models import ShardRecord
from batchpump._provider import shard_tag
from batchpump._pump import JOURNAL_NAME
from batchpump.emulator import RateLimit

from .cases import CASES, ProviderCase
from .harness import (
    EXPIRY,
    NORMAL,
    REALTIME,
    Crash,
    Env,
    collect,
    drain,
    open_env,
    read_results,
    shard_ids,
    wait_terminal,
)

#: Seconds any one test may take before pytest-timeout fails it.
TIMEOUT: Final = 30
#: Lines per run: several shards at ``ProviderCase.max_lines`` per shard.
LINES: Final = 300

pytestmark = pytest.mark.timeout(TIMEOUT)


@pytest.fixture(params=CASES, ids=str)
def case(request: pytest.FixtureRequest) -> ProviderCase:
    param: ProviderCase = request.param
    return param


def _shards(case: ProviderCase, lines: int) -> int:
    return math.ceil(lines / case.max_lines)


def _takes_items(provider: Provider) -> bool:
    """The adapter's lines are items (documents, jobs), not model requests."""
    checker = provider.line_checker(endpoint="/v1/chat/completions", max_line_bytes=1024)
    return isinstance(checker, ItemLineChecker)


def _requests_per_line(provider: Provider) -> bool:
    """Items are uploaded or created one by one and their results fetched one by one."""
    return _takes_items(provider)


def _creates_per_item(provider: Provider) -> bool:
    """Inline items: ``create`` makes the batch, then one job per item, each its own create."""
    return _takes_items(provider) and provider.capabilities.inline_input


def _has_completion_window(provider: Provider) -> bool:
    """Batches can expire with lines unfinished (request batches' 24 h window)."""
    return not _takes_items(provider)


# -- 1. the verbs, directly on the adapter ----------------------------------------------------


async def _prepare_and_create(env: Env, provider: Provider, shard: ShardRecord) -> BatchInfo:
    """Take one shard attempt through ``prepare`` and ``create`` as the submitter does."""
    caps = provider.capabilities
    requests_before = sum(env.stats.requests.values())
    ref = await provider.prepare(shard)
    assert isinstance(ref, str), "prepare must return an input reference"
    assert ref, "prepare must return a non-empty input reference"
    sent = sum(env.stats.requests.values()) - requests_before
    if caps.inline_input:
        assert sent == 0, "an inline-input adapter must not upload anything in prepare"
    else:
        assert sent >= 1, "prepare must upload the shard (capabilities.inline_input is False)"
    shard.input_ref = ref
    shard.tag = shard_tag(shard.run_id, shard.index, shard.attempt)
    shard.state = "creating"
    batch = await provider.create(shard, endpoint=env.case.endpoint, tag=shard.tag)
    assert batch.id
    assert not batch.terminal, f"a fresh batch is already {batch.state}"
    if caps.metadata_tag:
        assert batch.tag == shard.tag, "capabilities.metadata_tag: create must return the tag"
    return batch


async def test_verbs(case: ProviderCase, tmp_path: Path) -> None:
    """prepare, create with a tag, retrieve, list newest first, reconcile, results, cancel."""
    async with open_env(case, NORMAL, tmp_path) as env:
        provider = env.provider()
        caps = provider.capabilities
        async with aclosing(provider):
            first, second, third = await env.shards(60, provider, max_lines=20)
            since = env.running.emulator.now() - RECONCILE_SLACK
            b1 = await _prepare_and_create(env, provider, first)
            b2 = await _prepare_and_create(env, provider, second)

            got = await provider.retrieve(b1.id)
            assert (got.id, got.created_at) == (b1.id, b1.created_at)
            if caps.metadata_tag:
                assert got.tag == first.tag

            if caps.list_batches:
                walked: list[BatchInfo] = []
                async with aclosing(provider.list_batches()) as batches:
                    async for info in batches:
                        walked.append(info)
                        if {b1.id, b2.id} <= {b.id for b in walked}:
                            break
                order = [b.id for b in walked]
                assert b1.id in order, "list_batches must show a new batch"
                assert b2.id in order, "list_batches must show a new batch"
                assert order.index(b2.id) < order.index(b1.id), "list_batches is newest first"
                created = [b.created_at for b in walked]
                assert created == sorted(created, reverse=True), "list_batches is newest first"
                if caps.metadata_tag:
                    assert walked[order.index(b1.id)].tag == first.tag

            found = await provider.reconcile(first, since=since)
            if caps.metadata_tag:
                assert found is not None, "reconcile must find the batch by its tag"
                assert found.id == b1.id, "reconcile found the wrong batch"
            else:  # no tag: an adapter may find it by an equivalent, but never a wrong batch
                assert found is None or found.id == b1.id
            never_created = msgspec.structs.replace(
                first, attempt=2, tag=shard_tag(first.run_id, first.index, 2)
            )
            assert await provider.reconcile(never_created, since=since) is None, (
                "reconcile adopted a batch for a shard attempt that was never created"
            )

            results: list[Result] = []
            for shard, batch in ((first, b1), (second, b2)):
                done = await wait_terminal(provider, batch.id)
                assert done.state == "completed"
                got_results = await collect(provider.results(done, attempt=1))
                assert sorted(r.custom_id for r in got_results) == sorted(shard_ids(shard))
                for r in got_results:
                    assert isinstance(r, Succeeded), r
                    assert (r.batch_id, r.attempt) == (batch.id, 1)
                results += got_results

            if caps.cancel:
                emulator = env.running.emulator
                # Long enough that the batch is certainly still running when cancel arrives.
                emulator.configure(msgspec.structs.replace(emulator.config, run_seconds=3_600))
                b3 = await _prepare_and_create(env, provider, third)
                cancelled = await provider.cancel(b3.id)
                assert cancelled.id == b3.id
                assert cancelled.state in ("cancelling", "cancelled")
                done = await wait_terminal(provider, b3.id)
                assert done.state == "cancelled"
                third_results = await collect(provider.results(done, attempt=1))
                for r in third_results:
                    assert isinstance(r, Succeeded | Canceled), r
                assert sum(env.stats.route_count(r) for r in case.cancel_routes) >= 1, (
                    "the emulator saw no cancel call (is ProviderCase.cancel_routes set?)"
                )
            else:
                b3 = await _prepare_and_create(env, provider, third)
                with pytest.raises((UsageError, NotImplementedError), match=r"(?i)cancel"):
                    await provider.cancel(b3.id)
                done = await wait_terminal(provider, b3.id)
                third_results = await collect(provider.results(done, attempt=1))
                assert all(isinstance(r, Succeeded) for r in third_results)
            ids = [r.custom_id for r in third_results]
            assert len(ids) == len(set(ids))
            assert set(ids) <= set(shard_ids(third))
            results += third_results

        per_attempt = env.check_batches()
        assert sum(per_attempt.values()) == 3
        env.check_billing(results)


# -- 2. a clean run ---------------------------------------------------------------------------


async def test_clean_run(case: ProviderCase, tmp_path: Path) -> None:
    async with open_env(case, NORMAL, tmp_path) as env:
        src, ids = env.write_input(LINES)
        run, results = await env.run(src, env.options())
        env.check(results, ids)
        assert all(isinstance(r, Succeeded) and r.attempt == 1 for r in results)
        per_attempt = env.check_batches()
        assert len(per_attempt) == _shards(case, LINES)
        assert run.statistics().batches_created == len(per_attempt)


# -- 3. 429s with Retry-After: storms and real token buckets ---------------------------------


async def test_rate_limited(case: ProviderCase, tmp_path: Path) -> None:
    """A 429 storm on every class, plus real token buckets that run dry on create and poll.

    Every class has a generous bucket, so the client learns a ceiling of ~50 requests/s from
    the limit header (without one, AIMD takes its ceiling from the rate of the cold start's
    first few calls, and a storm then holds the run to ~1 request/s for seconds). The buckets
    refill slowly: before the second create the test drains the create and poll buckets, as
    other clients of the same account would, so the next create and the next poll certainly
    get a bucket 429 with a 0.5 s Retry-After. Once two were served, full buckets replace
    them, so the rest of the run is not held to 2 requests/s.

    Item providers send a request or more per line (``_requests_per_line``): ~500 requests in
    this run, so the storm rate is lower (0.02: ~10 storms, P(no storm) < 1e-4), and the
    ``item`` class (job POSTs) has its bucket too.
    """
    # 6,000 per minute: a refill of 100 per second, advertised as such; the client paces to it
    # (item providers send ~500 requests: ~5 s). The drain swaps slow buckets in for one 429.
    limit = RateLimit(requests=6_000, per_seconds=60)
    classes = ("upload", "create", "poll", "download", "item")
    async with open_env(case, REALTIME, tmp_path) as env:
        emulator = env.running.emulator
        spy = env.spy()
        emulator.set_faults(
            rate_limits=dict.fromkeys(classes, limit),
            # high: a run is only ~30 requests (P(no storm) ~ 1e-9), unless every line costs
            # its own requests
            storm_429_rate=0.02 if _requests_per_line(spy) else 0.5,
            retry_after_seconds=0.005,
        )
        phase = "full"

        def before(verb: str, n: int) -> None:
            nonlocal phase
            if phase == "full" and verb == "create" and n == 2:
                phase = "drained"
                # Swap in slow buckets (2 per second, their next token 0.5 s away once drained)
                # so the next create or poll meets a 429 however long the adapter takes to send.
                slow = RateLimit(requests=limit.requests, per_seconds=limit.requests / 2)
                emulator.set_faults(
                    rate_limits={
                        **dict.fromkeys(classes, limit),
                        **dict.fromkeys(("create", "poll"), slow),
                    }
                )
                drain(emulator.bucket("create"))
                drain(emulator.bucket("poll"))
            elif phase == "drained" and emulator.raw_stats.faults["rate_limited"] >= 1:
                phase = "refilled"
                fresh = RateLimit(requests=limit.requests + 1, per_seconds=limit.per_seconds)
                emulator.set_faults(rate_limits=dict.fromkeys(classes, fresh))

        spy.before = before
        src, ids = env.write_input(200)
        # One submitter: create #1 has returned (and taught the ceiling) before the drain, so
        # the drained bucket's 429 halves a known rate instead of a cold-start guess.
        _, results = await env.run(src, env.options(submit_concurrency=1), spy)
        env.check(results, ids)
        assert all(isinstance(r, Succeeded) for r in results)
        stats = env.stats
        assert stats.faults["storm429"] > 0
        assert phase != "full", "fewer than two creates"
        assert stats.faults["rate_limited"] >= 1, "the drained buckets answered no 429"


# -- 4. 5xx, connection resets, answers lost after the batch was made ------------------------


async def test_server_errors_and_resets(case: ProviderCase, tmp_path: Path) -> None:
    """5xx (JSON and HTML), resets before handling, truncated bodies, and *every* create answer
    lost after the batch was made: the engine must find each batch again (``reconcile``: by
    tag, or by whatever equivalent the adapter has) instead of creating it twice.

    With ``_creates_per_item`` every item's create answer is lost too: each item must still
    be created exactly once (its retry finds it there), one lost answer per batch and per line.
    """
    async with open_env(case, NORMAL, tmp_path) as env:
        env.running.emulator.set_faults(
            error_5xx_rate=0.2,
            html_502_rate=0.05,
            reset_rate=0.15,
            truncate_rate=0.05,
            reset_after_create_rate=1.0,
        )
        src, ids = env.write_input(LINES)
        _, results = await env.run(src, env.options())
        env.check(results, ids)
        assert all(isinstance(r, Succeeded) for r in results)
        stats = env.stats
        assert stats.server_errors > 0
        assert stats.faults["reset"] > 0
        assert len(env.check_batches()) == _shards(case, LINES)
        creates = stats.batches_created
        if _creates_per_item(env.provider()):
            creates += len(ids)
        assert stats.faults["reset_after_create"] == creates


# -- 5. expiry --------------------------------------------------------------------------------


@pytest.mark.parametrize("recovers", [False, True], ids=["expires-every-attempt", "recovers"])
async def test_expiry(case: ProviderCase, tmp_path: Path, recovers: bool) -> None:
    """Batches expire with half their lines done; the rest goes into the next attempt.

    ``expires-every-attempt``: expiry stays on, so after ``max_attempts`` the last unfinished
    lines are ``Expired``. ``recovers``: expiry is switched off when the first batch's results
    are read (before any retry attempt exists), so every line ends ``Succeeded``.
    """
    async with open_env(case, EXPIRY, tmp_path) as env:
        if not _has_completion_window(env.provider()):
            pytest.skip("no completion window: documents and annotation jobs never expire")
        emulator = env.running.emulator
        emulator.set_faults(expire=True, expire_done_fraction=0.5)
        spy = env.spy()
        if recovers:

            def stop_expiring(batch: BatchInfo) -> None:
                # Every attempt-1 batch expires; no attempt 2 exists before a first collect.
                # (Not keyed on ``batch.state``: a provider may end such a batch "completed"
                # with its unfinished lines expired, as Anthropic does.)
                emulator.set_faults(expire=False)

            spy.on_results = stop_expiring
        max_attempts = 2 if recovers else 3
        src, ids = env.write_input(200)
        _, results = await env.run(src, env.options(max_attempts=max_attempts), spy)
        env.check(results, ids)
        expired = [r for r in results if isinstance(r, Expired)]
        succeeded = [r for r in results if isinstance(r, Succeeded)]
        assert len(expired) + len(succeeded) == len(ids), Counter(type(r) for r in results)
        shards = _shards(case, 200)
        if recovers:
            assert not expired
            assert {r.attempt for r in succeeded} == {1, 2}
            assert len(env.check_batches()) == 2 * shards
        else:
            assert expired
            assert all(r.attempt == max_attempts for r in expired)
            assert {r.attempt for r in succeeded} == {1, 2, 3}
            assert len(env.check_batches()) == max_attempts * shards


# -- 6. partial failure -----------------------------------------------------------------------


async def test_partial_failure(case: ProviderCase, tmp_path: Path) -> None:
    """Retryable line errors go into the next attempt; fatal ones are final at once.

    Two attempts: enough to see retries and their exhaustion, and no later attempt can hold
    exactly the ids of the one before (which a provider counting batches by content, as the
    Anthropic emulator does, could not tell from a duplicate create).
    """
    max_attempts = 2
    async with open_env(case, NORMAL, tmp_path) as env:
        env.running.emulator.set_faults(line_retryable_rate=0.2, line_fatal_rate=0.1)
        spy = env.spy()
        src, ids = env.write_input(LINES)
        _, results = await env.run(src, env.options(max_attempts=max_attempts), spy)
        env.check(results, ids)
        final = {r.custom_id: r for r in results}
        errored = [r for r in results if isinstance(r, Errored)]
        assert errored, "no line error was drawn"
        assert any(not r.retryable for r in errored), "no fatal line error was drawn"
        for err in errored:
            assert not err.retryable or err.attempt == max_attempts, err
        if not _creates_per_item(spy):
            # (Per-item creation meets a retryable error at the item's own create call and
            # retries it there: the line never needs a second attempt.)
            assert any(isinstance(r, Succeeded) and r.attempt > 1 for r in results)

        # What the adapter reported, attempt by attempt, against what the engine did with it.
        reported: dict[tuple[str, int], Result] = {}
        for seen in spy.seen:
            key = (seen.custom_id, seen.attempt)
            assert key not in reported, f"reported twice: {seen}"
            reported[key] = seen
        for (custom_id, attempt), seen in reported.items():
            if isinstance(seen, Errored) and not seen.retryable:
                last = final[custom_id]
                assert isinstance(last, Errored), f"a fatal error was not final: {last}"
                assert (last.code, last.attempt) == (seen.code, attempt), last
                assert (custom_id, attempt + 1) not in reported, f"{custom_id} retried"
            elif isinstance(seen, Errored) and attempt < max_attempts:
                assert (custom_id, attempt + 1) in reported, f"{custom_id} not retried"


# -- 7. crash between "create sent" and "create recorded", then resume ------------------------


async def test_crash_after_create_then_resume(case: ProviderCase, tmp_path: Path) -> None:
    async with open_env(case, NORMAL, tmp_path) as env:
        crashing = env.spy()

        def crash(shard: ShardRecord, batch: BatchInfo) -> None:
            if crashing.created == 2:
                raise Crash  # the batch exists on the server; the journal says "creating"

        crashing.after_create = crash
        src, ids = env.write_input(LINES)
        with pytest.raises(Crash):
            await env.run(src, env.options(), crashing)

        journal = await SqliteJournal.open(env.state_dir / JOURNAL_NAME)
        try:
            (record,) = await journal.list_runs()
            states = [s.state for s in await journal.load_shards(record.run_id)]
        finally:
            await journal.aclose()
        assert "creating" in states, states
        assert env.stats.batches_created >= 2

        resumed = env.spy()
        async with Pump(resumed, state_dir=env.state_dir) as pump:
            run = await pump.resume(record.run_id)
            await run.wait()
        env.check(read_results(run.results_path), ids)
        # Tagged providers' batches are adopted by the run-start sweep; others reconcile.
        assert resumed.calls["reconcile"] >= 1 or run.statistics().batches_adopted >= 1
        assert len(env.check_batches()) == _shards(case, LINES)


# -- 8. resume a finished run -----------------------------------------------------------------


async def test_resume_finished_run(case: ProviderCase, tmp_path: Path) -> None:
    """The same input again resumes the finished run: same id, no new batch, no new result."""
    async with open_env(case, NORMAL, tmp_path) as env:
        src, ids = env.write_input(200)
        options = env.options()
        first, results = await env.run(src, options)
        env.check(results, ids)
        created = env.stats.batches_created

        spy = env.spy()
        async with Pump(spy, state_dir=env.state_dir) as pump:
            again = await pump.submit(src, endpoint=case.endpoint, options=options)
            assert again.id == first.id
            counts = await again.wait()
            assert await pump.resume(first.id) is again
        assert counts.succeeded == len(ids)
        assert spy.calls["prepare"] == spy.calls["create"] == 0
        assert env.stats.batches_created == created
        assert read_results(again.results_path) == results
        env.check(results, ids)


# -- 9. cancel a run mid-way ------------------------------------------------------------------


async def test_cancel_run(case: ProviderCase, tmp_path: Path) -> None:
    """``run.cancel()`` right after the first batch exists: nothing new is sent, the batch is
    cancelled where the adapter can, every line settles once (``Succeeded`` or ``Canceled``)."""
    async with open_env(case, NORMAL, tmp_path) as env:
        emulator = env.running.emulator
        spy = env.spy()
        if spy.capabilities.cancel:
            # Batches run for 3.6 s unless cancelled, so the cancel always finds them running.
            # (Without cancel the engine waits for the batch: a long one would only cost time.)
            emulator.configure(msgspec.structs.replace(emulator.config, run_seconds=3_600))
        runs: list[Run] = []

        def cancel_run(shard: ShardRecord, batch: BatchInfo) -> None:
            if spy.created == 1:
                runs[0].cancel()

        spy.after_create = cancel_run
        src, ids = env.write_input(200)
        async with Pump(spy, state_dir=env.state_dir) as pump:
            run = await pump.submit(
                src, endpoint=case.endpoint, options=env.options(submit_concurrency=1)
            )
            runs.append(run)
            counts = await run.wait()
        results = read_results(run.results_path)
        env.check(results, ids)
        assert all(isinstance(r, Succeeded | Canceled) for r in results)
        assert counts.canceled > 0
        assert run.statistics().state == "cancelled"
        assert sum(env.check_batches().values()) == 1, "a batch was created after the cancel"
        if spy.capabilities.cancel:
            assert spy.calls["cancel"] >= 1
            assert sum(env.stats.route_count(r) for r in case.cancel_routes) >= 1, (
                "the emulator saw no cancel call (is ProviderCase.cancel_routes set?)"
            )
        else:
            assert spy.calls["cancel"] == 0, "the engine called cancel on an adapter without it"


# -- the results file, read back through the public API ---------------------------------------


async def test_results_read_back(case: ProviderCase, tmp_path: Path) -> None:
    """``Run.results()`` yields what the results file holds, Errored lines included."""
    async with open_env(case, NORMAL, tmp_path) as env:
        env.running.emulator.set_faults(line_fatal_rate=0.2)
        src, ids = env.write_input(100)
        run, results = await env.run(src, env.options())
        assert any(isinstance(r, Errored) for r in results)
        streamed = [r async for r in run.results()]
        assert [r.custom_id for r in streamed] == [r.custom_id for r in results]
        env.check(streamed, ids)
