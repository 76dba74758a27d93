"""TELUS GT Studio (Playment) wire records, the status table, error classes and the item check.

Only the fields the adapter reads are declared; unknown fields are ignored. Every answer comes
in the envelope ``{"success": true, "data": ...}`` or ``{"success": false, "error": {"code",
"message"}}`` (HTTP 400), decoded by one reused ``Decoder`` per payload type.

Statuses: the API documents only job ``"completed"`` and batch ``"Complete"``; everything else
is unconfirmed, so the normalization never fails on an unknown word and falls back on the
project-details counters (``completed_jobs`` / ``total_jobs``).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Final, Generic, Literal, TypeAlias, TypeVar

import msgspec
from msgspec import UNSET, UnsetType

from ..._errors import ProtocolError
from ..._models import BatchInfo, BatchState

__all__ = [
    "AUTH_CODES",
    "ENCODER",
    "EXISTS_CODE",
    "JOB_DONE",
    "JOB_FAILED",
    "RETRYABLE_CODES",
    "STATUS_TABLE",
    "CodeClass",
    "Envelope",
    "ShardItem",
    "WireCreateBatch",
    "WireCreateJob",
    "batch_name",
    "check_item",
    "classify",
    "normalize",
    "tag_of",
    "to_batch_info",
]

_T = TypeVar("_T")

#: Batch names are ``NAME_PREFIX + tag``: unique per shard attempt, found again exactly.
NAME_PREFIX: Final = "batchpump "
#: The one job status the docs show for a finished job.
JOB_DONE: Final = "completed"
#: Job statuses read as "finished without a result" (none documented; seen in the emulator).
JOB_FAILED: Final = frozenset({"failed", "rejected", "error", "cancelled", "canceled"})

#: Project-details batch ``status`` -> normalized state. The only place statuses are mapped.
#: ``Complete`` is documented; the rest are defensive guesses (and the emulator's words).
STATUS_TABLE: Final[dict[str, BatchState]] = {
    "complete": "completed",
    "completed": "completed",
    "in progress": "running",
    "in_progress": "running",
    "inprogress": "running",
    "not started": "pending",
    "not_started": "pending",
    "pending": "pending",
    "created": "pending",
}

#: ``reference_id`` already used: the job exists (reconciled, never created twice).
EXISTS_CODE: Final = "FS_0001"
#: Server-side problems, "try again later".
RETRYABLE_CODES: Final = frozenset({"FS_0000", "FS_0008", "api_error"})
#: The key is wrong or lacks access: the whole run stops.
AUTH_CODES: Final = frozenset(
    {
        "auth-failure",
        "unauthorized",
        "core.webutil.token_auth",
        "core.webutil.auther",
        "unauthorized_request",
    }
)

CodeClass: TypeAlias = Literal["exists", "retry", "auth", "permanent"]


def classify(code: str | None) -> CodeClass:
    """What a job-create error code means for the adapter (every other code is permanent)."""
    if code == EXISTS_CODE:
        return "exists"
    if code in RETRYABLE_CODES:
        return "retry"
    if code in AUTH_CODES:
        return "auth"
    return "permanent"


# -- envelope and payloads ----------------------------------------------------------------------


class WireError(msgspec.Struct, kw_only=True):
    code: str | None = None
    message: str | None = None


class Envelope(msgspec.Struct, Generic[_T], kw_only=True):
    success: bool = False
    data: _T | None = None
    error: WireError | None = None


class WireCreateBatch(msgspec.Struct, kw_only=True):
    name: str
    description: str


class WireCreateJob(msgspec.Struct, kw_only=True, omit_defaults=True):
    reference_id: str
    work_flow_id: str
    batch_id: str
    data: msgspec.Raw
    priority_weight: int | None = None


class WireBatchCreated(msgspec.Struct, kw_only=True):
    batch_id: str


class WireProjectBatch(msgspec.Struct, kw_only=True):
    id: str
    name: str = ""
    is_default: bool = False
    total_jobs: int = 0
    completed_jobs: int = 0
    created_at: str | None = None
    status: str | None = None


class WireProjectDetails(msgspec.Struct, kw_only=True):
    name: str | None = None
    batches: list[WireProjectBatch] = msgspec.field(default_factory=list)


class WireBatchJob(msgspec.Struct, kw_only=True):
    id: str
    reference_id: str
    status: str | None = None


class WireBatchJobs(msgspec.Struct, kw_only=True):
    id: str | None = None
    jobs: list[WireBatchJob] = msgspec.field(default_factory=list)
    next_page_token: str | None = None


class WireJob(msgspec.Struct, kw_only=True):
    job_id: str
    reference_id: str | None = None
    status: str | None = None
    result: str | None = None


ENCODER: Final = msgspec.json.Encoder()
ANY_DECODER: Final = msgspec.json.Decoder(Envelope[Any])
BATCH_CREATED_DECODER: Final = msgspec.json.Decoder(Envelope[WireBatchCreated])
DETAILS_DECODER: Final = msgspec.json.Decoder(Envelope[WireProjectDetails])
BATCH_JOBS_DECODER: Final = msgspec.json.Decoder(Envelope[WireBatchJobs])
JOB_DECODER: Final = msgspec.json.Decoder(Envelope[WireJob])


# -- batches ------------------------------------------------------------------------------------


def batch_name(tag: str) -> str:
    """The batch name that carries a shard-attempt tag."""
    return f"{NAME_PREFIX}{tag}"


def tag_of(name: str) -> str | None:
    """The shard-attempt tag a batch name carries, or ``None`` for batches not ours."""
    return name[len(NAME_PREFIX) :] if name.startswith(NAME_PREFIX) else None


def normalize(raw: str | None, total: int, completed: int) -> BatchState:
    """The normalized state of a batch from its status word and its job counters.

    A documented ``Complete`` or every job finished is ``completed`` (an empty batch too: the
    engine polls a batch only after ``create`` returned, so zero jobs means every item was
    rejected at creation and there is nothing to wait for). Otherwise a known word decides, and
    an unknown one falls back on the counters: ``running`` once some job finished, ``pending``
    before.
    """
    state = STATUS_TABLE.get((raw or "").strip().lower())
    if state == "completed" or completed >= total:
        return "completed"
    if state is not None:
        return "running" if completed > 0 else state
    return "running" if completed > 0 else "pending"


def parse_time(text: str | None) -> float:
    """Unix seconds of an ISO-8601 timestamp with offset (``...+05:30``); 0.0 if absent."""
    if not text:
        return 0.0
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError as exc:
        raise ProtocolError(f"telus: unreadable created_at {text!r}") from exc


def to_batch_info(wire: WireProjectBatch) -> BatchInfo:
    """Normalize one project-details batch."""
    raw = wire.status or "unknown"
    return BatchInfo(
        id=wire.id,
        state=normalize(wire.status, wire.total_jobs, wire.completed_jobs),
        raw_status=raw,
        created_at=parse_time(wire.created_at),
        tag=tag_of(wire.name),
        output_ref=wire.id,  # results are the batch's job pages: always there
        total=wire.total_jobs,
        completed=wire.completed_jobs,
    )


# -- item lines ---------------------------------------------------------------------------------


class ShardItem(msgspec.Struct, kw_only=True):
    """One shard line: the input's item line, copied as it was (``line_format="items"``)."""

    custom_id: str
    data: msgspec.Raw | UnsetType = UNSET
    work_flow_id: str | None = None
    priority_weight: int | None = None


