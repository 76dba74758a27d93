"""Several workers, one run: shard attempts claimed with leases on a PostgreSQL journal.

Workers given the same input and options compute the same run id, so with one
``PostgresJournal`` they all join the same run, and split its shard attempts between them:

- **Sharding** happens once, under the run's lease (``_journal.leases``): ``hold_run`` takes
  it (waiting, on the ``Clock``, while another live worker holds it), the run's record is read
  again (the other worker may have sharded it meanwhile), and ``prepare_leased`` shards it
  while renewing the lease. Then the lease is released; the other workers, which waited for
  it, find the shards there.
- **Claims.** Each worker then works the run by claims (``drive_claimed``): the engine's
  feeder keeps up to ``2 * submit_concurrency`` claimed attempts waiting for a create
  (``JournalClaims.claim``: ``SELECT ... FOR UPDATE SKIP LOCKED`` over the attempts nobody
  holds, or whose claim lapsed) and claims more as they get their batches or settle. Retries
  that collectors spawn (split and requeued attempts) are committed unclaimed, so any worker
  may claim them.
  A worker renews all its claims every third of their term in one statement; one that stops
  renewing (killed, frozen, cut off) loses them when they lapse, and another worker's feeder
  takes the attempts over. The run ends for a worker when no attempt of it is open anywhere.
- **Exactly once.** Each attempt's write-ahead intent, tag and reconcile are the engine's, as on
  SQLite: an attempt taken over in ``creating`` (its worker was killed between "create sent"
  and "create recorded") is looked for by its tag before the taker creates it, and adopted if
  the create got out. Every commit that writes an attempt is fenced by the attempt's claim,
  in the commit's transaction, with a third of the term to spare: a worker that lost a claim
  writes nothing for that attempt (its commit raises ``LeaseLostError`` and the worker stops,
  letting its other claims lapse to the others). A worker whose renewals failed must not
  create either: right before each create, ``JournalClaims.check`` refuses unless the claim
  was last renewed (or taken) less than two thirds of a term ago by this machine's monotonic
  clock. The window left: a worker that freezes *after* that check and *before* its request
  reaches the provider, for longer than the third of a term kept in hand, and whose attempt
  is meanwhile taken over, created and found missing by the taker's reconcile, makes a second
  batch for the tag. The end-of-run reconcile sweep (every worker runs it) finds it as a
  duplicate the journal does not hold and cancels it; the old worker's record of it is fenced.
- **Results** live in the journal. Each worker appends the results it settles to a scratch
  file of its own (``stored_results_path``), and each commit of them stores the appended lines
  in the journal (``StoredResults``), in the transaction that marks their attempts done, at the
  run's stored ``out_offset`` (the run's row is locked, so workers' result commits line up one
  after another, and a line is stored exactly when its attempt is settled, under its claim:
  once). ``Run.results`` reads them back from the journal (``tail_stored``), from any worker.
  Every worker that sees the run finish writes ``--out`` from the journal, complete, through a
  temporary file renamed into place (``export_results``, also ``batchpump export``).

Shard files are files under the sharding worker's state directory (their paths are in the
journal): a worker on another machine must see them at the same path (a shared mount), or the
input at the same path if the run is not sharded yet.
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Final, TypeVar, final

import anyio

from ._clock import Clock
from ._engine import decode_results
from ._errors import JournalError, UsageError, unwrap_group
from ._fileio import create_private, fsync_dir, run_io
from ._journal import FENCE_MARGIN_FRACTION, Journal, LeaseLostError, PostgresJournal
from ._models import Result, ResultCounts, RunRecord, ShardRecord

if TYPE_CHECKING:
    from ._engine import RunContext
    from ._pump import Run

__all__ = [
    "DEFAULT_LEASE_SECONDS",
    "UNSHARDED",
    "JournalClaims",
    "StoredResults",
    "drive_claimed",
    "export_results",
    "finish_stored",
    "hold_unsharded",
    "prepare_leased",
    "stored_results_path",
    "tail_stored",
]

_T = TypeVar("_T")

logger: Final = logging.getLogger("batchpump.workers")

#: A run's lease term: a killed worker's run is taken over this long after its last renewal.
DEFAULT_LEASE_SECONDS: Final = 30.0
#: Seconds between a waiting worker's tries (the shards are seen this soon at most), and the
#: most between claims while other workers hold every open attempt.
STANDBY_POLL: Final = 0.25
#: Run states in which the run still has to be sharded (by one worker, under its lease).
UNSHARDED: Final = ("sharding", "failed")
#: Bytes of stored results read from the journal per query.
READ_CHUNK: Final = 4 << 20
#: Real seconds between reads of the journal while ``Run.results`` waits for more.
TAIL_POLL: Final = 0.2
#: Shard indexes each worker that joins a run may give the halves of shards it splits.
INDEX_BLOCK: Final = 100_000


def _speed(clock: Clock) -> float:
    """Clock seconds per real second: lease terms are the server's real seconds."""
    return float(getattr(clock, "speed", 1.0))


