"""The line checker of Anthropic runs: native ``{custom_id, params}`` lines, or OpenAI chat lines.

:class:`AnthropicLineChecker` is what ``Anthropic.line_checker`` gives the sharder: it accepts
native ``{"custom_id", "params"}`` lines (copied byte for byte) and OpenAI chat-completions
lines (converted by :func:`._chat.chat_to_anthropic`), applies Anthropic's ``custom_id`` and
``max_tokens`` rules, and reports every problem with a hint before anything is sent.
"""

from __future__ import annotations

import re
from typing import Any, Final, final

import msgspec
from msgspec import UNSET, UnsetType

from ..._input import BlockChecker, Checked, Problem, RequestLineChecker
from ._chat import CHAT_ENDPOINT, ConversionError, chat_to_anthropic

__all__ = ["CUSTOM_ID_PATTERN", "AnthropicLineChecker"]

#: Anthropic's ``custom_id`` rule.
CUSTOM_ID_PATTERN: Final = re.compile(r"[a-zA-Z0-9_-]{1,64}")


class _Head(msgspec.Struct):
    custom_id: Any = UNSET
    params: msgspec.Raw | UnsetType = UNSET
    body: msgspec.Raw | UnsetType = UNSET
    method: Any = UNSET
    url: Any = UNSET


class _Native(msgspec.Struct, forbid_unknown_fields=True):
    custom_id: Any
    params: msgspec.Raw


class _ParamsPeek(msgspec.Struct):
    model: Any = UNSET
    max_tokens: Any = UNSET


class _Line(msgspec.Struct):
    custom_id: str
    params: msgspec.Raw


_HEAD: Final = msgspec.json.Decoder(_Head)
_NATIVE: Final = msgspec.json.Decoder(_Native)
_PEEK: Final = msgspec.json.Decoder(_ParamsPeek)
_OBJECT: Final = msgspec.json.Decoder(dict[str, Any])
_ENCODER: Final = msgspec.json.Encoder()
_NATIVE_HINT: Final = 'each line is {"custom_id": ..., "params": {...}} or an OpenAI chat line'
_ID_HINT: Final = "use 1-64 letters, digits, '_' or '-' (Anthropic's custom_id rule)"


@final
class AnthropicLineChecker:
    """Checks lines of a run whose provider takes Anthropic ``{custom_id, params}`` requests.

    A ``LineChecker``; the common JSON diagnostics are delegated to the standard checker.

    Args:
        base: the run's ``RequestLineChecker`` (its limits and JSON diagnostics).
        max_line_bytes: the longest shard line accepted (after conversion).
    """

    __slots__ = ("_base", "_max_line_bytes")

    def __init__(self, base: RequestLineChecker, *, max_line_bytes: int) -> None:
        self._base = base
        self._max_line_bytes = max_line_bytes

    def oversized(self, size: int) -> Problem:
        """The problem of a line of ``size`` bytes above the line limit."""
        return self._base.oversized(size)

    def block_checker(self) -> BlockChecker | None:
        """``None``: Anthropic lines are not standard request lines; each is checked alone."""
        return None

    def check(self, line: bytes, first: bool = False) -> Checked | Problem:
        """Check one line; return ``(custom_id, model, params_bytes, shard_line)`` or a problem."""
        if len(line) > self._max_line_bytes:
            return self.oversized(len(line))
        try:
            native = _NATIVE.decode(line)
        except msgspec.DecodeError:
            native = None
        if native is not None and type(native.custom_id) is str:
            return self._params(native.custom_id, native.params, line)
        try:
            head = _HEAD.decode(line)
        except msgspec.DecodeError:
            return self._base.check(line, first)  # a JSON problem: its diagnostics
        cid = head.custom_id
        if type(cid) is not str or not CUSTOM_ID_PATTERN.fullmatch(cid):
            shown = cid if type(cid) is str else None
            what = "missing custom_id" if cid is UNSET else f"custom_id {cid!r} is not valid"
            return Problem(what, _ID_HINT, shown)
        if not isinstance(head.params, UnsetType):
            if not isinstance(head.body, UnsetType):
                return Problem("line has both params and body", "give one of them", cid)
            return self._params(cid, head.params, None)
        if isinstance(head.body, UnsetType):
            return Problem("missing params", _NATIVE_HINT, cid)
        if head.method not in (UNSET, "POST") or head.url not in (UNSET, CHAT_ENDPOINT):
            return Problem(
                "only OpenAI chat-completions lines convert to Anthropic",
                f'use "method": "POST" and "url": "{CHAT_ENDPOINT}", or native params',
                cid,
            )
        try:
            body = _OBJECT.decode(head.body)
        except msgspec.DecodeError:
            return Problem("body must be a JSON object", _NATIVE_HINT, cid)
        try:
            params = chat_to_anthropic(body)
        except ConversionError as exc:
            return Problem(
                f"cannot convert to Anthropic: {exc}", "remove or change that field", cid
            )
        raw = msgspec.Raw(_ENCODER.encode(params))
        return self._params(cid, raw, None)

    def _params(self, cid: str, params: msgspec.Raw, original: bytes | None) -> Checked | Problem:
        if not CUSTOM_ID_PATTERN.fullmatch(cid):
            return Problem(f"custom_id {cid!r} is not valid", _ID_HINT, cid)
        try:
            peek = _PEEK.decode(params)
        except msgspec.DecodeError:
            return Problem("params must be a JSON object", _NATIVE_HINT, cid)
        if peek.max_tokens is UNSET:
            return Problem(
                "params has no max_tokens; Anthropic requires it",
                'add "max_tokens": <positive integer> to params',
                cid,
            )
        if type(peek.max_tokens) is not int or peek.max_tokens < 1:
            return Problem(
                f"params.max_tokens must be a positive integer, got {peek.max_tokens!r}",
                "a batch does not accept max_tokens 0",
                cid,
            )
        model = peek.model
        if type(model) is not str or not model:
            return Problem(
                "params.model must be a non-empty string",
                'name the model, e.g. "model": "claude-3-5-haiku-latest"',
                cid,
            )
        data = original if original is not None else _ENCODER.encode(_Line(cid, params))
        if len(data) > self._max_line_bytes:
            return self.oversized(len(data))
        return (cid, model, len(params), data)
