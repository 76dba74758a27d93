"""LlamaCloud wire records, the status table, and the checks of item lines and their files.

Only the fields the adapter uses are declared; unknown fields are ignored so additions on the
provider side never break decoding. Timestamps are ISO-8601 strings (``...Z`` or an offset).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Generic, Literal, TypeAlias, TypeVar

import msgspec

from ..._errors import BadRequestError
from ..._models import BatchInfo, BatchState, Errored

__all__ = [
    "BATCH_DECODER",
    "BATCH_PAGE_DECODER",
    "DIRECTORY_DECODER",
    "DIRECTORY_PAGE_DECODER",
    "ENCODER",
    "FILE_DECODER",
    "FILE_PAGE_DECODER",
    "ITEM_DECODER",
    "JOB_PAGE_DECODER",
    "STATUS_TABLE",
    "TERMINAL_JOB_STATUSES",
    "Item",
    "JobType",
    "WireBatch",
    "WireBatchConfig",
    "WireBatchCreate",
    "WireDirectoryCreate",
    "WireDirectoryFile",
    "WireJob",
    "WireJobConfig",
    "WirePage",
    "check_file",
    "detail_message",
    "errored",
    "parse_time",
    "read_items",
    "shard_configuration",
    "to_batch_info",
]

_T = TypeVar("_T")
JobType: TypeAlias = Literal["parse_v2", "extract_v2"]

#: The batch status table: the provider's word -> batchpump's. ``THROTTLED`` (queued behind a
#: project quota, meaning unconfirmed) is *not* terminal: it waits like ``PENDING``.
STATUS_TABLE: Final[dict[str, BatchState]] = {
    "PENDING": "pending",
    "THROTTLED": "pending",
    "RUNNING": "running",
    "COMPLETED": "completed",
    "FAILED": "failed",
    "CANCELLED": "cancelled",
}
TERMINAL_JOB_STATUSES: Final = frozenset({"COMPLETED", "FAILED", "CANCELLED"})
#: Words in a job error that mean the document itself is bad (not worth another attempt).
_PERMANENT_HINTS: Final = (
    "corrupt", "encrypted", "password", "unsupported", "not supported", "empty", "too large",
    "exceeds", "invalid file", "page limit",
)  # fmt: skip


class Item(msgspec.Struct, kw_only=True):
    """One input line: ``custom_id`` plus ``file`` (or ``url``), optional ``configuration_id``.

    Fields are ``Any`` so a wrong type is reported by ``check_line`` with a hint rather than a
    decoder message.
    """

    custom_id: Any = None
    file: Any = None
    url: Any = None
    configuration_id: Any = None


class WireDirectoryCreate(msgspec.Struct, kw_only=True, omit_defaults=True):
    name: str
    type: str = "ephemeral"
    expires_at: str | None = None
    description: str | None = None


class WireDirectory(msgspec.Struct, kw_only=True):
    id: str
    name: str


class WireDirectoryFile(msgspec.Struct, kw_only=True):
    id: str
    unique_id: str


class WireJobConfig(msgspec.Struct, kw_only=True):
    type: JobType
    configuration_id: str


class WireBatchConfig(msgspec.Struct, kw_only=True):
    job: WireJobConfig


class WireBatchCreate(msgspec.Struct, kw_only=True):
    source_directory_id: str
    config: WireBatchConfig


class WireJobReference(msgspec.Struct, kw_only=True):
    type: str
    id: str


class WireBatchResult(msgspec.Struct, kw_only=True):
    source_directory_file_id: str
    job_reference: WireJobReference | None = None
    error_message: str | None = None


class WireBatch(msgspec.Struct, kw_only=True):
    id: str
    source_directory_id: str
    status: str
    created_at: str | None = None
    results: list[WireBatchResult] | None = None


class WireJob(msgspec.Struct, kw_only=True):
    """A parse or extract job's status, as the bulk ``?job_ids=`` listings give it."""

    id: str
    status: str
    error_message: str | None = None


class WirePage(msgspec.Struct, Generic[_T], kw_only=True):
    items: list[_T]
    next_page_token: str | None = None


class _Detail(msgspec.Struct):
    loc: list[str | int] = msgspec.field(default_factory=list)
    msg: str = ""


