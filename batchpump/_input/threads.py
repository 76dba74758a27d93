"""The sharder's worker threads: one ordered writer, and a small pool of fsyncs.

:class:`Background` runs hashing and writes on one thread, in submission order, so parsing on
the calling thread overlaps them (``hashlib`` and file writes release the GIL).
:class:`Syncer` fsyncs finished shard files on a few threads: one fsync per file costs a disk
flush, and concurrent fsyncs share one journal commit on ext4 and xfs (2,000 one-line files:
1.6 ms each one by one, 0.1 ms each eight at a time, measured on the benchmark machine), which
is what many small shards need. Also here: how shard files are created and made durable.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Final

__all__ = ["Background", "Syncer", "create_shard_file", "fsync_dir"]

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
