"""OpenAI wire records (msgspec Structs), the one status table, and their mapping to models.

Only the fields the adapter reads are declared; unknown fields are ignored, so new API fields
never break decoding. Bodies that pass through to results stay ``msgspec.Raw``.
"""

from __future__ import annotations

from typing import Final

import msgspec

from ..._errors import ProtocolError
from ..._models import (
    BatchError,
    BatchInfo,
    BatchState,
    Canceled,
    Errored,
    Expired,
    Result,
    Succeeded,
    Usage,
)
from ..._provider import TAG_METADATA_KEY

__all__ = [
    "BATCH_DECODER",
    "BATCH_LIST_DECODER",
    "ENCODER",
    "FILE_DECODER",
    "PART_DECODER",
    "RESULT_LINE_DECODER",
    "STATUS_TABLE",
    "UPLOAD_DECODER",
    "USAGE_BODY_DECODER",
    "WireBatch",
    "WireCompleteUpload",
    "WireCreateBatch",
    "WireCreateUpload",
    "WireResultLine",
    "to_batch_info",
    "to_result",
]

#: OpenAI's raw batch status -> the normalized lifecycle. The only place statuses are mapped.
STATUS_TABLE: Final[dict[str, BatchState]] = {
    "validating": "pending",
    "in_progress": "running",
    "finalizing": "finalizing",
    "completed": "completed",
    "failed": "failed",
    "expired": "expired",
    "cancelling": "cancelling",
    "cancelled": "cancelled",
}

#: Per-line statuses (inside result files) that another attempt may fix (plus >= 500).
RETRYABLE_LINE_STATUSES: Final = frozenset({408, 409, 429})


# -- requests -----------------------------------------------------------------------------------


class WireCreateBatch(msgspec.Struct, kw_only=True):
    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, str]


class WireCreateUpload(msgspec.Struct, kw_only=True):
    filename: str
    purpose: str
    bytes: int
    mime_type: str


class WireCompleteUpload(msgspec.Struct, kw_only=True):
    part_ids: list[str]


# -- responses ----------------------------------------------------------------------------------


class WireFile(msgspec.Struct, kw_only=True):
    id: str


class WireUpload(msgspec.Struct, kw_only=True):
    id: str
    status: str = "pending"
    file: WireFile | None = None


class WirePart(msgspec.Struct, kw_only=True):
    id: str


class WireBatchError(msgspec.Struct, kw_only=True):
    code: str | None = None
    message: str | None = None
    line: int | None = None


class WireBatchErrors(msgspec.Struct, kw_only=True):
    data: list[WireBatchError] = msgspec.field(default_factory=list)


class WireRequestCounts(msgspec.Struct, kw_only=True):
    total: int = 0
    completed: int = 0
    failed: int = 0


class WireBatch(msgspec.Struct, kw_only=True):
    id: str
    status: str
    created_at: float
    metadata: dict[str, str] | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: WireBatchErrors | None = None
    request_counts: WireRequestCounts | None = None
    expires_at: float | None = None


class WireBatchList(msgspec.Struct, kw_only=True):
    data: list[WireBatch]
    has_more: bool = False
    last_id: str | None = None


# -- result lines -------------------------------------------------------------------------------


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


ENCODER: Final = msgspec.json.Encoder()
FILE_DECODER: Final = msgspec.json.Decoder(WireFile)
UPLOAD_DECODER: Final = msgspec.json.Decoder(WireUpload)
PART_DECODER: Final = msgspec.json.Decoder(WirePart)
BATCH_DECODER: Final = msgspec.json.Decoder(WireBatch)
BATCH_LIST_DECODER: Final = msgspec.json.Decoder(WireBatchList)
RESULT_LINE_DECODER: Final = msgspec.json.Decoder(WireResultLine)
USAGE_BODY_DECODER: Final = msgspec.json.Decoder(WireResponseBody)


# -- mapping ------------------------------------------------------------------------------------


def to_batch_info(wire: WireBatch) -> BatchInfo:
    """Normalize an OpenAI ``Batch`` object (the status table is ``STATUS_TABLE`` here)."""
    state = STATUS_TABLE.get(wire.status)
    if state is None:
        raise ProtocolError(f"openai: batch {wire.id} has unknown status {wire.status!r}")
    counts = wire.request_counts
    errors = wire.errors.data if wire.errors is not None else []
    return BatchInfo(
        id=wire.id,
        state=state,
        raw_status=wire.status,
        created_at=wire.created_at,
        tag=(wire.metadata or {}).get(TAG_METADATA_KEY),
        output_ref=wire.output_file_id,
        error_ref=wire.error_file_id,
        total=counts.total if counts else 0,
        completed=counts.completed if counts else 0,
        failed=counts.failed if counts else 0,
        errors=tuple(
            BatchError(code=e.code or "unknown", message=e.message or "", line=e.line)
            for e in errors
        ),
        expires_at=wire.expires_at,
    )


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
    body = USAGE_BODY_DECODER.decode(resp.body) if resp.body != b"null" else None
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
