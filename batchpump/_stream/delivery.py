"""Delivering a stream's results, and remembering which ones were acknowledged.

Results are appended to the stream's results file by the run's ``ResultSink`` (one final
result per accepted line, committed with the journal); the file is rotated into parts
(``rotation``). ``Delivery`` reads it from the start of what is not yet acknowledged, skipping
results acknowledged out of order, and waits for more. ``ack`` makes an acknowledgement durable
(concurrent acks share one transaction): the store keeps the byte offset below which every
result was acknowledged, and the acks past it, so after a restart only results never
acknowledged are delivered again. Parts whose results were all acknowledged are removed once
that is durable (a power loss included).

Memory: one entry per result delivered and not yet acknowledged (its id and offsets).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final, final

import anyio

from .._engine import decode_results
from .._errors import UsageError
from .._fileio import run_io
from .._group import GroupCommit
from .._models import Result
from .pipeline import remove_files
from .rotation import ResultParts
from .store import StreamStore

__all__ = ["Delivery"]

#: Bytes of the results file read at a time.
READ_CHUNK: Final = 1 << 20


@final
class Delivery:
    """Reads the results file for ``results()`` and records acks.

    Args:
        parts: the stream's results file, in parts.
        end: its committed length.
        store: the stream's store (acks).
        acked_to: offset below which every result was acknowledged.
        ahead: acks past ``acked_to``, as ``start -> stop`` offsets.
    """

    def __init__(
        self,
        parts: ResultParts,
        end: int,
        store: StreamStore,
        acked_to: int,
        ahead: dict[int, int],
    ) -> None:
        self._parts = parts
        self.end = end
        self._store = store
        self.acked_to = acked_to
        self._ahead = ahead
        self._delivered: dict[str, tuple[int, int]] = {}
        self._changed = anyio.Event()
        self._group: GroupCommit[tuple[int, int]] = GroupCommit(self._save)
        self.finished = False
        self.acks = 0

    def grew(self, end: int) -> None:
        """The results file is committed up to ``end`` now."""
        self.end = end
        self.notify()

    def notify(self) -> None:
        event, self._changed = self._changed, anyio.Event()
        event.set()

    @property
    def unacked(self) -> int:
        """Results delivered and not yet acknowledged."""
        return len(self._delivered)

    async def results(self, until_drained: anyio.Event | None) -> AsyncIterator[Result]:
        """Every result not yet acknowledged, in the file's order, waiting for more; ends
        when ``finished`` is set or ``until_drained`` is set and everything was read."""
        offset = self.acked_to
        while True:
            while offset < self.acked_to or offset in self._ahead:  # acknowledged, maybe removed
                offset = max(self.acked_to, self._ahead.get(offset, offset))
            end = self.end
            if offset < end:
                path, stop = self._parts.locate(offset)
                data = await run_io(_read, path, offset, end if stop is None else min(stop, end))
                for line in data.splitlines(keepends=True):
                    start, offset = offset, offset + len(line)
                    if start < self.acked_to or start in self._ahead:
                        continue  # acknowledged (before this run, or while it was read)
                    (result,) = decode_results(line)
                    self._delivered[result.custom_id] = (start, offset)
                    yield result
                continue
            if self.finished or (until_drained is not None and until_drained.is_set()):
                return
            changed = self._changed
            if until_drained is None:
                await changed.wait()
            else:
                async with anyio.create_task_group() as tg:

                    async def stop_on_drain() -> None:
                        await until_drained.wait()
                        tg.cancel_scope.cancel()

                    tg.start_soon(stop_on_drain)
                    await changed.wait()
                    tg.cancel_scope.cancel()

    async def ack(self, result: Result) -> None:
        """Acknowledge a delivered result; returns once that is durable.

        Raises:
            UsageError: the result was not delivered by this stream, or was acknowledged.
        """
        span = self._delivered.pop(result.custom_id, None)
        if span is None:
            raise UsageError(
                f"result {result.custom_id!r} was not delivered by this stream's results(), "
                "or was acknowledged already"
            )
        start, stop = span
        self._ahead[start] = stop
        while self.acked_to in self._ahead:
            self.acked_to = self._ahead.pop(self.acked_to)
        self.acks += 1
        await self._group.submit(span)

    async def free_parts(self) -> None:
        """Remove the parts of the results file whose results were all acknowledged (on open:
        those a crash left before their removal)."""
        await self._save([])

    async def _save(self, spans: list[tuple[int, int]]) -> None:
        acked_to = self.acked_to
        done = self._parts.acknowledged(acked_to, self._ahead)
        merged: list[tuple[int, int]] = []
        for start, stop in done:  # a removed part's acks become one span over it
            first = position = max(start, acked_to)
            if first < stop:
                while position < stop:
                    position = self._ahead.pop(position)
                self._ahead[first] = stop
                merged.append((first, stop))
        ahead = [s for s in spans if s[0] >= acked_to]
        await self._store.save_acks(acked_to, ahead, merged)
        if done:
            await self._store.settle(durable=True)  # the acks outlive the files they free
            await remove_files([self._parts.path(start) for start, _ in done])


def _read(path: Path, offset: int, end: int) -> bytes:
    """Whole lines from ``offset``, about ``READ_CHUNK`` bytes, never past ``end``."""
    with path.open("rb") as f:
        f.seek(offset)
        data = f.read(min(end - offset, READ_CHUNK))
        if data and not data.endswith(b"\n"):
            data += f.readline()
        return data
