"""OpenAI chat-completions request bodies mapped to Anthropic Messages params.

:func:`chat_to_anthropic` maps what has a faithful Anthropic equivalent and refuses the rest
with a :class:`ConversionError` that names the field, so nothing is silently dropped or
changed in meaning.

Mapped: ``system``/``developer`` messages before the conversation -> ``system``; ``user`` and
``assistant`` messages with string content or ``text``/``image_url`` parts;
``max_completion_tokens`` or ``max_tokens`` (default :data:`DEFAULT_MAX_TOKENS`); ``stop`` ->
``stop_sequences``; ``temperature`` (0-1 only); ``top_p``; ``user`` -> ``metadata.user_id``.
Accepted when they change nothing: ``stream: false``, ``n: 1``, ``logprobs: false``,
``response_format: {"type": "text"}``, zero penalties, ``store``. Everything else is refused.
"""

from __future__ import annotations

import re
from typing import Any, Final

from ..._errors import UsageError

__all__ = ["CHAT_ENDPOINT", "DEFAULT_MAX_TOKENS", "ConversionError", "chat_to_anthropic"]

#: ``max_tokens`` given to a converted request whose OpenAI body set none (Anthropic needs one).
DEFAULT_MAX_TOKENS: Final = 4096
#: The only OpenAI endpoint whose bodies convert.
CHAT_ENDPOINT: Final = "/v1/chat/completions"

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