class _Check(msgspec.Struct):
    custom_id: Any = UNSET
    data: msgspec.Raw | UnsetType = UNSET
    work_flow_id: Any = UNSET
    reference_id: Any = UNSET
    batch_id: Any = UNSET
    priority_weight: Any = UNSET


SHARD_ITEM_DECODER: Final = msgspec.json.Decoder(ShardItem)
_CHECK_DECODER: Final = msgspec.json.Decoder(_Check)
_UUID: Final = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
_EMPTY_OBJECT: Final = re.compile(rb"\{\s*\}")
_ITEM_HINT: Final = (
    'write one item per line: {"custom_id": "...", "data": {"image_url": "..."}, '
    '"work_flow_id"?: "<uuid>"}'
)


def is_uuid(text: object) -> bool:
    """Whether ``text`` is a UUID string (every GT Studio id is one)."""
    return isinstance(text, str) and _UUID.fullmatch(text) is not None


def check_item(raw: bytes, run_work_flow_id: str | None) -> tuple[str, str] | None:
    """``(message, hint)`` for an item line the API would refuse, ``None`` for a good one.

    Mirrors the API's own checks (FS_0002..FS_0005, FS_00012, GE_0001) before anything is sent.
    """
    try:
        line = _CHECK_DECODER.decode(raw)
    except msgspec.DecodeError:
        return "not a JSON object", _ITEM_HINT
    cid = line.custom_id
    if not isinstance(cid, str) or not cid:
        return "missing custom_id", 'give every item a unique "custom_id" (it becomes reference_id)'
    if line.reference_id is not UNSET and line.reference_id != cid:
        return "reference_id differs from custom_id", "drop reference_id: custom_id is sent as it"
    if line.batch_id is not UNSET:
        return "batch_id is set on the line", "drop it: batchpump creates one batch per shard"
    if isinstance(line.data, UnsetType):
        return "missing data", 'add "data": {...} with the job data (e.g. {"image_url": "..."})'
    data = bytes(line.data).strip()
    if data[:1] != b"{":
        return "data must be a JSON object", _ITEM_HINT
    if _EMPTY_OBJECT.fullmatch(data):
        return "data is empty", "the API refuses empty job data (FS_0004): fill it in"
    flow = line.work_flow_id
    if flow is UNSET or flow is None:
        if run_work_flow_id is None:
            return "no work_flow_id", 'add "work_flow_id" to the line or pass work_flow_id='
    elif not is_uuid(flow):
        return "work_flow_id is not a UUID", "copy the workflow's id from the GT Studio dashboard"
    weight = line.priority_weight
    if weight is not UNSET and (type(weight) is not int or not 1 <= weight <= 9):
        return "priority_weight must be an integer from 1 to 9", "or leave it out (default 5)"
    return None
