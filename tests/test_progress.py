"""Progress that moves: the providers' own counts, the ETA from their rate, tokens, calm
rate-limit waits, and the summary's tokens and cost.

Rules: no network, no sleeps; times are passed in explicitly.
"""

from __future__ import annotations

import io
import logging
from typing import Any

import anyio
import msgspec
import pytest
from rich.console import Console

from batchpump import ManualClock, MemoryJournal, Price, RateLimitedError, RunOptions
from batchpump._engine import RunContext, TokenBudget
from batchpump._models import BatchInfo, RunRecord, ShardRecord, Usage
from batchpump._progress import Notices, RateWindow, cost, follow, summary_dict, summary_table

from .fakes import FakeProvider


def context() -> RunContext:
    record = RunRecord(
        run_id="r",
        provider="fake",
        base_url="http://fake",
        endpoint="/v1/chat/completions",
        input_path="in.jsonl",
        out_path="out.jsonl",
        created_at=0.0,
        state="running",
        total_lines=10_000,
    )
    return RunContext(
        provider=FakeProvider(),
        journal=MemoryJournal(),
        clock=ManualClock(),
        run=record,
        options=RunOptions(),
        work_dir=anyio.Path("."),
        budget=TokenBudget(None),
    )


def shard(index: int, lines: int) -> ShardRecord:
    return ShardRecord(run_id="r", index=index, attempt=1, path="x", lines=lines, bytes=1)


def batch(
    batch_id: str, *, total: int, completed: int, failed: int = 0, state: Any = "running"
) -> BatchInfo:
    return BatchInfo(
        id=batch_id,
        state=state,
        raw_status=state,
        created_at=0.0,
        total=total,
        completed=completed,
        failed=failed,
    )


def test_lines_move_with_the_providers_request_counts() -> None:
    ctx = context()
    assert ctx.statistics().progress_lines == 0
    ctx.batch_progress(shard(0, 5_000), batch("b0", total=5_000, completed=962, failed=38))
    ctx.batch_progress(shard(1, 5_000), batch("b1", total=100, completed=50))  # a percentage
    stats = ctx.statistics()
    assert stats.results.total == 0  # nothing collected yet...
    assert stats.lines_reported == 1_000 + 2_500  # ...but the bar moves
    assert stats.progress_lines == 3_500
    ctx.batch_progress(
        shard(0, 5_000), batch("b0", total=5_000, completed=5_000, state="completed")
    )
    assert ctx.statistics().lines_reported == 2_500  # a finished batch counts by its results


def test_eta_comes_from_the_rate_of_the_count() -> None:
    window = RateWindow(window=60.0)
    assert window.eta(1_000) is None  # unknown until the count moves
    window.add(0.0, 0)
    window.add(10.0, 0)
    assert window.rate is None
    window.add(20.0, 500)
    assert window.rate == pytest.approx(25.0)
    assert window.eta(1_000) == pytest.approx(40.0)
    assert window.eta(0) == 0.0
    for t in range(30, 200, 10):  # old samples leave the window
        window.add(float(t), 500 + (t - 20) * 10)
    assert window.rate == pytest.approx(10.0)


def test_tokens_add_up_per_model_and_cost_needs_prices() -> None:
    ctx = context()
    ctx.add_usage("m1", Usage(input_tokens=10, output_tokens=5))
    ctx.add_usage("m1", Usage(input_tokens=1, output_tokens=1))
    ctx.add_usage(None, Usage(input_tokens=7))
    usage = ctx.statistics().usage
    assert usage == {"m1": Usage(input_tokens=11, output_tokens=6), "?": Usage(input_tokens=7)}
    prices = {"m1": Price(input=1_000_000, output=2_000_000)}
    assert cost(usage, prices) == {"m1": pytest.approx(11 + 12)}
    summary = summary_dict(ctx.statistics(), "out.jsonl", prices=prices)
    assert summary["cost"] == {"m1": pytest.approx(23.0), "total": pytest.approx(23.0)}
    assert summary_dict(ctx.statistics(), "out.jsonl")["cost"] is None
    text = io.StringIO()
    Console(file=text, width=200).print(summary_table(ctx.statistics(), "out.jsonl", prices=prices))
    rendered = text.getvalue()
    assert "11 in / 6 out" in rendered
    assert "cost m1" in rendered
    assert "no price for" in rendered  # the "?" model has none


def test_prices_are_checked() -> None:
    from batchpump import UsageError

    with pytest.raises(UsageError):
        Price(input=-1)
    options = msgspec.json.decode(
        b'{"prices": {"m": {"input": 0.15, "output": 0.6}}}', type=RunOptions
    )
    assert options.prices["m"].output == 0.6


def test_rate_limit_waits_are_counted_and_shown_calmly_not_printed() -> None:
    text = io.StringIO()
    notices = Notices.install(Console(file=text, width=200))
    try:
        log = logging.getLogger("batchpump.http")
        limited = RateLimitedError("openai HTTP 429", provider="openai", status=429)
        log.warning("%s %s failed (%s); retry %d/%d in %.3fs", "POST", "/files", limited, 1, 7, 0.0)
        log.warning(
            "%s %s failed (%s); retry %d/%d in %.3fs", "POST", "/batches", "HTTP 502", 1, 7, 0.5
        )
    finally:
        notices.uninstall()
    assert logging.getLogger("batchpump").level == logging.NOTSET  # put back as it was
    assert logging.getLogger("batchpump").propagate
    assert notices.rate_limited == 1
    assert notices.pacing
    assert notices.retried == 1
    printed = text.getvalue()
    assert "/files" not in printed  # the 429 is not a warning line...
    assert "/batches" in printed  # ...another failure still is
    from batchpump._progress import describe

    assert "pacing" in describe(context().statistics(), notices)


async def test_json_progress_lines_carry_the_moving_count_and_eta() -> None:
    ctx = context()
    ctx.batch_progress(shard(0, 5_000), batch("b0", total=5_000, completed=2_500))

    class Finished:
        done = True

        def statistics(self) -> Any:
            return ctx.statistics()

    out = io.StringIO()
    await follow(Finished(), mode="json", stream=out)
    record = msgspec.json.decode(out.getvalue().splitlines()[-1])
    assert record["progress_lines"] == 2_500
    assert record["lines_reported"] == 2_500
    assert "eta_seconds" in record
    assert record["pacing"] is False
