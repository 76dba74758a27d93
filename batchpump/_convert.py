"""Request-format conversion: OpenAI chat-completions bodies to Anthropic Messages params.

:func:`chat_to_anthropic` maps what has a faithful Anthropic equivalent and refuses the rest
with a :class:`ConversionError` that names the field, so nothing is silently dropped or
changed in meaning. :class:`AnthropicLineChecker` is the validator of shards whose
``Capabilities.line_format`` is ``"anthropic"``: it accepts native ``{"custom_id", "params"}``
lines (copied byte for byte) and OpenAI chat lines (converted), and reports every problem with
its line number before anything is sent.

Mapped: ``system``/``developer`` messages before the conversation -> ``system``; ``user`` and
``assistant`` messages with string content or ``text``/``image_url`` parts;
``max_completion_tokens`` or ``max_tokens`` (default :data:`DEFAULT_MAX_TOKENS`); ``stop`` ->
``stop_sequences``; ``temperature`` (0-1 only); ``top_p``; ``user`` -> ``metadata.user_id``.
Accepted when they change nothing: ``stream: false``, ``n: 1``, ``logprobs: false``,
``response_format: {"type": "text"}``, zero penalties, ``store``. Everything else is refused.
"""

from __future__ import annotations

import re
from typing import Any, Final, final

import msgspec
from msgspec import UNSET, UnsetType

from ._errors import UsageError
from ._jsonl import Checked, LineChecker, Problem

__all__ = [
    "CHAT_ENDPOINT",
    "CUSTOM_ID_PATTERN",
    "DEFAULT_MAX_TOKENS",
    "AnthropicLineChecker",
    "ConversionError",
    "chat_to_anthropic",
]

#: ``max_tokens`` given to a converted request whose OpenAI body set none (Anthropic needs one).
DEFAULT_MAX_TOKENS: Final = 4096
#: The only OpenAI endpoint whose bodies convert.
CHAT_ENDPOINT: Final = "/v1/chat/completions"
#: Anthropic's ``custom_id`` rule.
CUSTOM_ID_PATTERN: Final = re.compile(r"[a-zA-Z0-9_-]{1,64}")

_DIRECT: Final = ("model", "top_p")
#: Keys accepted when their value changes nothing, with the values that do so.
_NEUTRAL: Final[dict[str, tuple[object, ...]]] = {
    "stream": (False, None),
    "n": (1, None),
    "logprobs": (False, None),
    "top_logprobs": (None, 0),
    "frequency_penalty": (0, 0.0, None),
    "presence_penalty": (0, 0.0, None),
    "logit_bias": (None,),
    "parallel_tool_calls": (None,),
    "service_tier": (None, "auto", "default"),
}
_IGNORED: Final = frozenset({"store"})  # OpenAI-side storage only; no effect on the output
_HANDLED: Final = frozenset(
    {"messages", "max_tokens", "max_completion_tokens", "stop", "temperature", "user",
     "response_format", *_DIRECT}
)  # fmt: skip
_SYSTEM_ROLES: Final = ("system", "developer")
_DATA_URL: Final = re.compile(r"data:(image/[a-zA-Z0-9.+-]+);base64,(.*)", re.DOTALL)


class ConversionError(UsageError):
    """An OpenAI request has something without a faithful Anthropic equivalent.

    Attributes:
        field: where, e.g. ``"body.n"`` or ``"body.messages[2].content[0]"``.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message


def _text(field: str, content: object) -> str:
    """System content (string or text parts) as one string."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for i, part in enumerate(content):
            if not (isinstance(part, dict) and part.get("type") == "text"):
                raise ConversionError(f"{field}[{i}]", "only text parts can go into `system`")
            texts.append(str(part.get("text", "")))
        return "\n\n".join(texts)
    raise ConversionError(field, "content must be a string or a list of parts")


def _part(field: str, part: object) -> dict[str, Any]:
    if not isinstance(part, dict):
        raise ConversionError(field, "a content part must be an object")
    kind = part.get("type")
    if kind == "text" and isinstance(part.get("text"), str):
        return {"type": "text", "text": part["text"]}
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        if isinstance(url, str):
            data = _DATA_URL.fullmatch(url)
            if data is not None:
                source = {"type": "base64", "media_type": data[1], "data": data[2]}
                return {"type": "image", "source": source}
            if url.startswith(("https://", "http://")):
                return {"type": "image", "source": {"type": "url", "url": url}}
        raise ConversionError(field, "image_url needs a data: URL (base64) or an http(s) URL")
    raise ConversionError(field, f"content parts of type {kind!r} are not mapped to Anthropic")


