"""The segment log: accepted lines, durable on return, cut into segments that become shards.

Each model (or provider grouping) has one open segment, a shard file being appended to
(``segments/{index:05d}.a1.jsonl``, the very file the shard will point to: cutting copies
nothing). The segment files are the stream's write-ahead record. ``append`` goes through a
``GroupCommit``: the puts that arrive while a round is being written share the next one, which
in one worker thread

1. claims the lines' ids in the store's index, inside the store's open transaction (a put
   whose id was accepted before, at any time in the stream's life, is refused whole, naming
   when the first was accepted): one insert for the whole round, put by put only if some id
   was taken;
2. routes the claimed lines to their open segments, cutting a segment once it holds
   ``flush_lines`` lines or ``flush_bytes`` bytes (never more than the provider takes);
3. writes every touched segment file at its length and fsyncs it: the round's one fsync;
4. records the new lengths, the cuts and the count of lines accepted in the open transaction,
   which the store commits lazily (``store.SETTLE_LINES``, acks, close) and durably before a
   cut segment becomes a shard (``settle``).

A put returns once its round's fsync returned: its lines survive a kill -9 (and a power loss).
Opening the stream again (``restore``) reads back every segment file past the length its
store row committed (or whole, for a segment created after the last commit), line by line with
the stream's own checks, up to the first line that is incomplete or invalid (the tail of a round
cut short), which is cut off: what is read back is accepted again, its ids re-entered in the
index. A line whose put never returned may be among them; putting it again is then refused as
a duplicate, which a producer takes as "accepted". A cut segment ("sealed") is handed to
``on_sealed``, which makes it a shard in the journal; ``cut_on_time`` seals a segment
``flush_after`` seconds (on the stream's clock) after its first line.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, final

import anyio

from .._clock import Clock
from .._errors import InputProblem, JournalError
from .._fileio import fsync_dir
from .._group import GroupCommit
from .intake import Line, refused
from .store import SETTLE_LINES, SegmentRow, StreamStore, begin

__all__ = ["Segment", "SegmentLog"]

_DUPLICATE_HINT: Final = "custom_id must be unique over the stream's whole life; use a new id"
_UPSERT_SEGMENT: Final = "INSERT OR REPLACE INTO segments VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
_INSERT_IDS: Final = "INSERT OR IGNORE INTO ids VALUES (?, ?, ?)"
_SEGMENT_FILE: Final = re.compile(r"(\d{5,})\.a1\.jsonl")


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
        read_back: checks a line read back from a segment file (``None``: not a valid line).
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
        read_back: Callable[[bytes], Line | None],
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
        self._read_back = read_back
        self._unsettled = 0  # lines accepted since the store's last commit
        self._broken: JournalError | None = None
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

    def restore(
        self,
        conn: sqlite3.Connection,
        accepted: int,
        next_index: int,
        rows: list[SegmentRow],
        known: set[int],
    ) -> list[Segment]:
        """Take back the segments (in the store's thread: ``store.call``).

        Open segments are reopened at their committed length plus the complete, valid lines
        read back past it; segment files the store has no row for (created after its last
        commit) are read back whole. The sealed ones, and open ones that are full, are
        returned, to be made shards; those the journal has as shards (``known``) too, to be
        forgotten. Commit the store durably afterwards.
        """
        begin(conn)
        self.accepted = accepted
        self.next_index = max([next_index, *(i + 1 for i in known)])
        by_index = {row[0]: row for row in rows}
        files = {
            int(found[1])
            for path in (self._dir.iterdir() if self._dir.is_dir() else ())
            if (found := _SEGMENT_FILE.fullmatch(path.name))
        }
        sealed: list[Segment] = []
        now_wall, now = self._clock.time(), self._clock.monotonic()
        for index in sorted(by_index.keys() | files):
            row = by_index.get(index)
            if index in known:  # a shard already; its file is the journal's
                if row is not None:
                    sealed.append(self._segment(row, now_wall, now))
                continue
            if row is None:
                due = now + self._flush_after
                seg = Segment(index, None, None, self._path(index), now_wall, due)
                state = "open"
            else:
                seg, state = self._segment(row, now_wall, now), row[4]
            fd = os.open(seg.path, os.O_RDWR | os.O_CLOEXEC)
            if state == "open":
                self._read_lines(conn, fd, seg, fresh=row is None, now=now_wall)
            os.ftruncate(fd, seg.size)  # the tail of a round cut short, if any
            seg.committed = seg.size
            self.next_index = max(self.next_index, index + 1)
            if seg.lines == 0 and row is None:  # a new segment whose first round never ended
                os.close(fd)
                seg.path.unlink()
                continue
            full = seg.lines >= self._max_lines or seg.size >= self._max_bytes
            previous = self._open.pop(seg.key, None)
            if previous is not None:  # cut (the next line did not fit) before its row said so
                self._seal_restored(previous, sealed)
            seg.fd = fd
            if state == "open" and not full:
                self._open[seg.key] = seg
            else:
                self._seal_restored(seg, sealed)
        conn.executemany(_UPSERT_SEGMENT, [s.row("open") for s in self._open.values()])
        conn.executemany(_UPSERT_SEGMENT, [s.row("sealed") for s in sealed if s.index not in known])
        conn.executemany(
            "INSERT OR REPLACE INTO meta VALUES (?, ?)",
            [("accepted", self.accepted), ("next_index", self.next_index)],
        )
        return sealed

    def _segment(self, row: SegmentRow, now_wall: float, now: float) -> Segment:
        index, key, model, mixed, _, lines, size, body, first_at = row
        return Segment(
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

    def _read_lines(
        self, conn: sqlite3.Connection, fd: int, seg: Segment, *, fresh: bool, now: float
    ) -> None:
        """Take the complete, valid lines past ``seg.size`` into ``seg`` and the id index."""
        end = os.fstat(fd).st_size
        if end <= seg.size:
            return
        data = os.pread(fd, end - seg.size, seg.size)
        keys: list[tuple[int, int, float]] = []
        position = 0
        while (stop := data.find(b"\n", position)) >= 0:
            line = self._read_back(data[position:stop])
            if line is None:
                break
            if fresh and seg.lines == 0:
                seg.key = line.model if self._per_model else None
                seg.model = line.model
            elif line.model != seg.model:
                seg.mixed = True
            seg.lines += 1
            seg.size += stop + 1 - position
            seg.body_bytes += line.body_bytes
            keys.append((line.h1, line.h2, now))
            position = stop + 1
        conn.executemany(_INSERT_IDS, keys)
        self.accepted += len(keys)

    @staticmethod
    def _seal_restored(seg: Segment, sealed: list[Segment]) -> None:
        if seg.fd >= 0:
            os.fsync(seg.fd)
            os.close(seg.fd)
            seg.fd = -1
        sealed.append(seg)

    async def append(self, lines: list[Line], *, single: bool) -> None:
        """Make ``lines`` durable, all or none.

        Raises:
            InputError: an id was accepted before, or repeats within ``lines``.
        """
        if self._broken is not None:
            raise self._broken
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

    async def settle(self) -> None:
        """Commit the store durably: every line accepted so far is in its id index (call it
        before a segment becomes a shard, whose file is removed once it is finished)."""
        await self._store.settle(durable=True)
        self._unsettled = 0

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
        begin(conn)
        conn.execute("SAVEPOINT round")
        try:
            taken = self._claim_all(conn, puts, now)
            sealed, touched = self._route(taken, now, mono)
            _write(touched, sealed)
            conn.executemany(_UPSERT_SEGMENT, [s.row("open") for s in touched if s not in sealed])
            conn.executemany(_UPSERT_SEGMENT, [s.row("sealed") for s in sealed])
            self.accepted += len(taken)
            conn.executemany(
                "INSERT OR REPLACE INTO meta VALUES (?, ?)",
                [("accepted", self.accepted), ("next_index", self.next_index)],
            )
            conn.execute("RELEASE round")
        except BaseException:
            self._undo_round(conn)
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
        self._unsettled += len(taken)
        if self._unsettled >= SETTLE_LINES:
            conn.execute("COMMIT")  # a failure here is the next round's (still open)
            self._unsettled = 0
        return sealed

    def _undo_round(self, conn: sqlite3.Connection) -> None:
        """Roll a failed round back, keeping the rounds before it; if SQLite rolled back the
        whole transaction, the index lost ids that only a restart reads back: refuse puts."""
        with contextlib.suppress(sqlite3.Error):
            if conn.in_transaction:
                conn.execute("ROLLBACK TO round")
                conn.execute("RELEASE round")
                return
        if self._unsettled:
            self._broken = JournalError(
                f"{self._where}: the stream's id index lost its last commits after an error; "
                "close the stream and open it again (the segment files have every line)"
            )

    def _claim_all(self, conn: sqlite3.Connection, puts: list[_Put], now: float) -> list[Line]:
        """Add the round's ids to the index: the lines of the puts taken whole, in order."""
        candidates = [put for put in puts if put.single or not _repeats(put)]
        rows = [(line.h1, line.h2, now) for put in candidates for line in put.lines]
        conn.execute("SAVEPOINT ids")
        changes = conn.total_changes
        conn.executemany(_INSERT_IDS, rows)
        if conn.total_changes - changes == len(rows):  # the usual case: every id is new
            conn.execute("RELEASE ids")
            return [line for put in candidates for line in put.lines]
        conn.execute("ROLLBACK TO ids")
        conn.execute("RELEASE ids")
        taken: list[Line] = []
        for put in candidates:
            if self._claim(conn, put, now):
                taken.extend(put.lines)
        return taken

    def _claim(self, conn: sqlite3.Connection, put: _Put, now: float) -> bool:
        """Add the put's ids to the index, or record why not (then nothing of it is kept)."""
        keys = [(line.h1, line.h2) for line in put.lines]
        conn.execute("SAVEPOINT put")
        changes = conn.total_changes
        conn.executemany(_INSERT_IDS, [(h1, h2, now) for h1, h2 in keys])
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
                put.problems.append(
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
        begin(conn)
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


def _repeats(put: _Put) -> bool:
    """Record the ids that repeat within one ``put_many`` call; whether there were any."""
    first: dict[tuple[int, int], int] = {}
    for position, line in enumerate(put.lines, 1):
        seen = first.setdefault((line.h1, line.h2), position)
        if seen != position:
            put.problems.append(
                InputProblem(
                    position,
                    f"duplicate custom_id {line.custom_id!r} (first at request {seen} "
                    "of this call)",
                    _DUPLICATE_HINT,
                )
            )
    return bool(put.problems)


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
        fsync_dir(touched[0].path.parent)
