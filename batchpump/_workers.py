"""Several workers, one run: the run's lease decides which worker drives it.

Workers given the same input and options compute the same run id, so with one
``PostgresJournal`` they all join the same run. Exactly one of them drives it at a time:

- ``hold_run`` takes the run's lease (``_journal.leases``) before the run is sharded or
  loaded, waiting (on the ``Clock``, a third of the lease's term between tries) while another
  live worker holds it. The run's record is then read again: the worker that had it may have
  moved it on (or finished it, in which case this worker only sees it done).
- ``drive_leased`` drives the run while renewing the lease every third of its term. If a
  renewal fails, or none succeeds before the lease could have lapsed by this machine's clock
  (the server gone, this process frozen), the worker stops the run at once, without cancelling
  anything at the provider, and the run ends with ``LeaseLostError``: the worker that takes the
  lease over resumes the run from the journal (reconciling in-flight creates by their tags).
  Commits are fenced by the lease as well, so a worker that lost it writes nothing more.
- A worker that finishes, fails or is stopped releases the lease, so a waiting worker takes
  the run over at once; one that is killed (SIGKILL) is taken over once its lease lapses.

Results live in the journal. The driving worker appends them to a scratch file of its own in
its state directory (``stored_results_path``), as on SQLite, and each commit that moves the
run's ``out_offset`` stores the appended lines in the journal in the same transaction
(``commit_stored_results``). A worker that starts driving a run rebuilds that scratch file
from the journal first (``restore_results``), on whatever machine it runs, so ``Run.results``
serves every result from any worker. The worker that sees the run finish writes ``--out``
from the journal, complete, through a temporary file renamed into place (``export_results``,
also ``batchpump export``).

Shard files are still files under the state directory: a worker that takes over a run on
another machine must see them there (a shared mount), or the input at the same path if the run
was not yet sharded. Splitting one run's shard attempts between workers is not done.
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Final, TypeVar

import anyio

from ._clock import Clock
from ._errors import JournalError, UsageError, unwrap_group
from ._fileio import create_private, run_io
from ._journal import Journal, LeaseLostError, PostgresJournal
from ._models import ResultCounts, ShardRecord

if TYPE_CHECKING:
    from ._engine import RunContext
    from ._pump import Run

__all__ = [
    "DEFAULT_LEASE_SECONDS",
    "commit_stored_results",
    "drive_leased",
    "export_results",
    "hold_run",
    "prepare_leased",
    "restore_results",
    "stored_results_path",
]

_T = TypeVar("_T")

logger: Final = logging.getLogger("batchpump.workers")

#: A run's lease term: a killed worker's run is taken over this long after its last renewal.
DEFAULT_LEASE_SECONDS: Final = 30.0
#: Seconds between a waiting worker's tries (a released lease is taken this soon at most).
STANDBY_POLL: Final = 1.0
#: Bytes of stored results read from the journal per query.
READ_CHUNK: Final = 4 << 20


def _speed(clock: Clock) -> float:
    """Clock seconds per real second: lease terms are the server's real seconds."""
    return float(getattr(clock, "speed", 1.0))


async def hold_run(journal: PostgresJournal, run_id: str, *, ttl: float, clock: Clock) -> int:
    """Wait until this worker holds ``run_id``'s lease; return its generation.

    Args:
        ttl: the lease's term in real seconds (the server's clock keeps it).
    """
    told = False
    while (taken := await journal.acquire_run(run_id, ttl)) is None:
        if not told:
            holder = await journal.run_holder(run_id)
            logger.warning(
                "run %s is driven by worker %s; this worker takes it over when that one "
                "stops (within %.0f s of its last renewal)",
                run_id,
                holder.owner if holder else "(just released)",
                ttl,
            )
            told = True
        await clock.sleep(min(ttl / 3, STANDBY_POLL) * _speed(clock))
    if told or taken > 1:
        logger.warning("worker %s drives run %s now (takeover %d)", journal.owner, run_id, taken)
    return taken