def _messages(messages: object) -> tuple[str | None, list[dict[str, Any]]]:
    if not isinstance(messages, list) or not messages:
        raise ConversionError("body.messages", "must be a non-empty list")
    system: list[str] = []
    out: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        field = f"body.messages[{i}]"
        if not isinstance(message, dict):
            raise ConversionError(field, "must be an object")
        role = message.get("role")
        extra = set(message) - {"role", "content"}
        if extra:
            name = sorted(extra)[0]
            raise ConversionError(f"{field}.{name}", "has no Anthropic equivalent")
        content = message.get("content")
        if role in _SYSTEM_ROLES:
            if out:
                raise ConversionError(
                    field, "a system message after the conversation started cannot be mapped"
                )
            system.append(_text(f"{field}.content", content))
        elif role in ("user", "assistant"):
            if isinstance(content, str):
                out.append({"role": role, "content": content})
            elif isinstance(content, list) and content:
                parts = [_part(f"{field}.content[{j}]", p) for j, p in enumerate(content)]
                out.append({"role": role, "content": parts})
            else:
                raise ConversionError(f"{field}.content", "must be a string or a list of parts")
        else:
            raise ConversionError(f"{field}.role", f"role {role!r} is not mapped to Anthropic")
    if not out:
        raise ConversionError("body.messages", "has no user or assistant message")
    return ("\n\n".join(system) if system else None), out


def chat_to_anthropic(
    body: dict[str, Any], *, default_max_tokens: int = DEFAULT_MAX_TOKENS
) -> dict[str, Any]:
    """Map an OpenAI chat-completions request body to Anthropic Messages params.

    Args:
        body: the decoded OpenAI body (``{"model", "messages", ...}``).
        default_max_tokens: ``max_tokens`` when the body sets neither ``max_completion_tokens``
            nor ``max_tokens``.

    Raises:
        ConversionError: a field that cannot be mapped faithfully (named in the message).
    """
    for key, value in body.items():
        if key in _HANDLED or key in _IGNORED:
            continue
        allowed = _NEUTRAL.get(key)
        if allowed is None:
            raise ConversionError(f"body.{key}", "has no Anthropic equivalent")
        if not any(value == a and type(value) is type(a) for a in allowed):
            raise ConversionError(f"body.{key}", f"{value!r} cannot be mapped to Anthropic")
    fmt = body.get("response_format")
    if fmt is not None and fmt != {"type": "text"}:
        raise ConversionError("body.response_format", "structured output is not mapped")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ConversionError("body.model", "must be a non-empty string")
    system, messages = _messages(body.get("messages"))
    limit = body.get("max_completion_tokens")
    if limit is None:
        limit = body.get("max_tokens")
    if limit is None:
        limit = default_max_tokens
    if type(limit) is not int or limit < 1:
        raise ConversionError("body.max_tokens", "must be a positive integer")
    params: dict[str, Any] = {"model": model, "max_tokens": limit, "messages": messages}
    if system is not None:
        params["system"] = system
    stop = body.get("stop")
    if isinstance(stop, str):
        params["stop_sequences"] = [stop]
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        if stop:
            params["stop_sequences"] = stop
    elif stop is not None:
        raise ConversionError("body.stop", "must be a string or a list of strings")
    temperature = body.get("temperature")
    if temperature is not None:
        if not isinstance(temperature, int | float) or not 0 <= temperature <= 1:
            raise ConversionError(
                "body.temperature", "Anthropic accepts 0 to 1; a value above 1 has no equivalent"
            )
        params["temperature"] = temperature
    if body.get("top_p") is not None:
        params["top_p"] = body["top_p"]
    user = body.get("user")
    if user is not None:
        if not isinstance(user, str):
            raise ConversionError("body.user", "must be a string")
        params["metadata"] = {"user_id": user}
    return params


# -- the line checker ----------------------------------------------------------------------------


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

    Same interface as ``_jsonl.LineChecker`` (``check`` and ``oversized``); the common JSON
    and UTF-8 diagnostics are delegated to it.

    Args:
        base: the ``LineChecker`` of the run (its limits and JSON diagnostics).
        max_line_bytes: the longest shard line accepted (after conversion).
    """

    __slots__ = ("_base", "_max_line_bytes")

    def __init__(self, base: LineChecker, *, max_line_bytes: int) -> None:
        self._base = base
        self._max_line_bytes = max_line_bytes

    def oversized(self, size: int) -> Problem:
        """The problem of a line of ``size`` bytes above the line limit."""
        return self._base.oversized(size)

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
