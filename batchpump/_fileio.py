"""Blocking file I/O off the event loop, in a few threads only.

Uploads, downloads, the results file and the sharder read and write disk through
:func:`run_io`: one ``CapacityLimiter`` of ``FILE_IO_THREADS`` tokens per event loop. anyio
reuses the most recently idle worker thread first, so a few tokens keep the same few threads
(and their glibc malloc arenas) busy instead of spreading big chunks over dozens of threads
that each keep their own high-water mark. Reads of at most ``INLINE_BYTES`` run on the loop
itself (:func:`run_io_sized`): a thread hop costs more than the read.

Two habits of the callers keep memory flat:

- allocate big buffers on the event loop's thread and let the worker only fill them
  (``readinto``) or drain them (a buffer handed over, not copied);
- read in chunks of about a MiB, not more.

Why, with the measurements behind it: ``benchmarks/README.md`` ("File I/O threads").
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import Final, TypeVar, TypeVarTuple

import anyio
import anyio.lowlevel
import anyio.to_thread
from anyio.lowlevel import RunVar

__all__ = [
    "FILE_IO_THREADS",
    "INLINE_BYTES",
    "create_private",
    "file_io_limiter",
    "fsync_dir",
    "run_io",
    "run_io_sized",
]

#: File operations running at once (per event loop), so at most this many threads allocate
#: their buffers.
FILE_IO_THREADS: Final = 4
#: Reads up to this many bytes run on the event loop's own thread (see :func:`run_io_sized`).
INLINE_BYTES: Final = 64 * 1024

_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")
_limiter: RunVar[anyio.CapacityLimiter] = RunVar("batchpump_file_io_limiter")


def file_io_limiter() -> anyio.CapacityLimiter:
    """The event loop's file I/O limiter (``FILE_IO_THREADS`` tokens), created on first use."""
    try:
        return _limiter.get()
    except LookupError:
        limiter = anyio.CapacityLimiter(FILE_IO_THREADS)
        _limiter.set(limiter)
        return limiter


async def run_io(fn: Callable[[*_Ts], _T], *args: *_Ts) -> _T:
    """``fn(*args)`` in a worker thread under the file I/O limiter.

    Like ``anyio.to_thread.run_sync``, a cancelled caller waits for ``fn`` to return, so a
    file opened in ``fn`` is closed in ``fn``.
    """
    return await anyio.to_thread.run_sync(fn, *args, limiter=file_io_limiter())


async def run_io_sized(size: int, fn: Callable[[*_Ts], _T], *args: *_Ts) -> _T:
    """Like :func:`run_io`, but a read of at most ``INLINE_BYTES`` runs right here.

    A thread hop is two wake-ups and a GIL hand-off each way: the control-plane benchmark's
    profile (one-line shards, 2 cores shared with the emulator) put ~0.2 ms of the event
    loop's time on each, more than the read itself. A read of 64 KiB of a file batchpump
    just wrote comes from the page cache in microseconds. Only reads of our own files, with no
    fsync, may come here. Still a cancellation point, like a hop.
    """
    if size > INLINE_BYTES:
        return await run_io(fn, *args)
    await anyio.lowlevel.checkpoint()
    return fn(*args)


def create_private(path: Path, *, truncate: bool = False) -> None:
    """Create ``path`` (and its parent) readable by the owner only, whatever the umask."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if truncate else 0)
    fd = os.open(path, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def fsync_dir(directory: Path) -> None:
    """Make the creates, renames and removals in ``directory`` durable.

    A no-op where a directory cannot be opened or fsynced (``EINVAL``/``ENOTSUP``: some
    platforms and file systems); any other error is raised.
    """
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)