async def hold_unsharded(
    journal: PostgresJournal, run_id: str, *, ttl: float, clock: Clock
) -> RunRecord | None:
    """Wait until ``run_id`` is sharded (return ``None``: work it by claims), or until this
    worker holds the run's lease while it is not (return the record, read under the lease:
    shard it, then release the lease).

    A worker that waits re-reads the run every ``STANDBY_POLL`` seconds and tries the lease:
    if the sharding worker dies, its lease lapses and a waiting one shards the run instead.

    Args:
        ttl: the lease's term in real seconds (the server's clock keeps it).
    """
    told = False
    while True:
        record = await journal.get_run(run_id)
        if record is None or record.state not in UNSHARDED:
            return None
        taken = await journal.acquire_run(run_id, ttl)
        if taken is not None:
            record = await journal.get_run(run_id)
            if record is not None and record.state in UNSHARDED:
                if taken > 1:
                    logger.warning("worker %s shards run %s now", journal.owner, run_id)
                return record
            await journal.release_run(run_id)  # sharded meanwhile
            return None
        if not told:
            holder = await journal.run_holder(run_id)
            logger.info(
                "run %s is being sharded by worker %s; this worker joins once the shards "
                "exist (or shards it, if that worker stops for %.0f s)",
                run_id,
                holder.owner if holder else "(just released)",
                ttl,
            )
            told = True
        await clock.sleep(min(ttl / 3, STANDBY_POLL) * _speed(clock))


async def prepare_leased(
    prepare: Callable[[], Awaitable[_T]],
    journal: PostgresJournal,
    run_id: str,
    *,
    ttl: float,
    clock: Clock,
) -> _T:
    """``await prepare()`` (sharding the run: it may outlast a lease term)
    while renewing the run's lease every third of its term, and once more at the end, so the
    drive starts on a fresh term.

    Raises:
        LeaseLostError: a renewal found the lease gone; ``prepare`` was cancelled.
    """
    speed = _speed(clock)
    lost = False
    result: list[_T] = []

    async def renew(scope: anyio.CancelScope) -> None:
        nonlocal lost
        while True:
            await clock.sleep(ttl / 3 * speed)
            try:
                renewed = await journal.renew_run(run_id, ttl)
            except Exception as exc:  # the server may answer the next one; a commit is fenced
                logger.warning("renewing the lease on run %s failed: %s", run_id, exc)
                continue
            if not renewed:
                lost = True
                scope.cancel()
                return

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(renew, tg.cancel_scope)
            result.append(await prepare())
            tg.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        raise unwrap_group(group) from None
    if lost or not await journal.renew_run(run_id, ttl):
        raise LeaseLostError(_lost_message(run_id))
    return result[0]


@final
class JournalClaims:
    """``AttemptClaims`` on a ``PostgresJournal``: claims this worker's attempts of one run,
    and knows how long each claim is good for by this machine's clock (``check``)."""

    def __init__(self, journal: PostgresJournal, run_id: str, *, ttl: float, clock: Clock) -> None:
        self._journal = journal
        self._run_id = run_id
        self._ttl = ttl
        self._clock = clock
        self._speed = _speed(clock)
        #: Clock time each held claim was last taken or renewed (when that statement was sent).
        self._since: dict[tuple[int, int], float] = {}
        self.claimed = 0
        self.taken_over = 0

    @property
    def wait_seconds(self) -> float:
        return min(self._ttl / 3, STANDBY_POLL) * self._speed

    async def claim(self, limit: int) -> tuple[list[ShardRecord], int]:
        sent = self._clock.monotonic()
        shards, taken, elsewhere = await self._journal.claim(self._run_id, limit)
        for shard in shards:
            self._since[shard.key] = sent
        self.claimed += len(shards)
        if taken:
            self.taken_over += taken
            logger.warning(
                "worker %s took over %d shard attempt(s) of run %s whose claims lapsed",
                self._journal.owner,
                taken,
                self._run_id,
            )
        return shards, elsewhere

    def left(self, key: tuple[int, int]) -> float:
        """Clock seconds the claim on ``key`` is still good for by this machine's clock (its
        term less the fencing margin, from its last renewal); negative if it is not held."""
        since = self._since.get(key)
        if since is None:
            return -1.0
        good = self._ttl * (1 - FENCE_MARGIN_FRACTION) * self._speed
        return since + good - self._clock.monotonic()

    def check(self, shard: ShardRecord) -> None:
        """Right before ``shard``'s create: refuse unless its claim is still good here.

        Raises:
            LeaseLostError: the claim was not renewed recently enough (renewals failing, this
                process frozen): another worker may take the attempt over any moment.
        """
        if self.left(shard.key) <= 0:
            raise LeaseLostError(
                f"this worker's claim on shard {shard.index} attempt {shard.attempt} of run "
                f"{self._run_id} was not renewed in time, so it did not create its batch; "
                "another worker takes the attempt over from the journal"
            )

    async def renew(self) -> set[tuple[int, int]]:
        """Renew every claim held; return the ones lost (another worker has them now)."""
        sent = self._clock.monotonic()
        renewed, lost = await self._journal.renew_claims(self._run_id)
        for key in renewed:
            self._since[key] = sent
        held = set(self._journal.held_claims(self._run_id))
        for key in [k for k in self._since if k not in held]:
            del self._since[key]  # settled
        return lost

    def expired(self) -> bool:
        """Whether some claim held is past what this machine's clock allows it."""
        return any(self.left(key) <= 0 for key in self._journal.held_claims(self._run_id))


