"""Reading JSONL request files streaming, and checking each line.

Two pieces, both synchronous (the engine runs them in a worker thread):

- :func:`iter_blocks` reads a file in large chunks and yields blocks of whole lines. Memory is
  bounded by the chunk size plus the longest *acceptable* line: a line longer than
  ``max_line_bytes`` is never buffered whole, only measured and reported.
- :class:`LineChecker` decodes one line with a reused ``msgspec`` decoder (the body stays
  ``msgspec.Raw``) and either returns what the sharder needs or explains what is wrong and how
  to fix it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final, NamedTuple, TypeAlias, final

import msgspec
from msgspec import UNSET, UnsetType

from ._block import envelope_bytes

__all__ = [
    "CHUNK_BYTES",
    "Checked",
    "LineBlock",
    "LineChecker",
    "Problem",
    "bad_utf8_lines",
    "custom_id_of",
    "iter_blocks",
]

#: Bytes read per ``read()`` call.
CHUNK_BYTES: Final = 8 * 1024 * 1024
_BOM: Final = b"\xef\xbb\xbf"
_NUL: Final = b"\x00"
_UTF16_BOMS: Final = (b"\xff\xfe", b"\xfe\xff")
_UTF8_HINT: Final = "save the file as UTF-8 (JSONL must be UTF-8)"
_NUL_HINT: Final = "the file may be binary or UTF-16 encoded; save it as UTF-8 JSONL"


class LineBlock(NamedTuple):
    """Whole lines read from the input.

    Attributes:
        first: the 1-based line number of ``lines[0]`` (or of the oversized line).
        lines: the lines without their ``\\n`` (a trailing ``\\r`` is removed too).
        clean: the block is pure ASCII without NUL bytes (no need for :func:`bad_utf8_lines`).
        oversized: when > 0, this block stands for one line of that many bytes that was too
            long to keep; ``lines`` is then empty.
    """

    first: int
    lines: list[bytes]
    clean: bool = True
    oversized: int = 0


def iter_blocks(
    path: Path,
    *,
    max_line_bytes: int,
    chunk_bytes: int = CHUNK_BYTES,
    on_chunk: Callable[[bytes], None] | None = None,
) -> Iterator[LineBlock]:
    """Yield the lines of ``path`` in blocks, reading ``chunk_bytes`` at a time.

    A UTF-8 BOM at the start is dropped and CRLF line ends become LF. A line longer than
    ``max_line_bytes`` is skipped up to its newline without being kept in memory and yielded as
    a block with ``oversized`` set.

    Args:
        path: the file to read.
        max_line_bytes: lines above this are reported as oversized instead of buffered.
        chunk_bytes: bytes per read.
        on_chunk: called with every raw chunk read, in order (e.g. to hash the input).
    """
    lineno = 1
    pending: list[bytes] = []  # pieces of an unfinished line
    pending_len = 0
    skipped = -1  # bytes of an oversized line being skipped, or -1
    first_read = True
    with path.open("rb", buffering=0) as file:
        while chunk := file.read(chunk_bytes):
            if on_chunk is not None:
                on_chunk(chunk)
            if first_read:
                first_read = False
                if chunk.startswith(_BOM):
                    chunk = chunk[len(_BOM) :]
            if skipped >= 0:
                newline = chunk.find(b"\n")
                if newline < 0:
                    skipped += len(chunk)
                    continue
                yield LineBlock(lineno, [], oversized=skipped + newline)
                lineno += 1
                skipped = -1
                chunk = chunk[newline + 1 :]
            lines = chunk.split(b"\n")
            if len(lines) == 1:
                pending.append(chunk)
                pending_len += len(chunk)
            else:
                joined = bool(pending)
                if joined:
                    pending.append(lines[0])
                    lines[0] = b"".join(pending)
                tail = lines.pop()
                pending = [tail] if tail else []
                pending_len = len(tail)
                if b"\r" in chunk:
                    lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
                clean = chunk.isascii() and _NUL not in chunk
                if joined and clean:
                    clean = lines[0].isascii() and _NUL not in lines[0]
                yield LineBlock(lineno, lines, clean)
                lineno += len(lines)
            if pending_len > max_line_bytes:
                skipped = pending_len
                pending = []
                pending_len = 0
    if skipped >= 0:
        yield LineBlock(lineno, [], oversized=skipped)
    elif pending:
        line = b"".join(pending)
        clean = line.isascii() and _NUL not in line
        yield LineBlock(lineno, [line[:-1] if line.endswith(b"\r") else line], clean)


def bad_utf8_lines(lines: list[bytes]) -> dict[int, Problem]:
    """Index -> problem for every line of ``lines`` that is not valid UTF-8 or has a NUL."""
    bad: dict[int, Problem] = {}
    for index, line in enumerate(lines):
        if not line.isascii():
            try:
                line.decode()
            except UnicodeDecodeError as exc:
                bad[index] = Problem(f"invalid UTF-8 at byte {exc.start}", _UTF8_HINT)
                continue
        if _NUL in line:
            bad[index] = Problem(f"contains a NUL byte at byte {line.index(_NUL)}", _NUL_HINT)
    return bad


#: A valid line, as the sharder needs it: ``(custom_id, model, body_bytes, data)``, where
#: ``data`` is the original line or, without method/url, the line re-encoded with them, and
#: ``body_bytes`` estimates the body's size as ``len(data) - len(custom_id)`` minus the
#: envelope (:func:`._block.envelope_bytes`; exact for compact lines). A plain tuple, not a
#: NamedTuple: it is built once per line on the hot path.
Checked: TypeAlias = tuple[str, str | None, int, bytes]


class Problem(NamedTuple):
    """What is wrong with a line, and how to fix it."""

    message: str
    hint: str
    custom_id: str | None = None  # the line's custom_id, when it had a usable one


class _Head(msgspec.Struct):
    custom_id: Any = UNSET
    body: msgspec.Raw | UnsetType = UNSET
    method: Any = UNSET
    url: Any = UNSET


class _IdOnly(msgspec.Struct):
    custom_id: Any = None


class _BodyPeek(msgspec.Struct):
    model: Any = None


class _Filled(msgspec.Struct):
    custom_id: str
    method: str
    url: str
    body: msgspec.Raw


_HEAD_DECODER: Final = msgspec.json.Decoder(_Head)
_PEEK_DECODER: Final = msgspec.json.Decoder(_BodyPeek)
_ID_DECODER: Final = msgspec.json.Decoder(_IdOnly)
_ANY_DECODER: Final = msgspec.json.Decoder()
_ENCODER: Final = msgspec.json.Encoder()
_JSON_HINT: Final = 'each line must be one JSON object: {"custom_id": ..., "body": {...}}'


def custom_id_of(line: bytes) -> Any:
    """The ``custom_id`` of a line already known to be valid (e.g. a shard file's line)."""
    return _ID_DECODER.decode(line).custom_id


def _kind(value: object) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


@final
class LineChecker:
    """Checks request lines against one run's endpoint and provider limits.

    Args:
        endpoint: the run's endpoint; a line's ``url``, when present, must equal it.
        max_line_bytes: the longest line accepted.
        custom_id_max_len: the longest ``custom_id`` accepted, if limited.
    """

    __slots__ = ("_endpoint", "_id_max", "_max_line_bytes", "_overhead")

    def __init__(
        self, *, endpoint: str, max_line_bytes: int, custom_id_max_len: int | None = None
    ) -> None:
        self._endpoint = endpoint
        self._max_line_bytes = max_line_bytes
        self._id_max = custom_id_max_len if custom_id_max_len is not None else 1 << 62
        self._overhead = envelope_bytes(endpoint)

    def check(self, line: bytes, first: bool = False) -> Checked | Problem:
        """Check one line (without its newline; UTF-8 already checked).

        Args:
            line: the line's bytes.
            first: whether this is the first non-blank line (gives file-format hints).
        """
        if len(line) > self._max_line_bytes:
            return self.oversized(len(line))
        try:
            head = _HEAD_DECODER.decode(line)
        except msgspec.DecodeError:
            return self._not_an_object(line, first=first)
        cid = head.custom_id
        if type(cid) is not str or not cid or len(cid) > self._id_max:
            return self._bad_custom_id(cid)
        body = head.body
        if isinstance(body, UnsetType):
            return Problem("missing body", 'add "body": {...} with the request parameters', cid)
        try:
            model = _PEEK_DECODER.decode(body).model
        except msgspec.DecodeError:
            got = _kind(_ANY_DECODER.decode(body))
            return Problem(f"body must be a JSON object, got {got}", _JSON_HINT, cid)
        if model is not None and type(model) is not str:
            return Problem(
                f"body.model must be a string, got {_kind(model)}",
                'name the model as a string, e.g. "model": "gpt-4o-mini"',
                cid,
            )
        method = head.method
        url = head.url
        if method == "POST" and url == self._endpoint:
            return (cid, model, len(line) - len(cid) - self._overhead, line)
        if method is not UNSET and method != "POST":
            return Problem(
                f"method must be 'POST', got {method!r}",
                'batch requests are always "method": "POST"; or leave method out',
                cid,
            )
        if url is not UNSET and url != self._endpoint:
            return Problem(
                f"url {url!r} does not match the run's endpoint {self._endpoint!r}",
                "submit lines of each endpoint as a separate run, or leave url out",
                cid,
            )
        data = _ENCODER.encode(_Filled(cid, "POST", self._endpoint, body))
        if len(data) > self._max_line_bytes:
            return self.oversized(len(data))
        return (cid, model, len(data) - len(cid) - self._overhead, data)

    def oversized(self, size: int) -> Problem:
        """The problem of a line of ``size`` bytes above the line limit."""
        return Problem(
            f"line is {size:,} bytes, above the limit of {self._max_line_bytes:,} bytes",
            "shorten the request (e.g. fewer or smaller messages) or split it",
        )

    def _bad_custom_id(self, cid: object) -> Problem:
        if cid is UNSET:
            return Problem("missing custom_id", 'give every line a unique "custom_id": "<string>"')
        if type(cid) is not str:
            return Problem(
                f"custom_id must be a string, got {_kind(cid)}",
                f'quote it, e.g. "custom_id": "{cid}"' if _kind(cid) == "number" else _JSON_HINT,
            )
        if not cid:
            return Problem("custom_id is empty", "give every line a unique, non-empty custom_id")
        return Problem(
            f"custom_id is {len(cid)} characters, above the provider's limit of {self._id_max}",
            "use shorter ids (e.g. a hash of the long key) and keep a mapping on your side",
        )

    def _not_an_object(self, line: bytes, *, first: bool) -> Problem:
        stripped = line.strip()
        if first and stripped.startswith(_UTF16_BOMS):
            return Problem("the input looks UTF-16 encoded", "save the file as UTF-8 JSONL")
        try:
            value = _ANY_DECODER.decode(line)
        except msgspec.DecodeError as exc:
            if first and stripped.startswith(b"["):
                hint = "this looks like a JSON array; write one object per line (JSONL)"
            elif (first and stripped in (b"{", b"[")) or stripped.endswith((b"{", b"[", b":")):
                hint = "this looks like pretty-printed JSON; write each object on one line (JSONL)"
            elif first and not stripped.startswith(b"{") and b"," in stripped:
                hint = (
                    "this looks like CSV; convert each row to a JSON object with custom_id and "
                    "body, one object per line (JSONL)"
                )
            elif stripped.endswith(b","):
                hint = "remove the trailing comma: JSONL has one object per line, no separators"
            else:
                hint = _JSON_HINT
            return Problem(f"not valid JSON: {exc}", hint)
        if first and isinstance(value, list):
            hint = "this looks like a JSON array; write one object per line (JSONL)"
        else:
            hint = _JSON_HINT
        return Problem(f"line is a JSON {_kind(value)}, not an object", hint)
