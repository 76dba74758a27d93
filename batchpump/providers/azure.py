"""Azure OpenAI batches: the OpenAI adapter with Azure's auth, URLs and limits.

``AzureOpenAI`` specializes ``OpenAI`` through two hooks, nothing copied: the key travels in
the ``api-key`` header (not ``Authorization: Bearer``) and every call carries
``?api-version=``. The base URL is ``{endpoint}/openai``. Batches carry the shard-attempt tag in
``metadata`` exactly as on OpenAI.

Endpoints go out in the form Azure's batch docs show, without ``/v1``: a run for
``/v1/chat/completions`` creates its batches with ``"endpoint": "/chat/completions"`` and writes
that ``url`` on every line (lines may carry either form, or none, whichever form the run names).

Azure batch lines name a **deployment**, not a model: ``"model"`` in each line's body must be
the name of a Global-Batch (or Data-Zone-Batch) deployment of the resource. batchpump passes
bodies through untouched, so write deployment names in the input.

Any other OpenAI-compatible service needs no subclass: ``OpenAI(base_url=...)``.
"""

from __future__ import annotations

import os
from typing import ClassVar, Final
from urllib.parse import quote

import msgspec

from .._clock import Clock
from .._config import Limits, RetryPolicy
from .._errors import UsageError
from .._input import BlockChecker, Checked, LineChecker, Problem, RequestLineChecker
from .._models import BatchInfo, Capabilities, ShardRecord
from .openai import OpenAI

__all__ = ["DEFAULT_API_VERSION", "AzureOpenAI", "azure_endpoint_form"]

API_KEY_ENV: Final = "AZURE_OPENAI_API_KEY"
ENDPOINT_ENV: Final = "AZURE_OPENAI_ENDPOINT"
API_VERSION_ENV: Final = "OPENAI_API_VERSION"
#: The GA data-plane version with the Batch API, used when neither argument nor env says.
DEFAULT_API_VERSION: Final = "2024-10-21"

#: Azure global batch: 100,000 requests and 200 MB per input file.
CAPABILITIES: Final = Capabilities(
    cancel=True,
    metadata_tag=True,
    inline_input=False,
    list_batches=True,
    max_lines=100_000,
    max_bytes=200 * 1000 * 1000,
    max_line_bytes=200 * 1000 * 1000,
    custom_id_max_len=None,
    one_model_per_shard=True,
)


def azure_endpoint_form(endpoint: str) -> str:
    """The endpoint as Azure's batch docs write it: ``/v1/chat/completions`` ->
    ``/chat/completions`` (a form without ``/v1`` is returned as it is)."""
    return endpoint.removeprefix("/v1") if endpoint.startswith("/v1/") else endpoint


class _Line(msgspec.Struct):
    custom_id: str
    method: str
    url: str
    body: msgspec.Raw


_LINE_DECODER: Final = msgspec.json.Decoder(_Line)
_LINE_ENCODER: Final = msgspec.json.Encoder()


class _AzureLines:
    """Checks lines against the run's endpoint in either form (with or without ``/v1``) and
    writes each line with the form Azure's docs show."""

    __slots__ = ("_azure", "_inner", "_other")

    def __init__(self, endpoint: str, max_line_bytes: int) -> None:
        self._azure = azure_endpoint_form(endpoint)
        other = f"/v1{self._azure}" if endpoint == self._azure else self._azure
        self._inner = RequestLineChecker(endpoint=endpoint, max_line_bytes=max_line_bytes)
        self._other = RequestLineChecker(endpoint=other, max_line_bytes=max_line_bytes)

    def check(self, line: bytes, first: bool = False) -> Checked | Problem:
        checked = self._inner.check(line, first)
        if isinstance(checked, Problem):
            other = self._other.check(line, first)  # the same endpoint in its other form
            if isinstance(other, Problem):
                return checked
            checked = other
        cid, model, size, data = checked
        wire = _LINE_DECODER.decode(data)
        if wire.url == self._azure:
            return checked
        out = _LINE_ENCODER.encode(_Line(wire.custom_id, wire.method, self._azure, wire.body))
        return cid, model, size, out

    def oversized(self, size: int) -> Problem:
        return self._inner.oversized(size)

    def block_checker(self) -> BlockChecker | None:
        return None  # every line is rewritten


