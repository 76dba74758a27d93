"""Checking a whole block of request lines at C speed, for the common case.

Most inputs are lines in the documented shape, ``{"custom_id", "method": "POST", "url",
"body": {...}}``, all valid. :class:`BlockChecker` checks such a block with C-level steps only
(``map`` over msgspec's decoder with a type that encodes every rule of
:meth:`.check.RequestLineChecker.check` for such lines) and returns what the sharder needs as lists.
If any line of the block is anything else (blank, invalid, no method or url, not UTF-8, a NUL,
too long), it returns ``None`` and the caller checks that block line by line, which finds and
explains the problems. Both paths accept exactly the same lines with the same results:
``tests/input/test_shard.py`` checks that on generated inputs.
"""

from __future__ import annotations

from itertools import filterfalse
from typing import Annotated, Any, Literal, final

import msgspec

__all__ = ["BlockChecker", "envelope_bytes"]


class _ModelPeek(msgspec.Struct, gc=False):  # gc=False: no cycles; ~30% faster decoding
    model: str | None = None


class _Envelope(msgspec.Struct):
    custom_id: str
    method: str
    url: str
    body: msgspec.Raw


def envelope_bytes(endpoint: str) -> int:
    """Bytes of a compact line around its ``custom_id`` characters and its ``body``.

    A line's body estimate is ``len(line) - len(custom_id) - envelope_bytes(endpoint)``: the
    body's exact size for a compact line, and an over-estimate (never under) for any other.
    """
    return len(msgspec.json.encode(_Envelope("", "POST", endpoint, msgspec.Raw(b""))))


@final
class BlockChecker:
    """Checks blocks of standard lines for one run's endpoint and provider limits."""

    __slots__ = ("_decode", "_max_line_bytes", "overhead")

    def __init__(
        self, *, endpoint: str, max_line_bytes: int, custom_id_max_len: int | None = None
    ) -> None:
        bounds = msgspec.Meta(min_length=1, max_length=custom_id_max_len)
        line_type: Any = msgspec.defstruct(
            "StandardLine",
            [
                ("custom_id", Annotated[str, bounds]),
                ("method", Literal["POST"]),
                ("url", Literal[endpoint]),
                ("body", _ModelPeek),
            ],
            gc=False,
        )
        self._decode = msgspec.json.Decoder(line_type).decode
        self._max_line_bytes = max_line_bytes
        #: Bytes of a line that are neither its ``custom_id`` nor its body (compact form).
        self.overhead = envelope_bytes(endpoint)

    def check(self, lines: list[bytes], clean: bool) -> tuple[list[str], list[str | None]] | None:
        """``(custom_ids, models)`` of a block whose lines are all standard and valid.

        A line's body estimate is ``len(line) - len(custom_id) -`` :attr:`overhead`.

        Args:
            lines: the block's lines, without newlines.
            clean: the block is known to be ASCII without NUL bytes.

        Returns:
            ``None`` when any line is not a valid standard line.
        """
        if not lines or max(map(len, lines)) > self._max_line_bytes:
            return None
        try:
            # msgspec refuses control characters (NUL included) anywhere, even in the strings
            # it skips, but not invalid UTF-8 inside them: that is checked here.
            if not clean:
                for line in filterfalse(bytes.isascii, lines):
                    line.decode()
            heads = list(map(self._decode, lines))
        except (UnicodeDecodeError, msgspec.DecodeError):
            return None
        return [head.custom_id for head in heads], [head.body.model for head in heads]
