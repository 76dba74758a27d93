"""The OpenAI Batch API adapter (also OpenAI-compatible base URLs).

Files go up as streamed multipart (``POST /files``), or through the Uploads API in parallel
parts above ``multipart_threshold``; batches carry our shard-attempt tag in ``metadata`` so an
interrupted create is found again by listing (``GET /batches`` is newest first). Result files
are streamed line by line and mapped to ``Succeeded | Errored | Expired | Canceled``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator
from contextlib import aclosing
from pathlib import Path
from typing import ClassVar, Final, TypeVar

import anyio
import msgspec

from ..._clock import Clock
from ..._config import Limits, RetryPolicy
from ..._errors import ProtocolError, UsageError
from ..._models import BatchInfo, Capabilities, Result, ShardRecord
from ..._provider import TAG_METADATA_KEY, find_by_tag
from .._adapter import HttpAdapter, check_base_url, from_env
from .._result_lines import RESULT_LINE_DECODER, to_result
from ._wire import (
    BATCH_DECODER,
    BATCH_LIST_DECODER,
    ENCODER,
    FILE_DECODER,
    PART_DECODER,
    UPLOAD_DECODER,
    WireCompleteUpload,
    WireCreateBatch,
    WireCreateUpload,
    to_batch_info,
)

__all__ = ["DEFAULT_BASE_URL", "OpenAI"]

_T = TypeVar("_T")

DEFAULT_BASE_URL: Final = "https://api.openai.com/v1"
API_KEY_ENV: Final = "OPENAI_API_KEY"
BASE_URL_ENV: Final = "OPENAI_BASE_URL"
MIB: Final = 1024 * 1024
#: Files above this many bytes go through the Uploads API (in parts).
DEFAULT_MULTIPART_THRESHOLD: Final = 128 * MIB
#: Bytes per Uploads API part (OpenAI allows at most 64 MB).
DEFAULT_PART_SIZE: Final = 64 * MIB
#: Batches per ``GET /batches`` page (the API's maximum).
LIST_PAGE_SIZE: Final = 100
COMPLETION_WINDOW: Final = "24h"
JSONL_MIME: Final = "application/jsonl"
TRANSIENT_CODES: Final = frozenset({"token_limit_exceeded"})
TRANSIENT_MESSAGES: Final = ("Enqueued token limit", "Enqueued request limit")

CAPABILITIES: Final = Capabilities(
    cancel=True,
    metadata_tag=True,
    inline_input=False,
    list_batches=True,
    max_lines=50_000,
    max_bytes=200 * 1000 * 1000,
    max_line_bytes=200 * 1000 * 1000,
    custom_id_max_len=None,
    one_model_per_shard=True,
)


class OpenAI(HttpAdapter):
    """The OpenAI Batch API.

    Args:
        api_key: defaults to ``$OPENAI_API_KEY``; ``UsageError`` if neither is set.
        base_url: defaults to ``$OPENAI_BASE_URL``, else ``https://api.openai.com/v1``.
        organization: sent as ``OpenAI-Organization`` when given.
        project: sent as ``OpenAI-Project`` when given.
        limits: rate and concurrency per endpoint class (default ``Limits()``).
        retry: how each HTTP call is retried (default ``RetryPolicy()``).
        clock: every wait goes through it (default ``SystemClock()``).
        multipart_threshold: files above this many bytes use the Uploads API (128 MiB).
        part_size: bytes per Uploads API part (64 MiB, the API's maximum).
    """

    # Not final: ``AzureOpenAI`` specializes auth (``_auth_headers``) and URLs (``_path``).
    name: ClassVar[str] = "openai"
    capabilities: ClassVar[Capabilities] = CAPABILITIES

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        organization: str | None = None,
        project: str | None = None,
        limits: Limits | None = None,
        retry: RetryPolicy | None = None,
        clock: Clock | None = None,
        multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD,
        part_size: int = DEFAULT_PART_SIZE,
    ) -> None:
        key = from_env(api_key, API_KEY_ENV, what="OpenAI API key")
        if part_size < 1 or multipart_threshold < 0:
            raise UsageError("part_size must be >= 1 and multipart_threshold >= 0")
        url = (base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).rstrip("/")
        check_base_url(url, what="OpenAI", variable=BASE_URL_ENV, path="/v1")
        headers = self._auth_headers(key)
        if organization:
            headers["OpenAI-Organization"] = organization
        if project:
            headers["OpenAI-Project"] = project
        self._limits = limits or Limits()
        self._multipart_threshold = multipart_threshold
        self._part_size = part_size
        self._connect(
            base_url=url, headers=headers, secrets=(key,), limits=limits, retry=retry, clock=clock
        )

    # -- submit -----------------------------------------------------------------------------

    async def prepare(self, shard: ShardRecord) -> str:
        """Upload ``shard.path`` with ``purpose=batch``; return the file id."""
        # The sharder records the file's exact size; a stat costs a thread hop per shard.
        size = shard.bytes or (await anyio.Path(shard.path).stat()).st_size
        filename = Path(shard.path).name
        if size > self._multipart_threshold:
            return await self._upload_in_parts(shard.path, filename, size)
        resp = await self._http.upload_file(
            shard.path,
            self._path("/files"),
            fields={"purpose": "batch"},
            file_field="file",
            filename=filename,
            length=size,
            content_type=JSONL_MIME,
        )
        return self._decode(FILE_DECODER, resp.body, "file").id

    async def _upload_in_parts(self, path: str, filename: str, size: int) -> str:
        create = WireCreateUpload(
            filename=filename, purpose="batch", bytes=size, mime_type=JSONL_MIME
        )
        resp = await self._http.request(
            "POST", self._path("/uploads"), cls="upload", json=ENCODER.encode(create)
        )
        upload_id = self._decode(UPLOAD_DECODER, resp.body, "upload").id
        offsets = range(0, size, self._part_size)
        part_ids: list[str] = [""] * len(offsets)
        failure: list[BaseException] = []

        async def send(index: int, offset: int) -> None:
            try:
                part = await self._http.upload_file(
                    path,
                    self._path(f"/uploads/{upload_id}/parts"),
                    fields={},
                    file_field="data",
                    filename=filename,
                    offset=offset,
                    length=min(self._part_size, size - offset),
                )
                part_ids[index] = self._decode(PART_DECODER, part.body, "upload part").id
            except Exception as exc:  # the first failure cancels the rest and is re-raised
                failure.append(exc)
                tg.cancel_scope.cancel()

        # Concurrency is bounded by the ``upload`` gate's capacity limiter.
        async with anyio.create_task_group() as tg:
            for index, offset in enumerate(offsets):
                tg.start_soon(send, index, offset)
        if failure:
            with anyio.CancelScope(shield=True):
                await self._cancel_upload(upload_id)
            raise failure[0]
        done = WireCompleteUpload(part_ids=part_ids)
        resp = await self._http.request(
            "POST",
            self._path(f"/uploads/{upload_id}/complete"),
            cls="upload",
            json=ENCODER.encode(done),
        )
        upload = self._decode(UPLOAD_DECODER, resp.body, "upload")
        if upload.file is None:
            raise ProtocolError(f"openai: upload {upload_id} completed without a file")
        return upload.file.id

    async def _cancel_upload(self, upload_id: str) -> None:
        try:
            await self._http.request(
                "POST", self._path(f"/uploads/{upload_id}/cancel"), cls="upload"
            )
        except Exception:  # best effort: the upload expires after an hour anyway
            return

    async def create(self, shard: ShardRecord, *, endpoint: str, tag: str) -> BatchInfo:
        """``POST /batches`` from ``shard.input_ref``, ``tag`` in metadata; never blind-retried."""
        if shard.input_ref is None:
            raise UsageError(f"shard {shard.index} has no input_ref: prepare() it first")
        body = WireCreateBatch(
            input_file_id=shard.input_ref,
            endpoint=endpoint,
            completion_window=COMPLETION_WINDOW,
            metadata={TAG_METADATA_KEY: tag},
        )
        resp = await self._http.request(
            "POST",
            self._path("/batches"),
            cls="create",
            json=ENCODER.encode(body),
            idempotent=False,
        )
        return self._batch(resp.body)

    async def reconcile(self, shard: ShardRecord, *, since: float) -> BatchInfo | None:
        """Find the batch an interrupted ``create`` made, by its tag."""
        if shard.tag is None:
            return None
        return await find_by_tag(self, shard.tag, since=since)

    # -- poll -------------------------------------------------------------------------------

    async def retrieve(self, batch_id: str) -> BatchInfo:
        """``GET /batches/{id}``."""
        resp = await self._http.request("GET", self._path(f"/batches/{batch_id}"), cls="poll")
        return self._batch(resp.body)

    async def list_batches(self) -> AsyncGenerator[BatchInfo, None]:
        """Every batch newest first, 100 per page, fetched only as the caller iterates."""
        after: str | None = None
        while True:
            params = {"limit": str(LIST_PAGE_SIZE)}
            if after is not None:
                params["after"] = after
            resp = await self._http.request(
                "GET", self._path("/batches"), cls="poll", params=params
            )
            page = self._decode(BATCH_LIST_DECODER, resp.body, "batch list")
            for wire in page.data:
                yield to_batch_info(wire)
            if not page.has_more or not page.data:
                return
            after = page.last_id or page.data[-1].id

    async def cancel(self, batch_id: str) -> BatchInfo:
        """Ask OpenAI to cancel; a batch that already ended (409 on OpenAI, 400 on Azure and
        compatible services) is returned as it is."""
        resp = await self._http.request(
            "POST", self._path(f"/batches/{batch_id}/cancel"), cls="poll", passthrough=(400, 409)
        )
        if resp.status in (400, 409):
            return await self.retrieve(batch_id)
        return self._batch(resp.body)

    def failure_is_transient(self, batch: BatchInfo) -> bool:
        """Whether a failed batch hit the enqueued token/request limit (requeue, don't fail)."""
        return any(
            e.code in TRANSIENT_CODES or any(m in e.message for m in TRANSIENT_MESSAGES)
            for e in batch.errors
        )

    # -- collect ----------------------------------------------------------------------------

    async def results(self, batch: BatchInfo, *, attempt: int) -> AsyncGenerator[Result, None]:
        """Stream the output file, then the error file, one result per line."""
        for file_id in (batch.output_ref, batch.error_ref):
            if file_id is None:
                continue
            lines = self._jsonl(
                self._path(f"/files/{file_id}/content"),
                RESULT_LINE_DECODER,
                what=f"result file {file_id}",
                headers={"Accept": "application/binary"},
            )
            async with aclosing(lines):
                number = 0
                async for line in lines:
                    number += 1
                    try:
                        result = to_result(line, batch_id=batch.id, attempt=attempt)
                    except msgspec.DecodeError as exc:
                        raise ProtocolError(
                            f"openai: file {file_id} line {number} is not a result line: {exc}"
                        ) from exc
                    if result is None:
                        raise ProtocolError(
                            f"openai: file {file_id} line {number} has no response or error"
                        )
                    yield result

    # -- helpers ----------------------------------------------------------------------------

    def _auth_headers(self, key: str) -> dict[str, str]:
        """The auth header(s) every call carries (a hook for ``AzureOpenAI``)."""
        return {"Authorization": f"Bearer {key}"}

    def _path(self, path: str) -> str:
        """The URL path of an API path; a hook for ``AzureOpenAI`` (adds ``?api-version=``)."""
        return path

    def _batch(self, body: bytes) -> BatchInfo:
        return to_batch_info(self._decode(BATCH_DECODER, body, "batch"))
