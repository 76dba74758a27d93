"""``Pump`` and ``Run``: the public face of the engine.

A ``Pump`` owns one provider and one journal; ``submit`` checks and shards an input and starts
the engine on it in the pump's task group; the ``Run`` it returns is how the caller follows
that run (wait, results, statistics, cancel).

::

    async with Pump(OpenAI(), state_dir=".batchpump") as pump:
        run = await pump.submit("requests.jsonl", endpoint="/v1/chat/completions")
        async for result in run.results():
            ...
        await run.wait()

A run is identified by a hash of its input's bytes, the provider, its base URL and settings
(TELUS ``work_flow_id``, LlamaCloud job type and configuration), the endpoint and the options
that change what is sent, so submitting the same thing again resumes the earlier run instead of
paying for it twice (``fresh=True`` starts over on purpose). Options that only change how it is
sent (``max_attempts``, ``token_budget``, concurrency, polling) apply to the continued run.

One results file, one run: the journal records which run owns each results path. A new run
pointed at a file another run owns, or at an existing file no run of this journal wrote, is
refused (``ResultsFileError``, the file untouched) unless ``overwrite=True``; ``fresh=True``
may take over the file of an earlier run of the same input. Submitting the same input with
another ``out`` than its run has is refused too, naming both ways out.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import logging
import os
import shutil
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Final, Self, final

import anyio
import msgspec
from anyio.abc import TaskGroup

from ._clock import Clock, SystemClock
from ._config import RunOptions
from ._engine import (
    AttemptClaims,
    Engine,
    PartWriter,
    RebuildReport,
    ResultSink,
    RunContext,
    RunStatistics,
    TokenBudget,
    rebuild_results,
    results_file_error,
)
from ._errors import ClosedError, JournalError, ResultsFileError, UsageError, unwrap_group
from ._fileio import run_io
from ._input import SpoolItem, hash_file, shard_file, spool
from ._journal import Journal, PostgresJournal, SqliteJournal, connect_journal
from ._models import Rejected, Result, ResultCounts, RunRecord, ShardRecord
from ._provider import Provider
from ._ratelimit_redis import RedisLimiter
from ._stream import Stream
from ._workers import (
    DEFAULT_LEASE_SECONDS,
    UNSHARDED,
    StoredResults,
    drive_claimed,
    finish_stored,
    hold_unsharded,
    prepare_leased,
    stored_results_path,
    tail_stored,
)

__all__ = ["Pump", "Run", "default_results_path", "prune_run_files"]

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
        journal: a ``Journal`` to use instead of the SQLite one in ``state_dir``, or where to
            open one: a ``postgresql://`` URL (a ``PostgresJournal``, which several workers
            can share) or an SQLite file. A journal opened here is closed with the pump.
        clock: the clock every wait goes through (tests pass a fast one).
        limiter: a ``redis://`` URL: the provider's rate limits and 429 pauses are shared
            with every other worker given the same URL and key (``_ratelimit_redis``).
            Without it, each process keeps its own limits.
        lease_seconds: with a PostgreSQL journal, the term of a run's lease and of the claims
            on its shard attempts: workers given the same run split its attempts, and the
            attempts of one that is killed are taken over this long after its last renewal
            (``_workers``).
    """

    def __init__(
        self,
        provider: Provider,
        *,
        state_dir: str | os.PathLike[str] = ".batchpump",
        journal: Journal | str | os.PathLike[str] | None = None,
        clock: Clock | None = None,
        limiter: str | None = None,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
    ) -> None:
        self.provider = provider
        self._limiter_url = limiter
        self._limiter: RedisLimiter | None = None
        if lease_seconds <= 0:
            raise UsageError(f"lease_seconds must be > 0, got {lease_seconds!r}")
        self._lease_seconds = lease_seconds
        self.state_dir = Path(state_dir)
        self._journal_at: str | os.PathLike[str] | None = None
        self._journal: Journal | None = None
        if isinstance(journal, str | os.PathLike):
            self._journal_at = journal
        else:
            self._journal = journal
        self._own_journal = self._journal is None
        self._clock = clock or SystemClock()
        self._tg: TaskGroup | None = None
        self._state = _State.NEW
        self._runs: dict[str, Run] = {}

    async def __aenter__(self) -> Self:
        if self._state is not _State.NEW:
            raise ClosedError("a Pump can be entered once")
        if self._limiter_url is not None:
            share = getattr(self.provider, "share_limits", None)
            if share is None:
                raise UsageError(f"the {self.provider.name} adapter cannot share its limits")
            self._limiter = await RedisLimiter.connect(self._limiter_url)
            share(self._limiter)
        try:
            if self._journal_at is not None:
                self._journal = await connect_journal(self._journal_at)
            elif self._journal is None:
                self._journal = await SqliteJournal.open(self.state_dir / JOURNAL_NAME)
        except BaseException:
            if self._limiter is not None:
                await self._limiter.aclose()
            raise
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
            if self._limiter is not None:
                await self._limiter.aclose()

    @property
    def journal(self) -> Journal:
        if self._state is not _State.OPEN or self._journal is None:
            raise ClosedError("use the Pump inside 'async with Pump(...) as pump:'")
        return self._journal

    async def submit(
        self,
        source: str | os.PathLike[str] | AsyncIterable[SpoolItem],
        *,
        endpoint: str = "/v1/chat/completions",
        out: str | os.PathLike[str] | None = None,
        options: RunOptions | None = None,
        fresh: bool = False,
        overwrite: bool = False,
    ) -> Run:
        """Validate, shard and start a run; return at once with a ``Run`` to follow it.

        Args:
            source: a JSONL file, or an async iterable of requests, spooled to
                disk: each item is a JSONL line (``bytes``/``str``; a missing newline is
                added) or one request (a ``dict`` or a ``msgspec.Struct``).
            endpoint: the endpoint every line targets; lines may omit ``url``/``method``.
            out: the results file (default: ``<input>.results.jsonl`` beside a file input,
                or ``results.jsonl`` in the run's directory).
            options: retries, limits, polling (``RunOptions``); ``endpoint`` wins over
                ``options.endpoint``.
            fresh: start a new run even if this exact one exists in the journal (it may take
                over the results file of an earlier run of the same input).
            overwrite: replace ``out`` even if another run owns it or it exists.

        Raises:
            InputError: the input has bad lines (``options.on_invalid="raise"``); nothing was sent.
            ResultsFileError: ``out`` belongs to another run or exists (without ``overwrite``),
                or this input's run writes to another file; nothing was sent.
        """
        _ = self.journal  # the pump is open
        opts = msgspec.structs.replace(options or RunOptions(), endpoint=endpoint)
        path = await self._materialize(source)
        spooled = isinstance(source, AsyncIterable)
        try:
            return await self._submit(path, spooled, out, opts, fresh, overwrite)
        except Exception:  # a cancellation keeps the run (and its spool) for resume
            if spooled and not any(r.input_path == str(path.resolve()) for r in self._records()):
                with anyio.CancelScope(shield=True):
                    await run_io(partial(path.unlink, missing_ok=True))
            raise

    def _records(self) -> list[RunRecord]:
        return [run._ctx.run for run in self._runs.values()]

    async def _submit(
        self,
        path: Path,
        spooled: bool,
        out: str | os.PathLike[str] | None,
        opts: RunOptions,
        fresh: bool,
        overwrite: bool,
    ) -> Run:
        journal = self.journal
        input_hash = await run_io(hash_file, path)
        settings = provider_settings(self.provider)
        run_id = self._run_id(input_hash, opts, settings, fresh)
        if out is None:
            out_path = (
                default_results_path(path)
                if not spooled
                else self._run_dir(run_id) / "results.jsonl"
            )
        else:
            out_path = Path(out)
        record = RunRecord(
            run_id=run_id,
            provider=self.provider.name,
            base_url=self.provider.base_url,
            endpoint=opts.endpoint,
            input_path=str(path.resolve()),  # noqa: ASYNC240 (as before: a quick stat)
            out_path=str(out_path.resolve()),
            created_at=self._clock.time(),
            options=msgspec.Raw(_options_encoder.encode(opts)),
            input_hash=input_hash,
            settings=settings,
        )
        out_existed = await anyio.Path(out_path).exists()
        await self._check_out(record, out_given=out is not None, overwrite=overwrite, fresh=fresh)
        stored, created = await journal.open_run(record)
        if not created:
            logger.info(
                "run %s (this input, provider, endpoint and sharding) exists: continuing it; "
                "this call's retry, budget and polling options apply",
                run_id,
            )
        if spooled and stored.input_path != record.input_path:
            # The same content was submitted before: that run keeps its own spool file.
            await run_io(partial(path.unlink, missing_ok=True))
        record = stored
        if run_id in self._runs:
            return self._runs[run_id]
        try:
            return await self._start(record, opts)
        except Exception:
            if created:  # a run that failed before it started leaves nothing behind
                with anyio.CancelScope(shield=True):
                    await journal.delete_run(run_id)
                    await run_io(_forget_run, self._run_dir(run_id), out_path, out_existed)
            raise

    async def _check_out(
        self, record: RunRecord, *, out_given: bool, overwrite: bool, fresh: bool
    ) -> None:
        """Refuse a submit whose results file is another run's, or not this run's file."""
        existing = await self.journal.get_run(record.run_id)
        if existing is None:
            await self._claim(record, overwrite=overwrite, fresh=fresh)
        elif existing.out_taken_by is not None:
            raise ResultsFileError(_taken_message(existing))
        elif out_given and existing.out_path != record.out_path:
            if isinstance(self.journal, PostgresJournal):
                # Workers share the run: its results live in the journal, and the worker that
                # sees it finish writes the run's own file; this worker's --out is not used.
                logger.info(
                    "run %s writes its results to %s (the run's file), not %s",
                    record.run_id,
                    existing.out_path,
                    record.out_path,
                )
                return
            raise ResultsFileError(
                f"this input was already run as run {record.run_id}, whose results go to "
                f"{existing.out_path}, not {record.out_path}; nothing was sent. To continue that "
                f"run, give its file (--out {existing.out_path}); to start a new run that sends "
                "every line again into the new file, add --fresh (API: fresh=True)"
            )

    async def _claim(self, record: RunRecord, *, overwrite: bool, fresh: bool) -> None:
        """Make ``record`` (a new run) the owner of its results file, or refuse."""
        out = Path(record.out_path)
        if await run_io(out.is_dir):
            raise ResultsFileError(
                f"results file {out} is a directory; nothing was sent. Give a file path for "
                f"--out, such as {out / 'results.jsonl'}"
            )
        owners = [
            run
            for run in await self.journal.list_runs()
            if run.out_path == record.out_path
            and run.out_taken_by is None
            and run.run_id != record.run_id  # another worker opened this run meanwhile
        ]
        if owners:
            owner = owners[-1]
            allowed = overwrite or (fresh and owner.input_hash == record.input_hash)
            if not allowed and not await self._paid_nothing(owner):
                raise ResultsFileError(_owned_message(owner, record))
            for run in owners:
                run.out_taken_by = record.run_id
                await self.journal.commit(run=run)
                logger.warning(
                    "%s held the results of run %s; run %s replaces them",
                    out,
                    run.run_id,
                    record.run_id,
                )
            return
        size = await run_io(_size, out)
        if size and not overwrite:
            raise ResultsFileError(
                f"results file {out} exists ({size:,} bytes) and no run in the journal at "
                f"{self.state_dir} wrote it; nothing was sent and the file is untouched. Give "
                "another --out, or pass --overwrite (API: overwrite=True) to replace it"
            )

    async def _paid_nothing(self, run: RunRecord) -> bool:
        """Whether ``run`` never created a batch (stopped by a wrong setting, say): its file
        holds no paid result, so a run that fixes the setting may take it over."""
        if run.counts.total > run.counts.rejected:
            return False
        shards = await self.journal.load_shards(run.run_id)
        return not any(s.batch_id is not None or s.tag is not None for s in shards)

    async def rebuild_results(self, run_id: str) -> RebuildReport:
        """Write a run's results file anew after it was deleted or cut short.

        Keeps the complete lines of what is left of it, downloads the output of the run's
        settled batches again where the provider still has it, and reports the lines it cannot
        recover (``RebuildReport``). The journal then commits the new file's length, so the run
        can be resumed or read as usual.

        Raises:
            UsageError: no such run, it is running in this pump, or it no longer owns a file.
        """
        if run_id in self._runs:
            raise UsageError(f"run {run_id} is running in this pump; rebuild it once it stopped")
        record = await self._stored_run(run_id)
        shards = await self.journal.load_shards(run_id)
        rejected = await self._rejected_again(record) if record.counts.rejected else []
        report, counts, length = await rebuild_results(self.provider, record, shards, rejected)
        record.out_offset = length
        record.counts = counts
        await self.journal.commit(run=record)
        return report

    async def _rejected_again(self, record: RunRecord) -> list[Rejected]:
        """The run's ``Rejected`` results, by checking its input again (if it is unchanged)."""
        path = Path(record.input_path)
        if (
            not await anyio.Path(path).is_file()
            or await run_io(hash_file, path) != record.input_hash
        ):
            logger.warning("%s is gone or changed: its rejected lines cannot be rebuilt", path)
            return []
        opts = msgspec.json.decode(record.options, type=RunOptions)
        scratch = self._run_dir(record.run_id) / "rebuild-check"
        outcome = await run_io(
            lambda: shard_file(
                path,
                out_dir=scratch,
                run_id=record.run_id,
                endpoint=opts.endpoint,
                capabilities=self.provider.capabilities,
                max_lines=opts.max_lines,
                max_bytes=opts.max_bytes,
                on_invalid=opts.on_invalid,
                line_checker=self.provider.line_checker,
            )
        )
        await run_io(_remove, [Path(s.path) for s in outcome.shards])
        return outcome.rejected

    async def check_results(self, run_id: str) -> str | None:
        """What is wrong with a run's results file (missing, cut short), or ``None``."""
        record = await self._stored_run(run_id)
        size = await run_io(_size, Path(record.out_path))
        if not record.out_offset or (size is not None and size >= record.out_offset):
            return None
        hint = self._rebuild_hint(run_id)
        return str(
            results_file_error(
                Path(record.out_path), record.out_offset, size, run_id=run_id, hint=hint
            )
        )

    async def _stored_run(self, run_id: str) -> RunRecord:
        record = await self.journal.get_run(run_id)
        if record is None:
            raise UsageError(f"no run {run_id!r} in the journal at {self.state_dir}")
        if record.out_taken_by is not None:
            raise ResultsFileError(_taken_message(record))
        return record

    async def resume(self, run_id: str, *, cancel: bool = False) -> Run:
        """Continue a run from the journal (after a crash, a stop or a fix).

        A run whose cancel was requested (``cancel=True`` here, ``Pump.cancel``, ``Run.cancel``
        before a crash) finishes cancelling: no new batch is created, the open ones are
        cancelled, every line settles. With ``cancel=True`` the intent is journaled before
        anything is sent.
        """
        if run_id in self._runs:
            run = self._runs[run_id]
            if cancel:
                run.cancel()
            return run
        record = await self.journal.get_run(run_id)
        if record is None:
            raise UsageError(f"no run {run_id!r} in the journal at {self.state_dir}")
        if cancel and not record.cancel_requested and record.state not in ("done", "cancelled"):
            record.cancel_requested = True
            if isinstance(self.journal, PostgresJournal) and record.state not in UNSHARDED:
                # Other workers may be committing to the run: merge, do not replace its record.
                self.journal.start_claims(run_id, self._lease_seconds)
            await self.journal.commit(run=record)
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
        run = await self.resume(run_id, cancel=True)
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
        rotate_bytes: int = 64 * 1024 * 1024,
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
            rotate_bytes: the results file is continued in a new part once it holds this
                many bytes; parts whose results were all acknowledged are removed.
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
            rotate_bytes=rotate_bytes,
            options=options or RunOptions(),
        )

    async def runs(self) -> list[RunRecord]:
        """Every run in the journal."""
        return await self.journal.list_runs()

    async def _start(self, record: RunRecord, opts: RunOptions) -> Run:
        journal = self.journal
        if record.out_taken_by is not None:
            raise ResultsFileError(_taken_message(record))
        if not isinstance(journal, PostgresJournal) or record.state not in UNSHARDED:
            return await self._start_held(record, opts)
        # Other workers may share the run (``_workers``): one shards it, under the run's lease;
        # the others wait until the shards exist.
        ttl, clock = self._lease_seconds, self._clock
        held = await hold_unsharded(journal, record.run_id, ttl=ttl, clock=clock)
        if held is None:
            sharded = await journal.get_run(record.run_id)
            if sharded is None:
                raise UsageError(
                    f"run {record.run_id} was removed while this worker waited for its shards "
                    "(sharding it failed in another worker: see that worker's error); fix the "
                    "cause and run the same command again"
                )
            return await self._start_held(sharded, opts)
        try:
            start = partial(self._start_held, held, opts)
            return await prepare_leased(start, journal, record.run_id, ttl=ttl, clock=clock)
        finally:
            with anyio.CancelScope(shield=True), contextlib.suppress(JournalError):
                await journal.release_run(record.run_id)  # else it lapses on its own

    async def _start_held(self, record: RunRecord, opts: RunOptions) -> Run:
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
            cancelled=record.cancel_requested,
        )
        on_done: Callable[[], Awaitable[object]] | None = None
        if isinstance(journal, PostgresJournal):
            # Results live in the journal; this worker's file is a scratch file of the results
            # it settles itself, and every worker that sees the run finish writes ``out_path``
            # from the journal.
            path = stored_results_path(run_dir, journal.owner)
            sink = ResultSink(
                path,
                0,
                StoredResults(ctx, journal, path),
                run_id=record.run_id,
                rebuild_hint=self._rebuild_hint(record.run_id),
            )
            on_done = partial(finish_stored, journal, record.run_id, Path(record.out_path), path)
        else:
            sink = ResultSink(
                Path(record.out_path),
                record.out_offset,
                ctx.commit_results,
                run_id=record.run_id,
                rebuild_hint=self._rebuild_hint(record.run_id),
            )
        await sink.open()
        if record.state in UNSHARDED:
            await self._shard(ctx, sink, Path(record.input_path), run_dir)
        shards = await journal.load_shards(record.run_id)
        finished = record.state in ("done", "cancelled")
        run = Run(ctx, sink, None if finished else Engine(ctx, sink), on_done=on_done)
        self._runs[record.run_id] = run
        assert self._tg is not None
        name = f"batchpump run {record.run_id}"
        if isinstance(journal, PostgresJournal):
            run._tail = partial(tail_stored, journal, record.run_id, lambda: run.done, self._clock)
        if isinstance(journal, PostgresJournal) and not finished:
            drive = partial(
                drive_claimed,
                run,
                ctx,
                shards,
                journal,
                ttl=self._lease_seconds,
                clock=self._clock,
            )
            self._tg.start_soon(drive, name=name)
        else:
            self._tg.start_soon(run._drive, shards, name=name)
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
                line_checker=self.provider.line_checker,
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

    async def _materialize(self, source: str | os.PathLike[str] | AsyncIterable[SpoolItem]) -> Path:
        if isinstance(source, AsyncIterable):
            return await spool(source, self.state_dir / "spool")
        path = anyio.Path(source)
        if not await path.exists():
            raise UsageError(f"{path}: no such file")
        if await path.is_dir():
            raise UsageError(f"{path} is a directory; give the JSONL file inside it")
        return Path(path)

    def _rebuild_hint(self, run_id: str) -> str:
        journal = "" if self.state_dir == Path(".batchpump") else f" --journal {self.state_dir}"
        return f"batchpump results {run_id} --rebuild{journal}"

    def _run_id(
        self, input_hash: str, opts: RunOptions, settings: dict[str, str], fresh: bool
    ) -> str:
        h = hashlib.blake2b(digest_size=12)
        for part in (
            input_hash,
            self.provider.name,
            self.provider.base_url,
            opts.endpoint,
            str(opts.max_lines),
            str(opts.max_bytes),
            opts.on_invalid,
            *(f"{k}={v}" for k, v in sorted(settings.items())),
            uuid.uuid4().hex if fresh else "",
        ):
            h.update(part.encode())
            h.update(b"\0")
        return h.hexdigest()

    def _run_dir(self, run_id: str) -> Path:
        return self.state_dir / "runs" / run_id

    def __repr__(self) -> str:
        return f"<Pump {self.provider.name} {self._state.value} runs={len(self._runs)}>"


