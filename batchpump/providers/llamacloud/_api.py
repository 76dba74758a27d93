"""The LlamaCloud calls every part of the adapter makes: one JSON call, listings, batch reads.

``LlamaCloudApi.call`` turns FastAPI's answers into readable errors: a 422 body's ``detail``
list becomes a ``BadRequestError`` naming each field, and any other error's ``{"detail": ...}``
becomes its message (same class, same fields). Listings walk ``page_token`` pages, one page
fetched as the caller iterates.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Final, TypeVar, final

import msgspec

from ..._errors import BadRequestError, ProtocolError, ProviderError
from ..._http import HttpClient, Response
from ..._ratelimit import EndpointClass
from ._wire import (
    BATCH_DECODER,
    BATCH_PAGE_DECODER,
    FILE_PAGE_DECODER,
    WireBatch,
    WireDirectoryFile,
    WirePage,
    detail_message,
)

__all__ = ["PAGE_SIZE", "LlamaCloudApi"]

_T = TypeVar("_T")

PAGE_SIZE: Final = 100


@final
class LlamaCloudApi:
    """The adapter's HTTP client, with LlamaCloud's error bodies and pagination."""

    def __init__(self, http: HttpClient, *, name: str) -> None:
        self.http = http
        self._name = name

    async def call(
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
            resp = await self.http.request(
                method, path, cls=cls, json=json, params=params, idempotent=idempotent,
                passthrough=(422, *passthrough),
            )  # fmt: skip
        except ProviderError as exc:
            raise self.explained(exc) from exc
        if resp.status == 422:
            detail = detail_message(resp.body) or "the request failed validation"
            raise BadRequestError(
                self.http.redact(f"invalid request ({method} {path.split('?')[0]}): {detail}"),
                provider=self._name,
                status=422,
                request_id=resp.request_id,
                body=self.http.redact(resp.body[:2000].decode("utf-8", "replace")),
                code="validation_error",
            )
        return resp

    def explained(self, exc: ProviderError) -> ProviderError:
        """``exc`` with FastAPI's ``detail`` as its message (same class, same fields)."""
        detail = detail_message(exc.body)
        if detail is None:
            return exc
        return type(exc)(
            self.http.redact(detail),
            provider=exc.provider,
            status=exc.status,
            request_id=exc.request_id,
            retry_after=exc.retry_after,
            body=exc.body,
            code=exc.code,
        )

    def decode(self, decoder: msgspec.json.Decoder[_T], body: bytes, what: str) -> _T:
        """Decode a control-plane answer; a shape we don't know is a ``ProtocolError``."""
        try:
            return decoder.decode(body)
        except msgspec.DecodeError as exc:
            raise ProtocolError(f"{self._name}: unexpected {what} object: {exc}") from exc

    async def get_batch(self, batch_id: str, *, expand: bool) -> WireBatch:
        """``GET /api/v2/batches/{id}``, with each file's job mapping when ``expand``."""
        params = {"expand": "results"} if expand else None
        resp = await self.call("GET", f"/api/v2/batches/{batch_id}", "poll", params=params)
        return self.decode(BATCH_DECODER, resp.body, "batch")

    def batches(self, params: dict[str, str]) -> AsyncGenerator[WireBatch, None]:
        """Every batch the filters in ``params`` select, in the API's order."""
        return self.walk("/api/v2/batches", params, BATCH_PAGE_DECODER, "batch list")

    def files(self, directory_id: str) -> AsyncGenerator[WireDirectoryFile, None]:
        """Every file of a directory."""
        path = f"/api/v1/beta/directories/{directory_id}/files"
        return self.walk(path, {}, FILE_PAGE_DECODER, "file list")

    async def walk(
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
            resp = await self.call("GET", path, "poll", params=query)
            page = self.decode(decoder, resp.body, what)
            for entry in page.items:
                yield entry
            token = page.next_page_token
            if not token or not page.items:
                return
