"""``Pump`` and ``Run``: the public face of the engine.

::

    async with Pump(OpenAI(), state_dir=".batchpump") as pump:
        run = await pump.submit("requests.jsonl", endpoint="/v1/chat/completions")
        async for result in run.results():
            ...
        await run.wait()

A run is identified by a hash of its input's bytes, the provider and base URL, the endpoint and
the options that change what is sent, so submitting the same thing again resumes the earlier
run instead of paying for it twice (``fresh=True`` starts over on purpose).
"""

from __future__ import annotations

import enum
import hashlib
import logging
import os
import uuid
from collections.abc import AsyncIterable
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Final, Self, final

import anyio
import msgspec
from anyio.abc import TaskGroup

from ._clock import Clock, SystemClock
from ._engine import Engine, PartWriter, ResultSink, RunContext, RunOptions, TokenBudget
from ._errors import ClosedError, UsageError, unwrap_group
from ._fileio import run_io
from ._input import hash_file, shard_file, spool
from ._journal import Journal, SqliteJournal
from ._models import Rejected, ResultCounts, RunRecord
from ._provider import Provider
from ._run import Run
from ._stream import Stream

__all__ = ["Pump", "Run", "default_results_path"]

logger: Final = logging.getLogger("batchpump")

JOURNAL_NAME: Final = "journal.sqlite3"
_options_encoder: Final = msgspec.json.Encoder()


class _State(enum.Enum):
    NEW = "new"
    OPEN = "open"
    CLOSED = "closed"


