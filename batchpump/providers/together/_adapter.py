"""The Together AI Batch API adapter.

Files go up by Together's signed-URL flow, the one both SDKs use: ``POST /files`` with the form
fields ``purpose=batch-api``, ``file_name`` and ``file_type`` is sent *without following
redirects* and answers 302 with ``Location`` (a presigned storage URL) and
``X-Together-File-Id``; the bytes are streamed from disk by a ``PUT`` to that URL that carries
no Together key; ``POST /files/{id}/preprocess`` then checks the file and answers its
``FileResponse``. The shard's lines are first rewritten to Together's two-field form
``{"custom_id", "body"}``. (Together also documents a direct multipart ``POST /files/upload``
but says nothing about when to prefer it, so it is not used.)

Together's create takes no metadata, so the shard-attempt tag travels in the input *file name*
(``bp1-<run>-<index>-<attempt>.jsonl``): each attempt creates from a file named after it (a
requeued attempt that inherited its predecessor's file uploads its own first), and
``reconcile`` finds the job whose input file carries the tag: exact, and robust to a crash
between that upload and the create. ``GET /batches`` answers a bare array, sorted here newest
first.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncGenerator
from contextlib import aclosing
from pathlib import Path
from typing import ClassVar, Final, TypeVar, final

import anyio
import msgspec

from ..._clock import Clock
from ..._config import Limits, RetryPolicy
from ..._errors import BadRequestError, ProtocolError, UsageError
from ..._fileio import run_io
from ..._models import BatchInfo, Capabilities, Result, ShardRecord
from ..._provider import shard_tag
from .._adapter import HttpAdapter, check_base_url, from_env
from ._wire import (
    BATCH_DECODER,
    BATCH_LIST_DECODER,
    CREATED_DECODER,
    ENCODER,
    FILE_DECODER,
    FILE_LIST_DECODER,
    INPUT_LINE_DECODER,
    RESULT_LINE_DECODER,
    WireBatchJob,
    WireCreateBatch,
    WireFile,
    to_batch_info,
    to_together_result,
    upload_target,
)

__all__ = ["DEFAULT_BASE_URL", "Together"]

logger: Final = logging.getLogger("batchpump.providers.together")

_T = TypeVar("_T")

DEFAULT_BASE_URL: Final = "https://api.together.xyz/v1"
API_KEY_ENV: Final = "TOGETHER_API_KEY"
BASE_URL_ENV: Final = "TOGETHER_BASE_URL"
COMPLETION_WINDOW: Final = "24h"
FILE_PURPOSE: Final = "batch-api"
#: Substrings of a ``FAILED`` job's ``error`` that mean a queue or token limit (the 30B
#: enqueued-tokens-per-model queue): the lines are requeued, not failed. Together does not
#: publish the wording, so these are deliberately broad.
TRANSIENT_MARKERS: Final = ("enqueued", "queue", "token limit", "rate limit", "capacity")

CAPABILITIES: Final = Capabilities(
    cancel=True,
    metadata_tag=False,
    inline_input=False,
    list_batches=True,
    max_lines=50_000,
    max_bytes=100 * 1000 * 1000,
    max_line_bytes=100 * 1000 * 1000,
    custom_id_max_len=64,
    one_model_per_shard=True,
)


@final
class Together(HttpAdapter):
    """The Together AI Batch API.

    Args:
        api_key: defaults to ``$TOGETHER_API_KEY``; ``UsageError`` if neither is set.
        base_url: defaults to ``$TOGETHER_BASE_URL``, else ``https://api.together.xyz/v1``.
        limits: rate and concurrency per endpoint class (default ``Limits()``).
        retry: how each HTTP call is retried (default ``RetryPolicy()``).
        clock: every wait goes through it (default ``SystemClock()``).
        priority: sent as ``priority`` on create when given.
    """

    name: ClassVar[str] = "together"
    capabilities: ClassVar[Capabilities] = CAPABILITIES

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        limits: Limits | None = None,
        retry: RetryPolicy | None = None,
        clock: Clock | None = None,
        priority: int | None = None,
    ) -> None:
        key = from_env(api_key, API_KEY_ENV, what="Together API key")
        url = (base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).rstrip("/")
        check_base_url(url, what="Together", variable=BASE_URL_ENV, path="/v1")
        self._priority = priority
        #: Uploaded file id -> its name (the shard-attempt tag), learned by ``prepare``.
        self._names: dict[str, str] = {}
        self._connect(
            base_url=url,
            headers={"Authorization": f"Bearer {key}"},
            secrets=(key,),
            limits=limits,
            retry=retry,
            clock=clock,
        )

    # -- submit -----------------------------------------------------------------------------

    async def prepare(self, shard: ShardRecord) -> str:
        """Upload the shard as Together input (``purpose=batch-api``); return the file id.

        The file is named after the shard attempt's tag. The lines are rewritten to
        ``{"custom_id", "body"}`` into a sibling file, which is ``PUT`` to the storage URL of
        ``POST /files``'s redirect and then removed; ``/preprocess`` finishes the upload.
        """
        return await self._upload(
            shard, file_name(shard_tag(shard.run_id, shard.index, shard.attempt))
        )

    async def _upload(self, shard: ShardRecord, name: str) -> str:
        source = Path(shard.path)
        staged = source.with_name(f"{source.stem}.together.jsonl")
        size = await run_io(_write_together_lines, source, staged)
        fields = {"purpose": FILE_PURPOSE, "file_name": name, "file_type": "jsonl"}
        try:
            # Retried freely: a repeat leaves at most an empty, unnamed-by-any-job file record.
            start = await self._http.request(
                "POST", "/files", cls="upload", form=fields, follow_redirects=False
            )
            direct = self._file_object(start.status, start.body)
            if direct is not None:
                # A 200 file object instead of the redirect: the documented multipart upload.
                logger.info("together: POST /files answered a file, uploading by multipart")
                sent = await self._http.upload_file(
                    str(staged),
                    "/files/upload",
                    fields=fields,
                    file_field="file",
                    filename=name,
                    length=size,
                    content_type="application/jsonl",
                )
                file = self._decode(FILE_DECODER, sent.body, "file")
            else:
                file_id, location = upload_target(
                    start.status, start.headers, base_url=self.base_url
                )
                await self._http.put_file(location, str(staged), length=size)
                file = None
        finally:
            await anyio.Path(staged).unlink(missing_ok=True)
        if file is None:
            done = await self._http.request("POST", f"/files/{file_id}/preprocess", cls="upload")
            file = self._decode(FILE_DECODER, done.body, "file")
        problem = file.invalid()
        if problem is not None:
            raise BadRequestError(
                f"together: input file {file.id} ({name}) failed validation, {problem}",
                provider=self.name,
                status=200,
                code="INVALID_FORMAT",
            )
        if direct is None and file.id != file_id:
            raise ProtocolError(f"together: preprocess of {file_id} answered file {file.id}")
        self._names[file.id] = name
        return file.id

    @staticmethod
    def _file_object(status: int, body: bytes) -> WireFile | None:
        """The file a 200 answer to ``POST /files`` carries, if it is one."""
        if status != 200:
            return None
        try:
            return FILE_DECODER.decode(body)
        except msgspec.DecodeError:
            return None

    async def create(self, shard: ShardRecord, *, endpoint: str, tag: str) -> BatchInfo:
        """``POST /batches`` on an input file named after ``tag`` (uploaded first if
        ``shard.input_ref`` was named for another attempt: a requeue inherits its file).

        The 201 answer is ``{"job", "warning"}``; a warning is logged, never raised.
        """
        if shard.input_ref is None:
            raise UsageError(f"shard {shard.index} has no input_ref: prepare() it first")
        name = file_name(tag)
        if await self._name_of(shard.input_ref) != name:
            logger.info("shard %s attempt %s: uploading its own input", *shard.key)
            shard.input_ref = await self._upload(shard, name)
        body = WireCreateBatch(
            endpoint=endpoint,
            input_file_id=shard.input_ref,
            completion_window=COMPLETION_WINDOW,
            priority=self._priority,
            model_id=shard.model,
        )
        resp = await self._http.request(
            "POST", "/batches", cls="create", json=ENCODER.encode(body), idempotent=False
        )
        created = self._decode(CREATED_DECODER, resp.body, "created batch")
        if created.warning:
            logger.warning(
                "batch %s for shard %s attempt %s: %s",
                created.job.id,
                shard.index,
                shard.attempt,
                self._http.redact(created.warning),
            )
        return to_batch_info(created.job)

    async def reconcile(self, shard: ShardRecord, *, since: float) -> BatchInfo | None:
        """Find the job an interrupted ``create`` made: the newest job created since ``since``
        whose input file is named after this attempt's tag (one ``GET /files``, one
        ``GET /batches``)."""
        name = file_name(shard.tag or shard_tag(shard.run_id, shard.index, shard.attempt))
        resp = await self._http.request("GET", "/files", cls="poll")
        files = self._decode(FILE_LIST_DECODER, resp.body, "file list").data
        ours = {f.id for f in files if f.filename == name}
        for job in await self._jobs():
            info = to_batch_info(job)
            if info.created_at < since:
                return None
            if job.input_file_id in ours:
                return info
        return None

    async def _name_of(self, file_id: str) -> str | None:
        name = self._names.get(file_id)
        if name is None:
            resp = await self._http.request("GET", f"/files/{file_id}", cls="poll")
            name = self._names[file_id] = self._decode(FILE_DECODER, resp.body, "file").filename
        return name

    # -- poll -------------------------------------------------------------------------------

    async def retrieve(self, batch_id: str) -> BatchInfo:
        """``GET /batches/{id}``."""
        resp = await self._http.request("GET", f"/batches/{batch_id}", cls="poll")
        return to_batch_info(self._decode(BATCH_DECODER, resp.body, "batch"))

    async def list_batches(self) -> AsyncGenerator[BatchInfo, None]:
        """Every job newest first: one ``GET /batches`` (a bare array, no pages), sorted here."""
        for job in await self._jobs():
            yield to_batch_info(job)

    async def _jobs(self) -> list[WireBatchJob]:
        resp = await self._http.request("GET", "/batches", cls="poll")
        jobs = [
            (to_batch_info(j).created_at, j)
            for j in self._decode(BATCH_LIST_DECODER, resp.body, "list")
        ]
        jobs.sort(key=lambda pair: pair[0], reverse=True)
        return [job for _, job in jobs]

    async def cancel(self, batch_id: str) -> BatchInfo:
        """``POST /batches/{id}/cancel``; a job that can no longer be cancelled is returned."""
        resp = await self._http.request(
            "POST", f"/batches/{batch_id}/cancel", cls="poll", passthrough=(400, 409)
        )
        if resp.status in (400, 409):
            return await self.retrieve(batch_id)
        return to_batch_info(self._decode(BATCH_DECODER, resp.body, "batch"))

    def failure_is_transient(self, batch: BatchInfo) -> bool:
        """Whether a ``FAILED`` job hit a queue or token limit (requeue, don't fail)."""
        return any(
            marker in e.message.lower() for e in batch.errors for marker in TRANSIENT_MARKERS
        )

    # -- collect ----------------------------------------------------------------------------

    async def results(self, batch: BatchInfo, *, attempt: int) -> AsyncGenerator[Result, None]:
        """Stream the output file, then the error file, one result per line."""
        for file_id in (batch.output_ref, batch.error_ref):
            if file_id is None:
                continue
            lines = self._jsonl(
                f"/files/{file_id}/content", RESULT_LINE_DECODER, what=f"result file {file_id}"
            )
            async with aclosing(lines):
                number = 0
                async for line in lines:
                    number += 1
                    result = to_together_result(line, batch_id=batch.id, attempt=attempt)
                    if result is None:
                        raise ProtocolError(
                            f"together: file {file_id} line {number} has no response or error"
                        )
                    yield result

    # -- helpers ----------------------------------------------------------------------------


def file_name(tag: str) -> str:
    """The input file name that carries a shard-attempt tag (``bp1-<run>-<i>-<attempt>.jsonl``)."""
    return f"{tag.replace(':', '-')}.jsonl"


def _write_together_lines(source: Path, dest: Path) -> int:
    """Rewrite shard lines to ``{"custom_id", "body"}`` (bodies byte for byte); return bytes."""
    buf = bytearray()
    size = 0
    with source.open("rb") as src, dest.open("wb") as out:
        for raw in src:
            if not raw.strip():
                continue
            ENCODER.encode_into(INPUT_LINE_DECODER.decode(raw), buf)
            buf += b"\n"
            out.write(buf)
            size += len(buf)
    return size
