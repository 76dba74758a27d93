"""Writing shard files: routing valid lines to open shards, off the parsing thread.

:class:`ShardWriter` keeps one open shard per group (model) when the provider wants one per
batch, and buffers its lines. Two kinds of worker threads do the writing so that parsing on
the calling thread overlaps it: :class:`Background` runs hashing and writes on one thread, in
submission order (``hashlib`` and file writes release the GIL); :class:`Syncer` fsyncs
finished shard files on a few threads, because concurrent fsyncs share one journal commit on
ext4 and xfs, which is what many small shards need. Also here: how shard files are created
(owner-only) and how their renames are made durable.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from itertools import accumulate
from pathlib import Path
from typing import BinaryIO, Final, NamedTuple, TypeAlias

from .._models import ShardRecord

__all__ = ["Background", "ShardWriter", "Syncer", "create_shard_file"]

#: Bytes of background tasks (hash updates, writes) pending at most, and tasks at most.
_IO_BYTES: Final = 8 * 1024 * 1024
_IO_TASKS: Final = 4096
#: Threads fsyncing finished shard files, and finished files waiting for them at most.
_FSYNC_THREADS: Final = 8
_FSYNC_PENDING: Final = 64


class Background:
    """One worker thread running hashing and writes in submission order.

    ``hashlib`` and file writes release the GIL, so on a multi-core machine they overlap the
    parsing on the calling thread. Pending work is bounded by its bytes (``_IO_BYTES``), not
    by a count of tasks: a queue of a few tasks made the parser wait on a thread wake-up for
    every one-line shard. An error in a task is raised by the next ``submit``/``drain``.
    """

    __slots__ = ("_inflight", "_pending_bytes", "_pool")

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batchpump-shard")
        self._inflight: deque[tuple[Future[object], int]] = deque()
        self._pending_bytes = 0

    def submit(self, fn: Callable[..., object], *args: object, size: int = 0) -> None:
        """Run ``fn(*args)`` on the worker thread after the tasks already submitted.

        Args:
            size: the bytes the task holds (its data), for the bound on pending work.
        """
        while self._inflight and (
            self._pending_bytes + size > _IO_BYTES or len(self._inflight) >= _IO_TASKS
        ):
            self._retire()
        self._inflight.append((self._pool.submit(fn, *args), size))
        self._pending_bytes += size

    def _retire(self) -> None:
        future, size = self._inflight.popleft()
        self._pending_bytes -= size
        future.result()

    def drain(self) -> None:
        """Wait for every submitted task; raise the first error."""
        while self._inflight:
            self._retire()

    def __enter__(self) -> Background:
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            for future, _ in self._inflight:
                future.cancel()
            wait([future for future, _ in self._inflight])
        finally:
            self._inflight.clear()
            self._pending_bytes = 0
            self._pool.shutdown(wait=True)


class Syncer:
    """fsync and close finished files on a few threads; at most ``_FSYNC_PENDING`` open."""

    __slots__ = ("_done", "_pool", "_slots")

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(_FSYNC_THREADS, thread_name_prefix="batchpump-fsync")
        self._slots = threading.BoundedSemaphore(_FSYNC_PENDING)
        self._done: list[Future[None]] = []

    def hand_off(self, fd: int, close: Callable[[], None]) -> None:
        """fsync ``fd`` and then ``close()`` it on the pool (what was written is flushed)."""
        self._slots.acquire()
        try:
            self._done.append(self._pool.submit(self._sync, fd, close))
        except BaseException:
            self._slots.release()
            close()
            raise

    def _sync(self, fd: int, close: Callable[[], None]) -> None:
        try:
            os.fsync(fd)
        finally:
            close()
            self._slots.release()

    def finish(self) -> None:
        """Wait for every fsync; raise the first error; stop the pool."""
        try:
            for future in self._done:
                future.result()
        finally:
            self._done.clear()
            self._pool.shutdown(wait=True)


def create_shard_file(path: Path) -> int:
    """Open ``path`` new and empty for writing, readable by its owner only (requests may hold
    anything), and return its descriptor."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)


