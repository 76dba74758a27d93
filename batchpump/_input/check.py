"""Checking one input line: the ``LineChecker`` protocol the sharder asks, and the standard one.

A :class:`LineChecker` either returns what the sharder needs of a valid line (:data:`Checked`)
or explains what is wrong and how to fix it (a :class:`Problem`). Each provider supplies the
checker of its line format (``Provider.line_checker``); :class:`RequestLineChecker` is the one
for the standard OpenAI-format request line ``{"custom_id", "method", "url", "body"}``, used by
OpenAI-compatible providers and as the JSON diagnostics of the others. It decodes one line with
a reused ``msgspec`` decoder (the body stays ``msgspec.Raw``). Synchronous: the sharder runs in
a worker thread.
"""

from __future__ import annotations

from typing import Any, Final, NamedTuple, Protocol, TypeAlias, final

import msgspec
from msgspec import UNSET, UnsetType

from .block import BlockChecker, envelope_bytes

__all__ = [
    "Checked",
    "LineChecker",
    "LineCheckerFactory",
    "Problem",
    "RequestLineChecker",
    "custom_id_of",
]

_UTF16_BOMS: Final = (b"\xff\xfe", b"\xfe\xff")


#: A valid line, as the sharder needs it: ``(custom_id, group, body_bytes, data)``. ``group``
#: is the value shards are split by when the provider takes one per batch (a request's
#: ``body.model``; an item's grouping field), ``data`` the line to write (the original, or a
#: re-encoded or converted one), ``body_bytes`` the size tokens are estimated from. For request
#: lines it is ``len(data) - len(custom_id)`` minus the envelope (:func:`.block.envelope_bytes`;
#: exact for compact lines). A plain tuple, not a NamedTuple: it is built once per line on the
#: hot path.
Checked: TypeAlias = tuple[str, str | None, int, bytes]


class Problem(NamedTuple):
    """What is wrong with a line, and how to fix it."""

    message: str
    hint: str
    custom_id: str | None = None  # the line's custom_id, when it had a usable one
    wrong_url: str | None = None  # the line's url, when it is another endpoint than the run's


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


class LineChecker(Protocol):
    """What the sharder asks of a provider's line checker."""

    def check(self, line: bytes, first: bool = False) -> Checked | Problem:
        """Check one line (without its newline; UTF-8 already checked).

        Args:
            line: the line's bytes.
            first: whether this is the first non-blank line (gives file-format hints).
        """
        ...

    def oversized(self, size: int) -> Problem:
        """The problem of a line of ``size`` bytes above the line limit."""
        ...

    def block_checker(self) -> BlockChecker | None:
        """A checker of whole blocks of standard request lines that accepts exactly what
        :meth:`check` accepts, with the same results, or ``None`` (every line goes through
        :meth:`check`)."""
        ...


class LineCheckerFactory(Protocol):
    """Makes the line checker of one run (``Provider.line_checker`` has this signature)."""

    def __call__(self, *, endpoint: str, max_line_bytes: int) -> LineChecker: ...


@final
class RequestLineChecker:
    """Checks standard request lines against one run's endpoint and provider limits.

    Args:
        endpoint: the run's endpoint; a line's ``url``, when present, must equal it.
        max_line_bytes: the longest line accepted.
        custom_id_max_len: the longest ``custom_id`` accepted, if limited.
    """

    __slots__ = ("_custom_id_max_len", "_endpoint", "_id_max", "_max_line_bytes", "_overhead")

    def __init__(
        self, *, endpoint: str, max_line_bytes: int, custom_id_max_len: int | None = None
    ) -> None:
        self._endpoint = endpoint
        self._max_line_bytes = max_line_bytes
        self._custom_id_max_len = custom_id_max_len
        self._id_max = custom_id_max_len if custom_id_max_len is not None else 1 << 62
        self._overhead = envelope_bytes(endpoint)

    def block_checker(self) -> BlockChecker:
        """The whole-block checker of the same rules (see :mod:`.block`)."""
        return BlockChecker(
            endpoint=self._endpoint,
            max_line_bytes=self._max_line_bytes,
            custom_id_max_len=self._custom_id_max_len,
        )

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
                url if isinstance(url, str) else repr(url),
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