@final
class Run:
    """One submitted run: wait for it, iterate its results, read its statistics."""

    def __init__(
        self,
        ctx: RunContext,
        sink: ResultSink,
        engine: Engine | None,
        *,
        on_done: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self._ctx = ctx
        self._on_done = on_done  # once every line has its result, before ``wait`` returns
        self._sink = sink
        self._engine = engine
        self._finished = anyio.Event()
        self._error: BaseException | None = None
        self._stopped_by: BaseException | None = None
        #: Where ``results`` reads from instead of the results file (a PostgreSQL journal).
        self._tail: Callable[[], AsyncIterator[Result]] | None = None

    @property
    def id(self) -> str:
        return self._ctx.run.run_id

    @property
    def results_path(self) -> Path:
        return Path(self._ctx.run.out_path)

    @property
    def done(self) -> bool:
        return self._finished.is_set()

    def statistics(self) -> RunStatistics:
        """A frozen snapshot of the run's progress."""
        return self._ctx.statistics()

    async def wait(self) -> ResultCounts:
        """Wait until every line has its final result; return the counts.

        Raises:
            BatchpumpError: what stopped the run (an ``AuthenticationError``, a journal error...).
                The run can be resumed once the cause is fixed.
        """
        await self._finished.wait()
        if self._error is not None:
            raise self._error
        return self._ctx.run.counts

    async def results(self) -> AsyncIterator[Result]:
        """Every final result of the run, once each, as they are committed (from the start)."""
        async for result in self._sink.tail(0) if self._tail is None else self._tail():
            yield result
        if self._error is not None:
            raise self._error

    def cancel(self) -> None:
        """Stop the run: nothing new is sent, in-flight batches are cancelled, lines settle."""
        if self._engine is not None:
            self._engine.cancel()

    def _stop(self, reason: BaseException) -> None:
        """Say why the run is about to be cancelled from outside (``wait`` raises ``reason``)."""
        self._stopped_by = reason

    async def _drive(self, shards: list[ShardRecord], claims: AttemptClaims | None = None) -> None:
        ctx = self._ctx
        try:
            if self._engine is not None:
                await self._engine.run(shards, claims)
            ctx.run.state = "cancelled" if ctx.cancelled else "done"
            await ctx.commit(run=True)
            if self._on_done is not None:  # a PostgreSQL journal: write out_path from it
                await self._on_done()
            if not ctx.options.keep_shards:
                await run_io(prune_run_files, Path(ctx.work_dir), Path(ctx.run.input_path))
        except BaseException as exc:
            self._error = self._stopped_by or unwrap_group(exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            self._sink.finish()
            self._finished.set()

    def __repr__(self) -> str:
        s = self.statistics()
        return f"<Run {self.id} {s.state} {s.results.total}/{s.total_lines} lines>"


def default_results_path(source: Path) -> Path:
    """``requests.jsonl`` -> ``requests.results.jsonl``, beside the input."""
    return source.with_name(source.name.removesuffix(".jsonl") + ".results.jsonl")


def provider_settings(provider: Provider) -> dict[str, str]:
    """The provider's settings that shape what is sent (part of a run's identity): an
    adapter's optional ``settings`` mapping (TELUS ``work_flow_id``, LlamaCloud job type).
    A wrapper around a provider should forward it, or its runs get another identity."""
    found: object = getattr(provider, "settings", None)
    if not isinstance(found, dict):
        return {}
    return {str(k): str(v) for k, v in found.items() if v is not None}


def _differences(old: RunRecord, new: RunRecord) -> list[str]:
    """What makes ``new`` another run than ``old`` (for messages)."""
    out: list[str] = []
    if old.input_hash != new.input_hash:
        out.append("the input's content")
    out.extend(
        f"{name} ({getattr(old, name)} -> {getattr(new, name)})"
        for name in ("provider", "base_url", "endpoint")
        if getattr(old, name) != getattr(new, name)
    )
    if old.settings != new.settings:
        out.append(f"provider settings ({old.settings} -> {new.settings})")
    if bytes(old.options) != bytes(new.options) and len(out) == 0:
        out.append("options (--max-lines, --max-bytes, --on-invalid)")
    return out


def _owned_message(owner: RunRecord, record: RunRecord) -> str:
    what = ", ".join(_differences(owner, record)) or "a fresh start"
    same = owner.input_hash == record.input_hash
    fix = (
        "add --fresh (API: fresh=True) to start a new run that sends every line again and "
        "replaces those results, or give this run another --out"
        if same
        else "give this run another --out, or pass --overwrite (API: overwrite=True) to "
        "replace those results"
    )
    return (
        f"results file {record.out_path} holds the results of run {owner.run_id} "
        f"({owner.state}, {owner.counts.total:,}/{owner.total_lines:,} lines); this is another "
        f"run (differs in: {what}). Nothing was sent and the file is untouched: {fix}"
    )


def _taken_message(record: RunRecord) -> str:
    return (
        f"run {record.run_id} no longer owns a results file: run {record.out_taken_by} took "
        f"over {record.out_path} (--overwrite). Nothing was sent; to run its input anew, "
        "submit it with --fresh and another --out (API: fresh=True, out=...)"
    )


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None


def prune_run_files(run_dir: Path, input_path: Path | None = None) -> int:
    """Remove a finished run's shard files (copies of its input), leftover parts and its
    spooled input (when ``input_path`` is a spool beside the run); return the bytes freed.
    The journal and the results file are kept."""
    freed = 0
    if input_path is not None and input_path.parent == run_dir.parent.parent / "spool":
        with contextlib.suppress(OSError):
            size = input_path.stat().st_size
            input_path.unlink()
            freed += size
    for sub in ("shards", "parts"):
        directory = run_dir / sub
        if not directory.is_dir():
            continue
        for path in directory.iterdir():
            with contextlib.suppress(OSError):
                size = path.stat().st_size
                path.unlink()
                freed += size
        with contextlib.suppress(OSError):
            directory.rmdir()
    return freed


def _forget_run(run_dir: Path, out_path: Path, out_existed: bool) -> None:
    """Undo what a run that failed before it started left: its directory and an empty
    results file it created."""
    shutil.rmtree(run_dir, ignore_errors=True)
    with contextlib.suppress(OSError):
        if not out_existed and out_path.stat().st_size == 0:
            out_path.unlink()


def _remove(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def _rejected_part(run_dir: Path, rejected: list[Rejected]) -> PartWriter:
    part = PartWriter(run_dir / "parts" / "rejected.part")
    for result in rejected:
        part.add(result)
    return part
