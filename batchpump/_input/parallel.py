"""Checking a large input's lines in worker processes, so that the sharder uses every core.

The file is cut at fixed offsets, ``k * BLOCK_BYTES``; range ``k`` holds the lines that *start*
in cut ``k``, so ranges tile the file and each begins on a line start. A worker process reads
its range itself (from the page cache), splits it into lines and checks them with the run's
:class:`.block.BlockChecker`. It sends back only what the sharder needs of a range whose lines
are all standard and valid (:class:`CheckedRange`: the line count, the custom_ids' hashes and
lengths, the models), never the lines: the sharder reads the same bytes to hash them, and writes
them as they are, because a standard line is written byte for byte (a range with CRLF line
ends comes back rewritten with LF). A range with anything else in it (a bad or blank line, a
BOM, a line above the limit) comes back unchecked, and the
sharder checks it line by line in-process, as it checks a small input: errors, line numbers and
shard files are the same either way.

Workers are forked: the sharder keeps ``hash(custom_id)`` for duplicate detection, and string
hashes agree only between processes that share ``PYTHONHASHSEED``'s secret; a fork also starts
in milliseconds, where a fresh interpreter importing batchpump takes a good part of a second.
The parent may run other threads (the engine's event loop, the hashing and writing threads): a
worker only runs :func:`check_range`, which takes none of their locks. Where ``fork`` is not
available, inputs are checked in-process, and so they are on Python 3.12 and later, which warn
(``DeprecationWarning``) on forking a process that runs threads: an application that turns
warnings into errors must not fail on our account, and the other start methods would need a
hash of ids that agrees across interpreters. The pool lives for one pass (:class:`RangeChecker` is
a context manager); a worker that dies raises ``BatchpumpError`` instead of a hang.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from array import array
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from itertools import accumulate
from pathlib import Path
from typing import Final, NamedTuple

from .._errors import BatchpumpError
from .block import BlockChecker
from .duplicates import bucketed

__all__ = [
    "BLOCK_BYTES",
    "MIN_BYTES",
    "WORKERS",
    "CheckedRange",
    "RangeChecker",
    "check_range",
    "usable",
]

#: Bytes per range handed to a worker.
BLOCK_BYTES = 4 * 1024 * 1024
#: Inputs smaller than this are checked in-process: a pool costs more than it saves.
MIN_BYTES = 16 * 1024 * 1024
#: Worker processes: one per CPU this process may use, at most two (the parent hashes and
#: writes meanwhile). With one, inputs are checked in-process.
WORKERS = min(2, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
#: Ranges handed out ahead of the one the sharder is at, per worker.
_AHEAD: Final = 2
#: Bytes read at a time while looking for a line's end.
_SCAN_BYTES: Final = 1024 * 1024
_BOM: Final = b"\xef\xbb\xbf"
_PLUS_ONE: Final = (1).__add__
_FORK: Final = "fork" in multiprocessing.get_all_start_methods() and sys.version_info < (3, 12)


class CheckedRange(NamedTuple):
    """One range of the input, as a worker found it.

    Attributes:
        start: the offset of its first line.
        end: the offset after its last line (the next range's ``start``).
        lines: its lines (all valid, none blank), or ``-1``: not checked, check it in-process.
        ends_newline: its last line ends with ``"\\n"`` (only the file's last line may not).
        models: each line's model, or one model every line has.
        line_ends: ``line_ends[i]``: bytes of lines ``0..i`` with a newline each.
        id_chars: ``id_chars[i]``: characters of the custom_ids of lines ``0..i``.
        hash_counts: the custom_ids' hashes per duplicate bucket (see ``IdHashes``) ...
        hashes: ... and the hashes, bucket by bucket.
        rewritten: the lines as they are to be written, when they differ from the input's bytes
            (CRLF line ends made LF); empty when the input's bytes are written as they are.
    """

    start: int
    end: int
    lines: int
    ends_newline: bool = True
    models: list[str | None] = []  # noqa: RUF012 (never mutated)
    line_ends: array[int] = array("q")
    id_chars: array[int] = array("q")
    hash_counts: array[int] = array("q")
    hashes: bytes = b""
    rewritten: bytes = b""


def usable(size: int) -> bool:
    """Whether an input of ``size`` bytes is checked by worker processes."""
    return _FORK and size >= MIN_BYTES and WORKERS > 1


class RangeChecker:
    """The worker processes of one pass over one file: yields its ranges checked, in order.

    Args:
        path: the input.
        size: its size in bytes (the pass covers exactly these bytes).
        checker: the run's block checker.
        max_line_bytes: the run's line limit.
    """

    def __init__(self, path: Path, size: int, checker: BlockChecker, max_line_bytes: int) -> None:
        self._path = str(path)
        self._size = size
        self._checker = checker
        self._max_line_bytes = max_line_bytes
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> RangeChecker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def ranges(self) -> Iterator[CheckedRange]:
        """Every range of the file in order; the pool starts at the first."""
        workers = WORKERS
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                workers,
                mp_context=multiprocessing.get_context("fork"),
                initializer=_adopt,
                initargs=(self._checker,),
            )
        pool = self._pool
        offsets = iter(range(0, self._size, BLOCK_BYTES))
        ahead: deque[Future[CheckedRange]] = deque()
        args = (self._path, BLOCK_BYTES, self._size, self._max_line_bytes)
        while True:
            try:
                while len(ahead) < workers * _AHEAD:
                    offset = next(offsets, None)
                    if offset is None:
                        break
                    ahead.append(pool.submit(check_range, offset, *args))
                if not ahead:
                    return
                checked = ahead.popleft().result()
            except BrokenProcessPool as exc:
                raise BatchpumpError(
                    f"a worker process checking {self._path} stopped unexpectedly (killed, or "
                    "out of memory?); nothing was sent. Run again"
                ) from exc
            if checked.end > checked.start:
                yield checked


_adopted: list[BlockChecker] = []


def _adopt(checker: BlockChecker) -> None:
    """A worker's initializer: keep the run's checker (inherited by ``fork``, not pickled)."""
    _adopted[:] = [checker]


def check_range(offset: int, path: str, block: int, size: int, max_line_bytes: int) -> CheckedRange:
    """Check the lines that start in ``[offset, offset + block)`` (in a worker process)."""
    with open(path, "rb", buffering=0) as file:
        fd = file.fileno()
        start = _line_start(fd, offset, size)
        end = _line_start(fd, offset + block, size)
        if start >= end:
            return CheckedRange(start, start, 0)
        unchecked = CheckedRange(start, end, -1)
        if end - start > block + max_line_bytes + 1:  # holds a line above the limit
            return unchecked
        data = os.pread(fd, end - start, start)
    if len(data) != end - start or (start == 0 and data.startswith(_BOM)):
        return unchecked  # the file shrank, or a BOM the line reader drops: in-process
    ends_newline = data.endswith(b"\n")
    rewritten = b""
    if b"\r" in data:  # CRLF line ends become LF, as the line reader makes them
        rewritten = data = data.replace(b"\r\n", b"\n")
        if not ends_newline and data.endswith(b"\r"):
            rewritten = data = data[:-1]
    lines = data.split(b"\n")
    if ends_newline:
        lines.pop()
    checked = _adopted[0].check(lines, data.isascii())  # NUL bytes: the decoder refuses them
    if checked is None:
        return unchecked
    custom_ids, models = checked
    counts, hashes = bucketed(custom_ids)
    return CheckedRange(
        start,
        end,
        len(lines),
        ends_newline,
        models[:1] if models.count(models[0]) == len(models) else models,
        array("q", accumulate(map(_PLUS_ONE, map(len, lines)))),
        array("q", accumulate(map(len, custom_ids))),
        counts,
        hashes,
        rewritten,
    )


def _line_start(fd: int, offset: int, size: int) -> int:
    """The offset of the first line that starts at or after ``offset`` (``size`` if none)."""
    if offset <= 0:
        return 0
    pos = offset - 1
    while pos < size:
        piece = os.pread(fd, min(_SCAN_BYTES, size - pos), pos)
        if not piece:
            break
        newline = piece.find(b"\n")
        if newline >= 0:
            return min(pos + newline + 1, size)
        pos += len(piece)
    return size
