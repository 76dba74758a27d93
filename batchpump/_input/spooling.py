"""Spool an async iterable of requests to a file, so it can be hashed, validated, resumed."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterable, Mapping
from functools import partial
from pathlib import Path
from typing import Final, TypeAlias

import anyio
import msgspec

from .._errors import UsageError
from .._fileio import create_private, run_io

__all__ = ["SpoolItem", "spool"]

#: Bytes gathered before one write to the spool file.
SPOOL_CHUNK: Final = 4 << 20

#: What an async-iterable source may yield: one request line (or several whole lines) as
#: JSONL ``bytes``/``str``, or one request as a ``dict`` or a ``msgspec.Struct``.
SpoolItem: TypeAlias = bytes | str | Mapping[str, object] | msgspec.Struct

_encoder: Final = msgspec.json.Encoder()


async def spool(source: AsyncIterable[SpoolItem], directory: Path) -> Path:
    """Write every item of ``source`` to a new private file in ``directory``; return its path.

    Each item is whole lines: a ``bytes``/``str`` item is one JSONL line (or several, each
    ended by a newline) and gets a newline if it lacks one, so ``msgspec.json.encode(request)``
    items need nothing added; a ``dict`` or ``msgspec.Struct`` item is encoded as one line.
    The file keeps the bytes given, so the run id stays the content hash.

    Each write opens, appends and closes in one ``run_io`` call (no handle lives across an
    await) and is handed the buffer itself, not a copy: ``run_io`` returns only once the write
    is done, even when the caller is cancelled, so the buffer is free to refill.

    A spool that fails (a wrong item, an error from ``source``, a cancellation) is removed.
    """
    path = directory / f"{uuid.uuid4().hex}.jsonl"
    await run_io(partial(create_private, path, truncate=True))
    try:
        buffer = bytearray()
        async for item in source:
            _add(buffer, item)
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


def _add(buffer: bytearray, item: object) -> None:
    if isinstance(item, str):
        item = item.encode()
    if isinstance(item, bytes | bytearray | memoryview):
        if not item:
            return
        buffer += item
    elif isinstance(item, Mapping | msgspec.Struct):
        try:
            _encoder.encode_into(item, buffer, -1)
        except (TypeError, msgspec.EncodeError) as exc:
            raise UsageError(
                f"an async iterable source yielded a request JSON cannot hold: {exc}"
            ) from exc
    else:
        raise UsageError(
            "an async iterable source must yield request lines (bytes or str) or requests "
            f"(dict or msgspec.Struct), got {type(item).__name__}"
        )
    if buffer[-1:] != b"\n":
        buffer += b"\n"


def _append(path: Path, data: bytearray) -> None:
    with path.open("ab") as f:
        f.write(data)
