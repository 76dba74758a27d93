"""GT Studio (Playment) wire records for the emulator: request bodies and answer payloads.

Request bodies are decoded with ``forbid_unknown_fields=True`` so client drift fails in tests;
their fields are typed loosely (``Any``) on purpose, so a wrong type gets the API's own error
code (``FS_0003``, ``GE_0001``...) instead of a decoder message. Answers are wrapped by
``ok``/``fail`` in the documented envelope.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec
from msgspec import UNSET, UnsetType

__all__ = [
    "BatchCreated",
    "BatchJobsPage",
    "CreateBatchBody",
    "CreateJobBody",
    "JobCreated",
    "JobDetails",
    "JobSummary",
    "ProjectBatch",
    "ProjectDetails",
    "encode",
    "fail",
    "ok",
]


class CreateBatchBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/projects/:pid/batch``; ``label``/``project_id`` are legacy extras."""

    name: Any = None
    description: Any = None
    label: Any = None
    project_id: Any = None


class CreateJobBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/projects/:pid/jobs`` (``tag`` is v0's ``work_flow_id``; ``type`` unconfirmed)."""

    reference_id: Any = None
    work_flow_id: Any = None
    tag: Any = None
    data: Any = UNSET
    batch_id: Any = None
    priority_weight: Any = None
    type: Any = None

    @property
    def has_data(self) -> bool:
        return not isinstance(self.data, UnsetType)


class BatchCreated(msgspec.Struct, kw_only=True):
    batch_id: str


class JobCreated(msgspec.Struct, kw_only=True):
    job_id: str
    reference_id: str
    work_flow_id: str


class JobDetails(msgspec.Struct, kw_only=True):
    project_id: str
    job_id: str
    batch_id: str
    reference_id: str
    status: str
    work_flow_id: str
    tag: str
    priority_weight: int
    result: str


class JobSummary(msgspec.Struct, kw_only=True):
    id: str
    reference_id: str
    status: str
    frames: int
    annotations: int


class BatchJobsPage(msgspec.Struct, kw_only=True):
    id: str
    project_id: str
    name: str
    jobs: list[JobSummary]
    next_page_token: str


class ProjectBatch(msgspec.Struct, kw_only=True):
    id: str
    name: str
    description: str
    is_default: bool
    total_jobs: int
    completed_jobs: int
    total_frames: int
    completed_frames: int
    annotations: int
    created_at: str
    status: str


class ProjectDetails(msgspec.Struct, kw_only=True):
    name: str
    base: str
    batches: list[ProjectBatch]


class _Ok(msgspec.Struct, kw_only=True):
    success: bool
    data: Any


class _ErrorBody(msgspec.Struct, kw_only=True):
    code: str
    message: str


class _Fail(msgspec.Struct, kw_only=True):
    success: bool
    error: _ErrorBody


_encoder: Final = msgspec.json.Encoder()
CREATE_BATCH_DECODER: Final = msgspec.json.Decoder(CreateBatchBody)
CREATE_JOB_DECODER: Final = msgspec.json.Decoder(CreateJobBody)


def ok(data: Any) -> bytes:
    """``{"success": true, "data": ...}``."""
    return _encoder.encode(_Ok(success=True, data=data))


def fail(code: str, message: str) -> bytes:
    """``{"success": false, "error": {"code", "message"}}``."""
    return _encoder.encode(_Fail(success=False, error=_ErrorBody(code=code, message=message)))


def encode(obj: Any) -> bytes:
    """Plain JSON (attachment files)."""
    return _encoder.encode(obj)
