"""Reading shard files back: their ids, and the retry shard of some of their lines.

Shard files hold valid lines only (the sharder checked them), so these readers trust them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Collection, Iterator
from operator import attrgetter
from pathlib import Path
from typing import Final

import msgspec

from .._fileio import fsync_dir
from .check import custom_id_of
from .lines import iter_blocks
from .writer import create_shard_file

__all__ = ["ID_CHUNK", "iter_shard_ids", "load_ids", "write_retry_shard"]

#: Bytes of a shard file read at a time. Small on purpose: the chunk and the lines split from it
#: are what a collector holds besides the id set, four collectors may list at once, and lines
#: of ~1 KB are malloc'ed one by one (not by Python's small-object allocator), so 8 MiB chunks
#: (the sharder's) left tens of MB of freed heap behind (``_fileio``).
ID_CHUNK: Final = 1 << 20


class _Id(msgspec.Struct, gc=False):
    custom_id: str


_ID_LINES: Final = msgspec.json.Decoder(_Id)
_custom_id: Final = attrgetter("custom_id")


def _regions(path: Path) -> Iterator[bytes | memoryview]:
    """Whole lines of ``path``, about ``ID_CHUNK`` bytes at a time, without copying the chunk:
    the line cut by a chunk's start comes alone, the rest as a view of the chunk."""
    rest = b""
    with path.open("rb", buffering=0) as file:
        while chunk := file.read(ID_CHUNK):
            first = chunk.find(b"\n") + 1
            if not first:
                rest += chunk
                continue
            yield rest + chunk[:first]
            end = chunk.rfind(b"\n") + 1
            if end > first:
                yield memoryview(chunk)[first:end]
            rest = chunk[end:]
    if rest:
        yield rest


def iter_shard_ids(path: Path) -> Iterator[str]:
    """Yield the ``custom_id`` of every line of a shard file, in order, streaming."""
    for region in _regions(path):
        yield from map(_custom_id, _ID_LINES.decode_lines(region))


def load_ids(path: Path) -> set[str]:
    """The ``custom_id`` of every line of a shard file, as a set.

    A shard file is one valid object per line (the sharder wrote it), so each region of whole
    lines is decoded by one ``decode_lines`` call, not line by line: listing ids was 15 % of
    the client's busy time in the 1,000,000-line end-to-end run.
    """
    ids: set[str] = set()
    for region in _regions(path):
        ids.update(map(_custom_id, _ID_LINES.decode_lines(region)))
    return ids


def write_retry_shard(src: Path, dest: Path, custom_ids: Collection[str]) -> tuple[int, int]:
    """Copy the lines of shard file ``src`` whose ``custom_id`` is in ``custom_ids`` to ``dest``.

    Lines are copied byte for byte, in their order in ``src``. ``dest`` is written atomically
    (temporary file, fsync, rename) and is 0600 like every shard. Ids not found in ``src`` are
    ignored.

    Returns:
        ``(lines, bytes)`` written.
    """
    wanted = custom_ids if isinstance(custom_ids, set | frozenset) else frozenset(custom_ids)
    tmp = dest.with_name(dest.name + ".tmp")
    count = size = 0
    try:
        with os.fdopen(create_shard_file(tmp), "wb") as out:
            blocks = iter_blocks(src, max_line_bytes=sys.maxsize, chunk_bytes=ID_CHUNK)
            for _, lines, _, _ in blocks:
                keep = [line for line in lines if line and custom_id_of(line) in wanted]
                if keep:
                    keep.append(b"")
                    data = b"\n".join(keep)
                    out.write(data)
                    count += len(keep) - 1
                    size += len(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(dest.parent)
    return count, size
