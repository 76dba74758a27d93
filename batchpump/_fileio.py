"""Blocking file I/O off the event loop, in a few threads only.

Uploads, downloads and the results file read and write disk in worker threads, in chunks of a
MiB or so. With glibc, each thread that calls malloc gets an arena of its own (up to eight per
core), and what is freed in an arena stays there for that arena's next allocations instead of
going back to the OS. Through anyio's default limiter (40 threads) the chunks of eight
concurrent uploads and four result downloads were spread over a dozen threads, each keeping
the high-water mark of its own traffic: the 1,000,000-line run of ``benchmarks/
bench_end_to_end.py`` peaked at 314-354 MB, and at 215 MB with ``MALLOC_ARENA_MAX=2``.

So every file operation of those paths goes through :func:`run_io`: one ``CapacityLimiter``
of ``FILE_IO_THREADS`` tokens per event loop. anyio pools its worker threads and reuses the
most recently idle one first, so few tokens keep the same few threads (and arenas) busy: the
CLI run went from 9 threads to 5. Reads and writes of a MiB release the GIL and are short
beside the network transfers; four threads keep up (the run's wall time did not change).
Measured on 400,000 lines (8 shards), the limiter took 20-30 MB off the peak on top of the
smaller id chunks below. Two habits of the callers matter as much:

- allocate the big buffers on the event loop's thread and let the worker only fill them
  (``readinto``) or drain them (a buffer handed over, not copied): ``FileSlice``,
  ``PartWriter``, ``ResultSink``, ``spool``. For uploads this took the RSS while sending from
  130 to 80 MB;
- read in chunks of a MiB, not more: listing a shard's ids 8 MiB at a time held 8 MiB of
  chunk plus 8 MiB of ~1 KB lines (each its own malloc) per collector (``_collect``).

With all three the 1,000,000-line run peaked at 145 MB (from 325 MB), in the same wall time.
"""

from __future__ import annotations

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