class _ErrorBody(msgspec.Struct):
    detail: list[_Detail] | str | None = None


ENCODER: Final = msgspec.json.Encoder()
ITEM_DECODER: Final = msgspec.json.Decoder(Item)
DIRECTORY_DECODER: Final = msgspec.json.Decoder(WireDirectory)
DIRECTORY_PAGE_DECODER: Final = msgspec.json.Decoder(WirePage[WireDirectory])
FILE_DECODER: Final = msgspec.json.Decoder(WireDirectoryFile)
FILE_PAGE_DECODER: Final = msgspec.json.Decoder(WirePage[WireDirectoryFile])
BATCH_DECODER: Final = msgspec.json.Decoder(WireBatch)
BATCH_PAGE_DECODER: Final = msgspec.json.Decoder(WirePage[WireBatch])
JOB_PAGE_DECODER: Final = msgspec.json.Decoder(WirePage[WireJob])
_ERROR_DECODER: Final = msgspec.json.Decoder(_ErrorBody)


def parse_time(text: str | None) -> float:
    """ISO-8601 to unix seconds (0.0 when absent or unreadable); no offset means UTC."""
    if not text:
        return 0.0
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    if moment.tzinfo is None:  # the API's timestamps are UTC, whatever the local zone
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def to_batch_info(wire: WireBatch) -> BatchInfo:
    """Normalize a batch; an unknown status counts as ``running`` (never terminal by guess)."""
    return BatchInfo(
        id=wire.id,
        state=STATUS_TABLE.get(wire.status, "running"),
        raw_status=wire.status,
        created_at=parse_time(wire.created_at),
        output_ref=wire.source_directory_id,
    )


def detail_message(body: bytes | str) -> str | None:
    """FastAPI's ``detail``: the string, or each ``loc: msg`` of a 422 list, ``None`` if neither.

    The ``body``/``query`` head of each ``loc`` is dropped: ``config.job.type: Field required``.
    """
    try:
        detail = _ERROR_DECODER.decode(body).detail
    except msgspec.DecodeError:
        return None
    if detail is None or isinstance(detail, str):
        return detail
    parts = []
    for entry in detail:
        loc = [str(p) for p in entry.loc]
        where = ".".join(loc[1:] if loc[:1] in (["body"], ["query"], ["path"]) else loc)
        parts.append(f"{where or 'request'}: {entry.msg}")
    return "; ".join(parts) or None


# -- items ------------------------------------------------------------------------------------


def check_file(path: Path, limit: int) -> tuple[str, str] | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return (f"file not found: {path}", "check the path (relative paths use the root)")
    except OSError as exc:
        return (f"cannot read {path}: {exc.strerror}", "check the path and its permissions")
    if path.is_dir():
        return (f"{path} is a directory", "list each document as its own line")
    if not os.access(path, os.R_OK):
        return (f"cannot read {path}: permission denied", "make the file readable")
    if stat.st_size == 0:
        return (f"{path} is empty", "drop the line or give a non-empty document")
    if stat.st_size > limit:
        return (
            f"{path} is {stat.st_size:,} bytes, above LlamaCloud's limit of {limit:,} bytes",
            "split or compress the document",
        )
    return None


def read_items(path: Path) -> list[Item]:
    return [ITEM_DECODER.decode(line) for line in path.read_bytes().splitlines() if line.strip()]


def shard_configuration(path: Path) -> str | None:
    """The ``configuration_id`` the shard's lines name (one batch runs one configuration)."""
    named = {i.configuration_id for i in read_items(path) if i.configuration_id}
    if len(named) > 1:
        raise BadRequestError(
            f"shard {path.name} mixes configuration_ids {sorted(named)}: one batch runs one "
            "configuration; submit each configuration as its own run",
            provider="llamacloud",
            status=400,
            code="mixed_configuration",
        )
    return named.pop() if named else None


def errored(custom_id: str, batch_id: str, attempt: int, code: str, message: str) -> Errored:
    lowered = message.lower()
    permanent = any(hint in lowered for hint in _PERMANENT_HINTS)
    return Errored(
        custom_id=custom_id,
        batch_id=batch_id,
        attempt=attempt,
        code=code,
        message=message,
        retryable=not permanent,
    )
