"""An in-memory ``Provider`` for engine tests: no sockets, no clock, fully deterministic.

Each batch moves one state forward every time a sweep or a retrieve reads it
(``pending -> running -> finalizing -> completed``), so a test's speed is bounded by the engine,
not by timers. Knobs make lines fail retryably, batches expire or fail on queue limits, and
creates fail *after* the batch was made (the case reconciliation exists for).
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field

import anyio
import msgspec

from batchpump import (
    BatchInfo,
    ConnectError,
    Errored,
    Expired,
    Journal,
    NotFoundError,
    ProviderError,
    Result,
    Succeeded,
)
from batchpump._errors import (
    ConflictError,
    MalformedLine,
    MalformedOutputError,
    TransportTimeoutError,
)
from batchpump._input import LineChecker, RequestLineChecker
from batchpump._models import BatchError, BatchState, Capabilities, RunRecord, ShardRecord
from batchpump._provider import find_by_tag

_line = msgspec.json.Decoder(dict[str, object])
_STEPS: dict[BatchState, BatchState] = {
    "pending": "running",
    "running": "finalizing",
    "finalizing": "completed",
    "cancelling": "cancelled",
}


@dataclass
class FakeBatch:
    info: BatchInfo
    ids: list[str]
    final: BatchState = "completed"
    frozen: bool = False


@dataclass
class FakeProvider:
    """A provider in memory. Counters tell the tests what the engine did."""

    capabilities: Capabilities = field(default_factory=lambda: Capabilities(max_lines=50_000))
    #: custom_id -> how many attempts fail retryably before one succeeds.
    flaky: dict[str, int] = field(default_factory=dict)
    #: batch ordinals (1-based, in creation order) that expire with half their lines done.
    expire: set[int] = field(default_factory=set)
    #: batch ordinals that fail on a queue limit.
    queue_limited: set[int] = field(default_factory=set)
    #: batch ordinals whose create raises ConnectError after the batch was made.
    lose_create_answer: set[int] = field(default_factory=set)
    #: batch ordinals whose create times out and whose batch stays out of list answers for
    #: this many list walks (a create the server makes late).
    late_create: dict[int, int] = field(default_factory=dict)
    #: batch ordinals whose create is answered with this status (408, 409) after the batch
    #: was made.
    status_after_create: dict[int, int] = field(default_factory=dict)
    #: the server's clock runs this far from the local one (``created_at`` is real time plus
    #: this, and ``reconcile`` honours ``since``); ``None``: ``created_at`` counts from 1000.
    server_offset: float | None = None
    #: batch ordinals that never advance on their own (they stay ``pending`` until cancelled).
    frozen: set[int] = field(default_factory=set)
    #: every list answer starts with another client's batch, made just now (a shared account).
    foreign_newest: bool = False
    #: called after each create reached the "server" (crash hooks raise from here).
    after_create: Callable[[ShardRecord, BatchInfo], None] | None = None
    #: raised by every ``prepare`` (a wrong setting: 404 route, 401 key, 400 project...).
    refuse: ProviderError | None = None
    #: a batch of more lines than this fails on the enqueued-token limit (a quota).
    quota_lines: int | None = None
    #: custom_id -> downloads whose output line for it is malformed (unreadable JSON).
    malformed: dict[str, int] = field(default_factory=dict)
    #: whether a malformed line still shows its custom_id in its bytes.
    malformed_names_id: bool = True
    downloads: Counter[str] = field(default_factory=Counter)
    #: batches stay ``running`` until cancelled (a long batch, for cancel tests).
    stall: bool = False
    #: cancelled batches stay ``cancelling`` forever.
    stuck_cancelling: bool = False
    #: called at the start of every ``cancel`` (crash or failure hooks raise from here).
    before_cancel: Callable[[str], None] | None = None
    #: batch ids the provider no longer has (retrieve answers 404).
    gone: set[str] = field(default_factory=set)
    #: the adapter's settings beyond its base URL (TELUS work_flow_id...).
    settings: dict[str, str] = field(default_factory=dict)
    name: str = "fake"
    base_url: str = "memory://fake"
    batches: dict[str, FakeBatch] = field(default_factory=dict)
    tags: Counter[str] = field(default_factory=Counter)
    billed: Counter[str] = field(default_factory=Counter)
    calls: Counter[str] = field(default_factory=Counter)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _created_at: itertools.count[int] = field(default_factory=lambda: itertools.count(1_000))
    _hidden: dict[str, int] = field(default_factory=dict)

    def line_checker(self, *, endpoint: str, max_line_bytes: int) -> LineChecker:
        """Standard request lines, as OpenAI-compatible adapters check them."""
        return RequestLineChecker(
            endpoint=endpoint,
            max_line_bytes=max_line_bytes,
            custom_id_max_len=self.capabilities.custom_id_max_len,
        )

    async def prepare(self, shard: ShardRecord) -> str:
        self.calls["prepare"] += 1
        if self.refuse is not None:
            raise self.refuse
        return f"file-{shard.index}-{shard.attempt}"

    async def create(self, shard: ShardRecord, *, endpoint: str, tag: str) -> BatchInfo:
        self.calls["create"] += 1
        ordinal = next(self._ids)
        data = await anyio.Path(shard.path).read_bytes()
        ids = [str(_line.decode(raw)["custom_id"]) for raw in data.splitlines()]
        info = BatchInfo(
            id=f"batch_{ordinal}",
            state="pending",
            raw_status="validating",
            created_at=self._now(),
            tag=tag,
            total=len(ids),
        )
        final: BatchState = "completed"
        if ordinal in self.expire:
            final = "expired"
        if ordinal in self.queue_limited or (
            self.quota_lines is not None and len(ids) > self.quota_lines
        ):
            final = "failed"
        self.batches[info.id] = FakeBatch(info, ids, final, frozen=ordinal in self.frozen)
        self.tags[tag] += 1
        if self.after_create is not None:
            self.after_create(shard, info)
        if ordinal in self.lose_create_answer:
            raise ConnectError("connection reset after the request was sent")
        if ordinal in self.late_create:
            self._hidden[info.id] = self.late_create[ordinal]
            raise TransportTimeoutError("fake: no answer in time")
        status = self.status_after_create.get(ordinal)
        if status is not None:
            error = ConflictError if status == 409 else ProviderError
            raise error("fake: answered after making the batch", provider=self.name, status=status)
        return info

    def _now(self) -> float:
        if self.server_offset is None:
            return float(next(self._created_at))
        return time.time() + self.server_offset

    async def reconcile(self, shard: ShardRecord, *, since: float) -> BatchInfo | None:
        self.calls["reconcile"] += 1
        assert shard.tag is not None
        return await find_by_tag(
            self, shard.tag, since=-1.0 if self.server_offset is None else since
        )

    def _step(self, batch: FakeBatch) -> BatchInfo:
        info = batch.info
        if (
            (info.state == "running" and self.stall)
            or (info.state == "cancelling" and self.stuck_cancelling)
            or (batch.frozen and info.state == "pending")
        ):
            return info
        if info.state == "running" and batch.final in ("expired", "failed"):
            state: BatchState = batch.final
        else:
            state = _STEPS.get(info.state, info.state)
        if state == "finalizing" and batch.final != "completed":
            state = batch.final
        errors: tuple[BatchError, ...] = ()
        if state == "failed":
            errors = (
                BatchError(code="token_limit_exceeded", message="Enqueued token limit reached"),
            )
        done = state in ("completed", "expired", "cancelled")
        batch.info = msgspec.structs.replace(
            info,
            state=state,
            raw_status=state,
            errors=errors,
            output_ref=f"out-{info.id}" if done else None,
        )
        return batch.info

    async def retrieve(self, batch_id: str) -> BatchInfo:
        self.calls["retrieve"] += 1
        if batch_id in self.gone:
            raise NotFoundError("No such batch", provider=self.name, status=404)
        return self._step(self.batches[batch_id])

    async def list_batches(self) -> AsyncGenerator[BatchInfo, None]:
        self.calls["list"] += 1
        if self.foreign_newest:
            yield BatchInfo(
                id="batch_foreign",
                state="running",
                raw_status="in_progress",
                created_at=self._now(),
            )
        for batch in sorted(self.batches.values(), key=lambda b: -b.info.created_at):
            hidden = self._hidden.get(batch.info.id, 0)
            if hidden > 0:
                self._hidden[batch.info.id] = hidden - 1
                continue
            yield self._step(batch)

    async def cancel(self, batch_id: str) -> BatchInfo:
        self.calls["cancel"] += 1
        if self.before_cancel is not None:
            self.before_cancel(batch_id)
        batch = self.batches[batch_id]
        if not batch.info.terminal:
            batch.info = msgspec.structs.replace(batch.info, state="cancelling")
            batch.final = "cancelled"
        return batch.info

    async def results(self, batch: BatchInfo, *, attempt: int) -> AsyncGenerator[Result, None]:
        fake = self.batches[batch.id]
        self.downloads[batch.id] += 1
        ids = (
            fake.ids[: len(fake.ids) // 2] if batch.state in ("expired", "cancelled") else fake.ids
        )
        bad: list[MalformedLine] = []
        for number, custom_id in enumerate(ids, 1):
            if self.malformed.get(custom_id, 0) >= self.downloads[batch.id]:
                named = custom_id if self.malformed_names_id else None
                bad.append(MalformedLine(number, named, "truncated JSON"))
                continue
            if self.flaky.get(custom_id, 0) >= attempt:
                yield Errored(
                    custom_id=custom_id,
                    batch_id=batch.id,
                    attempt=attempt,
                    code="server_error",
                    message="try again",
                    status_code=500,
                    retryable=True,
                )
                continue
            self.billed[custom_id] += 1
            yield Succeeded(
                custom_id=custom_id,
                batch_id=batch.id,
                attempt=attempt,
                response=msgspec.Raw(b'{"ok":true}'),
            )
        if batch.state == "expired":
            for custom_id in fake.ids[len(fake.ids) // 2 :]:
                yield Expired(custom_id=custom_id, batch_id=batch.id, attempt=attempt)
        if bad:
            raise MalformedOutputError(f"fake: {len(bad)} malformed line(s)", bad)

    def failure_is_transient(self, batch: BatchInfo) -> bool:
        return any(e.code == "token_limit_exceeded" for e in batch.errors)

    async def aclose(self) -> None:
        self.calls["aclose"] += 1


class WrappedJournal:
    """A ``Journal`` that hands every call to ``inner``; tests override the call they watch."""

    def __init__(self, inner: Journal) -> None:
        self.inner = inner

    async def open_run(self, run: RunRecord) -> tuple[RunRecord, bool]:
        return await self.inner.open_run(run)

    async def get_run(self, run_id: str) -> RunRecord | None:
        return await self.inner.get_run(run_id)

    async def list_runs(self) -> list[RunRecord]:
        return await self.inner.list_runs()

    async def load_shards(self, run_id: str) -> list[ShardRecord]:
        return await self.inner.load_shards(run_id)

    async def commit(
        self, *, run: RunRecord | None = None, shards: Sequence[ShardRecord] = ()
    ) -> None:
        await self.inner.commit(run=run, shards=shards)

    async def delete_run(self, run_id: str) -> bool:
        return await self.inner.delete_run(run_id)

    async def aclose(self) -> None:
        await self.inner.aclose()