async def drive_claimed(
    run: Run,
    ctx: RunContext,
    shards: list[ShardRecord],
    journal: PostgresJournal,
    *,
    ttl: float,
    clock: Clock,
) -> None:
    """``run._drive`` with attempts claimed from the journal, renewing the claims every third
    of their term; stop the run if a claim is lost (or none can be renewed in time).

    Args:
        shards: the run's attempts as loaded (only their indexes are used: this worker makes
            the indexes of split shards from a block of its own above them).
    """
    run_id = run.id
    speed = _speed(clock)
    journal.start_claims(run_id, ttl)
    claims = JournalClaims(journal, run_id, ttl=ttl, clock=clock)
    lost = False

    def stop(scope: anyio.CancelScope) -> None:
        nonlocal lost
        lost = True
        run._stop(LeaseLostError(_lost_message(run_id)))
        scope.cancel()

    async def renew(scope: anyio.CancelScope) -> None:
        while True:
            await clock.sleep(ttl / 3 * speed)
            while True:
                try:
                    gone = await claims.renew()
                    break
                except Exception as exc:  # the server may answer the next one; a commit is fenced
                    logger.warning("renewing the claims on run %s failed: %s", run_id, exc)
                    if claims.expired():
                        stop(scope)
                        return
                    await clock.sleep(min(1.0, ttl / 10) * speed)
            if gone:
                logger.warning(
                    "worker %s lost its claim on %d attempt(s) of run %s to another worker",
                    journal.owner,
                    len(gone),
                    run_id,
                )
                stop(scope)
                return

    try:
        first = max((s.index for s in shards if s.attempt == 1), default=-1) + 1  # as sharded
        ctx.next_index = first + (await journal.join_number(run_id) - 1) * INDEX_BLOCK
        ctx.create_guard = claims.check
        async with anyio.create_task_group() as tg:
            tg.start_soon(renew, tg.cancel_scope)
            await run._drive(shards, claims)
            tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            try:  # the attempts this worker did not settle go to the others at once
                await journal.release_claims(run_id)
            except Exception as exc:  # they lapse on their own
                logger.warning("releasing the claims on run %s failed: %s", run_id, exc)
            journal.stop_claims(run_id)
    if not lost:
        logger.info(
            "worker %s settled %d claimed attempt(s) of run %s (%d taken over)",
            journal.owner,
            claims.claimed,
            run_id,
            claims.taken_over,
        )


def _lost_message(run_id: str) -> str:
    return (
        f"this worker lost the lease or a claim on run {run_id} (it could not renew it in "
        "time) and stopped working on it; the other workers take its attempts over from the "
        "journal"
    )


# -- results in the journal ---------------------------------------------------------------------


def stored_results_path(run_dir: Path, owner: str) -> Path:
    """The scratch copy of a run's results kept by the worker ``owner`` (``journal.owner``).

    One file per worker: one that froze past its lease and wakes up may still append to its
    own file once before its commit is refused, and must not write into its successor's.
    """
    token = hashlib.blake2b(owner.encode(), digest_size=8).hexdigest()
    return run_dir / f"results.{token}.jsonl"