class AzureOpenAI(OpenAI):
    """Azure OpenAI's Batch API.

    Args:
        api_key: defaults to ``$AZURE_OPENAI_API_KEY``; ``UsageError`` if neither is set.
        azure_endpoint: ``https://RESOURCE.openai.azure.com``; defaults to
            ``$AZURE_OPENAI_ENDPOINT``; ``UsageError`` if neither is set.
        api_version: sent as ``?api-version=`` on every call; defaults to
            ``$OPENAI_API_VERSION``, else ``2024-10-21``.
        limits: rate and concurrency per endpoint class (default ``Limits()``).
        retry: how each HTTP call is retried (default ``RetryPolicy()``).
        clock: every wait goes through it (default ``SystemClock()``).

    Files always go up in one streamed request (``max_bytes`` is 200 MB): the Uploads API is
    not available on every Azure API version.
    """

    name: ClassVar[str] = "azure_openai"
    capabilities: ClassVar[Capabilities] = CAPABILITIES

    def __init__(
        self,
        *,
        api_key: str | None = None,
        azure_endpoint: str | None = None,
        api_version: str | None = None,
        limits: Limits | None = None,
        retry: RetryPolicy | None = None,
        clock: Clock | None = None,
    ) -> None:
        key = api_key or os.environ.get(API_KEY_ENV)
        if not key:
            raise UsageError(f"no Azure OpenAI API key: pass api_key= or set {API_KEY_ENV}")
        endpoint = azure_endpoint or os.environ.get(ENDPOINT_ENV)
        if not endpoint:
            raise UsageError(
                f"no Azure OpenAI endpoint: pass azure_endpoint= or set {ENDPOINT_ENV}"
            )
        if endpoint.rstrip("/").endswith("/openai"):
            raise UsageError(
                f"Azure OpenAI endpoint {endpoint} ends in /openai, which batchpump adds itself; "
                f"set {ENDPOINT_ENV} (or azure_endpoint=) to the resource URL without it"
            )
        version = api_version or os.environ.get(API_VERSION_ENV) or DEFAULT_API_VERSION
        self._query: Final = f"api-version={quote(version, safe='')}"
        super().__init__(
            api_key=key,
            base_url=f"{endpoint.rstrip('/')}/openai",
            limits=limits,
            retry=retry,
            clock=clock,
            multipart_threshold=CAPABILITIES.max_bytes,
        )

    @property
    def api_version(self) -> str:
        """The ``api-version`` every call carries."""
        return self._query.partition("=")[2]

    def __repr__(self) -> str:
        base = self._http.redact(self.base_url)
        return f"AzureOpenAI(base_url={base!r}, api_version={self.api_version!r})"

    def line_checker(self, *, endpoint: str, max_line_bytes: int) -> LineChecker:
        """Lines in the form Azure's docs show (``url`` without ``/v1``); either form is read."""
        if not endpoint.startswith("/"):
            return super().line_checker(endpoint=endpoint, max_line_bytes=max_line_bytes)
        return _AzureLines(endpoint, max_line_bytes)

    async def create(self, shard: ShardRecord, *, endpoint: str, tag: str) -> BatchInfo:
        """``POST /batches`` with the endpoint in Azure's form (``/chat/completions``)."""
        return await super().create(shard, endpoint=azure_endpoint_form(endpoint), tag=tag)

    def _auth_headers(self, key: str) -> dict[str, str]:
        return {"api-key": key}

    def _path(self, path: str) -> str:
        return f"{path}{'&' if '?' in path else '?'}{self._query}"
