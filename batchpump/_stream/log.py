"""The segment log: accepted lines, durable on return, cut into segments that become shards.

Each model (or provider grouping) has one open segment, a shard file being appended to
(``segments/{index:05d}.a1.jsonl``, the very file the shard will point to: cutting copies
nothing). ``append`` goes through a ``GroupCommit``: the puts that arrive while a round is being
written share the next one, which in one worker thread

1. claims the lines' ids in the store's index (a put whose id was accepted before, at any time
   in the stream's life, is refused whole, naming when the first was accepted);
2. routes the claimed lines to their open segments, cutting a segment once it holds
   ``flush_lines`` lines or ``flush_bytes`` bytes (never more than the provider takes);
3. writes every touched segment file at its committed length and fsyncs it;
4. commits the new lengths, the cuts and the count of lines accepted in one transaction.

A put returns once its round committed: its lines survive a kill -9 (and a power loss). A
crash between 3 and 4 leaves bytes past a segment's committed length; they belong to no
returned put and are cut off when the stream is opened again. A cut segment ("sealed") is
handed to ``on_sealed``, which makes it a shard in the journal; ``cut_on_time`` seals a segment
``flush_after`` seconds (on the stream's clock) after its first line.
"""

from __future__ import annotations

import datetime
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, final

import anyio

from .._clock import Clock
from .._errors import InputProblem
from .._group import GroupCommit
from .intake import Line, refused
from .store import SegmentRow, StreamStore, rollback

__all__ = ["Segment", "SegmentLog"]

_DUPLICATE_HINT: Final = "custom_id must be unique over the stream's whole life; use a new id"
_UPSERT_SEGMENT: Final = "INSERT OR REPLACE INTO segments VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"


@dataclass(eq=False)
class Segment:
    """One segment file: lines of one group, becoming one shard once sealed."""

    index: int
    key: str | None
    model: str | None
    path: Path
    first_at: float  # wall time of its first line (the clock's)
    due: float  # monotonic time it is cut at, whatever its size
    lines: int = 0
    size: int = 0
    body_bytes: int = 0
    mixed: bool = False
    committed: int = 0  # bytes durable and recorded
    fd: int = -1
    pending: list[bytes] = field(default_factory=list)

    def row(self, state: str) -> SegmentRow:
        return (
            self.index,
            self.key,
            self.model,
            int(self.mixed),
            state,
            self.lines,
            self.size,
            self.body_bytes,
            self.first_at,
        )


@dataclass(eq=False)
class _Put:
    lines: list[Line]
    single: bool
    problems: list[InputProblem] = field(default_factory=list)


