"""OpenAI wire records (msgspec Structs), the one status table, and their mapping to models.

Only the fields the adapter reads are declared; unknown fields are ignored, so new API fields
never break decoding. Result lines are in ``providers/_result_lines.py``: other providers write
the same format.
"""

from __future__ import annotations

from typing import Final

import msgspec

from ..._errors import ProtocolError
from ..._models import BatchError, BatchInfo, BatchState
from ..._provider import TAG_METADATA_KEY

__all__ = [
    "BATCH_DECODER",
    "BATCH_LIST_DECODER",
    "ENCODER",
    "FILE_DECODER",
    "PART_DECODER",
    "STATUS_TABLE",
    "UPLOAD_DECODER",
    "WireBatch",
    "WireCompleteUpload",
    "WireCreateBatch",
    "WireCreateUpload",
    "to_batch_info",
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
    in_progress_at: float | None = None


class WireBatchList(msgspec.Struct, kw_only=True):
    data: list[WireBatch]
    has_more: bool = False
    last_id: str | None = None


ENCODER: Final = msgspec.json.Encoder()
FILE_DECODER: Final = msgspec.json.Decoder(WireFile)
UPLOAD_DECODER: Final = msgspec.json.Decoder(WireUpload)
PART_DECODER: Final = msgspec.json.Decoder(WirePart)
BATCH_DECODER: Final = msgspec.json.Decoder(WireBatch)
BATCH_LIST_DECODER: Final = msgspec.json.Decoder(WireBatchList)


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
        in_progress_at=wire.in_progress_at,
    )
