"""The results file: append-only JSONL, one final ``Result`` per input line.

Collectors write a finished batch's results to a part file first, then ``ResultSink.publish``
appends the part to the results file, fsyncs it and commits the new length (``out_offset``) in
the journal in the same step. On resume the file is cut back to the journaled length, so a crash
between append and commit never leaves a result twice. Files are created 0600.

All file I/O runs in worker threads, in large chunks: the event loop never blocks on disk.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Final, final

import anyio
import anyio.to_thread
import msgspec

from ._models import Result

__all__ = ["PartWriter", "ResultSink", "create_private", "decode_results"]

#: Bytes a ``PartWriter`` buffers before it writes them out.
FLUSH_BYTES: Final = 1 << 20
#: Bytes ``ResultSink.tail`` reads per chunk.
TAIL_CHUNK: Final = 1 << 20

_encoder: Final = msgspec.json.Encoder()
_decoder: Final = msgspec.json.Decoder(Result)


def create_private(path: Path, *, truncate: bool = False) -> None:
    """Create ``path`` (and its parent) readable by the owner only, whatever the umask."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if truncate else 0)
    fd = os.open(path, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def decode_results(data: bytes) -> list[Result]:
    """Decode complete JSONL result lines."""
    return _decoder.decode_lines(data)


@final
class PartWriter:
    """Buffers encoded results and writes them to a part file in a worker thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._buffer = bytearray()
        self._started = False
        self.count = 0

    def add(self, result: Result) -> None:
        _encoder.encode_into(result, self._buffer, -1)
        self._buffer.extend(b"\n")
        self.count += 1

    @property
    def full(self) -> bool:
        return len(self._buffer) >= FLUSH_BYTES

    async def flush(self) -> None:
        data, self._buffer = bytes(self._buffer), bytearray()
        first = not self._started
        self._started = True
        await anyio.to_thread.run_sync(self._write, data, first)

    def _write(self, data: bytes, first: bool) -> None:
        if first:
            create_private(self.path, truncate=True)
        with self.path.open("ab") as f:
            f.write(data)


@final
class ResultSink:
    """The run's results file, with the committed length as the source of truth."""

    def __init__(self, path: Path, committed: int) -> None:
        self.path = path
        self.committed = committed
        self._lock = anyio.Lock()
        self._changed = anyio.Event()
        self.finished = False

    async def open(self) -> None:
        """Create the file if needed and cut it back to the committed length."""
        await anyio.to_thread.run_sync(self._open)

    def _open(self) -> None:
        create_private(self.path)
        with self.path.open("r+b") as f:
            f.truncate(self.committed)

    async def publish(self, part: PartWriter, commit: Callable[[int], Awaitable[None]]) -> None:
        """Append ``part`` to the results file, then ``commit(new_length)`` to the journal."""
        await part.flush()
        async with self._lock:
            if part.count:
                length = await anyio.to_thread.run_sync(self._append, part.path)
            else:
                length = self.committed
            await commit(length)
            self.committed = length
        await anyio.to_thread.run_sync(_unlink, part.path)
        self._notify()

    def _append(self, part: Path) -> int:
        with part.open("rb") as src, self.path.open("r+b") as dst:
            dst.seek(self.committed)
            shutil.copyfileobj(src, dst, 1 << 20)
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
                data = await anyio.to_thread.run_sync(_read, self.path, offset, end)
                cut = data.rfind(b"\n") + 1
                offset += cut
                for result in _decoder.decode_lines(data[:cut]):
                    yield result
                continue
            if self.finished:
                return
            await self._changed.wait()


def _read(path: Path, offset: int, end: int) -> bytes:
    with path.open("rb") as f:
        f.seek(offset)
        data = f.read(min(end - offset, TAIL_CHUNK))
        if data and not data.endswith(b"\n"):
            data += f.readline()  # finish the last line, however long
        return data


def _unlink(path: Path) -> None:
    path.unlink(missing_ok=True)
