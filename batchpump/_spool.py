"""Spool an async iterable of JSONL bytes to a file, so it can be hashed, validated, resumed."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterable
from pathlib import Path
from typing import Final

import anyio
import anyio.to_thread

from ._errors import UsageError
from ._results import create_private

__all__ = ["spool"]

#: Bytes gathered before one write to the spool file.
SPOOL_CHUNK: Final = 4 << 20


async def spool(source: AsyncIterable[bytes | str], directory: Path) -> Path:
    """Write every chunk of ``source`` to a new private file in ``directory``; return its path.

    Chunks are raw JSONL bytes (``str`` is encoded as UTF-8); a chunk need not end on a line
    boundary. The file keeps the bytes exactly, so the run id stays the content hash.
    """
    path = directory / f"{uuid.uuid4().hex}.jsonl"
    await anyio.to_thread.run_sync(lambda: create_private(path, truncate=True))
    buffer = bytearray()
    async with await anyio.open_file(path, "ab") as f:
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
                await f.write(bytes(buffer))
                buffer.clear()
        if buffer:
            await f.write(bytes(buffer))
    return path