#: Buffered bytes of one shard handed to the writer thread at once.
_FLUSH_BYTES: Final = 4 * 1024 * 1024
#: A shard finished with at most this many bytes, none handed to the writer thread yet, is
#: written on the calling thread (see ``ShardWriter._write_small``).
_INLINE_BYTES: Final = 256 * 1024


#: Bytes copied at a time from the input to a shard file.
_COPY_BYTES: Final = 1024 * 1024


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class _Span(NamedTuple):
    """Bytes of the input that go to a shard as they are: copied from file to file."""

    source: int
    offset: int
    length: int

    def copy_to(self, fd: int) -> None:
        """Append them to ``fd`` through one reused buffer (``os.copy_file_range`` measured
        slower)."""
        offset, left = self.offset, self.length
        buffer = bytearray(min(left, _COPY_BYTES))
        view = memoryview(buffer)
        while left:
            got = os.preadv(self.source, [view[: min(left, len(buffer))]], offset)
            if not got:
                raise OSError(f"the input is shorter than when it was checked (at {offset})")
            _write_all(fd, view[:got])
            offset += got
            left -= got


_Piece: TypeAlias = bytes | _Span


def _piece(source: int | bytes, offset: int, length: int) -> _Piece:
    """``length`` bytes of ``source`` (a file descriptor or the bytes) at ``offset``."""
    if isinstance(source, int):
        return _Span(source, offset, length)
    return source if length == len(source) else source[offset : offset + length]


def _read(source: int | bytes, offset: int, length: int) -> bytes:
    if isinstance(source, int):
        return os.pread(source, length, offset)
    return source[offset : offset + length]


class _OpenShard:
    __slots__ = (
        "body_bytes",
        "bytes",
        "chunks",
        "file",
        "flushed",
        "index",
        "lines",
        "mixed",
        "model",
        "pending",
        "pending_bytes",
        "tmp",
    )

    def __init__(self, index: int, model: str | None, tmp: Path) -> None:
        self.index = index
        self.model = model
        self.mixed = False
        self.tmp = tmp
        self.file: BinaryIO | None = None  # opened by the writer thread, at the first write
        self.flushed = False  # some lines went to the writer thread
        self.lines = self.bytes = self.body_bytes = self.pending_bytes = 0
        self.chunks: list[_Piece] = []  # whole lines with their newlines, before ``pending``
        self.pending: list[bytes] = []  # lines without their newlines

    def take(self) -> list[_Piece]:
        """The buffered data, in order (emptied)."""
        pieces = self.chunks
        if self.pending:
            self.pending.append(b"")  # join then ends with a newline
            pieces.append(b"\n".join(self.pending))
            self.pending = []
        self.chunks = []
        self.pending_bytes = 0
        return pieces

    def write(self, pieces: list[_Piece]) -> None:
        """Append ``pieces`` (on the writer thread: many small shards open many files)."""
        if self.file is None:
            self.file = os.fdopen(create_shard_file(self.tmp), "wb")
        file = self.file
        for piece in pieces:
            if isinstance(piece, bytes):
                file.write(piece)
            else:
                file.flush()
                piece.copy_to(file.fileno())

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


