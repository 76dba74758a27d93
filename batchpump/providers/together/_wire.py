"""Together wire records (msgspec Structs), the one status table, and their mapping to models.

Only the fields the adapter reads are declared; unknown fields are ignored, so new API fields
never break decoding. Result lines share OpenAI's shape (``custom_id`` plus ``response`` or
``error``), so their mapping reuses ``providers/_result_lines.py`` and only re-judges which error
codes another attempt may fix.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Final
from urllib.parse import urlsplit

import msgspec

from ..._errors import ProtocolError
from ..._models import BatchError, BatchInfo, BatchState, Errored, Result
from .._result_lines import WireResultLine, to_result

__all__ = [
    "BATCH_DECODER",
    "BATCH_LIST_DECODER",
    "CREATED_DECODER",
    "ENCODER",
    "FILE_DECODER",
    "FILE_LIST_DECODER",
    "INPUT_LINE_DECODER",
    "RESULT_LINE_DECODER",
    "STATUS_TABLE",
    "WireBatchJob",
    "WireCreateBatch",
    "WireFile",
    "WireInputLine",
    "WireValidationReport",
    "to_batch_info",
    "to_together_result",
    "upload_target",
]

#: Together's raw batch status -> the normalized lifecycle. The only place statuses are
#: mapped (with ``progress``, see ``to_batch_info``). ``CANCELING`` is not in the OpenAPI spec
#: but is in the v1 SDK's enum, so it is accepted.
STATUS_TABLE: Final[dict[str, BatchState]] = {
    "VALIDATING": "pending",
    "IN_PROGRESS": "running",
    "COMPLETED": "completed",
    "FAILED": "failed",
    "EXPIRED": "expired",
    "CANCELING": "cancelling",
    "CANCELLING": "cancelling",
    "CANCELLED": "cancelled",
}
#: ``progress`` at or above this (percent) while ``IN_PROGRESS`` means every request ran and
#: the result files are being written: normalized as ``finalizing`` (Together has no such
#: status), so the poller's stuck-finalizing timeout covers it.
FINALIZING_PROGRESS: Final = 100.0
#: Error-file codes another attempt may fix (``timeout`` is the one Together documents).
RETRYABLE_LINE_CODES: Final = frozenset(
    {"timeout", "request_timeout", "rate_limit_exceeded", "server_error", "overloaded"}
)
#: A file id as the SDKs accept it before putting it in a path: ``file-`` and no ``/ . ? #``.
FILE_ID: Final = re.compile(r"file-[^/.?#%\s]+")


# -- requests -----------------------------------------------------------------------------------


class WireCreateBatch(msgspec.Struct, kw_only=True, omit_defaults=True):
    """``CreateBatchRequest``: no ``metadata`` field exists."""

    endpoint: str
    input_file_id: str
    completion_window: str | None = None
    priority: int | None = None
    model_id: str | None = None


class WireInputLine(msgspec.Struct, kw_only=True):
    """Together's input line: only ``custom_id`` and ``body`` (shard lines also carry
    ``method``/``url``, which are dropped on upload)."""

    custom_id: str
    body: msgspec.Raw


# -- responses ----------------------------------------------------------------------------------


class WireValidationReport(msgspec.Struct, kw_only=True):
    """``ValidationReport`` (SDK 3.1.1 ``types/file_response.py``): set once validation ran."""

    valid: bool = True
    error: str | None = None
    error_type: str | None = None
    nlines: int | None = None


class WireFile(msgspec.Struct, kw_only=True):
    id: str
    filename: str = ""
    processed: bool = msgspec.field(default=True, name="Processed")
    #: ``PENDING``, ``QUEUED``, ``RUNNING``, ``COMPLETED``, ``FAILED`` or ``INVALID_FORMAT``.
    processing_status: str | None = None
    validation_report: WireValidationReport | None = None

    def invalid(self) -> str | None:
        """Why validation rejected the file (``INVALID_FORMAT`` or a failed report), or
        ``None`` while it passes or has not run."""
        report = self.validation_report
        if self.processing_status != "INVALID_FORMAT" and (report is None or report.valid):
            return None
        detail = report.error if report is not None and report.error else "no report"
        return f"{self.processing_status or 'invalid'}: {detail}"


class WireFileList(msgspec.Struct, kw_only=True):
    data: list[WireFile]


class WireBatchJob(msgspec.Struct, kw_only=True):
    id: str
    status: str
    created_at: datetime | None = None
    input_file_id: str | None = None
    progress: float = 0.0
    output_file_id: str | None = None
    error_file_id: str | None = None
    error: str | None = None
    job_deadline: datetime | None = None


class WireJobWithWarning(msgspec.Struct, kw_only=True):
    """``BatchJobWithWarning``, the 201 answer of ``POST /batches``."""

    job: WireBatchJob
    warning: str | None = None


ENCODER: Final = msgspec.json.Encoder()
FILE_DECODER: Final = msgspec.json.Decoder(WireFile)
FILE_LIST_DECODER: Final = msgspec.json.Decoder(WireFileList)
BATCH_DECODER: Final = msgspec.json.Decoder(WireBatchJob)
CREATED_DECODER: Final = msgspec.json.Decoder(WireJobWithWarning)
BATCH_LIST_DECODER: Final = msgspec.json.Decoder(list[WireBatchJob])
INPUT_LINE_DECODER: Final = msgspec.json.Decoder(WireInputLine)
RESULT_LINE_DECODER: Final = msgspec.json.Decoder(WireResultLine)


# -- upload redirect ----------------------------------------------------------------------------


def upload_target(status: int, headers: Mapping[str, str], *, base_url: str) -> tuple[str, str]:
    """The file id and the storage URL of ``POST /files``'s redirect (lower-case ``headers``).

    Applies the v2 SDK's safety rule: the URL must be absolute ``https`` on a public host; plain
    ``http`` and loopback/private/link-local addresses are accepted only when ``base_url`` is
    itself ``http`` (a local emulator or proxy). The file id must look like ``file-...`` since
    it goes into a path. Anything else is a ``ProtocolError``.
    """
    location, file_id = headers.get("location"), headers.get("x-together-file-id")
    if not 300 <= status < 400 or not location or not file_id:
        raise ProtocolError(
            f"together: POST /files answered {status} without a redirect "
            f"(Location {'set' if location else 'missing'}, X-Together-File-Id {file_id!r})"
        )
    if not FILE_ID.fullmatch(file_id):
        raise ProtocolError(f"together: unusable upload file id {file_id!r}")
    url = urlsplit(location)
    insecure_ok = urlsplit(base_url).scheme == "http"
    if url.scheme not in ("https", "http") or not url.hostname:
        raise ProtocolError(f"together: upload redirect is not an absolute URL ({url.scheme!r})")
    if not insecure_ok and (url.scheme != "https" or _local_host(url.hostname)):
        raise ProtocolError(
            f"together: refusing upload redirect to {url.scheme}://{url.hostname} "
            "(needs https on a public host)"
        )
    return file_id, location


def _local_host(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return not address.is_global


# -- mapping ------------------------------------------------------------------------------------


def _epoch(value: datetime | None) -> float | None:
    if value is None:
        return None
    if value.tzinfo is None:  # RFC 3339 requires an offset; a bare time is taken as UTC
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def to_batch_info(wire: WireBatchJob) -> BatchInfo:
    """Normalize a ``BatchJob``.

    Together reports no request counts, only ``progress`` (0-100 %), so ``total`` is 100 and
    ``completed`` the rounded percentage: enough for the poller to notice movement and for a
    ``COMPLETED`` job with no result file to be re-read rather than trusted. ``tag`` is
    ``None``: the attempt's tag is in the input file's *name* (see ``Together.reconcile``).
    """
    status = wire.status.upper()
    state = STATUS_TABLE.get(status)
    if state is None:
        raise ProtocolError(f"together: batch {wire.id} has unknown status {wire.status!r}")
    if state == "running" and wire.progress >= FINALIZING_PROGRESS:
        state = "finalizing"
    progress = round(min(max(wire.progress, 0.0), 100.0))
    if state == "completed" and progress == 0:
        progress = 100  # some jobs report no progress once done
    errors = (BatchError(code="batch_error", message=wire.error),) if wire.error else ()
    return BatchInfo(
        id=wire.id,
        state=state,
        raw_status=wire.status,
        created_at=_epoch(wire.created_at) or 0.0,
        tag=None,
        output_ref=wire.output_file_id or None,
        error_ref=wire.error_file_id or None,
        total=100,
        completed=progress,
        errors=errors,
        expires_at=_epoch(wire.job_deadline),
    )


def to_together_result(line: WireResultLine, *, batch_id: str, attempt: int) -> Result | None:
    """Map one output/error file line to a result (``None`` if it has neither part)."""
    result = to_result(line, batch_id=batch_id, attempt=attempt)
    if isinstance(result, Errored) and result.status_code is None:
        retryable = result.code in RETRYABLE_LINE_CODES
        if retryable != result.retryable:
            result = msgspec.structs.replace(result, retryable=retryable)
    return result
