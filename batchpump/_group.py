"""Group commit: writes that arrive while one is in progress share the next round.

The journal (one SQLite transaction per round) and the results file (one append and fsync per
round) both use it: under load, N concurrent callers cost one round instead of N, and each
caller still returns only when its own item is durable.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar, final

import anyio
import anyio.lowlevel

__all__ = ["GroupCommit"]

_T = TypeVar("_T")


@dataclass(eq=False)
class _Ticket(Generic[_T]):
    item: _T
    done: bool = False
    error: Exception | None = None


@final
class GroupCommit(Generic[_T]):
    """Runs ``write(items)`` once per round over every item submitted since the last round.

    A round is all-or-nothing: if ``write`` raises, every caller of that round raises it. If
    the caller that is writing is cancelled, a waiting caller takes over the next round. A round
    takes its items after one checkpoint, so callers released by the previous round that submit
    again at once join it instead of waiting for the one after.
    """

    def __init__(self, write: Callable[[list[_T]], Awaitable[None]]) -> None:
        self._write = write
        self._pending: list[_Ticket[_T]] = []
        self._writing = False
        self._round_done = anyio.Event()
        self.rounds = 0

    async def submit(self, item: _T) -> None:
        """Return once ``item`` was written; raise what its round raised."""
        ticket = _Ticket(item)
        self._pending.append(ticket)
        while not ticket.done:
            if self._writing:
                await self._round_done.wait()
            else:
                await self._drain()
        if ticket.error is not None:
            raise ticket.error

    async def _drain(self) -> None:
        self._writing = True
        try:
            while self._pending:
                try:  # callers just released, or arriving with this one, join this round
                    await anyio.lowlevel.checkpoint()
                except BaseException:
                    event, self._round_done = self._round_done, anyio.Event()
                    event.set()  # a waiting caller takes over
                    raise
                group, self._pending = self._pending, []
                try:
                    await self._write([ticket.item for ticket in group])
                except Exception as exc:
                    for ticket in group:
                        ticket.error = exc
                finally:
                    self.rounds += 1
                    for ticket in group:
                        ticket.done = True
                    event, self._round_done = self._round_done, anyio.Event()
                    event.set()
        finally:
            self._writing = False