class ShardWriter:
    """Routes valid lines to open shard files (one per model when asked) and writes them.

    Files are ``{index:05d}.a1.jsonl.tmp`` until :meth:`commit` renames them all, after every
    one was fsynced.
    """

    def __init__(
        self,
        out_dir: Path,
        *,
        run_id: str,
        max_lines: int,
        max_bytes: int,
        per_model: bool,
        background: Background,
    ) -> None:
        self._out_dir = out_dir
        self._run_id = run_id
        self._max_lines = max_lines
        self._max_bytes = max_bytes
        self._per_model = per_model
        self._background = background
        self._syncer = Syncer()
        self._open: dict[str | None, _OpenShard] = {}
        self._all: list[_OpenShard] = []
        self._discarded = False

    def add(self, model: str | None, data: bytes, body_bytes: int) -> None:
        """Append one line (without newline) to the open shard of ``model``."""
        key = model if self._per_model else None
        shard = self._open.get(key)
        size = len(data) + 1
        if shard is None or shard.lines >= self._max_lines or shard.bytes + size > self._max_bytes:
            if shard is not None:
                self._finish(shard)
            shard = self._start(key, model)
        elif model != shard.model:
            shard.mixed = True
        shard.pending.append(data)
        shard.lines += 1
        shard.bytes += size
        shard.body_bytes += body_bytes
        shard.pending_bytes += size
        if shard.pending_bytes >= _FLUSH_BYTES:
            self._flush(shard)

    def add_block(
        self,
        lines: list[bytes],
        models: list[str | None],
        custom_ids: list[str],
        overhead: int,
    ) -> None:
        """Append many lines at once: line ``i`` has ``models[i]`` and ``custom_ids[i]``, and
        ``len(line) - len(custom_id) - overhead`` body bytes. Same files as calling :meth:`add`
        per line, without the per-line work."""
        if self._per_model and models.count(models[0]) != len(models):
            for line, model, cid in zip(lines, models, custom_ids, strict=True):
                self.add(model, line, len(line) - len(cid) - overhead)
            return
        key = models[0] if self._per_model else None
        start, count = 0, len(lines)
        ends: list[int] | None = None  # ends[j]: bytes of lines[:j + 1], newlines included
        while start < count:
            shard = self._open.get(key)
            first = len(lines[start]) + 1
            if (
                shard is None
                or shard.lines >= self._max_lines
                or (shard.bytes + first > self._max_bytes)
            ):
                if shard is not None:
                    self._finish(shard)
                shard = self._start(key, models[start])
            stop = min(count, start + self._max_lines - shard.lines)
            chunk = lines[start:stop]
            size = sum(map(len, chunk)) + len(chunk)
            if shard.bytes + size > self._max_bytes:  # cut after the last line that fits
                if ends is None:
                    ends = list(accumulate(len(line) + 1 for line in lines))
                before = ends[start - 1] if start else 0
                limit = before + self._max_bytes - shard.bytes
                stop = bisect_right(ends, limit, lo=start, hi=stop)
                chunk = lines[start:stop]
                size = ends[stop - 1] - before
            taken = models[start:stop]
            if not shard.mixed and taken.count(shard.model) != len(taken):
                shard.mixed = True
            shard.pending += chunk
            shard.lines += len(chunk)
            shard.bytes += size
            ids = sum(map(len, custom_ids[start:stop]))
            shard.body_bytes += size - len(chunk) * (1 + overhead) - ids
            shard.pending_bytes += size
            if shard.pending_bytes >= _FLUSH_BYTES:
                self._flush(shard)
            start = stop

    def add_span(
        self,
        source: int | bytes,
        start: int,
        line_ends: Sequence[int],
        models: list[str | None],
        id_chars: Sequence[int],
        overhead: int,
        *,
        ends_newline: bool = True,
    ) -> None:
        """Append whole lines that are in the input file as they are to be written, as
        :meth:`add_block` would append them (same cuts, same files, same records), without
        reading them here: the writer thread copies them from ``source``.

        Args:
            source: the input's file descriptor (kept open until :meth:`commit`), or the
                lines themselves (then ``start`` is 0).
            start: the offset of the first line in ``source``.
            line_ends: ``line_ends[i]``: bytes of lines ``0..i``, each with its newline.
            models: one model per line, or a single one that every line has.
            id_chars: ``id_chars[i]``: the characters of the custom_ids of lines ``0..i``.
            overhead: envelope bytes (see :func:`.block.envelope_bytes`).
            ends_newline: the last line ends with a newline in the input (one is added if not).
        """
        count = len(line_ends)
        uniform = len(models) == 1
        if self._per_model and not uniform and models.count(models[0]) != count:
            for i, model in enumerate(models):
                before = line_ends[i - 1] if i else 0
                line = _read(source, start + before, line_ends[i] - 1 - before)
                chars = id_chars[i] - (id_chars[i - 1] if i else 0)
                self.add(model, line, len(line) - chars - overhead)
            return
        key = models[0] if self._per_model else None
        first_line = 0
        while first_line < count:
            shard = self._open.get(key)
            before = line_ends[first_line - 1] if first_line else 0
            first = line_ends[first_line] - before
            if (
                shard is None
                or shard.lines >= self._max_lines
                or (shard.bytes + first > self._max_bytes)
            ):
                if shard is not None:
                    self._finish(shard)
                shard = self._start(key, models[0 if uniform else first_line])
            stop = min(count, first_line + self._max_lines - shard.lines)
            if shard.bytes + line_ends[stop - 1] - before > self._max_bytes:  # cut after the
                limit = before + self._max_bytes - shard.bytes  # last line that fits
                stop = bisect_right(line_ends, limit, lo=first_line, hi=stop)
            size = line_ends[stop - 1] - before
            if not shard.mixed:
                if uniform:
                    shard.mixed = models[0] != shard.model
                else:
                    taken = models[first_line:stop]
                    shard.mixed = taken.count(shard.model) != len(taken)
            if shard.pending:  # lines added one by one come first
                buffered = shard.pending_bytes
                shard.chunks = shard.take()
                shard.pending_bytes = buffered
            if stop == count and not ends_newline:
                shard.chunks += [_piece(source, start + before, size - 1), b"\n"]
            else:
                shard.chunks.append(_piece(source, start + before, size))
            shard.lines += stop - first_line
            shard.bytes += size
            ids = id_chars[stop - 1] - (id_chars[first_line - 1] if first_line else 0)
            shard.body_bytes += size - (stop - first_line) * (1 + overhead) - ids
            shard.pending_bytes += size
            if shard.pending_bytes >= _FLUSH_BYTES:
                self._flush(shard)
            first_line = stop

    def _start(self, key: str | None, model: str | None) -> _OpenShard:
        index = len(self._all)
        shard = _OpenShard(index, model, self._out_dir / f"{index:05d}.a1.jsonl.tmp")
        self._all.append(shard)
        self._open[key] = shard
        return shard

    def _flush(self, shard: _OpenShard, *, last: bool = False) -> None:
        size = shard.pending_bytes
        pieces = shard.take()
        shard.flushed = True
        if last:  # one task: finishing costs one hand-off to the thread, not two
            self._background.submit(self._write_last, shard, pieces, size=size)
        elif pieces:
            self._background.submit(shard.write, pieces, size=size)

    def _write_last(self, shard: _OpenShard, pieces: list[_Piece]) -> None:
        if pieces:
            shard.write(pieces)
        file = shard.file
        assert file is not None  # a finished shard has at least one line, written
        file.flush()
        self._syncer.hand_off(file.fileno(), file.close)

    def _finish(self, shard: _OpenShard) -> None:
        if shard.file is None and shard.pending_bytes <= _INLINE_BYTES and not shard.flushed:
            self._write_small(shard)
        else:
            self._flush(shard, last=True)

    def _write_small(self, shard: _OpenShard) -> None:
        """Write a small shard whole, here: an open, a write and a close cost ~30 us on this
        thread, while on the writer thread each waits for the GIL that the parser holds
        (20,000 one-line shards: 208 us per file there)."""
        pieces = shard.take()
        fd = create_shard_file(shard.tmp)
        try:
            for piece in pieces:
                if isinstance(piece, bytes):
                    _write_all(fd, piece)
                else:
                    piece.copy_to(fd)
        except BaseException:
            os.close(fd)
            raise
        self._syncer.hand_off(fd, functools.partial(os.close, fd))

    def commit(self) -> list[ShardRecord]:
        """Flush, fsync and rename every shard; return their records in index order."""
        for shard in self._open.values():
            self._finish(shard)
        self._open.clear()
        self._background.drain()
        self._syncer.finish()
        records = []
        for shard in self._all:
            path = shard.tmp.with_name(shard.tmp.name.removesuffix(".tmp"))
            os.replace(shard.tmp, path)
            records.append(
                ShardRecord(
                    run_id=self._run_id,
                    index=shard.index,
                    attempt=1,
                    path=str(path),
                    lines=shard.lines,
                    bytes=shard.bytes,
                    model=None if shard.mixed else shard.model,
                    tokens=shard.body_bytes // 4,
                )
            )
        return records

    def discard(self) -> None:
        """Stop writing and delete every file this writer created (idempotent)."""
        if self._discarded:
            return
        self._discarded = True
        try:
            with contextlib.suppress(Exception):  # the error that got us here matters more
                self._background.drain()
            with contextlib.suppress(Exception):
                self._syncer.finish()
        finally:
            for shard in self._all:
                shard.close()
                shard.tmp.unlink(missing_ok=True)
            self._open.clear()
