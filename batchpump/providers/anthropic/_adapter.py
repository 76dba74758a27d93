"""The Anthropic Message Batches adapter.

Requests travel inline: ``create`` streams ``{"requests": [<shard lines>]}`` from the shard
file into ``POST /v1/messages/batches`` (chunked; the body is never built in memory). Shard
lines are already native ``{"custom_id", "params"}``: the adapter's line checker
(``_checker``) converts OpenAI chat lines while sharding. Results stream line by line from the
batch's ``results_url``.

An interrupted create is reconciled by content (Anthropic batches carry no metadata): see
``_reconcile`` for the method and what it leaves at risk.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import ClassVar, Final, TypeVar, final
from urllib.parse import urljoin, urlsplit

from ..._clock import Clock
from ..._config import Limits, RetryPolicy
from ..._errors import NotFoundError, ProviderError
from ..._fileio import run_io, run_io_sized
from ..._http import read_into_at
from ..._input import RequestLineChecker
from ..._models import BatchInfo, Capabilities, Result, ShardRecord
from .._adapter import HttpAdapter, check_base_url, from_env
from ._checker import AnthropicLineChecker
from ._reconcile import Reconciler
from ._wire import (
    ARCHIVED_CODE,
    BATCH_DECODER,
    BATCH_LIST_DECODER,
    RESULT_LINE_DECODER,
    WireBatch,
    to_batch_info,
    to_result,
)

__all__ = ["CAPABILITIES", "DEFAULT_BASE_URL", "DEFAULT_VERSION", "Anthropic", "results_path"]

logger: Final = logging.getLogger("batchpump.providers.anthropic")

_T = TypeVar("_T")

DEFAULT_BASE_URL: Final = "https://api.anthropic.com"
DEFAULT_VERSION: Final = "2023-06-01"
API_KEY_ENV: Final = "ANTHROPIC_API_KEY"
BASE_URL_ENV: Final = "ANTHROPIC_BASE_URL"
BATCHES_PATH: Final = "/v1/messages/batches"
#: Batches per list page (the 2024-11 spec's maximum; the current API allows 1,000).
LIST_PAGE_SIZE: Final = 100
#: Bytes read from the shard file per thread call while streaming a create body.
BODY_CHUNK: Final = 1024 * 1024
_BODY_OPEN: Final = b'{"requests":['
_BODY_CLOSE: Final = b"]}"

CAPABILITIES: Final = Capabilities(
    cancel=True,
    metadata_tag=False,
    inline_input=True,
    list_batches=True,
    max_lines=100_000,
    # 256 MB per request, less the ``{"requests":[...]}`` envelope.
    max_bytes=256 * 1000 * 1000 - 64,
    max_line_bytes=256 * 1000 * 1000 - 64,
    custom_id_max_len=64,
    one_model_per_shard=True,
)


async def _request_body(path: str, size: int | None = None) -> AsyncIterator[bytes]:
    """``{"requests":[line,line,...]}`` from a shard file, one chunk in memory at a time.

    ``size`` is the shard file's size when known: a shard of at most ``INLINE_BYTES`` is then
    read on the event loop (``run_io_sized``), in one read.
    """
    yield _BODY_OPEN
    # Allocated here and only filled by the worker (``_fileio``); one buffer for the whole
    # body, refilled only once what was read is copied out (``carry + chunk`` is new bytes).
    # One byte more than a small file holds, so its first read is short: the end of the file.
    buffer = bytearray(BODY_CHUNK if size is None else max(1, min(BODY_CHUNK, size + 1)))
    offset = 0
    carry = b""
    sep = b""
    while n := await _read_into(size, path, offset, buffer):
        offset += n
        chunk = buffer if n == len(buffer) else memoryview(buffer)[:n]
        lines = (carry + chunk).split(b"\n")
        carry = lines.pop()
        kept = [line.rstrip(b"\r") for line in lines if line.strip()]
        if kept:
            yield sep + b",".join(kept)
            sep = b","
        if n < len(buffer):  # read_into_at reads short only at the end of the file
            break
    if carry.strip():
        yield sep + carry.rstrip(b"\r")
    yield _BODY_CLOSE


async def _read_into(size: int | None, path: str, offset: int, buffer: bytearray) -> int:
    # Open, seek, read, close in one call: no handle outlives a cancelled body writer.
    if size is None:
        return await run_io(read_into_at, path, offset, buffer)
    return await run_io_sized(size, read_into_at, path, offset, buffer)


def results_path(base_url: str, results_url: str | None, *, default: str) -> str:
    """Where to read results: ``results_url`` joined to ``base_url`` by standard URL joining
    (RFC 3986: ``/v1/...`` replaces the base's path), as a path the HTTP client appends to
    ``base_url`` (``..`` segments climb out of its path). A URL on another origin (scheme, host,
    port) is never followed, so the key never leaves: ``default`` is read instead.
    """
    if not results_url:
        return default
    base = urlsplit(f"{base_url}/")
    target = urlsplit(urljoin(f"{base_url}/", results_url))
    if (target.scheme, target.netloc) != (base.scheme, base.netloc):
        return default
    path = target.path + (f"?{target.query}" if target.query else "")
    if path.startswith(base.path):
        return path[len(base.path) - 1 :]
    depth = len([part for part in base.path.split("/") if part])
    return "/.." * depth + path


@final
class Anthropic(HttpAdapter):
    """The Anthropic Message Batches API.

    Args:
        api_key: defaults to ``$ANTHROPIC_API_KEY``; ``UsageError`` if neither is set.
        base_url: defaults to ``$ANTHROPIC_BASE_URL``, else ``https://api.anthropic.com``.
        version: the ``anthropic-version`` header, default ``2023-06-01``.
        limits: rate and concurrency per endpoint class (default ``Limits()``).
        retry: how each HTTP call is retried (default ``RetryPolicy()``).
        clock: every wait goes through it (default ``SystemClock()``).
    """

    name: ClassVar[str] = "anthropic"
    capabilities: ClassVar[Capabilities] = CAPABILITIES

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        version: str = DEFAULT_VERSION,
        limits: Limits | None = None,
        retry: RetryPolicy | None = None,
        clock: Clock | None = None,
    ) -> None:
        key = from_env(api_key, API_KEY_ENV, what="Anthropic API key")
        url = (base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).rstrip("/")
        check_base_url(url, what="Anthropic", variable=BASE_URL_ENV, not_ending="/v1")
        self._connect(
            base_url=url,
            headers={"x-api-key": key, "anthropic-version": version},
            secrets=(key,),
            limits=limits,
            retry=retry,
            clock=clock,
        )
        self._reconciler = Reconciler(
            walk=self._walk,
            retrieve=self._retrieve_wire,
            results=lambda batch: self.results(batch, attempt=0),
            clock=self._clock,
        )

    # -- submit -----------------------------------------------------------------------------

    def line_checker(self, *, endpoint: str, max_line_bytes: int) -> AnthropicLineChecker:
        """Native ``{custom_id, params}`` lines, or OpenAI chat lines converted to them."""
        base = RequestLineChecker(
            endpoint=endpoint,
            max_line_bytes=max_line_bytes,
            custom_id_max_len=self.capabilities.custom_id_max_len,
        )
        return AnthropicLineChecker(base, max_line_bytes=max_line_bytes)

    async def prepare(self, shard: ShardRecord) -> str:
        """Nothing to upload: requests go inline. Returns the shard file's path."""
        return shard.path

    async def create(self, shard: ShardRecord, *, endpoint: str, tag: str) -> BatchInfo:
        """``POST /v1/messages/batches``, the body streamed from the shard file.

        ``endpoint`` and ``tag`` are not sent (Anthropic has neither); never blind-retried.
        """
        path = shard.input_ref or shard.path
        resp = await self._http.send_stream(
            "POST",
            BATCHES_PATH,
            body=lambda: _request_body(path, shard.bytes),
            size=shard.bytes,
            cls="create",
            idempotent=False,
        )
        batch = self._batch(resp.body)
        self._reconciler.claim(batch.id)
        return batch

    async def reconcile(self, shard: ShardRecord, *, since: float) -> BatchInfo | None:
        """Find the batch an interrupted ``create`` made, by size and then by its results.

        See ``_reconcile`` for the method and what it leaves at risk.
        """
        return await self._reconciler.find(shard, since=since)

    # -- poll -------------------------------------------------------------------------------

    async def retrieve(self, batch_id: str) -> BatchInfo:
        """``GET /v1/messages/batches/{id}``."""
        return to_batch_info(await self._retrieve_wire(batch_id))

    async def _retrieve_wire(self, batch_id: str) -> WireBatch:
        resp = await self._http.request("GET", f"{BATCHES_PATH}/{batch_id}", cls="poll")
        return self._decode(BATCH_DECODER, resp.body, "message batch")

    async def list_batches(self) -> AsyncGenerator[BatchInfo, None]:
        """Every batch newest first, 100 per page (``after_id``), fetched as the caller iterates."""
        async with aclosing(self._walk()) as walk:
            async for wire in walk:
                yield to_batch_info(wire)

    async def _walk(self) -> AsyncGenerator[WireBatch, None]:
        after: str | None = None
        while True:
            params = {"limit": str(LIST_PAGE_SIZE)}
            if after is not None:
                params["after_id"] = after
            resp = await self._http.request("GET", BATCHES_PATH, cls="poll", params=params)
            page = self._decode(BATCH_LIST_DECODER, resp.body, "batch list")
            for wire in page.data:
                yield wire
            if not page.has_more or not page.data:
                return
            after = page.last_id or page.data[-1].id

    async def cancel(self, batch_id: str) -> BatchInfo:
        """Ask Anthropic to cancel; a batch that already ended is returned as it is."""
        resp = await self._http.request(
            "POST", f"{BATCHES_PATH}/{batch_id}/cancel", cls="poll", passthrough=(400, 409)
        )
        if resp.status in (400, 409):
            return await self.retrieve(batch_id)
        return self._batch(resp.body)

    def failure_is_transient(self, batch: BatchInfo) -> bool:
        """Always ``False``: Anthropic has no batch-level failure state."""
        return False

    # -- collect ----------------------------------------------------------------------------

    async def results(self, batch: BatchInfo, *, attempt: int) -> AsyncGenerator[Result, None]:
        """Stream the batch's results JSONL, one result per line.

        Raises:
            ProviderError: the results were archived (status 410) or are gone (404).
            ProtocolError: a line that is not a result line.
        """
        archived = [e for e in batch.errors if e.code == ARCHIVED_CODE]
        if archived:
            raise ProviderError(
                archived[0].message, provider=self.name, status=410, code=ARCHIVED_CODE
            )
        path = self._results_path(batch)
        try:
            lines = self._jsonl(
                path,
                RESULT_LINE_DECODER,
                what=f"results of {batch.id}",
                headers={"Accept": "application/binary"},
            )
            async with aclosing(lines):
                async for line in lines:
                    yield to_result(line, batch_id=batch.id, attempt=attempt)
        except NotFoundError as exc:
            raise NotFoundError(
                f"results of batch {batch.id} are not available (archived or deleted?)",
                provider=self.name,
                status=exc.status,
                request_id=exc.request_id,
                body=exc.body,
                code=exc.code,
            ) from exc

    def _results_path(self, batch: BatchInfo) -> str:
        """The results URL as a path for the HTTP client (see ``results_path``)."""
        default = f"{BATCHES_PATH}/{batch.id}/results"
        path = results_path(self.base_url, batch.output_ref, default=default)
        if path == default and batch.output_ref and not batch.output_ref.endswith(default):
            logger.warning(
                "anthropic: batch %s results_url is on another origin; reading %s instead",
                batch.id,
                default,
            )
        return path

    # -- helpers ----------------------------------------------------------------------------

    def _batch(self, body: bytes) -> BatchInfo:
        return to_batch_info(self._decode(BATCH_DECODER, body, "message batch"))