@final
class Pump:
    """Runs request sets through one provider, with a durable journal.

    Args:
        provider: the adapter (``batchpump.providers.openai.OpenAI(...)``...). The pump closes it.
        state_dir: where the journal and the shard files live (default ``.batchpump``).
        journal: a ``Journal`` to use instead of the SQLite one in ``state_dir``.
        clock: the clock every wait goes through (tests pass a fast one).
    """

    def __init__(
        self,
        provider: Provider,
        *,
        state_dir: str | os.PathLike[str] = ".batchpump",
        journal: Journal | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.provider = provider
        self.state_dir = Path(state_dir)
        self._journal = journal
        self._own_journal = journal is None
        self._clock = clock or SystemClock()
        self._tg: TaskGroup | None = None
        self._state = _State.NEW
        self._runs: dict[str, Run] = {}

    async def __aenter__(self) -> Self:
        if self._state is not _State.NEW:
            raise ClosedError("a Pump can be entered once")
        if self._journal is None:
            self._journal = await SqliteJournal.open(self.state_dir / JOURNAL_NAME)
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._state = _State.OPEN
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Wait for the pump's runs; on an error in the block, cancel them first.

        An error raised in the block propagates unchanged; one run that fails with a
        ``BaseException`` (a cancellation or a ``KeyboardInterrupt``) propagates unwrapped.
        """
        try:
            if self._tg is not None:
                if exc is not None:
                    self._tg.cancel_scope.cancel()
                try:
                    await self._tg.__aexit__(None, None, None)
                except BaseExceptionGroup as group:
                    raise unwrap_group(group) from None
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        if self._state is _State.CLOSED:
            return
        self._state = _State.CLOSED
        with anyio.CancelScope(shield=True):
            await self.provider.aclose()
            if self._journal is not None and self._own_journal:
                await self._journal.aclose()

    @property
    def journal(self) -> Journal:
        if self._state is not _State.OPEN or self._journal is None:
            raise ClosedError("use the Pump inside 'async with Pump(...) as pump:'")
        return self._journal

    async def submit(
        self,
        source: str | os.PathLike[str] | AsyncIterable[bytes | str],
        *,
        endpoint: str = "/v1/chat/completions",
        out: str | os.PathLike[str] | None = None,
        options: RunOptions | None = None,
        fresh: bool = False,
    ) -> Run:
        """Validate, shard and start a run; return at once with a ``Run`` to follow it.

        Args:
            source: a JSONL file, or an async iterable of JSONL bytes (spooled to disk).
            endpoint: the endpoint every line targets; lines may omit ``url``/``method``.
            out: the results file (default: ``<input>.results.jsonl`` beside a file input,
                or ``results.jsonl`` in the run's directory).
            options: retries, limits, polling (``RunOptions``); ``endpoint`` wins over
                ``options.endpoint``.
            fresh: start a new run even if this exact one exists in the journal.

        Raises:
            InputError: the input has bad lines (``options.on_invalid="raise"``); nothing was sent.
        """
        journal = self.journal
        opts = msgspec.structs.replace(options or RunOptions(), endpoint=endpoint)
        path = await self._materialize(source)
        input_hash = await run_io(hash_file, path)
        run_id = self._run_id(input_hash, opts, fresh)
        if out is None:
            out_path = (
                default_results_path(path)
                if not isinstance(source, AsyncIterable)
                else self._run_dir(run_id) / "results.jsonl"
            )
        else:
            out_path = Path(out)
        record = RunRecord(
            run_id=run_id,
            provider=self.provider.name,
            base_url=self.provider.base_url,
            endpoint=opts.endpoint,
            input_path=str(path.resolve()),
            out_path=str(out_path.resolve()),
            created_at=self._clock.time(),
            options=msgspec.Raw(_options_encoder.encode(opts)),
            input_hash=input_hash,
        )
        stored, _ = await journal.open_run(record)
        if isinstance(source, AsyncIterable) and stored.input_path != record.input_path:
            # The same content was submitted before: that run keeps its own spool file.
            await run_io(partial(path.unlink, missing_ok=True))
        record = stored
        if run_id in self._runs:
            return self._runs[run_id]
        return await self._start(record, opts)

    async def resume(self, run_id: str) -> Run:
        """Continue a run from the journal (after a crash, a stop or a fix)."""
        if run_id in self._runs:
            return self._runs[run_id]
        record = await self.journal.get_run(run_id)
        if record is None:
            raise UsageError(f"no run {run_id!r} in the journal at {self.state_dir}")
        if (record.provider, record.base_url) != (self.provider.name, self.provider.base_url):
            raise UsageError(
                f"run {run_id} was made with {record.provider} at {record.base_url}; "
                f"resume it with the same provider (this pump has {self.provider.name} "
                f"at {self.provider.base_url})"
            )
        opts = msgspec.json.decode(record.options, type=RunOptions)
        return await self._start(record, opts)

    async def cancel(self, run_id: str) -> ResultCounts:
        """Cancel a run: nothing new is sent, provider batches are cancelled, lines settle
        (mostly as ``Canceled``). Works on a run of this pump or one only in the journal."""
        run = self._runs.get(run_id) or await self.resume(run_id)
        run.cancel()
        return await run.wait()

    def stream(
        self,
        name: str,
        *,
        endpoint: str = "/v1/chat/completions",
        flush_lines: int = 50_000,
        flush_bytes: int | None = None,
        flush_after: float = 300.0,
        max_pending: int = 1_000_000,
        options: RunOptions | None = None,
    ) -> Stream:
        """A named, durable stream of requests: use it with ``async with``.

        ::

            async with pump.stream("orders", endpoint="/v1/chat/completions") as stream:
                await stream.put(request)
                async for result in stream.results():
                    await stream.ack(result)

        Opening a stream that exists (after a stop or a kill -9) resumes it.

        Args:
            name: the stream's name (letters, digits, ``.``, ``_``, ``-``).
            endpoint: the endpoint every line targets.
            flush_lines: a segment becomes a batch at this many lines (at most the provider's).
            flush_bytes: ... or this many bytes (``None``: the provider's limit).
            flush_after: ... or this many seconds after its first line.
            max_pending: ``put`` waits while more accepted lines than this have no result.
            options: retries, polling, concurrency (``RunOptions``; ``max_lines``/``max_bytes``
                cap the flush sizes too).
        """
        return Stream(
            name,
            provider=self.provider,
            journal=self.journal,
            clock=self._clock,
            state_dir=self.state_dir,
            endpoint=endpoint,
            flush_lines=flush_lines,
            flush_bytes=flush_bytes,
            flush_after=flush_after,
            max_pending=max_pending,
            options=options or RunOptions(),
        )

    async def runs(self) -> list[RunRecord]:
        """Every run in the journal."""
        return await self.journal.list_runs()

    async def _start(self, record: RunRecord, opts: RunOptions) -> Run:
        journal = self.journal
        run_dir = self._run_dir(record.run_id)
        ctx = RunContext(
            provider=self.provider,
            journal=journal,
            clock=self._clock,
            run=record,
            options=opts,
            work_dir=anyio.Path(run_dir),
            budget=TokenBudget(opts.token_budget),
        )
        sink = ResultSink(Path(record.out_path), record.out_offset, ctx.commit_results)
        await sink.open()
        if record.state in ("sharding", "failed"):
            await self._shard(ctx, sink, Path(record.input_path), run_dir)
        shards = await journal.load_shards(record.run_id)
        finished = record.state in ("done", "cancelled")
        run = Run(ctx, sink, None if finished else Engine(ctx, sink))
        self._runs[record.run_id] = run
        assert self._tg is not None
        self._tg.start_soon(run._drive, shards, name=f"batchpump run {record.run_id}")
        return run

    async def _shard(self, ctx: RunContext, sink: ResultSink, path: Path, run_dir: Path) -> None:
        opts = ctx.options
        outcome = await run_io(
            lambda: shard_file(
                path,
                out_dir=run_dir / "shards",
                run_id=ctx.run.run_id,
                endpoint=opts.endpoint,
                capabilities=self.provider.capabilities,
                max_lines=opts.max_lines,
                max_bytes=opts.max_bytes,
                on_invalid=opts.on_invalid,
                item_check=getattr(self.provider, "check_line", None),
                item_group_field=getattr(self.provider, "item_group_field", None),
            )
        )
        if ctx.run.input_hash and outcome.input_hash != ctx.run.input_hash:
            # The bytes sharded are not the bytes the run id was made from: the file changed
            # (it is still being written?). Sending them would tie them to the wrong run.
            await run_io(_remove, [Path(s.path) for s in outcome.shards])
            raise UsageError(
                f"{path} changed while batchpump was reading it; wait until it is complete "
                "and run the same command again (nothing was sent)"
            )
        part = _rejected_part(run_dir, outcome.rejected)
        ctx.run.state = "running"
        ctx.run.total_lines = outcome.total_lines
        ctx.run.counts = ResultCounts()
        await sink.publish(part, outcome.shards, ResultCounts(rejected=len(outcome.rejected)))

    async def _materialize(
        self, source: str | os.PathLike[str] | AsyncIterable[bytes | str]
    ) -> Path:
        if isinstance(source, AsyncIterable):
            return await spool(source, self.state_dir / "spool")
        path = anyio.Path(source)
        if not await path.exists():
            raise UsageError(f"{path}: no such file")
        if await path.is_dir():
            raise UsageError(f"{path} is a directory; give the JSONL file inside it")
        return Path(path)

    def _run_id(self, input_hash: str, opts: RunOptions, fresh: bool) -> str:
        h = hashlib.blake2b(digest_size=12)
        for part in (
            input_hash,
            self.provider.name,
            self.provider.base_url,
            opts.endpoint,
            str(opts.max_lines),
            str(opts.max_bytes),
            opts.on_invalid,
            uuid.uuid4().hex if fresh else "",
        ):
            h.update(part.encode())
            h.update(b"\0")
        return h.hexdigest()

    def _run_dir(self, run_id: str) -> Path:
        return self.state_dir / "runs" / run_id

    def __repr__(self) -> str:
        return f"<Pump {self.provider.name} {self._state.value} runs={len(self._runs)}>"


def default_results_path(source: Path) -> Path:
    """``requests.jsonl`` -> ``requests.results.jsonl``, beside the input."""
    return source.with_name(source.name.removesuffix(".jsonl") + ".results.jsonl")


def _remove(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def _rejected_part(run_dir: Path, rejected: list[Rejected]) -> PartWriter:
    part = PartWriter(run_dir / "parts" / "rejected.part")
    for result in rejected:
        part.add(result)
    return part
