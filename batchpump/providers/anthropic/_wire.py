"""Anthropic Message Batches wire records, the one status table, and their mapping to models.

Only the fields the adapter reads are declared; unknown fields are ignored. A succeeded line's
``message`` and an errored line's ``error`` stay ``msgspec.Raw``: their bytes pass through.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final, Literal

import msgspec
from msgspec import UNSET, UnsetType

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

__all__ = [
    "ARCHIVED_CODE",
    "BATCH_DECODER",
    "BATCH_LIST_DECODER",
    "ERROR_STATUS",
    "RESULT_LINE_DECODER",
    "RETRYABLE_ERROR_TYPES",
    "STATUS_TABLE",
    "WireBatch",
    "WireResultLine",
    "ended_state",
    "to_batch_info",
    "to_result",
]

#: Anthropic's ``processing_status`` -> the normalized lifecycle; ``ended`` is refined by
#: :func:`ended_state` from the request counts. The only place statuses are mapped.
STATUS_TABLE: Final[dict[str, BatchState]] = {
    "in_progress": "running",
    "canceling": "cancelling",
    "ended": "completed",
}
#: Per-line error types another attempt may fix.
RETRYABLE_ERROR_TYPES: Final = frozenset(
    {"api_error", "overloaded_error", "rate_limit_error", "timeout_error"}
)
#: The HTTP status each error type stands for (what the synchronous API would have answered).
ERROR_STATUS: Final[dict[str, int]] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
#: ``BatchError.code`` of a batch whose results were archived (no longer downloadable).
ARCHIVED_CODE: Final = "results_archived"


class WireRequestCounts(msgspec.Struct, kw_only=True):
    processing: int = 0
    succeeded: int = 0
    errored: int = 0
    canceled: int = 0
    expired: int = 0

    @property
    def total(self) -> int:
        return self.processing + self.succeeded + self.errored + self.canceled + self.expired


class WireBatch(msgspec.Struct, kw_only=True):
    id: str
    processing_status: str
    created_at: datetime
    expires_at: datetime | None = None
    ended_at: datetime | None = None
    archived_at: datetime | None = None
    cancel_initiated_at: datetime | None = None
    results_url: str | None = None
    request_counts: WireRequestCounts = msgspec.field(default_factory=WireRequestCounts)


class WireBatchList(msgspec.Struct, kw_only=True):
    data: list[WireBatch]
    has_more: bool = False
    first_id: str | None = None
    last_id: str | None = None


class WireInnerError(msgspec.Struct, kw_only=True):
    type: str = "api_error"
    message: str = ""


class WireErrorResponse(msgspec.Struct, kw_only=True):
    """``{"type": "error", "error": {type, message}}``; a bare ``{type, message}`` also reads."""

    type: str | None = None
    message: str | None = None
    error: WireInnerError | None = None

    def inner(self) -> WireInnerError:
        if self.error is not None:
            return self.error
        if self.type is not None and self.type != "error":
            return WireInnerError(type=self.type, message=self.message or "")
        return WireInnerError()


class WireLineResult(msgspec.Struct, kw_only=True):
    type: Literal["succeeded", "errored", "canceled", "expired"]
    message: msgspec.Raw | UnsetType = UNSET
    error: msgspec.Raw | UnsetType = UNSET


class WireResultLine(msgspec.Struct, kw_only=True):
    custom_id: str
    result: WireLineResult


class WireUsage(msgspec.Struct, kw_only=True):
    input_tokens: int | None = None
    output_tokens: int | None = None


class WireMessageUsage(msgspec.Struct, kw_only=True):
    usage: WireUsage | None = None


BATCH_DECODER: Final = msgspec.json.Decoder(WireBatch)
BATCH_LIST_DECODER: Final = msgspec.json.Decoder(WireBatchList)
RESULT_LINE_DECODER: Final = msgspec.json.Decoder(WireResultLine)
_USAGE_DECODER: Final = msgspec.json.Decoder(WireMessageUsage)
_ERROR_DECODER: Final = msgspec.json.Decoder(WireErrorResponse)


def ended_state(counts: WireRequestCounts) -> BatchState:
    """An ended batch's state: ``expired``/``cancelled`` when *every* line was, else completed.

    A mixed batch is ``completed``: each line carries its own fate in the results.
    """
    total = counts.total
    if total and counts.expired == total:
        return "expired"
    if total and counts.canceled == total:
        return "cancelled"
    return "completed"


def to_batch_info(wire: WireBatch) -> BatchInfo:
    """Normalize a ``MessageBatch`` (statuses map through :data:`STATUS_TABLE`)."""
    state = STATUS_TABLE.get(wire.processing_status)
    if state is None:
        raise ProtocolError(
            f"anthropic: batch {wire.id} has unknown status {wire.processing_status!r}"
        )
    counts = wire.request_counts
    if wire.processing_status == "ended":
        state = ended_state(counts)
    errors: tuple[BatchError, ...] = ()
    output_ref = wire.results_url
    if wire.archived_at is not None:
        output_ref = None
        errors = (
            BatchError(
                code=ARCHIVED_CODE,
                message=f"results of batch {wire.id} were archived at "
                f"{wire.archived_at.isoformat()} and can no longer be downloaded",
            ),
        )
    return BatchInfo(
        id=wire.id,
        state=state,
        raw_status=wire.processing_status,
        created_at=wire.created_at.timestamp(),
        tag=None,
        output_ref=output_ref,
        total=counts.total,
        completed=counts.succeeded,
        failed=counts.errored,
        errors=errors,
        expires_at=wire.expires_at.timestamp() if wire.expires_at is not None else None,
    )


def to_result(line: WireResultLine, *, batch_id: str, attempt: int) -> Result:
    """Map one results line to a result (``ProtocolError`` if its payload is missing)."""
    cid = line.custom_id
    result = line.result
    if result.type == "succeeded":
        if isinstance(result.message, UnsetType):
            raise ProtocolError(f"anthropic: succeeded line {cid!r} has no message")
        usage = _USAGE_DECODER.decode(result.message).usage
        return Succeeded(
            custom_id=cid,
            batch_id=batch_id,
            attempt=attempt,
            response=result.message,
            usage=Usage(
                input_tokens=usage.input_tokens or 0, output_tokens=usage.output_tokens or 0
            )
            if usage is not None
            else None,
        )
    if result.type == "errored":
        raw = msgspec.Raw(b"{}") if isinstance(result.error, UnsetType) else result.error
        try:
            inner = _ERROR_DECODER.decode(raw).inner()
        except msgspec.DecodeError:
            inner = WireInnerError()
        return Errored(
            custom_id=cid,
            batch_id=batch_id,
            attempt=attempt,
            code=inner.type,
            message=inner.message or inner.type,
            status_code=ERROR_STATUS.get(inner.type),
            body=raw,
            retryable=inner.type in RETRYABLE_ERROR_TYPES,
        )
    if result.type == "canceled":
        return Canceled(custom_id=cid, batch_id=batch_id, attempt=attempt)
    return Expired(custom_id=cid, batch_id=batch_id, attempt=attempt)
