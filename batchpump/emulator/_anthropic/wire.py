"""Anthropic Message Batches bodies as the emulator reads and writes them.

Request envelopes decode with ``forbid_unknown_fields=True`` (drift fails in tests); each
request's ``params`` stays raw and is checked per request, as the provider does. Response
objects follow the SDK's types (``MessageBatch``, list page, deleted marker, result lines).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any, Final, Literal

import msgspec
from msgspec import UNSET, UnsetType

__all__ = [
    "ANTHROPIC_ERROR_TYPES",
    "BatchRequest",
    "CreateBatchBody",
    "DeletedBatch",
    "ListPage",
    "MessageBatch",
    "RequestCounts",
    "check_params",
    "message_body",
    "rfc3339",
]

#: Error types of Anthropic's error body (``error.type``).
ANTHROPIC_ERROR_TYPES: Final = frozenset(
    {
        "invalid_request_error",
        "authentication_error",
        "billing_error",
        "permission_error",
        "not_found_error",
        "request_too_large",
        "rate_limit_error",
        "api_error",
        "timeout_error",
        "overloaded_error",
    }
)
_ECHO_CHARS: Final = 80
_OUTPUT_TOKENS: Final = 8


class BatchRequest(msgspec.Struct, forbid_unknown_fields=True):
    """One element of ``requests``: ``params`` stays raw (checked per request)."""

    custom_id: str
    params: msgspec.Raw


class CreateBatchBody(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /v1/messages/batches``."""

    requests: list[BatchRequest]


class RequestCounts(msgspec.Struct, kw_only=True):
    processing: int = 0
    succeeded: int = 0
    errored: int = 0
    canceled: int = 0
    expired: int = 0


class MessageBatch(msgspec.Struct, kw_only=True):
    id: str
    type: Literal["message_batch"] = "message_batch"
    processing_status: str
    request_counts: RequestCounts
    ended_at: datetime | None
    created_at: datetime
    expires_at: datetime
    archived_at: datetime | None
    cancel_initiated_at: datetime | None
    results_url: str | None


class ListPage(msgspec.Struct, kw_only=True):
    data: list[MessageBatch]
    has_more: bool
    first_id: str | None
    last_id: str | None


class DeletedBatch(msgspec.Struct, kw_only=True):
    id: str
    type: Literal["message_batch_deleted"] = "message_batch_deleted"


class _ParamsPeek(msgspec.Struct):
    model: Any = UNSET
    max_tokens: Any = UNSET
    messages: msgspec.Raw | UnsetType = UNSET


class _Turn(msgspec.Struct):
    content: Any = None


_peek: Final = msgspec.json.Decoder(_ParamsPeek)
_turns: Final = msgspec.json.Decoder(list[_Turn])


def rfc3339(t: float) -> datetime:
    """A UTC datetime (msgspec encodes it as RFC 3339 with ``Z``)."""
    return datetime.fromtimestamp(t, tz=UTC)


def check_params(params: msgspec.Raw) -> str | None:
    """Why one request's params would fail at the Messages API, or ``None`` if they pass."""
    try:
        peek = _peek.decode(params)
    except msgspec.DecodeError:
        return "params: Input should be a valid dictionary"
    if not isinstance(peek.model, str) or not peek.model:
        return "model: Field required"
    if peek.max_tokens is UNSET:
        return "max_tokens: Field required"
    if type(peek.max_tokens) is not int or peek.max_tokens < 1:
        return "max_tokens: Input should be greater than or equal to 1"
    if isinstance(peek.messages, UnsetType):
        return "messages: Field required"
    try:
        turns = _turns.decode(peek.messages)
    except msgspec.DecodeError:
        return "messages: Input should be a valid list"
    if not turns:
        return "messages: at least one message is required"
    return None


def _echo(params: msgspec.Raw) -> tuple[str, str]:
    """``(model, text)`` for the reply: the last turn's text, shortened."""
    peek = _peek.decode(params)
    model = peek.model if isinstance(peek.model, str) else "claude-emulated"
    text = ""
    if not isinstance(peek.messages, UnsetType):
        turns = _turns.decode(peek.messages)
        content = turns[-1].content if turns else ""
        if isinstance(content, list):
            parts = [p.get("text", "") for p in content if isinstance(p, dict)]
            content = " ".join(str(p) for p in parts)
        text = str(content)[:_ECHO_CHARS]
    return model, text


def message_body(custom_id: str, params: msgspec.Raw) -> dict[str, Any]:
    """A plausible ``Message`` for one succeeded request (``usage.service_tier: "batch"``)."""
    model, text = _echo(params)
    short = hashlib.blake2b(custom_id.encode(), digest_size=12).hexdigest()
    return {
        "id": f"msg_{short}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": f"Emulated reply to: {text}"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": max(1, len(params) // 4),
            "output_tokens": _OUTPUT_TOKENS,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "service_tier": "batch",
        },
    }
