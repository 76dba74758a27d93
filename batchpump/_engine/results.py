"""The results file: append-only JSONL, one final ``Result`` per input line.

Collectors gather a finished batch's results in a ``PartWriter`` (memory, or a part file once
large), then ``ResultSink.publish`` appends it to the results file, fsyncs it and commits the new
length (``out_offset``) in the journal together with the shard records it settles, in one
transaction. Concurrent publications share one append, fsync and transaction. On resume the
file is cut back to the journaled length, so a crash between append and commit never leaves a
result twice. Files are created 0600.

The file is the user's record of paid work, so it is never padded: a file that is missing or
shorter than its committed length (deleted, cut short, replaced) raises ``ResultsFileError``
instead of being extended, and ``rebuild`` (``batchpump results RUN_ID --rebuild``) is the way
back.

All file I/O runs in worker threads (``_fileio.run_io``), in large chunks: the event loop never
blocks on disk. The big buffers are allocated on the event loop's thread and only filled or
drained by the workers: a part's buffer is handed to the worker as is (not copied), and the
part file is copied into the results file through one reused buffer of the sink's, so the
workers allocate no MiB-sized blocks of their own (see ``_fileio`` for why that matters).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final, final

import anyio
import msgspec

from .._errors import ResultsFileError
from .._fileio import create_private, run_io
from .._group import GroupCommit
from .._models import Result, ResultCounts, ShardRecord

__all__ = ["PartWriter", "ResultSink", "decode_results", "results_file_error"]

#: Bytes a ``PartWriter`` buffers before it writes them out.
FLUSH_BYTES: Final = 1 << 20
#: Bytes ``ResultSink.tail`` reads per chunk.
TAIL_CHUNK: Final = 1 << 20
#: Bytes of the buffer a part file is copied through into the results file.
COPY_CHUNK: Final = 1 << 20

_encoder: Final = msgspec.json.Encoder()
_decoder: Final = msgspec.json.Decoder(Result)


def decode_results(data: bytes) -> list[Result]:
    """Decode complete JSONL result lines."""
    return _decoder.decode_lines(data)


@final
class PartWriter:
    """Collects one batch's encoded results: in memory while small, in a part file past
    ``FLUSH_BYTES`` (written in a worker thread), so a huge batch never sits in memory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._buffer = bytearray()
        self._on_disk = False
        self.count = 0

    def add(self, result: Result) -> None:
        _encoder.encode_into(result, self._buffer, -1)
        self._buffer.extend(b"\n")
        self.count += 1

    @property
    def full(self) -> bool:
        return len(self._buffer) >= FLUSH_BYTES

    async def flush(self) -> None:
        """Move the buffered results to the part file."""
        data, self._buffer = self._buffer, bytearray()  # handed over, not copied
        first = not self._on_disk
        self._on_disk = True
        await run_io(self._write, data, first)

    def _write(self, data: bytearray, first: bool) -> None:
        if first:
            create_private(self.path, truncate=True)
        with self.path.open("ab") as f:
            f.write(data)

    def write_to(self, dst: BinaryIO, buffer: bytearray) -> None:
        """Append everything collected to ``dst``, the part file copied through ``buffer``
        (in a worker thread)."""
        if self._on_disk:
            view = memoryview(buffer)
            with self.path.open("rb", buffering=0) as src:
                while n := src.readinto(view):
                    dst.write(view[:n])
        dst.write(self._buffer)

    @property
    def on_disk(self) -> bool:
        """Whether some results went to the part file."""
        return self._on_disk

    def discard(self) -> None:
        """Remove the part file, if any (in a worker thread)."""
        if self._on_disk:
            self.path.unlink(missing_ok=True)


Commit = Callable[[int, list[ShardRecord], ResultCounts], Awaitable[None]]


@dataclass(eq=False)
class _Publication:
    part: PartWriter
    shards: list[ShardRecord]
    counts: ResultCounts


