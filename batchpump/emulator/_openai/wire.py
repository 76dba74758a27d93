"""OpenAI wire records: request bodies (decoded strictly) and response objects (encoded).

Request bodies use ``forbid_unknown_fields=True`` and optional fields, so the route can answer
a missing parameter with OpenAI's own ``missing_required_parameter`` error naming it, and an
unknown one with ``unknown_parameter``.
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec

__all__ = [
    "ALLOWED_ENDPOINTS",
    "BatchErrorObject",
    "BatchErrors",
    "BatchObject",
    "CompleteUploadBody",
    "CreateBatchBody",
    "CreateUploadBody",
    "DeletedFile",
    "ExpiresAfter",
    "FileObject",
    "ListPage",
    "RequestCounts",
    "UploadObject",
    "UploadPartObject",
]

#: Endpoints ``POST /v1/batches`` accepts (CreateBatchRequest.endpoint, spec 2026-08).
ALLOWED_ENDPOINTS: Final[frozenset[str]] = frozenset(
    {
        "/v1/responses",
        "/v1/chat/completions",
        "/v1/embeddings",
        "/v1/completions",
        "/v1/moderations",
        "/v1/images/generations",
        "/v1/images/edits",
        "/v1/videos",
    }
)

# -- requests ---------------------------------------------------------------------------------


class ExpiresAfter(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``expires_after`` / ``output_expires_after``: ``{anchor: "created_at", seconds}``."""

    anchor: str | None = None
    seconds: int | None = None


class CreateBatchBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``POST /v1/batches`` body."""

    input_file_id: str | None = None
    endpoint: str | None = None
    completion_window: str | None = None
    metadata: dict[str, str] | None = None
    output_expires_after: ExpiresAfter | None = None


class CreateUploadBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``POST /v1/uploads`` body."""

    filename: str | None = None
    purpose: str | None = None
    bytes: int | None = None
    mime_type: str | None = None
    expires_after: ExpiresAfter | None = None


class CompleteUploadBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``POST /v1/uploads/{id}/complete`` body."""

    part_ids: list[str] | None = None
    md5: str | None = None


# -- responses --------------------------------------------------------------------------------


class FileObject(msgspec.Struct, kw_only=True):
    """``OpenAIFile``."""

    id: str
    bytes: int
    created_at: int
    expires_at: int | None
    filename: str
    purpose: str
    object: Literal["file"] = "file"
    status: str = "processed"
    status_details: str | None = None


class DeletedFile(msgspec.Struct, kw_only=True):
    """``DeleteFileResponse``."""

    id: str
    object: Literal["file"] = "file"
    deleted: bool = True


class BatchErrorObject(msgspec.Struct, kw_only=True):
    """``BatchError``."""

    code: str
    message: str
    param: str | None = None
    line: int | None = None


class BatchErrors(msgspec.Struct, kw_only=True):
    """``Batch.errors``."""

    data: list[BatchErrorObject]
    object: Literal["list"] = "list"


class RequestCounts(msgspec.Struct, kw_only=True):
    """``BatchRequestCounts``."""

    total: int
    completed: int
    failed: int


class BatchObject(msgspec.Struct, kw_only=True):
    """``Batch``: every field present, ``null`` where not (yet) set, like the live API."""

    id: str
    endpoint: str
    model: str | None
    errors: BatchErrors | None
    input_file_id: str
    completion_window: str
    status: str
    output_file_id: str | None
    error_file_id: str | None
    created_at: int
    in_progress_at: int | None
    expires_at: int | None
    finalizing_at: int | None
    completed_at: int | None
    failed_at: int | None
    expired_at: int | None
    cancelling_at: int | None
    cancelled_at: int | None
    request_counts: RequestCounts
    metadata: dict[str, str] | None
    object: Literal["batch"] = "batch"


class ListPage(msgspec.Struct, kw_only=True):
    """``ListBatchesResponse`` / ``ListFilesResponse``."""

    data: list[BatchObject] | list[FileObject]
    first_id: str | None
    last_id: str | None
    has_more: bool
    object: Literal["list"] = "list"


class UploadObject(msgspec.Struct, kw_only=True):
    """``Upload``."""

    id: str
    bytes: int
    created_at: int
    expires_at: int
    filename: str
    purpose: str
    status: str
    file: FileObject | None
    object: Literal["upload"] = "upload"


class UploadPartObject(msgspec.Struct, kw_only=True):
    """``UploadPart``."""

    id: str
    created_at: int
    upload_id: str
    object: Literal["upload.part"] = "upload.part"