async def _write_from_journal(
    journal: PostgresJournal, run_id: str, dst: BinaryIO, end: int
) -> None:
    """Write the run's stored results ``[0, end)`` to ``dst`` (fsynced)."""
    offset = 0
    while offset < end:
        data = await journal.read_results(run_id, offset, limit=READ_CHUNK)
        if not data:
            raise JournalError(
                f"journal at {journal.url}: run {run_id} committed {end} bytes of results but "
                f"stores only {offset}; the journal was left as it is"
            )
        await run_io(dst.write, data)
        offset += len(data)
    await run_io(dst.flush)
    await run_io(os.fsync, dst.fileno())


async def export_results(journal: Journal, run_id: str, out: Path) -> int:
    """Write the run's committed results to ``out``, complete, atomically; return the bytes.

    From a ``PostgresJournal``, the results it stores; from another journal, the committed
    part of the run's results file. The file is written beside ``out`` under a temporary name,
    fsynced, then renamed over ``out``: a reader sees the old file or the whole new one.

    Raises:
        UsageError: no run ``run_id`` in the journal.
    """
    run = await journal.get_run(run_id)
    if run is None:
        raise UsageError(f"no run {run_id} in the journal")
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:12]}.tmp")
    await run_io(_create_empty, tmp)
    try:
        with await run_io(tmp.open, "r+b") as f:
            if isinstance(journal, PostgresJournal):
                await _write_from_journal(journal, run_id, f, run.out_offset)
            else:
                await run_io(_copy_prefix, Path(run.out_path), f, run.out_offset)
        await run_io(os.replace, tmp, out)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await run_io(tmp.unlink, True)
        raise
    await run_io(fsync_dir, out.parent)
    return run.out_offset


async def finish_stored(journal: PostgresJournal, run_id: str, out: Path, scratch: Path) -> None:
    """The run is finished: write ``out`` from the journal (``export_results``) and remove this
    worker's scratch file (every result it staged there is in the journal)."""
    await export_results(journal, run_id, out)
    await run_io(scratch.unlink, True)


def _copy_prefix(src: Path, dst: BinaryIO, end: int) -> None:
    """Copy ``src[0:end)`` to ``dst`` (fsynced); ``src`` must hold that much."""
    with src.open("rb") as f:
        left = end
        while left > 0:
            chunk = f.read(min(left, READ_CHUNK))
            if not chunk:
                raise UsageError(
                    f"{src} holds {end - left} bytes, but its run committed {end}: it was "
                    "changed or truncated by something other than batchpump"
                )
            dst.write(chunk)
            left -= len(chunk)
    dst.flush()
    os.fsync(dst.fileno())


def _create_empty(path: Path) -> None:
    create_private(path, truncate=True)


@final
class StoredResults:
    """The ``ResultSink`` commit with a PostgreSQL journal: ``RunContext.commit_results``, with
    the lines just appended to this worker's scratch file ``path`` stored in the journal in the
    same transaction.

    While the run is worked by claims the lines go at the run's stored ``out_offset`` and their
    counts add to the stored ones (``PostgresJournal.commit(append=...)``); before that (the
    sharding worker's rejected lines, under the run's lease) at ``ctx.run.out_offset``.
    """

    def __init__(self, ctx: RunContext, journal: PostgresJournal, path: Path) -> None:
        self._ctx = ctx
        self._journal = journal
        self._path = path
        self._local = 0  # the scratch file's committed length

    async def __call__(self, length: int, shards: list[ShardRecord], counts: ResultCounts) -> None:
        ctx = self._ctx
        start = self._local
        data = await run_io(_read_span, self._path, start, length) if length > start else b""
        ctx.run.updated_at = ctx.clock.time()
        if self._journal.claiming(ctx.run.run_id):
            await self._journal.commit(run=ctx.run, shards=shards, append=(data, counts))
        else:
            offset = ctx.run.out_offset
            ctx.run.out_offset = offset + len(data)
            ctx.run.counts.merge(counts)
            await self._journal.commit(run=ctx.run, shards=shards, results=(offset, data))
        self._local = length


async def tail_stored(
    journal: PostgresJournal, run_id: str, finished: Callable[[], bool], clock: Clock
) -> AsyncIterator[Result]:
    """Every result the journal stores for ``run_id``, from the start, as they are committed
    (by any worker), until ``finished()`` and all are read."""
    offset = 0
    while True:
        ended = finished()  # before the read: what was committed by then is read next
        data = await journal.read_results(run_id, offset, limit=READ_CHUNK)
        if data:
            offset += len(data)
            for result in decode_results(data):
                yield result
            continue
        if ended:
            return
        await clock.sleep(TAIL_POLL * _speed(clock))


def _read_span(path: Path, start: int, end: int) -> bytes:
    with path.open("rb") as f:
        f.seek(start)
        return f.read(end - start)
