"""Turning what a producer puts into checked request lines.

A request is a ``dict``, a ``msgspec.Struct`` or one JSONL line (``bytes``/``str``; one trailing
newline is allowed, a line without it is one line). It is encoded, then checked by the same
checker as a file run's lines (the provider's ``line_checker`` within ``_input.shard_limits``:
same limits, same messages and hints),
so a line a file run would take is a line a stream takes, and the other way round.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable
from typing import Final, final

import msgspec

from .._errors import MAX_LISTED_PROBLEMS, InputError, InputProblem, UsageError
from .._input import BlockChecker, LineCheckerFactory, Problem, bad_utf8_lines, shard_limits
from .._models import Capabilities

__all__ = ["Intake", "Line", "id_digest", "refused"]

_encoder: Final = msgspec.json.Encoder()
_two_ints: Final = struct.Struct("<qq").unpack
_blake2b: Final = hashlib.blake2b
_ONE_LINE_HINT: Final = "put one request per call, or pass many to put_many"
_BARE: Final = {"custom_id", "body"}


def refused(where: str, problems: list[InputProblem]) -> InputError:
    """The ``InputError`` of requests a stream refused, worded for a stream: no request of the
    call was accepted, and each problem names its request's position (``put_many``)."""
    error = InputError(where, problems)
    shown = "\n".join(
        f"  request {p.line}: {p.message} ({p.hint})" if p.line else f"  {p.message} ({p.hint})"
        for p in problems[:MAX_LISTED_PROBLEMS]
    )
    more = len(problems) - MAX_LISTED_PROBLEMS
    tail = f"\n  ... and {more} more" if more > 0 else ""
    error.args = (f"{where}: not accepted:\n{shown}{tail}",)
    return error


def id_digest(custom_id: str) -> tuple[int, int]:
    """The 128-bit blake2b digest of an id as two signed 64-bit integers (the index key)."""
    found: tuple[int, int] = _two_ints(_blake2b(custom_id.encode(), digest_size=16).digest())
    return found


@final
class Line:
    """One checked line: its id, group (model), body estimate, bytes, and id digest."""

    __slots__ = ("body_bytes", "custom_id", "data", "h1", "h2", "model")

    def __init__(self, custom_id: str, model: str | None, body_bytes: int, data: bytes) -> None:
        self.custom_id = custom_id
        self.model = model
        self.body_bytes = body_bytes
        self.data = data
        self.h1, self.h2 = _two_ints(_blake2b(custom_id.encode(), digest_size=16).digest())


@final
class Intake:
    """Encodes and checks requests for one stream.

    Args:
        name: the stream's name (named in errors).
        endpoint: the endpoint every line targets.
        capabilities: the provider's limits.
        line_checker: makes the provider's line checker (``Provider.line_checker``).
        max_lines: lines per batch; may only lower the provider's limit.
        max_bytes: bytes per batch; may only lower the provider's limit.
    """

    def __init__(
        self,
        name: str,
        *,
        endpoint: str,
        capabilities: Capabilities,
        line_checker: LineCheckerFactory,
        max_lines: int | None,
        max_bytes: int | None,
    ) -> None:
        self.where = f"stream {name!r}"
        self._endpoint = endpoint
        self.lines_cap, self.bytes_cap, line_cap = shard_limits(
            capabilities, max_lines=max_lines, max_bytes=max_bytes
        )
        self._checker = line_checker(endpoint=endpoint, max_line_bytes=line_cap)
        # Many lines at once are checked as a block when the checker offers it, as a file
        # run's are; None: line by line.
        self._fast: BlockChecker | None = self._checker.block_checker()

    def one(self, request: object) -> Line:
        """Check one request.

        Raises:
            InputError: the request is not a valid line (its problem, as a file run says it).
            UsageError: the request is of a type that cannot be a line.
        """
        found = self._check(request)
        if isinstance(found, Problem):
            raise refused(self.where, [InputProblem(0, found.message, found.hint)])
        return found

    def many(self, requests: Iterable[object]) -> list[Line]:
        """Check many requests; every problem is listed by its 1-based position.

        Raises:
            InputError: any request is not a valid line (then none is accepted).
        """
        requests = list(requests)
        fast = self._fast
        if fast is not None and requests:
            checked = self._block(fast, requests)
            if checked is not None:
                return checked
        lines: list[Line] = []
        problems: list[InputProblem] = []
        for position, request in enumerate(requests, 1):
            found = self._check(request)
            if isinstance(found, Problem):
                problems.append(InputProblem(position, found.message, found.hint))
            else:
                lines.append(found)
        if problems:
            raise refused(self.where, problems)
        return lines

    def _block(self, fast: BlockChecker, requests: list[object]) -> list[Line] | None:
        """The lines of ``requests`` checked in one pass (``BlockChecker``), or ``None`` when
        any is not a standard valid line (then each is checked alone, for its message)."""
        raw = []
        for request in requests:
            if isinstance(request, bytes):
                data = _one_line(request)
                if b"\n" in data:  # JSON whitespace to msgspec, two lines in a file
                    return None
                raw.append(data)
            elif type(request) is dict and request.keys() == _BARE:
                raw.append(self._standard(request))  # the line a file run's check makes
            elif isinstance(request, dict | msgspec.Struct):
                raw.append(_encoder.encode(request))
            else:
                return None
        found = fast.check(raw, False)
        if found is None:
            return None
        overhead = fast.overhead
        return [
            Line(cid, model, len(data) - len(cid) - overhead, data)
            for data, cid, model in zip(raw, *found, strict=True)
        ]

    def _standard(self, request: dict[str, object]) -> bytes:
        """A ``{custom_id, body}`` dict as the line with method and url filled in."""
        return _encoder.encode(
            {
                "custom_id": request["custom_id"],
                "method": "POST",
                "url": self._endpoint,
                "body": request["body"],
            }
        )

    def read_back(self, data: bytes) -> Line | None:
        """A line read back from a segment file, checked again; ``None`` if it is not a
        valid line (the cut-short tail of a round)."""
        if (not data.isascii() or b"\x00" in data) and bad_utf8_lines([data]):
            return None
        checked = self._checker.check(data, False)
        if isinstance(checked, Problem):
            return None
        custom_id, model, body_bytes, line = checked
        return Line(custom_id, model, body_bytes, line)

    def _check(self, request: object) -> Line | Problem:
        data = _one_line(_encode(request))
        if not data.strip():
            return Problem("the request is empty", _ONE_LINE_HINT)
        if b"\n" in data:
            count = data.count(b"\n") + 1
            return Problem(f"a put takes one line, this request has {count}", _ONE_LINE_HINT)
        if not data.isascii() or b"\x00" in data:
            bad = bad_utf8_lines([data])
            if bad:
                return bad[0]
        checked = self._checker.check(data, True)
        if isinstance(checked, Problem):
            return checked
        custom_id, model, body_bytes, line = checked
        return Line(custom_id, model, body_bytes, line)


def _one_line(data: bytes) -> bytes:
    """``data`` without one trailing ``\n`` (or ``\r\n``)."""
    if data.endswith(b"\n"):
        data = data[:-1]
    if data.endswith(b"\r"):
        data = data[:-1]
    return data


def _encode(request: object) -> bytes:
    if isinstance(request, bytes):
        return request
    if isinstance(request, str):
        return request.encode()
    if isinstance(request, bytearray | memoryview):
        return bytes(request)
    if isinstance(request, dict | msgspec.Struct):
        return _encoder.encode(request)
    raise UsageError(
        f"a request must be a dict, a msgspec.Struct or one JSONL line (bytes or str), "
        f"got {type(request).__name__}"
    )
