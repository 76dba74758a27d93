"""Spool an async iterable of JSONL bytes to a file, so it can be hashed, validated, resumed."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterable
from functools import partial
from pathlib import Path
from typing import Final

import anyio

from .._errors import UsageError
from .._fileio import create_private, run_io

__all__ = ["spool"]

#: Bytes gathered before one write to the spool file.
SPOOL_CHUNK: Final = 4 << 20


async def spool(source: AsyncIterable[bytes | str], directory: Path) -> Path:
    """Write every chunk of ``source`` to a new private file in ``directory``; return its path.

    Chunks are raw JSONL bytes (``str`` is encoded as UTF-8); a chunk need not end on a line
    boundary. The file keeps the bytes exactly, so the run id stays the content hash.

    Each write opens, appends and closes in one ``run_io`` call (no handle lives across an
    await) and is handed the buffer itself, not a copy: ``run_io`` returns only once the write
    is done, even when the caller is cancelled, so the buffer is free to refill.

    A spool that fails (a wrong item, an error from ``source``, a cancellation) is removed.
    """
    path = directory / f"{uuid.uuid4().hex}.jsonl"
    await run_io(partial(create_private, path, truncate=True))
    try:
        buffer = bytearray()
        async for chunk in source:
            if isinstance(chunk, str):
                chunk = chunk.encode()
            elif not isinstance(chunk, bytes | bytearray | memoryview):
                raise UsageError(
                    f"an async iterable source must yield JSONL bytes or str, got "
                    f"{type(chunk).__name__}; encode objects with msgspec.json.encode first"
                )
            buffer += chunk
            if len(buffer) >= SPOOL_CHUNK:
                await run_io(_append, path, buffer)
                buffer.clear()
        if buffer:
            await run_io(_append, path, buffer)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await run_io(partial(path.unlink, missing_ok=True))
        raise
    return path


def _append(path: Path, data: bytearray) -> None:
    with path.open("ab") as f:
        f.write(data)
