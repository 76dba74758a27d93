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

Where the workers run matters: the shard files and the results file are files, under the
state directory and at ``--out`` as the run's first worker named them, so workers must see
one filesystem at those paths (one machine, or a shared mount). Splitting one run's shard
attempts between workers is not done: every result of a run goes through the driving worker.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final

import anyio

from ._clock import Clock
from ._journal import LeaseLostError, PostgresJournal
from ._models import ShardRecord

if TYPE_CHECKING:
    from ._pump import Run

__all__ = ["DEFAULT_LEASE_SECONDS", "drive_leased", "hold_run"]

logger: Final = logging.getLogger("batchpump.workers")

#: A run's lease term: a killed worker's run is taken over this long after its last renewal.
DEFAULT_LEASE_SECONDS: Final = 30.0
#: Seconds between a waiting worker's tries (a released lease is taken this soon at most).
STANDBY_POLL: Final = 1.0


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
