"""Duplicate ``custom_id`` detection in bounded memory.

A set of every id would hold a Python string per line (tens of bytes each, millions of lines).
Instead the first pass keeps one 8-byte hash per valid line in ``BUCKETS`` ``array`` buckets;
only hashes seen twice are candidates, and a second pass over the input confirms them by the
ids themselves, so a hash collision never rejects a valid file.
"""

from __future__ import annotations

from array import array
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Final

from .check import Problem, custom_id_of
from .lines import iter_blocks

__all__ = ["BUCKETS", "MASK", "IdHashes", "bucketed", "confirm_duplicates"]

#: Buckets of hashes (a power of two: a hash picks its bucket by its low bits).
BUCKETS: Final = 256
MASK: Final = BUCKETS - 1


class IdHashes:
    """The hashes of every valid line's ``custom_id``, kept to find repeats after the pass.

    ``appenders[h & MASK](h)`` adds the hash ``h``: the sharder's hot loop calls it directly.
    """

    __slots__ = ("_buckets", "appenders")

    def __init__(self) -> None:
        self._buckets = [array("q") for _ in range(BUCKETS)]
        self.appenders = [bucket.append for bucket in self._buckets]

    def add_all(self, custom_ids: Iterable[str]) -> None:
        """Add the hash of each id."""
        appenders = self.appenders
        for h in map(hash, custom_ids):
            appenders[h & MASK](h)

    def add_bucketed(self, counts: array[int], hashes: bytes) -> None:
        """Add hashes given as :func:`bucketed` returns them (from a worker process)."""
        view = memoryview(hashes)
        offset = 0
        for bucket, count in zip(self._buckets, counts, strict=True):
            if count:
                bucket.frombytes(view[offset : offset + 8 * count])
                offset += 8 * count

    def colliding(self) -> set[int]:
        """Hashes added more than once: candidates for :func:`confirm_duplicates`."""
        found: set[int] = set()
        for bucket in self._buckets:
            if len(set(bucket)) != len(bucket):
                seen: set[int] = set()
                for h in bucket:
                    if h in seen:
                        found.add(h)
                    seen.add(h)
        return found


def bucketed(custom_ids: Iterable[str]) -> tuple[array[int], bytes]:
    """The ids' hashes in bucket order: ``(count per bucket, the hashes' bytes)``, for
    :meth:`IdHashes.add_bucketed` in another process (forked: ``hash`` must agree)."""
    ids = IdHashes()
    ids.add_all(custom_ids)
    counts = array("q", map(len, ids._buckets))
    return counts, b"".join(bucket.tobytes() for bucket in ids._buckets)


def confirm_duplicates(
    path: Path,
    candidates: set[int],
    bad: Collection[int] | Mapping[int, Problem],
    max_line_bytes: int,
    firsts: dict[str, int] | None = None,
    count_bad: bool = False,
) -> dict[int, Problem]:
    """Second pass over the lines whose id hash matched another's: real duplicates only.

    Args:
        path: the input.
        candidates: from :meth:`IdHashes.colliding`.
        bad: line numbers already found bad (their ids are not ids).
        max_line_bytes: the first pass's line limit (longer lines were never kept).
        firsts: if given, filled with each repeated id's first line.
        count_bad: a bad line's usable custom_id (its problem's) takes part too.

    Returns:
        line number -> problem, for every repeat after an id's first line.
    """
    first_seen: dict[str, int] = {}
    duplicates: dict[int, Problem] = {}
    for first, lines, _, _ in iter_blocks(path, max_line_bytes=max_line_bytes):
        for index, line in enumerate(lines):
            lineno = first + index
            if not line or line.isspace():  # blank lines are skipped, not bad
                continue
            if lineno in bad:
                problem = bad[lineno] if count_bad and isinstance(bad, Mapping) else None
                if problem is None or not problem.custom_id:
                    continue
                cid = problem.custom_id
            else:
                cid = custom_id_of(line)
            if hash(cid) not in candidates:
                continue
            seen = first_seen.setdefault(cid, lineno)
            if seen != lineno:
                if firsts is not None:
                    firsts[cid] = seen
                duplicates[lineno] = Problem(
                    f"duplicate custom_id {cid!r} (first seen on line {seen})",
                    "custom_id must be unique across the input; rename or drop the repeat",
                    cid,
                )
    return duplicates
