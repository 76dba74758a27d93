"""``Stream``: an endless stream of requests in, results out, exactly once.

::

    async with pump.stream("orders", endpoint="/v1/chat/completions") as stream:
        await stream.put(request)               # durable when it returns
        async for result in stream.results():   # as batches finish
            ...
            await stream.ack(result)            # not delivered again after a restart
        await stream.drain()                    # cut the open segments, wait for every result

A stream is one run in the pump's journal whose shards are cut from what producers put
(``log``), submitted, polled and collected by the engine's stages (``pipeline``), its results
appended to one results file, rotated in parts (``rotation``), and delivered from it
(``delivery``). Its own ids, segments and acks live in ``streams/<name>/stream.sqlite3``
(``store``). Everything survives a kill -9:
opening the stream again creates the segments never created, polls the batches in flight and
delivers the results not acknowledged.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from types import TracebackType
from typing import Final, Self, final

import anyio
import anyio.from_thread
import anyio.lowlevel
import msgspec
from anyio.abc import TaskGroup

from .._clock import Clock
from .._config import RunOptions
from .._engine import ResultSink, RunContext, TokenBudget
from .._errors import ClosedError, UsageError, unwrap_group
from .._fileio import run_io
from .._journal import Journal
from .._models import Result, ResultCounts, RunRecord, ShardRecord
from .._provider import Provider
from .delivery import Delivery
from .intake import Intake
from .log import SegmentLog
from .pipeline import Pipeline, leftover_files, remove_files
from .rotation import ResultParts
from .store import StreamStore

__all__ = ["Stream", "StreamStatistics"]

logger: Final = logging.getLogger("batchpump.stream")

_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_options_encoder: Final = msgspec.json.Encoder()


class StreamStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of a stream (``Stream.statistics()``).

    Attributes:
        name: the stream's name.
        run_id: its run in the journal.
        accepted: lines accepted over the stream's life.
        finished: lines with a final result.
        pending: lines accepted and not finished (what ``max_pending`` bounds).
        open_segments: segments taking lines now.
        batches_created: batches created by this process.
        put_rounds: durable commits of puts by this process (fewer than puts when grouped).
        acks: results acknowledged by this process.
        results: the counts of final results, by kind.
    """

    name: str
    run_id: str
    accepted: int
    finished: int
    pending: int
    open_segments: int
    batches_created: int
    put_rounds: int
    acks: int
    results: ResultCounts


