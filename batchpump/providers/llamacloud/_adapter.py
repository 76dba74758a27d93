"""The LlamaCloud v2 Batches adapter: parse_v2 / extract_v2 over one source directory per shard.

Each input line is an item, ``{"custom_id": ..., "file": "path/to/doc.pdf"}``. A shard attempt
becomes one *ephemeral* source directory named ``bp-<run>-<index>-<attempt>`` (findable by
name, so a resumed ``prepare`` reuses it), holding one uploaded file per item with
``unique_id = custom_id``; then one batch over that directory. Because every attempt has its own
directory, ``reconcile`` is exact: the batch whose ``source_directory_id`` is the attempt's
directory is the one an interrupted create made (the API has no metadata to carry a tag).

Results: ``GET /api/v2/batches/{id}?expand=results`` maps each directory file to its per-file
job (or a mapping ``error_message``); the jobs are polled in bulk (``?job_ids=``) until
terminal, and each completed job's JSON (``GET /api/v2/parse/{id}?expand=markdown`` or
``GET /api/v2/extract/{id}``) becomes a ``Succeeded`` response, byte for byte. ``FAILED`` jobs
inside a ``COMPLETED`` batch are ``Errored`` (retryable unless the message says the document
itself is bad). With ``cleanup`` the directory is deleted once every result was handed over.

This module holds the adapter's verbs and the batch lifecycle; the directory side lives in
``_directories``, result collection in ``_results``, and the calls they
share (readable FastAPI errors, ``page_token`` walks) in ``_api``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncGenerator, Iterable
from contextlib import aclosing
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar, Final, final

import msgspec

from ..._clock import Clock
from ..._config import Limits, RetryPolicy
from ..._errors import NotFoundError, UsageError
from ..._fileio import run_io_sized
from ..._input import ItemLineChecker
from ..._models import BatchInfo, Capabilities, Result, ShardRecord
from .._adapter import HttpAdapter, check_base_url, from_env
from ._api import LlamaCloudApi
from ._directories import Directories, directory_name, resolve
from ._results import JobResults
from ._wire import (
    BATCH_DECODER,
    ENCODER,
    ITEM_DECODER,
    JobType,
    WireBatch,
    WireBatchConfig,
    WireBatchCreate,
    WireJobConfig,
    check_file,
    shard_configuration,
    to_batch_info,
)

__all__ = ["DEFAULT_BASE_URL", "LlamaCloud"]

logger: Final = logging.getLogger("batchpump.llamacloud")

DEFAULT_BASE_URL: Final = "https://api.cloud.llamaindex.ai"
API_KEY_ENV: Final = "LLAMA_CLOUD_API_KEY"
BASE_URL_ENV: Final = "LLAMA_CLOUD_BASE_URL"
PARSE_PRESET: Final = "cfg-PARSE_AGENTIC"
MB: Final = 1000 * 1000
#: Biggest document per job type (the platform's 512 MB; Extract's 100 MB).
MAX_FILE_BYTES: Final[dict[str, int]] = {"parse_v2": 512 * MB, "extract_v2": 100 * MB}
#: Directory uploads per second: the published file-upload limit, 50 per 5 s window.
DEFAULT_UPLOAD_RATE: Final = 10.0

CAPABILITIES: Final = Capabilities(
    cancel=True,
    metadata_tag=False,
    inline_input=False,
    list_batches=True,
    max_lines=1_000,
    max_bytes=200 * MB,
    max_line_bytes=64 * 1024,
    custom_id_max_len=None,
    one_model_per_shard=True,  # one configuration_id per shard (lines may name their own)
)


@final
class LlamaCloud(HttpAdapter):
    """LlamaCloud v2 batches (``parse_v2`` / ``extract_v2``).

    Args:
        api_key: defaults to ``$LLAMA_CLOUD_API_KEY``; ``UsageError`` if neither is set.
        base_url: defaults to ``$LLAMA_CLOUD_BASE_URL``, else ``https://api.cloud.llamaindex.ai``
            (EU: ``https://api.cloud.eu.llamaindex.ai``; keys are region-bound).
        job_type: ``"parse_v2"`` or ``"extract_v2"``: the job run for every document.
        configuration_id: the saved configuration (or preset) every batch uses unless the lines
            name one; default ``cfg-PARSE_AGENTIC`` for parse_v2, required for extract_v2.
        expand: parse_v2 content returned per document (``markdown``, ``text``, ``items``...).
        cleanup: delete each shard attempt's directory once its results were handed over.
        limits: rate and concurrency per endpoint class (default: uploads at 10/s).
        retry: how each HTTP call is retried (default ``RetryPolicy()``).
        clock: every wait goes through it (default ``SystemClock()``).
        root: relative ``file`` paths are resolved against it (default: the working directory
            when the adapter is made).
    """

    name: ClassVar[str] = "llamacloud"
    capabilities: ClassVar[Capabilities] = CAPABILITIES
    #: Item lines naming different configurations go to different shards (batches).
    item_group_field: ClassVar[str] = "configuration_id"

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        job_type: JobType = "parse_v2",
        configuration_id: str | None = None,
        expand: Iterable[str] = ("markdown",),
        cleanup: bool = True,
        limits: Limits | None = None,
        retry: RetryPolicy | None = None,
        clock: Clock | None = None,
        root: str | os.PathLike[str] | None = None,
    ) -> None:
        key = from_env(api_key, API_KEY_ENV, what="LlamaCloud API key")
        if job_type not in MAX_FILE_BYTES:
            raise UsageError(f"job_type must be 'parse_v2' or 'extract_v2', got {job_type!r}")
        if configuration_id is None and job_type == "extract_v2":
            raise UsageError("extract_v2 needs configuration_id= (a saved Extract configuration)")
        url = (base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).rstrip("/")
        check_base_url(url, what="LlamaCloud", variable=BASE_URL_ENV, not_ending="/api/v1")
        self.job_type: Final = job_type
        self.configuration_id: Final = configuration_id or PARSE_PRESET
        self.expand: Final = tuple(expand)
        self.cleanup: Final = cleanup
        self._horizon: float | None = None
        limits = limits or Limits(upload_rate=DEFAULT_UPLOAD_RATE)
        retry = retry or RetryPolicy()
        self._connect(
            base_url=url,
            headers={"Authorization": f"Bearer {key}", "Accept": "application/json"},
            secrets=(key,),
            limits=limits,
            retry=retry,
            clock=clock,
        )
        self._api = LlamaCloudApi(self._http, name=self.name)
        #: The adapter's one JSON call (422 and ``{"detail"}`` bodies made readable).
        self._call = self._api.call
        self._root = Path(root) if root is not None else Path.cwd()
        self._directories = Directories(
            self._api,
            root=self._root,
            workers=limits.upload_concurrency,
            retry=retry,
            clock=self._clock,
        )
        self._jobs = JobResults(self._api, job_type=job_type, expand=self.expand, clock=self._clock)

    @property
    def settings(self) -> dict[str, str]:
        """Settings that shape what is sent, beyond the base URL (part of a run's identity)."""
        return {"job_type": self.job_type, "configuration_id": self.configuration_id}

    def __repr__(self) -> str:
        return f"LlamaCloud(base_url={self.base_url!r}, job_type={self.job_type!r})"

    # -- input ------------------------------------------------------------------------------

    def line_checker(self, *, endpoint: str, max_line_bytes: int) -> ItemLineChecker:
        """Item lines, checked by :meth:`check_line` and grouped by ``item_group_field``."""
        return ItemLineChecker.for_items(
            self.check_line,
            group_field=self.item_group_field,
            endpoint=endpoint,
            max_line_bytes=max_line_bytes,
            custom_id_max_len=self.capabilities.custom_id_max_len,
        )

    def check_line(self, raw: bytes) -> tuple[str, str] | None:
        """``(message, hint)`` for a bad item line, ``None`` if it is fine (or not an object:
        the generic validator reports that). Touches the file system (``stat``)."""
        try:
            item = ITEM_DECODER.decode(raw)
        except msgspec.DecodeError:
            return None
        if item.url is not None and item.file is None:
            return (
                "url items are not supported: v2 batches process uploaded files only",
                'download the document and give its local path as "file"',
            )
        if not isinstance(item.file, str) or not item.file:
            return ("missing file", 'add "file": "path/to/document.pdf" (relative to the root)')
        if item.configuration_id is not None and (
            not isinstance(item.configuration_id, str) or not item.configuration_id
        ):
            return ("configuration_id must be a non-empty string", 'e.g. "cfg-..." or leave it out')
        return check_file(resolve(self._root, item.file), MAX_FILE_BYTES[self.job_type])

    # -- submit -----------------------------------------------------------------------------

    async def prepare(self, shard: ShardRecord) -> str:
        """Make (or find) the attempt's directory, upload what is not there yet; return its id."""
        return await self._directories.fill(shard)

    async def create(self, shard: ShardRecord, *, endpoint: str, tag: str) -> BatchInfo:
        """``POST /api/v2/batches`` over the attempt's directory (``endpoint``/``tag`` unused:
        the job type and configuration are the adapter's, the directory is the tag)."""
        if shard.input_ref is None:
            raise UsageError(f"shard {shard.index} has no input_ref: prepare() it first")
        config = await run_io_sized(shard.bytes, shard_configuration, Path(shard.path))
        job = WireJobConfig(type=self.job_type, configuration_id=config or self.configuration_id)
        body = WireBatchCreate(source_directory_id=shard.input_ref, config=WireBatchConfig(job=job))
        resp = await self._call(
            "POST", "/api/v2/batches", "create", json=ENCODER.encode(body), idempotent=False
        )
        return self._seen(self._api.decode(BATCH_DECODER, resp.body, "batch"))

    async def reconcile(self, shard: ShardRecord, *, since: float) -> BatchInfo | None:
        """The batch over this attempt's directory, if an interrupted create made one.

        The directory is found by the attempt's name, not trusted from ``input_ref``: a record
        carrying another attempt's directory (say, copied forward) must not adopt that
        attempt's batch. When ``input_ref`` names a different directory, nothing is adopted.
        """
        if shard.input_ref is None:
            return None
        directory_id = await self._directories.find(directory_name(shard))
        if directory_id is None:
            return None
        if directory_id != shard.input_ref:
            logger.warning(
                "shard %d attempt %d: input_ref %s is not its directory %s; nothing adopted",
                shard.index, shard.attempt, shard.input_ref, directory_id,
            )  # fmt: skip
            return None
        params = {"source_directory_id": directory_id}
        found = [b async for b in self._api.batches(params)]
        if not found:
            return None
        return self._seen(max(found, key=lambda b: b.created_at or ""))

    # -- poll -------------------------------------------------------------------------------

    async def retrieve(self, batch_id: str) -> BatchInfo:
        """``GET /api/v2/batches/{id}``."""
        return to_batch_info(await self._api.get_batch(batch_id, expand=False))

    async def list_batches(self) -> AsyncGenerator[BatchInfo, None]:
        """Every batch since this adapter's oldest known batch, newest first.

        The API's order is unconfirmed, so the pages are read and sorted here; the walk is
        bounded with ``created_at_on_or_after`` once the adapter has created or adopted one.
        """
        params: dict[str, str] = {}
        if self._horizon is not None:
            start = datetime.fromtimestamp(self._horizon - 3600.0, tz=UTC)
            params["created_at_on_or_after"] = start.isoformat()
        found = [to_batch_info(b) async for b in self._api.batches(params)]
        found.sort(key=lambda b: b.created_at, reverse=True)
        for info in found:
            yield info

    async def cancel(self, batch_id: str) -> BatchInfo:
        """Ask LlamaCloud to stop; an already terminal batch (400 or 409) is returned as it is.

        The API has no ``CANCELLING`` status: an accepted cancel answers with the batch's
        status so far (``PENDING``/``RUNNING``) until it stops, which is ``cancelling`` here.
        """
        path = f"/api/v2/batches/{batch_id}/cancel"
        resp = await self._call("POST", path, "create", passthrough=(400, 409))
        if resp.status in (400, 409):
            return await self.retrieve(batch_id)
        info = to_batch_info(self._api.decode(BATCH_DECODER, resp.body, "batch"))
        if info.terminal:
            return info
        return msgspec.structs.replace(info, state="cancelling")

    def failure_is_transient(self, batch: BatchInfo) -> bool:
        """Never: a FAILED batch is an orchestration failure whose per-file results are not
        reliable, and a requeue would reuse the attempt's directory (breaking exact reconcile).
        """
        return False

    # -- collect ----------------------------------------------------------------------------

    async def results(self, batch: BatchInfo, *, attempt: int) -> AsyncGenerator[Result, None]:
        """One result per mapped file: content of completed jobs, errors, cancellations."""
        wire = await self._api.get_batch(batch.id, expand=True)
        try:
            names = {f.id: f.unique_id async for f in self._api.files(wire.source_directory_id)}
        except NotFoundError:  # directory gone: no mapping, the lines count as unfinished
            logger.warning("directory of batch %s is gone; its lines are retried", batch.id)
            return
        collected = self._jobs.collect(wire, names, batch_id=batch.id, attempt=attempt)
        async with aclosing(collected):
            async for result in collected:
                yield result
        if self.cleanup:
            await self._directories.delete(wire.source_directory_id)

    def _seen(self, wire: WireBatch) -> BatchInfo:
        info = to_batch_info(wire)
        if info.created_at:
            self._horizon = min(self._horizon or info.created_at, info.created_at)
        return info
