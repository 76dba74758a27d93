"""A stream's results file, rotated at a size bound; parts whose results were acked removed.

A stream's results are one append-only sequence of JSONL bytes: the run's committed length in
the journal and the acknowledged offsets in the stream's store are offsets into it. On disk it
is cut into parts. The part from offset 0 is the run's results file (``results.jsonl``); a part
starting at offset ``S`` is ``results.{S:016d}.jsonl``. Every part keeps the sequence's offsets
as its own: it is a sparse file whose bytes before ``S`` are a hole (no disk blocks), so the
run's ``ResultSink`` appends to the newest part at the committed length as it would to one file.

Once the newest part holds ``bound`` bytes or more after a commit, the next part is created
(sparse up to the committed length, fsynced with its directory) and the sink appends there. A
part is removed once every result in it was acknowledged (its successor starts at or below the
acknowledged spans cover it, acks out of order included); the newest part is never removed.
So disk holds the parts with a result not yet acknowledged, and the newest part.

A crash between creating a part and the sink's first append to it leaves an empty newest part
that starts at the committed length: the sink resumes there. A crash while creating it leaves
a file shorter than its start, which is removed on open: the part before it is the newest.
"""

from __future__ import annotations

import bisect
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Final, final

from .._fileio import create_private, fsync_dir

__all__ = ["ResultParts"]

_PART: Final = re.compile(r"results\.(\d{16})\.jsonl")


@final
class ResultParts:
    """The parts of one stream's results file (methods that touch the disk are synchronous:
    call them through ``run_io``).

    Args:
        first: the part from offset 0 (the run's results file).
        bound: bytes after which the newest part is followed by a new one.
    """

    def __init__(self, first: Path, bound: int) -> None:
        self._first = first
        self.bound = bound
        self._starts: list[int] = [0]
        self._stops: dict[int, int] = {}  # start -> end of each part but the newest
        self._walked: dict[int, int] = {}  # part start -> how far it is known acknowledged

    def scan(self) -> None:
        """Find the parts on disk (none yet: the first, to be created by the sink)."""
        starts = [
            int(found[1])
            for path in self._first.parent.glob("results.*.jsonl")
            if (found := _PART.fullmatch(path.name))
        ]
        if self._first.exists() or not starts:
            starts.append(0)
        starts.sort()
        if starts[-1] and self.path(starts[-1]).stat().st_size < starts[-1]:
            self.path(starts.pop()).unlink()  # a rotation a crash cut short: not a part yet
        self._starts = starts
        self._stops = {start: self.path(start).stat().st_size for start in starts[:-1]}

    def path(self, start: int) -> Path:
        """The file of the part starting at ``start``."""
        if start == 0:
            return self._first
        return self._first.with_name(f"results.{start:016d}.jsonl")

    @property
    def newest(self) -> Path:
        """The part the sink appends to."""
        return self.path(self._starts[-1])

    @property
    def count(self) -> int:
        """Parts on disk."""
        return len(self._starts)

    def locate(self, offset: int) -> tuple[Path, int | None]:
        """The part holding ``offset`` and the offset it ends at (``None``: the newest)."""
        start = self._starts[max(0, bisect.bisect_right(self._starts, offset) - 1)]
        return self.path(start), self._stops.get(start)

    def rotate(self, length: int) -> Path | None:
        """After a commit up to ``length``: the new part to append to, once the newest holds
        ``bound`` bytes or more; else ``None``."""
        if length - self._starts[-1] < self.bound:
            return None
        path = self.path(length)
        try:
            create_private(path, truncate=True)
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            try:
                os.ftruncate(fd, length)  # a hole up to the committed length
                os.fsync(fd)
            finally:
                os.close(fd)
            fsync_dir(path.parent)
        except OSError:
            path.unlink(missing_ok=True)  # not a part: the newest stays the newest
            raise
        self._stops[self._starts[-1]] = length
        self._starts.append(length)
        return path

    def acknowledged(self, acked_to: int, ahead: Mapping[int, int]) -> list[tuple[int, int]]:
        """Forget the parts (never the newest) whose results were all acknowledged: below
        ``acked_to`` or in the spans of ``ahead`` (``start -> stop``). Returns their
        ``(start, stop)`` offsets; remove their files once the acks are durable."""
        done: list[tuple[int, int]] = []
        kept: list[int] = []
        starts = self._starts
        for start in starts[:-1]:
            stop = self._stops[start]
            position = max(self._walked.get(start, start), acked_to)
            while position < stop and position in ahead:
                position = ahead[position]
            if position >= stop:
                done.append((start, stop))
                self._walked.pop(start, None)
                del self._stops[start]
            else:
                self._walked[start] = position  # acks only add: walk on from here next time
                kept.append(start)
        kept.append(starts[-1])
        self._starts = kept
        return done
