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
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from itertools import accumulate
from pathlib import Path
from typing import BinaryIO, Final

from .._models import ShardRecord

__all__ = ["Background", "ShardWriter", "Syncer", "create_shard_file", "fsync_dir"]

#: Bytes of background tasks (hash updates, writes) pending at most, and tasks at most.
_IO_BYTES: Final = 24 * 1024 * 1024
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


def fsync_dir(directory: Path) -> None:
    """Make renames in ``directory`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


#: Buffered bytes of one shard handed to the writer thread at once.
_FLUSH_BYTES: Final = 4 * 1024 * 1024
#: A shard finished with at most this many bytes, none handed to the writer thread yet, is
#: written on the calling thread (see ``ShardWriter._write_small``).
_INLINE_BYTES: Final = 256 * 1024


class _OpenShard:
    __slots__ = (
        "body_bytes",
        "bytes",
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
        self.pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        """Append ``data`` (on the writer thread: many small shards open many files)."""
        if self.file is None:
            self.file = os.fdopen(create_shard_file(self.tmp), "wb")
        self.file.write(data)

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

    def _start(self, key: str | None, model: str | None) -> _OpenShard:
        index = len(self._all)
        shard = _OpenShard(index, model, self._out_dir / f"{index:05d}.a1.jsonl.tmp")
        self._all.append(shard)
        self._open[key] = shard
        return shard

    def _flush(self, shard: _OpenShard, *, last: bool = False) -> None:
        data = b""
        if shard.pending:
            shard.pending.append(b"")  # join then ends with a newline
            data = b"\n".join(shard.pending)
            shard.pending = []
            shard.pending_bytes = 0
        shard.flushed = True
        if last:  # one task: finishing costs one hand-off to the thread, not two
            self._background.submit(self._write_last, shard, data, size=len(data))
        elif data:
            self._background.submit(shard.write, data, size=len(data))

    def _write_last(self, shard: _OpenShard, data: bytes) -> None:
        if data:
            shard.write(data)
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
        shard.pending.append(b"")
        data = memoryview(b"\n".join(shard.pending))
        shard.pending = []
        fd = create_shard_file(shard.tmp)
        try:
            while data:
                data = data[os.write(fd, data) :]
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