@final
class SegmentLog:
    """The open segments of one stream and the rounds that append to them.

    Args:
        store: the stream's store (ids, segments, meta).
        directory: where segment files go.
        where: how errors name the stream.
        max_lines: lines at which a segment is cut.
        max_bytes: bytes at which a segment is cut (a line that would pass it starts the next).
        flush_after: seconds after its first line at which a segment is cut.
        per_model: one open segment per ``body.model`` (or item group).
        clock: the stream's clock.
        on_sealed: called with every segment cut, after the cut is durable.
    """

    def __init__(
        self,
        store: StreamStore,
        directory: Path,
        *,
        where: str,
        max_lines: int,
        max_bytes: int,
        flush_after: float,
        per_model: bool,
        clock: Clock,
        on_sealed: Callable[[Segment], None],
    ) -> None:
        self._store = store
        self._dir = directory
        self._where = where
        self._max_lines = max_lines
        self._max_bytes = max_bytes
        self._flush_after = flush_after
        self._per_model = per_model
        self._clock = clock
        self._on_sealed = on_sealed
        self._open: dict[str | None, Segment] = {}
        self._group: GroupCommit[_Put] = GroupCommit(self._round)
        self._lock = anyio.Lock()
        self._opened = anyio.Event()
        self.accepted = 0
        self.next_index = 0
        self.rounds = 0

    @property
    def open_segments(self) -> list[Segment]:
        return list(self._open.values())

    def restore(self, accepted: int, next_index: int, rows: list[SegmentRow]) -> list[Segment]:
        """Take back the store's segments (synchronous: call it through ``run_io``): open ones
        are reopened at their committed length; the sealed ones are returned, to be made
        shards."""
        self.accepted = accepted
        self.next_index = next_index
        sealed = []
        now_wall, now = self._clock.time(), self._clock.monotonic()
        for index, key, model, mixed, state, lines, size, body, first_at in rows:
            seg = Segment(
                index,
                key,
                model,
                self._path(index),
                first_at,
                due=now + max(0.0, self._flush_after - (now_wall - first_at)),
                lines=lines,
                size=size,
                body_bytes=body,
                mixed=bool(mixed),
                committed=size,
            )
            fd = os.open(seg.path, os.O_RDWR | os.O_CLOEXEC)
            os.ftruncate(fd, size)  # bytes of a round that never committed
            if state == "open":
                seg.fd = fd
                self._open[key] = seg
            else:
                os.fsync(fd)
                os.close(fd)
                sealed.append(seg)
        return sealed

    async def append(self, lines: list[Line], *, single: bool) -> None:
        """Make ``lines`` durable, all or none.

        Raises:
            InputError: an id was accepted before, or repeats within ``lines``.
        """
        put = _Put(lines, single)
        await self._group.submit(put)
        if put.problems:
            raise refused(self._where, put.problems)

    async def seal(self, due_only: bool) -> None:
        """Cut the open segments (only those past their ``flush_after`` with ``due_only``)."""
        async with self._lock:
            now = self._clock.monotonic()
            chosen = [s for s in self._open.values() if not due_only or s.due <= now]
            if not chosen:
                return
            await self._store.call(lambda conn: self._seal_sync(conn, chosen), doing="cutting")
            for seg in chosen:
                del self._open[seg.key]
                self._on_sealed(seg)

    async def cut_on_time(self) -> None:
        """Seal each segment ``flush_after`` seconds after its first line, forever."""
        while True:
            if not self._open:
                await self._opened.wait()
                self._opened = anyio.Event()
                continue
            wait = min(s.due for s in self._open.values()) - self._clock.monotonic()
            if wait > 0:
                await self._clock.sleep(wait)
            else:
                await self.seal(due_only=True)

    def close(self) -> None:
        """Close the open segment files (they stay on disk, open, for the next run)."""
        for seg in self._open.values():
            if seg.fd >= 0:
                os.close(seg.fd)
                seg.fd = -1

    # ---- one round, in the store's thread ----------------------------------------------

    async def _round(self, puts: list[_Put]) -> None:
        async with self._lock:
            now = self._clock.time()
            mono = self._clock.monotonic()
            sealed = await self._store.call(
                lambda conn: self._round_sync(conn, puts, now, mono), doing="accepting lines"
            )
            self.rounds += 1
        for seg in sealed:
            self._on_sealed(seg)
        if self._open and not self._opened.is_set():
            self._opened.set()

    def _round_sync(
        self, conn: sqlite3.Connection, puts: list[_Put], now: float, mono: float
    ) -> list[Segment]:
        before = dict(self._open)
        saved = [(s, s.lines, s.size, s.body_bytes, s.mixed) for s in before.values()]
        next_index, accepted = self.next_index, self.accepted
        touched: list[Segment] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            taken: list[Line] = []
            for put in puts:
                if self._claim(conn, put, now):
                    taken.extend(put.lines)
            sealed, touched = self._route(taken, now, mono)
            _write(touched, sealed)
            conn.executemany(_UPSERT_SEGMENT, [s.row("open") for s in touched if s not in sealed])
            conn.executemany(_UPSERT_SEGMENT, [s.row("sealed") for s in sealed])
            self.accepted += len(taken)
            conn.executemany(
                "INSERT OR REPLACE INTO meta VALUES (?, ?)",
                [("accepted", self.accepted), ("next_index", self.next_index)],
            )
            conn.execute("COMMIT")
        except BaseException:
            rollback(conn)
            for seg in touched:
                seg.pending.clear()
                if seg.index >= next_index and seg.fd >= 0:
                    os.close(seg.fd)
                    seg.fd = -1
            for seg, lines, size, body, mixed in saved:
                seg.lines, seg.size, seg.body_bytes, seg.mixed = lines, size, body, mixed
            self._open, self.next_index, self.accepted = before, next_index, accepted
            raise
        for seg in touched:
            seg.committed = seg.size
        for seg in sealed:
            os.close(seg.fd)
            seg.fd = -1
        return sealed

    def _claim(self, conn: sqlite3.Connection, put: _Put, now: float) -> bool:
        """Add the put's ids to the index, or record why not (then nothing of it is kept)."""
        problems = put.problems
        keys = [(line.h1, line.h2) for line in put.lines]
        if not put.single:
            first: dict[tuple[int, int], int] = {}
            for position, (key, line) in enumerate(zip(keys, put.lines, strict=True), 1):
                seen = first.setdefault(key, position)
                if seen != position:
                    problems.append(
                        InputProblem(
                            position,
                            f"duplicate custom_id {line.custom_id!r} (first at request {seen} "
                            "of this call)",
                            _DUPLICATE_HINT,
                        )
                    )
            if problems:
                return False
        conn.execute("SAVEPOINT put")
        changes = conn.total_changes
        conn.executemany(
            "INSERT OR IGNORE INTO ids VALUES (?, ?, ?)", [(h1, h2, now) for h1, h2 in keys]
        )
        if conn.total_changes - changes == len(keys):
            conn.execute("RELEASE put")
            return True
        conn.execute("ROLLBACK TO put")
        conn.execute("RELEASE put")
        for position, (key, line) in enumerate(zip(keys, put.lines, strict=True), 1):
            found = conn.execute(
                "SELECT accepted_at FROM ids WHERE h1 = ? AND h2 = ?", key
            ).fetchone()
            if found is not None:
                when = datetime.datetime.fromtimestamp(found[0], tz=datetime.UTC)
                problems.append(
                    InputProblem(
                        0 if put.single else position,
                        f"duplicate custom_id {line.custom_id!r} (first accepted at "
                        f"{when.isoformat(timespec='milliseconds')})",
                        _DUPLICATE_HINT,
                    )
                )
        return False

    def _route(
        self, lines: list[Line], now: float, mono: float
    ) -> tuple[list[Segment], list[Segment]]:
        sealed: list[Segment] = []
        touched: dict[int, Segment] = {}
        opened = self._open
        per_model = self._per_model
        for line in lines:
            key = line.model if per_model else None
            seg = opened.get(key)
            size = len(line.data) + 1
            if seg is None or seg.size + size > self._max_bytes:
                if seg is not None:
                    sealed.append(seg)
                seg = self._new(key, line.model, now, mono)
                opened[key] = seg
            elif line.model != seg.model:
                seg.mixed = True
            seg.pending.append(line.data)
            seg.lines += 1
            seg.size += size
            seg.body_bytes += line.body_bytes
            touched[seg.index] = seg
            if seg.lines >= self._max_lines or seg.size >= self._max_bytes:
                sealed.append(seg)
                del opened[key]
        return sealed, list(touched.values())

    def _new(self, key: str | None, model: str | None, now: float, mono: float) -> Segment:
        index = self.next_index
        self.next_index += 1
        seg = Segment(index, key, model, self._path(index), now, due=mono + self._flush_after)
        self._dir.mkdir(parents=True, exist_ok=True)
        seg.fd = os.open(seg.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        return seg

    def _seal_sync(self, conn: sqlite3.Connection, segments: list[Segment]) -> None:
        for seg in segments:
            os.ftruncate(seg.fd, seg.committed)
            os.fsync(seg.fd)
        conn.executemany(
            "UPDATE segments SET state = 'sealed' WHERE idx = ?", [(s.index,) for s in segments]
        )
        for seg in segments:
            os.close(seg.fd)
            seg.fd = -1

    def _path(self, index: int) -> Path:
        return self._dir / f"{index:05d}.a1.jsonl"


def _write(touched: list[Segment], sealed: list[Segment]) -> None:
    """Write each touched segment's new lines at its committed length; fsync them all."""
    new_dir = False
    for seg in touched:
        seg.pending.append(b"")
        data = memoryview(b"\n".join(seg.pending))
        seg.pending.clear()
        offset = seg.committed
        new_dir |= offset == 0
        while data:
            written = os.pwrite(seg.fd, data, offset)
            data = data[written:]
            offset += written
    for seg in touched:
        if seg not in sealed:
            os.fsync(seg.fd)
    for seg in sealed:  # exactly its lines: a failed round may have left bytes past them
        os.ftruncate(seg.fd, seg.size)
        os.fsync(seg.fd)
    if new_dir and touched:
        _fsync_dir(touched[0].path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