@final
class Stream:
    """A named, durable stream of requests through one provider. Use it with ``async with``.

    Made by ``Pump.stream`` (see there for the arguments); closing it (the end of the ``async
    with`` block, or ``aclose``) stops the work and keeps everything for the next open: lines
    accepted and not yet in a batch, batches in flight, results not acknowledged.
    """

    def __init__(
        self,
        name: str,
        *,
        provider: Provider,
        journal: Journal,
        clock: Clock,
        state_dir: Path,
        endpoint: str,
        flush_lines: int,
        flush_bytes: int | None,
        flush_after: float,
        max_pending: int,
        rotate_bytes: int = 64 * 1024 * 1024,
        options: RunOptions,
    ) -> None:
        if not _NAME.fullmatch(name):
            raise UsageError(
                f"stream name {name!r}: use letters, digits, '.', '_' and '-' (up to 100)"
            )
        if flush_lines < 1 or (flush_bytes is not None and flush_bytes < 2):
            raise UsageError("flush_lines must be >= 1 and flush_bytes >= 2 (or None)")
        if flush_after <= 0 or max_pending < 1:
            raise UsageError("flush_after must be > 0 seconds and max_pending >= 1")
        if rotate_bytes < 1:
            raise UsageError("rotate_bytes must be >= 1")
        self._rotate_bytes = rotate_bytes
        self.name = name
        self._provider = provider
        self._journal = journal
        self._clock = clock
        self._dir = state_dir / "streams" / name
        self._state_dir = state_dir
        self._options = msgspec.structs.replace(options, endpoint=endpoint)
        self._intake = Intake(
            name,
            endpoint=endpoint,
            capabilities=provider.capabilities,
            line_checker=provider.line_checker,
            max_lines=self._options.max_lines,
            max_bytes=self._options.max_bytes,
        )
        self._flush_lines = min(flush_lines, self._intake.lines_cap)
        cap = self._intake.bytes_cap
        self._flush_bytes = cap if flush_bytes is None else min(flush_bytes, cap)
        self._flush_after = flush_after
        self._max_pending = max_pending
        self.run_id = _stream_run_id(name, provider)
        self._tg: TaskGroup | None = None
        self._store: StreamStore | None = None
        self._log: SegmentLog | None = None
        self._delivery: Delivery | None = None
        self._pipeline: Pipeline | None = None
        self._sink: ResultSink | None = None
        self._parts: ResultParts | None = None
        self._ctx: RunContext | None = None
        self._token: anyio.lowlevel.EventLoopToken | None = None
        self._finished = 0
        self._progress = anyio.Event()
        self._drained = anyio.Event()
        self._closed = False

    # ---- opening and closing ---------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._store is not None or self._closed:
            raise ClosedError(f"stream {self.name!r} can be entered once")
        self._store = store = await StreamStore.open(self._dir / "stream.sqlite3")
        try:
            await self._open(store)
        except BaseException:
            await self._shutdown()
            raise
        return self

    async def _open(self, store: StreamStore) -> None:
        meta, rows, acks = await store.load()
        endpoint = self._options.endpoint
        if meta.endpoint is None or meta.run_id is None:
            await store.set_identity(endpoint, self.run_id)
        elif meta.endpoint != endpoint:
            raise UsageError(
                f"stream {self.name!r} sends to {meta.endpoint}; open it with that endpoint "
                f"(got {endpoint}) or use another name"
            )
        else:
            self.run_id = meta.run_id  # the provider's base URL may differ: checked below
        run_dir = self._state_dir / "runs" / self.run_id
        record = RunRecord(
            run_id=self.run_id,
            provider=self._provider.name,
            base_url=self._provider.base_url,
            endpoint=endpoint,
            input_path=f"stream:{self.name}",
            out_path=str((run_dir / "results.jsonl").resolve()),
            created_at=self._clock.time(),
            state="running",
            options=msgspec.Raw(_options_encoder.encode(self._options)),
        )
        record, _ = await self._journal.open_run(record)
        if (record.provider, record.base_url) != (self._provider.name, self._provider.base_url):
            raise UsageError(
                f"stream {self.name!r} was opened with {record.provider} at {record.base_url}; "
                "open it with the same provider"
            )
        record.state = "running"
        ctx = self._ctx = RunContext(
            provider=self._provider,
            journal=self._journal,
            clock=self._clock,
            run=record,
            options=self._options,
            work_dir=anyio.Path(run_dir),
            budget=TokenBudget(self._options.token_budget),
        )
        self._finished = record.counts.total
        parts = self._parts = ResultParts(Path(record.out_path), self._rotate_bytes)
        await run_io(parts.scan)
        delivery = Delivery(parts, record.out_offset, store, meta.acked_to, dict(acks))
        await delivery.free_parts()  # a crash came before their removal
        sink = self._sink = ResultSink(parts.newest, record.out_offset, self._commit_results)
        await sink.open()
        self._delivery = delivery
        self._pipeline = pipeline = Pipeline(ctx, sink, store, settle=self._settle)
        log = self._log = SegmentLog(
            store,
            run_dir / "segments",
            where=self._intake.where,
            max_lines=self._flush_lines,
            max_bytes=self._flush_bytes,
            flush_after=self._flush_after,
            per_model=self._provider.capabilities.one_model_per_shard,
            clock=self._clock,
            on_sealed=pipeline.cut,
            read_back=self._intake.read_back,
        )
        shards = await self._journal.load_shards(self.run_id)
        known = {s.index for s in shards}
        sealed = await store.call(
            lambda conn: log.restore(conn, meta.accepted, meta.next_index, rows, known),
            doing="reading back the segments",
        )
        await log.settle()
        await remove_files(leftover_files(shards))
        for segment in sealed:
            pipeline.cut(segment)
        self._token = anyio.lowlevel.current_token()
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(pipeline.serve, shards, known, name=f"stream {self.name}")
        self._tg.start_soon(log.cut_on_time, name=f"stream {self.name} timer")

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the stream's work and close it, keeping everything for the next open.

        Lines accepted stay accepted, open segments stay open (cut by their own rules once the
        stream is opened again), batches in flight are polled again, results not acknowledged
        are delivered again. ``drain()`` first to finish everything instead.
        """
        if self._closed:
            return
        self._closed = True
        if self._delivery is not None:
            self._delivery.finished = True
            self._delivery.notify()
        self._progress.set()
        try:
            if self._tg is not None:
                self._tg.cancel_scope.cancel()
                try:
                    await self._tg.__aexit__(None, None, None)
                except BaseExceptionGroup as group:
                    raise unwrap_group(group) from None
        finally:
            await self._shutdown()

    async def _shutdown(self) -> None:
        self._closed = True
        with anyio.CancelScope(shield=True):
            if self._pipeline is not None:
                self._pipeline.close()
            if self._log is not None:
                await run_io(self._log.close)
            if self._store is not None:
                await self._store.aclose()

    # ---- putting ---------------------------------------------------------------------------

    async def put(self, request: object) -> None:
        """Accept one request; return once it is durable.

        Args:
            request: a ``dict``, a ``msgspec.Struct``, or one JSONL line (``bytes``/``str``;
                one trailing newline is allowed). It needs a ``custom_id`` unique over the
                stream's whole life; ``method``/``url`` may be left out.

        Waits while more than ``max_pending`` accepted lines have no final result yet.
        Concurrent puts share one round: one write and one fsync of each segment file they
        touch (the stream's write-ahead record; its id index is committed later, off the put's
        path, and read back from the segment files after a crash).

        Raises:
            InputError: the line is invalid (the same checks and messages as a file run), or
                its ``custom_id`` was accepted before (the error says when). Nothing else is
                affected.
        """
        line = self._intake.one(request)
        await self._admit(1)
        await self._open_log().append([line], single=True)
        self._accepted()

    async def put_many(self, requests: Iterable[object]) -> None:
        """Accept many requests in one durable commit: all of them, or none. They are checked
        together in one pass (the same checks and messages as ``put``).

        Raises:
            InputError: some requests are invalid or repeat an accepted ``custom_id``; every
                problem is listed by its 1-based position, and none of them was accepted.
        """
        lines = self._intake.many(requests)
        if not lines:
            return
        await self._admit(len(lines))
        await self._open_log().append(lines, single=False)
        self._accepted()

    def put_threadsafe(self, request: object) -> None:
        """``put`` from a thread that is not the event loop's (a sync producer); blocks until
        the request is durable. Same errors as ``put``."""
        if self._token is None:
            raise ClosedError(f"stream {self.name!r} is not open")
        anyio.from_thread.run(self.put, request, token=self._token)

    async def _admit(self, count: int) -> None:
        """Wait while taking ``count`` more lines would pass ``max_pending``."""
        while True:
            self._check_open()
            pending = self.pending
            if pending == 0 or pending + count <= self._max_pending:
                return
            event = self._progress
            await event.wait()

    def _accepted(self) -> None:
        if self._drained.is_set():
            self._drained = anyio.Event()

    # ---- results ---------------------------------------------------------------------------

    async def results(self) -> AsyncIterator[Result]:
        """Final results (``Succeeded | Errored | Expired | Canceled``) as batches finish.

        Starts with every result not yet acknowledged (after a restart too), in the order
        they were committed. Ends when the stream closes, or once ``drain()`` finished and
        every result was yielded.
        """
        delivery = self._open_delivery()
        async for result in delivery.results(self._drained):
            yield result

    async def ack(self, result: Result) -> None:
        """Acknowledge a result from ``results()``: it is not delivered again after a
        restart. Returns once that is durable; concurrent acks share one transaction.

        Raises:
            UsageError: the result was not delivered by this stream, or was acknowledged.
        """
        await self._open_delivery().ack(result)

    async def drain(self) -> ResultCounts:
        """Cut the open segments now and wait until every accepted line has its final result.

        Returns:
            the counts of the stream's final results over its life.
        """
        log = self._open_log()
        while self.pending > 0:
            self._check_open()
            event = self._progress
            if log.open_segments:  # the open ones, and any a concurrent put opened since
                await log.seal(due_only=False)
            await event.wait()
        self._drained.set()
        self._open_delivery().notify()
        assert self._ctx is not None
        return self._ctx.run.counts

    # ---- state -----------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Lines accepted that have no final result yet."""
        return (self._log.accepted if self._log is not None else 0) - self._finished

    def statistics(self) -> StreamStatistics:
        """A snapshot of the stream's progress."""
        log, ctx, delivery = self._log, self._ctx, self._delivery
        if log is None or ctx is None or delivery is None:
            raise ClosedError(f"stream {self.name!r} is not open")
        counts = ResultCounts()
        counts.merge(ctx.run.counts)
        return StreamStatistics(
            name=self.name,
            run_id=self.run_id,
            accepted=log.accepted,
            finished=self._finished,
            pending=self.pending,
            open_segments=len(log.open_segments),
            batches_created=ctx.batches_created,
            put_rounds=log.rounds,
            acks=delivery.acks,
            results=counts,
        )

    async def _commit_results(
        self, length: int, shards: list[ShardRecord], counts: ResultCounts
    ) -> None:
        assert self._ctx is not None
        assert self._delivery is not None
        assert self._sink is not None
        assert self._parts is not None
        await self._ctx.commit_results(length, shards, counts)
        with anyio.CancelScope(shield=True):  # a new part is the sink's at once
            try:
                part = await run_io(self._parts.rotate, length)
            except OSError as exc:  # the results are committed: rotate after a later commit
                logger.warning("stream %s: cannot start a new results part (%s)", self.name, exc)
            else:
                if part is not None:
                    self._sink.path = part
        self._finished += counts.total
        self._delivery.grew(length)
        event, self._progress = self._progress, anyio.Event()
        event.set()
        await remove_files([Path(s.path) for s in shards if s.state == "done"])

    async def _settle(self) -> None:
        assert self._log is not None
        await self._log.settle()

    def _check_open(self) -> None:
        if self._closed or self._log is None:
            raise ClosedError(f"stream {self.name!r} is closed")

    def _open_log(self) -> SegmentLog:
        self._check_open()
        assert self._log is not None
        return self._log

    def _open_delivery(self) -> Delivery:
        if self._delivery is None:
            raise ClosedError(f"stream {self.name!r} is not open")
        return self._delivery

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open" if self._log is not None else "new"
        return f"<Stream {self.name!r} {state} pending={self.pending}>"


def _stream_run_id(name: str, provider: Provider) -> str:
    h = hashlib.blake2b(digest_size=12)
    for part in ("stream", name, provider.name, provider.base_url):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()