@final
class ResultSink:
    """The run's results file, with the committed length as the source of truth.

    Args:
        path: the results file.
        committed: its length as last committed in the journal.
        commit: writes, in ONE journal transaction, the new length, the shard records that the
            appended results settle and the counts they add.
        run_id: the run it belongs to (named in the errors' rebuild hint).
        rebuild_hint: the command that rebuilds it, as the user should paste it.
    """

    def __init__(
        self,
        path: Path,
        committed: int,
        commit: Commit,
        *,
        run_id: str = "",
        rebuild_hint: str = "",
    ) -> None:
        self.path = path
        self.committed = committed
        self.run_id = run_id
        self.rebuild_hint = rebuild_hint
        self._commit = commit
        self._changed = anyio.Event()
        self._group: GroupCommit[_Publication] = GroupCommit(self._publish)
        self.finished = False
        self.appends = 0
        self._copy_buffer = bytearray(COPY_CHUNK)  # used by one append at a time

    async def open(self) -> None:
        """Create the file if needed and cut it back to the committed length.

        Raises:
            ResultsFileError: results were committed but the file is missing or shorter.
        """
        await run_io(self._open)

    def _open(self) -> None:
        if self.committed:
            try:
                size = self.path.stat().st_size
            except FileNotFoundError:
                raise self.damaged(None) from None
            if size < self.committed:
                raise self.damaged(size)
        else:
            create_private(self.path)
        with self.path.open("r+b") as f:
            f.truncate(self.committed)

    def damaged(self, size: int | None) -> ResultsFileError:
        """The error for this file missing (``size`` None) or shorter than committed."""
        return results_file_error(
            self.path, self.committed, size, run_id=self.run_id, hint=self.rebuild_hint
        )

    async def publish(
        self, part: PartWriter, shards: list[ShardRecord], counts: ResultCounts
    ) -> None:
        """Append ``part`` to the results file and commit it with ``shards`` and ``counts``.

        Publications that arrive while another is being written share the next append, fsync
        and journal transaction (group commit); each caller returns once its own results are
        durable and committed.
        """
        await self._group.submit(_Publication(part, shards, counts))

    async def _publish(self, group: list[_Publication]) -> None:
        parts = [item.part for item in group]
        length = self.committed
        if any(part.count for part in parts):
            length = await run_io(self._append, parts)
        counts = ResultCounts()
        for item in group:
            counts.merge(item.counts)
        await self._commit(length, [s for item in group for s in item.shards], counts)
        self.committed = length
        self.appends += 1
        if any(part.on_disk for part in parts):
            await run_io(_discard, parts)
        self._notify()

    def _append(self, parts: list[PartWriter]) -> int:
        try:
            dst = self.path.open("r+b")
        except FileNotFoundError:
            raise self.damaged(None) from None
        with dst:
            if (size := os.fstat(dst.fileno()).st_size) < self.committed:
                raise self.damaged(size)  # seeking past the end would pad it with NULs
            dst.seek(self.committed)
            for part in parts:
                part.write_to(dst, self._copy_buffer)
            dst.flush()
            os.fsync(dst.fileno())
            return dst.tell()

    def finish(self) -> None:
        self.finished = True
        self._notify()

    def _notify(self) -> None:
        event, self._changed = self._changed, anyio.Event()
        event.set()

    async def tail(self, start: int = 0) -> AsyncIterator[Result]:
        """Yield committed results from byte ``start`` on, waiting for more until finished."""
        offset = start
        while True:
            end = self.committed
            if offset < end:
                data = await run_io(_read, self.path, offset, end)
                cut = data.rfind(b"\n") + 1
                offset += cut
                for result in _decoder.decode_lines(data[:cut]):
                    yield result
                continue
            if self.finished:
                return
            await self._changed.wait()


def results_file_error(
    path: Path, committed: int, size: int | None, *, run_id: str = "", hint: str = ""
) -> ResultsFileError:
    """The error for a results file missing (``size`` None) or shorter than ``committed``."""
    what = (
        "is missing (deleted or moved?)"
        if size is None
        else f"is {size:,} bytes, shorter than the {committed:,} bytes of results the journal "
        "committed (cut short or replaced?)"
    )
    run = f"run {run_id}" if run_id else "this run"
    hint = hint or f"batchpump results {run_id or 'RUN_ID'} --rebuild"
    return ResultsFileError(
        f"results file {path} of {run} {what}. batchpump does not pad or recreate it (that "
        f"would lose the record of paid work silently); nothing was sent. Rebuild it from the "
        f"provider's copies with `{hint}` (it reports any line it cannot recover)"
    )


def _read(path: Path, offset: int, end: int) -> bytes:
    with path.open("rb") as f:
        f.seek(offset)
        data = f.read(min(end - offset, TAIL_CHUNK))
        if data and not data.endswith(b"\n"):
            data += f.readline()  # finish the last line, however long
        return data


def _discard(parts: list[PartWriter]) -> None:
    for part in parts:
        part.discard()
