"""Writing shard files: routing valid lines to open shards, off the parsing thread.

:class:`ShardWriter` keeps one open shard per model (when the provider wants one model per
batch) and buffers its lines; the sharder's worker threads (:mod:`._shard_threads`) write the
buffers in order and fsync finished shards, so parsing on the calling thread overlaps both.
"""

from __future__ import annotations

import contextlib
import functools
import os
from bisect import bisect_right
from itertools import accumulate
from pathlib import Path
from typing import BinaryIO, Final

from .._models import ShardRecord
from .threads import Background, Syncer, create_shard_file

__all__ = ["ShardWriter"]

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