async def prepare_leased(
    prepare: Callable[[], Awaitable[_T]],
    journal: PostgresJournal,
    run_id: str,
    *,
    ttl: float,
    clock: Clock,
) -> _T:
    """``await prepare()`` (restoring the results copy, sharding: it may outlast a lease term)
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


async def drive_leased(
    run: Run, shards: list[ShardRecord], journal: PostgresJournal, *, ttl: float, clock: Clock
) -> None:
    """``run._drive(shards)`` under the run's lease; stop the run if the lease is lost."""
    run_id = run.id
    lost = False
    speed = _speed(clock)

    async def renew(scope: anyio.CancelScope) -> None:
        nonlocal lost
        while True:
            # By this machine's clock the lease lasts ``ttl`` from the last renewal sent; stop
            # driving a third of a term before that unless a renewal succeeds meanwhile.
            sent = clock.monotonic()
            deadline = sent + ttl * 2 / 3 * speed
            await clock.sleep(ttl / 3 * speed)
            renewed = False
            with anyio.move_on_after(max(0.0, deadline - clock.monotonic()) / speed):
                try:
                    renewed = await journal.renew_run(run_id, ttl)
                except Exception as exc:  # the server is gone: it may answer before the deadline
                    logger.warning("renewing the lease on run %s failed: %s", run_id, exc)
                    while not renewed and clock.monotonic() < deadline:
                        await clock.sleep(min(1.0, ttl / 10) * speed)
                        try:
                            renewed = await journal.renew_run(run_id, ttl)
                        except Exception:
                            continue
            if not renewed:
                lost = True
                run._stop(LeaseLostError(_lost_message(run_id)))
                scope.cancel()
                return

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(renew, tg.cancel_scope)
            await run._drive(shards)
            tg.cancel_scope.cancel()
    finally:
        if not lost:
            with anyio.CancelScope(shield=True):
                try:
                    await journal.release_run(run_id)
                except Exception as exc:  # it lapses on its own
                    logger.warning("releasing the lease on run %s failed: %s", run_id, exc)


def _lost_message(run_id: str) -> str:
    return (
        f"this worker lost the lease on run {run_id} (it could not renew it in time) and "
        "stopped driving it; another worker takes it over from the journal"
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


async def restore_results(journal: PostgresJournal, run_id: str, path: Path, end: int) -> None:
    """Make ``path`` hold exactly the run's committed results, ``[0, end)``, from the journal,
    and remove the scratch copies earlier workers left beside it.

    Whatever ``path`` held is replaced: another worker, maybe on another machine, may have
    driven the run since this one wrote it.
    """
    await run_io(_remove_other_copies, path)
    await run_io(_create_empty, path)
    with await run_io(path.open, "r+b") as f:
        await _write_from_journal(journal, run_id, f, end)


def _remove_other_copies(path: Path) -> None:
    if path.parent.is_dir():
        for old in path.parent.glob("results.*.jsonl"):
            if old != path:
                old.unlink(missing_ok=True)


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
    await run_io(_fsync_dir, out.parent)
    return run.out_offset


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


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


async def commit_stored_results(
    ctx: RunContext,
    journal: PostgresJournal,
    path: Path,
    length: int,
    shards: list[ShardRecord],
    counts: ResultCounts,
) -> None:
    """The ``ResultSink`` commit with a PostgreSQL journal: ``RunContext.commit_results``, with
    the lines just appended to ``path`` stored in the journal in the same transaction."""
    start = ctx.run.out_offset
    data = await run_io(_read_span, path, start, length) if length > start else b""
    ctx.run.out_offset = length
    ctx.run.counts.merge(counts)
    await journal.commit(run=ctx.run, shards=shards, results=(start, data))


def _read_span(path: Path, start: int, end: int) -> bytes:
    with path.open("rb") as f:
        f.seek(start)
        return f.read(end - start)
