"""Bodies of the HTTP layer: a read answer, a streamed answer, and a file streamed from disk.

``Response`` is a fully read answer; ``StreamResponse`` reads a 2xx body incrementally (as
chunks or as lines); ``FileSlice`` is an aiohttp payload that sends part of a file, read from
disk as it goes, so uploads of any size hold one chunk in memory and a retry re-reads the file.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractContextManager
from typing import Final, Protocol, final

import aiohttp
import aiohttp.abc
import aiohttp.payload
import msgspec

from .._errors import ProtocolError
from .._fileio import run_io_sized

__all__ = [
    "READ_CHUNK",
    "UPLOAD_CHUNK",
    "FileSlice",
    "Response",
    "StreamResponse",
    "multipart_file",
    "read_into_at",
]

#: Bytes read from the socket at a time when streaming a body.
READ_CHUNK: Final = 64 * 1024
#: Bytes read from disk at a time when streaming an upload.
UPLOAD_CHUNK: Final = 1024 * 1024


@final
class Response(msgspec.Struct, frozen=True, kw_only=True):
    """A fully read answer: ``headers`` have lower-case names, ``body`` is the raw bytes."""

    status: int
    headers: dict[str, str]
    body: bytes
    request_id: str | None = None


class _Owner(Protocol):
    """What a ``StreamResponse`` needs from the client that opened it."""

    def map_errors(self) -> AbstractContextManager[None]: ...

    def _received(self, n: int) -> None: ...


@final
class StreamResponse:
    """A 2xx answer whose body is read incrementally (inside ``HttpClient.stream``)."""

    def __init__(self, resp: aiohttp.ClientResponse, response: Response, client: _Owner) -> None:
        self._resp = resp
        self._client = client
        self.status: Final = response.status
        self.headers: Final = response.headers
        self.request_id: Final = response.request_id

    async def iter_chunks(self, size: int = READ_CHUNK) -> AsyncIterator[bytes]:
        """Yield the body in chunks of at most ``size`` bytes; ProtocolError if truncated."""
        with self._client.map_errors():
            async for chunk in self._resp.content.iter_chunked(size):
                self._client._received(len(chunk))
                yield chunk

    async def iter_lines(self, *, max_line_bytes: int | None = None) -> AsyncIterator[bytes]:
        """Yield each non-blank line without its ``\\n``/``\\r\\n`` (a last line may lack one).

        Memory holds one chunk plus the longest line. Raises ``ProtocolError`` if the body is
        truncated or a line exceeds ``max_line_bytes`` (default: no limit).
        """
        buf = bytearray()
        scan = 0
        async for chunk in self.iter_chunks():
            buf += chunk
            start = 0
            while (nl := buf.find(b"\n", scan)) != -1:
                line = bytes(buf[start:nl]).rstrip(b"\r")
                start = scan = nl + 1
                if line.strip():
                    yield line
            del buf[:start]
            scan = len(buf)
            if max_line_bytes is not None and scan > max_line_bytes:
                raise ProtocolError(f"a line of the response exceeds {max_line_bytes} bytes")
        if buf.strip():
            yield bytes(buf).rstrip(b"\r")


class FileSlice(aiohttp.payload.Payload):
    """``length`` bytes of a file from ``offset``, read from disk as they are sent.

    Its size is known, so aiohttp sends a ``Content-Length`` (storage PUTs require one). It
    holds no open file, so the same payload can be written again (a followed 307 replays it).
    """

    _autoclose = True

    def __init__(
        self, path: str, offset: int, length: int, *, content_type: str, filename: str | None
    ) -> None:
        super().__init__(path, content_type=content_type, filename=filename)
        self._path = path
        self._offset = offset
        self._size = length

    async def write(self, writer: aiohttp.abc.AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(
        self, writer: aiohttp.abc.AbstractStreamWriter, content_length: int | None
    ) -> None:
        remaining = self._size or 0
        if content_length is not None:
            remaining = min(remaining, content_length)
        # Each chunk is read by one thread call that opens, seeks, reads and closes: no file
        # handle lives across an await, so a cancelled body writer (aiohttp cancels it when the
        # connection breaks) can never leak one. The buffer is allocated here, on the event
        # loop's thread, and the worker only fills it: the MiB chunks of every upload then come
        # from and return to one malloc arena instead of one per worker thread (``_fileio``).
        # A new buffer per chunk, never a reused one: a TLS transport (and any transport on
        # Python >= 3.12) keeps a reference to what it has not sent yet.
        offset = self._offset
        while remaining > 0:
            buffer = bytearray(min(UPLOAD_CHUNK, remaining))
            n = await run_io_sized(len(buffer), read_into_at, self._path, offset, buffer)
            if not n:
                raise OSError(f"{self._path} is shorter than expected")
            await writer.write(buffer if n == len(buffer) else memoryview(buffer)[:n])
            offset += n
            remaining -= n

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        raise TypeError("a streamed file payload cannot be decoded")


def multipart_file(
    path: str,
    offset: int,
    length: int,
    fields: Mapping[str, str],
    file_field: str,
    filename: str,
    content_type: str,
) -> aiohttp.MultipartWriter:
    """A ``multipart/form-data`` body: text ``fields``, then the file slice as ``file_field``."""
    writer = aiohttp.MultipartWriter("form-data")
    for name, value in fields.items():
        part = writer.append(value, {"Content-Type": "text/plain; charset=utf-8"})
        part.set_content_disposition("form-data", name=name)
    payload = FileSlice(path, offset, length, content_type=content_type, filename=filename)
    writer.append_payload(payload).set_content_disposition(
        "form-data", name=file_field, filename=filename
    )
    return writer


def read_into_at(path: str, offset: int, buffer: bytearray) -> int:
    """Fill ``buffer`` from ``path`` at ``offset``; the bytes read, fewer only at the end of
    the file (blocking: run it in a thread)."""
    view = memoryview(buffer)
    filled = 0
    with open(path, "rb", buffering=0) as fp:
        fp.seek(offset)
        while filled < len(view) and (n := fp.readinto(view[filled:])):
            filled += n
    return filled
