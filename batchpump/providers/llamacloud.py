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
"""

from __future__ import annotations

import logging
import mimetypes
import os
import random
from collections.abc import AsyncGenerator, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar, Final, TypeVar, final
from urllib.parse import urlencode

import anyio
import anyio.to_thread
import msgspec

from .._clock import Clock
from .._config import Limits, RetryPolicy
from .._errors import (
    BadRequestError,
    NotFoundError,
    ProviderError,
    ProviderUnavailableError,
    TransportError,
    UsageError,
)
from .._http import Response
from .._models import BatchInfo, Canceled, Capabilities, Result, ShardRecord, Succeeded
from .._ratelimit import EndpointClass
from .._retry import backoff
from ._http_adapter import HttpAdapter, from_env
from ._llamacloud_wire import (
    BATCH_DECODER,
    BATCH_PAGE_DECODER,
    DIRECTORY_DECODER,
    DIRECTORY_PAGE_DECODER,
    ENCODER,
    FILE_DECODER,
    FILE_PAGE_DECODER,
    ITEM_DECODER,
    JOB_PAGE_DECODER,
    TERMINAL_JOB_STATUSES,
    Item,
    JobType,
    WireBatch,
    WireBatchConfig,
    WireBatchCreate,
    WireDirectoryCreate,
    WireDirectoryFile,
    WireJob,
    WireJobConfig,
    WirePage,
    check_file,
    detail_message,
    errored,
    read_items,
    shard_configuration,
    to_batch_info,
)

__all__ = ["DEFAULT_BASE_URL", "LlamaCloud"]

logger: Final = logging.getLogger("batchpump.llamacloud")
_T = TypeVar("_T")

DEFAULT_BASE_URL: Final = "https://api.cloud.llamaindex.ai"
API_KEY_ENV: Final = "LLAMA_CLOUD_API_KEY"
BASE_URL_ENV: Final = "LLAMA_CLOUD_BASE_URL"
PARSE_PRESET: Final = "cfg-PARSE_AGENTIC"
MB: Final = 1000 * 1000
#: Biggest document per job type (the platform's 512 MB; Extract's 100 MB).
MAX_FILE_BYTES: Final[dict[str, int]] = {"parse_v2": 512 * MB, "extract_v2": 100 * MB}
#: Directory uploads per second: the published file-upload limit, 50 per 5 s window.
DEFAULT_UPLOAD_RATE: Final = 10.0
DIRECTORY_TTL: Final = 2 * 86_400.0
PAGE_SIZE: Final = 100
#: Job ids per bulk status call (keeps the query string short).
JOB_IDS_PER_CALL: Final = 100
#: Job contents fetched together before they are yielded (the download gate bounds calls).
CONTENT_CHUNK: Final = 16
JOB_POLL_MIN: Final = 1.0
JOB_POLL_MAX: Final = 10.0

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
    line_format="items",
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
        self.job_type: Final = job_type
        self.configuration_id: Final = configuration_id or PARSE_PRESET
        self.expand: Final = tuple(expand)
        self.cleanup: Final = cleanup
        self._root = Path(root) if root is not None else Path.cwd()
        self._horizon: float | None = None
        self._limits = limits or Limits(upload_rate=DEFAULT_UPLOAD_RATE)
        self._retry = retry or RetryPolicy()
        self._rng = random.Random()
        self._upload_workers = self._limits.upload_concurrency
        self._connect(
            base_url=url,
            headers={"Authorization": f"Bearer {key}", "Accept": "application/json"},
            secrets=(key,),
            limits=self._limits,
            retry=self._retry,
            clock=clock,
        )

    def __repr__(self) -> str:
        return f"LlamaCloud(base_url={self.base_url!r}, job_type={self.job_type!r})"

    # -- input ------------------------------------------------------------------------------

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
        return check_file(self._path(item.file), MAX_FILE_BYTES[self.job_type])

    def _path(self, file: str) -> Path:
        path = Path(file).expanduser()
        return path if path.is_absolute() else self._root / path

    # -- submit -----------------------------------------------------------------------------

    async def prepare(self, shard: ShardRecord) -> str:
        """Make (or find) the attempt's directory, upload what is not there yet; return its id."""
        name = directory_name(shard)
        directory_id = await self._find_directory(name)
        if directory_id is None:
            directory_id = await self._create_directory(name)
        done = {f.unique_id async for f in self._files(directory_id)}
        items = await anyio.to_thread.run_sync(read_items, Path(shard.path))
        todo = [i for i in items if i.custom_id not in done]
        logger.info("directory %s: %d to upload, %d there", name, len(todo), len(done))
        queue = iter(todo)

        async def worker() -> None:
            for item in queue:  # shared iterator: each item goes to one worker
                await self._upload(directory_id, item)

        async with anyio.create_task_group() as tg:
            for _ in range(min(len(todo), self._upload_workers)):
                tg.start_soon(worker)
        return directory_id

    async def _find_directory(self, name: str) -> str | None:
        resp = await self._call("GET", "/api/v1/beta/directories", "poll", params={"name": name})
        page = self._decode(DIRECTORY_PAGE_DECODER, resp.body, "directory list")
        return next((d.id for d in page.items if d.name == name), None)

    async def _create_directory(self, name: str) -> str:
        expires = datetime.fromtimestamp(self._clock.time() + DIRECTORY_TTL, tz=UTC)
        body = ENCODER.encode(WireDirectoryCreate(name=name, expires_at=expires.isoformat()))
        tries = 0
        while True:
            tries += 1
            try:
                resp = await self._call(
                    "POST", "/api/v1/beta/directories", "create", json=body, idempotent=False
                )
            except (TransportError, ProviderUnavailableError):
                found = await self._find_directory(name)  # did the ambiguous create land?
                if found is not None:
                    return found
                if tries >= self._retry.attempts:
                    raise
                # It did not: creating it again cannot make a second directory of that name.
                await self._clock.sleep(backoff(tries - 1, self._retry, self._rng))
                continue
            return self._decode(DIRECTORY_DECODER, resp.body, "directory").id

    async def _upload(self, directory_id: str, item: Item) -> None:
        path = self._path(item.file)
        size = (await anyio.Path(path).stat()).st_size
        try:
            resp = await self._http.upload_file(
                str(path),
                f"/api/v1/beta/directories/{directory_id}/files/upload",
                fields={"unique_id": item.custom_id, "display_name": path.name},
                file_field="upload_file",
                filename=path.name,
                length=size,
                content_type=mimetypes.guess_type(path.name)[0] or "application/octet-stream",
            )
        except ProviderError as exc:
            raise self._explained(exc) from exc
        self._decode(FILE_DECODER, resp.body, "directory file")

    async def create(self, shard: ShardRecord, *, endpoint: str, tag: str) -> BatchInfo:
        """``POST /api/v2/batches`` over the attempt's directory (``endpoint``/``tag`` unused:
        the job type and configuration are the adapter's, the directory is the tag)."""
        if shard.input_ref is None:
            raise UsageError(f"shard {shard.index} has no input_ref: prepare() it first")
        config = await anyio.to_thread.run_sync(shard_configuration, Path(shard.path))
        job = WireJobConfig(type=self.job_type, configuration_id=config or self.configuration_id)
        body = WireBatchCreate(source_directory_id=shard.input_ref, config=WireBatchConfig(job=job))
        resp = await self._call(
            "POST", "/api/v2/batches", "create", json=ENCODER.encode(body), idempotent=False
        )
        return self._seen(self._decode(BATCH_DECODER, resp.body, "batch"))

    async def reconcile(self, shard: ShardRecord, *, since: float) -> BatchInfo | None:
        """The batch over this attempt's directory, if an interrupted create made one.

        The directory is found by the attempt's name, not trusted from ``input_ref``: a record
        carrying another attempt's directory (say, copied forward) must not adopt that
        attempt's batch. When ``input_ref`` names a different directory, nothing is adopted.
        """
        if shard.input_ref is None:
            return None
        directory_id = await self._find_directory(directory_name(shard))
        if directory_id is None:
            return None
        if directory_id != shard.input_ref:
            logger.warning(
                "shard %d attempt %d: input_ref %s is not its directory %s; nothing adopted",
                shard.index, shard.attempt, shard.input_ref, directory_id,
            )  # fmt: skip
            return None
        params = {"source_directory_id": directory_id}
        found = [b async for b in self._batches(params)]
        if not found:
            return None
        return self._seen(max(found, key=lambda b: b.created_at or ""))

    # -- poll -------------------------------------------------------------------------------

    async def retrieve(self, batch_id: str) -> BatchInfo:
        """``GET /api/v2/batches/{id}``."""
        return to_batch_info(await self._get_batch(batch_id, expand=False))

    async def list_batches(self) -> AsyncGenerator[BatchInfo, None]:
        """Every batch since this adapter's oldest known batch, newest first.

        The API's order is unconfirmed, so the pages are read and sorted here; the walk is
        bounded with ``created_at_on_or_after`` once the adapter has created or adopted one.
        """
        params: dict[str, str] = {}
        if self._horizon is not None:
            start = datetime.fromtimestamp(self._horizon - 3600.0, tz=UTC)
            params["created_at_on_or_after"] = start.isoformat()
        found = [to_batch_info(b) async for b in self._batches(params)]
        found.sort(key=lambda b: b.created_at, reverse=True)
        for info in found:
            yield info

    async def cancel(self, batch_id: str) -> BatchInfo:
        """Ask LlamaCloud to stop; an already terminal batch (400) is returned as it is.

        The API has no ``CANCELLING`` status: an accepted cancel answers with the batch's
        status so far (``PENDING``/``RUNNING``) until it stops, which is ``cancelling`` here.
        """
        path = f"/api/v2/batches/{batch_id}/cancel"
        resp = await self._call("POST", path, "create", passthrough=(400,))
        if resp.status == 400:
            return await self.retrieve(batch_id)
        info = to_batch_info(self._decode(BATCH_DECODER, resp.body, "batch"))
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
        wire = await self._get_batch(batch.id, expand=True)
        try:
            names = {f.id: f.unique_id async for f in self._files(wire.source_directory_id)}
        except NotFoundError:  # directory gone: no mapping, the lines count as unfinished
            logger.warning("directory of batch %s is gone; its lines are retried", batch.id)
            return
        jobs: dict[str, str] = {}
        for entry in wire.results or ():
            custom_id = names.get(entry.source_directory_file_id)
            if custom_id is None:
                continue
            if entry.job_reference is not None:
                jobs[entry.job_reference.id] = custom_id
            elif entry.error_message is not None:
                yield errored(custom_id, batch.id, attempt, "mapping_error", entry.error_message)
        delay, wait = JOB_POLL_MIN, wire.status == "COMPLETED"
        while jobs:
            statuses = await self._job_statuses(list(jobs))
            ended = [j for j in statuses if j.status in TERMINAL_JOB_STATUSES and j.id in jobs]
            for start in range(0, len(ended), CONTENT_CHUNK):
                chunk = ended[start : start + CONTENT_CHUNK]
                for result in await self._settle(chunk, jobs, batch.id, attempt):
                    yield result
            for job in ended:
                jobs.pop(job.id, None)
            if not jobs or not wait:
                break
            await self._clock.sleep(delay)
            delay = min(delay * 1.5, JOB_POLL_MAX)
        if self.cleanup:
            await self._delete_directory(wire.source_directory_id)

    async def _job_statuses(self, job_ids: list[str]) -> list[WireJob]:
        out: list[WireJob] = []
        for start in range(0, len(job_ids), JOB_IDS_PER_CALL):
            ids = job_ids[start : start + JOB_IDS_PER_CALL]
            query = urlencode([("job_ids", i) for i in ids] + [("page_size", str(len(ids)))])
            resp = await self._call("GET", f"{self._job_path()}?{query}", "poll")
            out.extend(self._decode(JOB_PAGE_DECODER, resp.body, "job list").items)
        return out

    async def _settle(
        self, ended: list[WireJob], jobs: dict[str, str], batch_id: str, attempt: int
    ) -> list[Result]:
        """The results of terminal jobs; completed ones' content fetched concurrently."""
        out: list[Result] = []

        async def fetch(job_id: str, custom_id: str) -> None:
            expand = urlencode([("expand", e) for e in self.expand])
            path = f"{self._job_path()}/{job_id}"
            if self.job_type == "parse_v2" and expand:
                path = f"{path}?{expand}"
            resp = await self._call("GET", path, "download")
            out.append(
                Succeeded(
                    custom_id=custom_id,
                    batch_id=batch_id,
                    attempt=attempt,
                    response=msgspec.Raw(resp.body),
                )
            )

        async with anyio.create_task_group() as tg:
            for job in ended:
                custom_id = jobs[job.id]
                if job.status == "COMPLETED":
                    tg.start_soon(fetch, job.id, custom_id)
                elif job.status == "CANCELLED":
                    out.append(Canceled(custom_id=custom_id, batch_id=batch_id, attempt=attempt))
                else:
                    message = job.error_message or f"job {job.id} failed"
                    out.append(errored(custom_id, batch_id, attempt, "job_failed", message))
        return out

    # -- helpers ----------------------------------------------------------------------------

    def _job_path(self) -> str:
        return "/api/v2/parse" if self.job_type == "parse_v2" else "/api/v2/extract"

    async def _get_batch(self, batch_id: str, *, expand: bool) -> WireBatch:
        params = {"expand": "results"} if expand else None
        resp = await self._call("GET", f"/api/v2/batches/{batch_id}", "poll", params=params)
        return self._decode(BATCH_DECODER, resp.body, "batch")

    async def _delete_directory(self, directory_id: str) -> None:
        try:
            await self._call("DELETE", f"/api/v1/beta/directories/{directory_id}", "create")
        except (ProviderError, TransportError) as exc:  # best effort: ephemeral ones expire
            logger.info("could not delete directory %s: %s", directory_id, exc)

    def _files(self, directory_id: str) -> AsyncGenerator[WireDirectoryFile, None]:
        path = f"/api/v1/beta/directories/{directory_id}/files"
        return self._walk(path, {}, FILE_PAGE_DECODER, "file list")

    def _batches(self, params: dict[str, str]) -> AsyncGenerator[WireBatch, None]:
        return self._walk("/api/v2/batches", params, BATCH_PAGE_DECODER, "batch list")

    async def _walk(
        self,
        path: str,
        params: dict[str, str],
        decoder: msgspec.json.Decoder[WirePage[_T]],
        what: str,
    ) -> AsyncGenerator[_T, None]:
        """Walk a ``page_token`` listing, one page fetched as the caller iterates."""
        token: str | None = None
        while True:
            query = {**params, "page_size": str(PAGE_SIZE)}
            if token:
                query["page_token"] = token
            resp = await self._call("GET", path, "poll", params=query)
            page = self._decode(decoder, resp.body, what)
            for entry in page.items:
                yield entry
            token = page.next_page_token
            if not token or not page.items:
                return

    async def _call(
        self,
        method: str,
        path: str,
        cls: EndpointClass,
        *,
        json: bytes | None = None,
        params: dict[str, str] | None = None,
        idempotent: bool = True,
        passthrough: tuple[int, ...] = (),
    ) -> Response:
        """One JSON call; 422 bodies and ``{"detail": ...}`` become readable errors."""
        try:
            resp = await self._http.request(
                method, path, cls=cls, json=json, params=params, idempotent=idempotent,
                passthrough=(422, *passthrough),
            )  # fmt: skip
        except ProviderError as exc:
            raise self._explained(exc) from exc
        if resp.status == 422:
            detail = detail_message(resp.body) or "the request failed validation"
            raise BadRequestError(
                self._http.redact(f"invalid request ({method} {path.split('?')[0]}): {detail}"),
                provider=self.name,
                status=422,
                request_id=resp.request_id,
                body=self._http.redact(resp.body[:2000].decode("utf-8", "replace")),
                code="validation_error",
            )
        return resp

    def _explained(self, exc: ProviderError) -> ProviderError:
        """``exc`` with FastAPI's ``detail`` as its message (same class, same fields)."""
        detail = detail_message(exc.body)
        if detail is None:
            return exc
        return type(exc)(
            self._http.redact(detail),
            provider=exc.provider,
            status=exc.status,
            request_id=exc.request_id,
            retry_after=exc.retry_after,
            body=exc.body,
            code=exc.code,
        )

    def _seen(self, wire: WireBatch) -> BatchInfo:
        info = to_batch_info(wire)
        if info.created_at:
            self._horizon = min(self._horizon or info.created_at, info.created_at)
        return info


def directory_name(shard: ShardRecord) -> str:
    """The source directory of one shard attempt: ``bp-<run>-<index>-<attempt>``."""
    return f"bp-{shard.run_id[:24]}-{shard.index}-{shard.attempt}"
