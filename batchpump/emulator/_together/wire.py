"""Together wire records for the emulator: request bodies (strict) and response objects.

Response objects follow ``shared/specs/together-openapi.yaml``: optional ``BatchJob`` fields the
spec types as plain strings are *omitted* until set (never ``null``), ``FileResponse`` uses the
capitalised ``FileType``/``Processed`` keys, and ``created_at`` is RFC 3339 on jobs but a unix
integer on files, as the live API does.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final, Literal

import msgspec

__all__ = [
    "ALLOWED_ENDPOINTS",
    "BatchJob",
    "CreateBatchBody",
    "DeletedFile",
    "FileList",
    "FileResponse",
    "JobWithWarning",
    "OutputLine",
    "rfc3339",
]

#: Endpoints ``POST /batches`` accepts (the v1 SDK's enum plus the audio ones the docs name).
ALLOWED_ENDPOINTS: Final[frozenset[str]] = frozenset(
    {
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/audio/transcriptions",
        "/v1/audio/translations",
    }
)


def rfc3339(t: float) -> str:
    """Unix seconds as ``2024-01-15T14:30:00Z`` (what ``BatchJob`` timestamps look like)."""
    return datetime.fromtimestamp(int(t), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- requests -----------------------------------------------------------------------------------


class CreateBatchBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``CreateBatchRequest``; ``metadata`` (or anything else) is refused."""

    endpoint: str | None = None
    input_file_id: str | None = None
    completion_window: str | None = None
    priority: int | None = None
    model_id: str | None = None


# -- responses ----------------------------------------------------------------------------------


class FileResponse(msgspec.Struct, kw_only=True, rename={"file_type": "FileType"}):
    """``FileResponse`` (plus ``LineCount``, read by the v1 SDK)."""

    id: str
    created_at: int
    filename: str
    bytes: int
    purpose: str
    file_type: str
    Processed: bool
    LineCount: int = 0
    object: Literal["file"] = "file"


class FileList(msgspec.Struct, kw_only=True):
    """``FileList``."""

    data: list[FileResponse]
    object: Literal["list"] = "list"


class DeletedFile(msgspec.Struct, kw_only=True):
    """``FileDeleteResponse``."""

    id: str
    deleted: bool = True
    object: Literal["file"] = "file"


class BatchJob(msgspec.Struct, kw_only=True, omit_defaults=True):
    """``BatchJob``: unset optional fields are left out."""

    id: str
    user_id: str
    input_file_id: str
    file_size_bytes: int
    status: str
    job_deadline: str
    created_at: str
    endpoint: str
    progress: float
    model_id: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    error: str | None = None
    completed_at: str | None = None


class JobWithWarning(msgspec.Struct, kw_only=True, omit_defaults=True):
    """``BatchJobWithWarning``, the 201 body of ``POST /batches``."""

    job: BatchJob
    warning: str | None = None


class _LineResponse(msgspec.Struct):
    status_code: int
    body: msgspec.Raw


class _LineError(msgspec.Struct):
    message: str
    code: str


class OutputLine(msgspec.Struct, omit_defaults=True):
    """An output-file line (``response``) or an error-file line (``error``)."""

    custom_id: str
    response: _LineResponse | None = None
    error: _LineError | None = None

    @classmethod
    def ok(cls, custom_id: str, body: bytes) -> OutputLine:
        return cls(custom_id, response=_LineResponse(200, msgspec.Raw(body)))

    @classmethod
    def failed(cls, custom_id: str, code: str, message: str) -> OutputLine:
        return cls(custom_id, error=_LineError(message, code))
