"""OpenAI-format batch result lines and their mapping to results.

OpenAI (and Azure) output and error files hold one line per request, ``{"custom_id",
"response": {"status_code", "body"}, "error"}``; Together writes the same shape. Only the
fields read are declared; response bodies pass through to ``Succeeded`` as ``msgspec.Raw``.
"""

from __future__ import annotations

from typing import Final

import msgspec

from .._models import Canceled, Errored, Expired, Result, Succeeded, Usage

__all__ = ["RESULT_LINE_DECODER", "RETRYABLE_LINE_STATUSES", "WireResultLine", "to_result"]

#: Per-line statuses (inside result files) that another attempt may fix (plus >= 500).
RETRYABLE_LINE_STATUSES: Final = frozenset({408, 409, 429})


class WireLineResponse(msgspec.Struct, kw_only=True):
    status_code: int
    request_id: str | None = None
    body: msgspec.Raw = msgspec.field(default_factory=lambda: msgspec.Raw(b"null"))


class WireLineError(msgspec.Struct, kw_only=True):
    code: str | None = None
    message: str | None = None


class WireResultLine(msgspec.Struct, kw_only=True):
    custom_id: str
    id: str | None = None
    response: WireLineResponse | None = None
    error: WireLineError | None = None


class WireUsage(msgspec.Struct, kw_only=True):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None


class WireErrorDetail(msgspec.Struct, kw_only=True):
    code: str | None = None
    type: str | None = None
    message: str | None = None


class WireResponseBody(msgspec.Struct, kw_only=True):
    """The two things read from a line's response body: usage, or the error object."""

    usage: WireUsage | None = None
    error: WireErrorDetail | None = None


RESULT_LINE_DECODER: Final = msgspec.json.Decoder(WireResultLine)
_USAGE_BODY_DECODER: Final = msgspec.json.Decoder(WireResponseBody)


def to_result(line: WireResultLine, *, batch_id: str, attempt: int) -> Result | None:
    """Map one output/error file line to a result; ``None`` if it has neither part."""
    cid = line.custom_id
    resp = line.response
    if line.error is not None and (resp is None or resp.status_code < 400):
        code = line.error.code or "unknown"
        message = line.error.message or code
        if code == "batch_expired":
            return Expired(custom_id=cid, batch_id=batch_id, attempt=attempt, message=message)
        if code == "batch_cancelled":
            return Canceled(custom_id=cid, batch_id=batch_id, attempt=attempt, message=message)
        return Errored(
            custom_id=cid,
            batch_id=batch_id,
            attempt=attempt,
            code=code,
            message=message,
            retryable=code == "request_timeout",
        )
    if resp is None:
        return None
    body = _USAGE_BODY_DECODER.decode(resp.body) if resp.body != b"null" else None
    status = resp.status_code
    if status < 400:
        usage = body.usage if body is not None else None
        return Succeeded(
            custom_id=cid,
            batch_id=batch_id,
            attempt=attempt,
            response=resp.body,
            status_code=status,
            usage=(
                Usage(
                    input_tokens=usage.prompt_tokens or usage.input_tokens or 0,
                    output_tokens=usage.completion_tokens or usage.output_tokens or 0,
                )
                if usage is not None
                else None
            ),
        )
    detail = body.error if body is not None else None
    error_code = (detail.code or detail.type) if detail is not None else None
    return Errored(
        custom_id=cid,
        batch_id=batch_id,
        attempt=attempt,
        code=error_code or f"http_{status}",
        message=(detail.message if detail is not None else None) or f"HTTP {status}",
        status_code=status,
        body=resp.body,
        retryable=status in RETRYABLE_LINE_STATUSES or status >= 500,
    )
