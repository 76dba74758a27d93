"""LlamaCloud wire shapes for the emulator: request bodies, response objects, 422 details.

Shapes follow ``shared/specs/llamacloud-openapi-unofficial-2026-08.yaml`` (``BatchResponse``,
``DirectoryResponse``, ``DirectoryFileResponse``, ``ParseResultResponse``, ``ExtractV2Job``,
``HTTPValidationError``...). Request bodies are decoded strictly enough to answer FastAPI-style
``422 {"detail": [{"loc", "msg", "type"}]}`` for a missing or mistyped field, but tolerate the
optional fields the official SDKs send (webhooks, ``system_metadata``).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, Final, Literal, TypeAlias

import msgspec
from msgspec import UNSET, UnsetType

__all__ = [
    "BATCH_STATUSES",
    "JOB_TYPES",
    "Batch",
    "BatchConfig",
    "BatchCreateBody",
    "BatchResult",
    "Directory",
    "DirectoryCreateBody",
    "DirectoryFile",
    "ExtractJob",
    "Invalid",
    "JobConfig",
    "JobReference",
    "Page",
    "ParseJob",
    "ParseResult",
    "decode_body",
    "rfc3339",
]

JobType: TypeAlias = Literal["parse_v2", "extract_v2"]
JOB_TYPES: Final = ("parse_v2", "extract_v2")
BATCH_STATUSES: Final = ("PENDING", "THROTTLED", "RUNNING", "COMPLETED", "FAILED", "CANCELLED")
_AT_PATH: Final = re.compile(r"at `\$\.?([^`]*)`")
_MISSING: Final = re.compile(r"missing required field `([^`]*)`")


def rfc3339(t: float) -> str:
    """Unix seconds as ISO-8601 UTC with microseconds (FastAPI's datetime rendering)."""
    return datetime.fromtimestamp(t, tz=UTC).isoformat().replace("+00:00", "Z")


class Invalid(Exception):
    """A FastAPI request-validation failure: answered ``422 {"detail": [...]}``."""

    def __init__(self, detail: list[dict[str, Any]]) -> None:
        super().__init__(f"{len(detail)} validation error(s)")
        self.detail = detail


def missing(*loc: str | int) -> Invalid:
    """The 422 of one missing field at ``loc`` (``("body", "config")``)."""
    return Invalid([{"loc": list(loc), "msg": "Field required", "type": "missing", "input": None}])


def decode_body(raw: bytes, decoder: msgspec.json.Decoder[Any]) -> Any:
    """Decode a JSON body, turning msgspec's error into FastAPI's 422 detail list."""
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as exc:
        text = str(exc)
        at = _AT_PATH.search(text)
        path = [p for p in (at.group(1) if at else "").replace("[", ".").split(".") if p]
        loc: list[str | int] = ["body", *(int(p[:-1]) if p.endswith("]") else p for p in path)]
        gone = _MISSING.search(text)
        if gone is not None:
            raise missing(*loc, gone.group(1)) from None
        message = text.split(" - at ")[0]
        raise Invalid([{"loc": loc, "msg": message, "type": "value_error"}]) from None
    except msgspec.DecodeError:
        raise Invalid(
            [{"loc": ["body", 0], "msg": "JSON decode error", "type": "json_invalid"}]
        ) from None


# -- requests -----------------------------------------------------------------------------------


class DirectoryCreateBody(msgspec.Struct, kw_only=True):
    name: str
    description: str | None = None
    type: Literal["user", "ephemeral"] = "user"
    expires_at: str | None = None
    system_metadata: dict[str, Any] | None = None
    connector_subscription_id: str | None = None


class JobConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    type: JobType
    configuration_id: str


class BatchConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    job: JobConfig


class BatchCreateBody(msgspec.Struct, kw_only=True):
    source_directory_id: str
    config: BatchConfig
    webhook_configuration_ids: list[str] | None = None
    webhook_configurations: list[dict[str, Any]] | None = None


# -- responses ----------------------------------------------------------------------------------


class Directory(msgspec.Struct, kw_only=True):
    id: str
    project_id: str
    name: str
    description: str | None
    type: str
    expires_at: str | None
    created_at: str
    updated_at: str
    deleted_at: str | None = None
    system_metadata: dict[str, Any] | None = None


class DirectoryFile(msgspec.Struct, kw_only=True):
    id: str
    project_id: str
    directory_id: str
    unique_id: str
    display_name: str
    file_id: str | None
    metadata: dict[str, Any]
    created_at: str
    updated_at: str
    deleted_at: str | None = None


class JobReference(msgspec.Struct, kw_only=True):
    type: JobType
    id: str


class BatchResult(msgspec.Struct, kw_only=True):
    source_directory_file_id: str
    job_reference: JobReference | None = None
    error_message: str | None = None


class Batch(msgspec.Struct, kw_only=True):
    id: str
    project_id: str
    source_directory_id: str
    config: BatchConfig
    status: str
    created_at: str
    updated_at: str
    results: list[BatchResult] | None = None


class ParseJob(msgspec.Struct, kw_only=True):
    id: str
    project_id: str
    status: str
    name: str | None
    tier: str | None
    error_message: str | None
    created_at: str
    updated_at: str


class ParseResult(msgspec.Struct, kw_only=True, omit_defaults=True):
    """``ParseResultResponse``: ``job`` always, content only when expanded and COMPLETED."""

    job: ParseJob
    markdown: dict[str, Any] | UnsetType = UNSET
    text: dict[str, Any] | UnsetType = UNSET
    items: dict[str, Any] | UnsetType = UNSET
    markdown_full: str | UnsetType = UNSET
    text_full: str | UnsetType = UNSET
    metadata: dict[str, Any] | UnsetType = UNSET
    job_metadata: dict[str, Any] | UnsetType = UNSET


class ExtractJob(msgspec.Struct, kw_only=True):
    id: str
    project_id: str
    file_input: str
    configuration_id: str | None
    status: str
    error_message: str | None
    extract_result: dict[str, Any] | None
    created_at: str
    updated_at: str


class Page(msgspec.Struct, kw_only=True):
    """Every list endpoint's envelope (``BatchQueryResponse``, ``ParseJobQueryResponse``...)."""

    items: list[Any]
    next_page_token: str | None = None
    total_size: int | None = None
