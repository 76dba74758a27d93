"""The HTTP client adapters hold: ``HttpClient``, one per provider, and the ways it sends a call.

``request`` (a control-plane call, body read whole), ``stream`` (a body read incrementally),
``upload_file`` (``multipart/form-data`` from disk), ``send_stream`` (a chunked body from a
producer) and ``put_file`` (a keyless ``PUT`` to a signed URL). Each builds one ``Call`` and
sends it through the client's ``Transport``. Every call raises only batchpump errors, passes
its endpoint class's gate and is retried by the ``RetryPolicy``. Keys never reach logs,
errors or reprs, nor a host other than the provider's (``put_file`` sends none of the
client's headers).
"""

from __future__ import annotations

from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Callable,
    Collection,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from typing import Final, final
from urllib.parse import urlencode

import anyio
import yarl

from .._clock import Clock
from .._config import Limits, RetryPolicy
from .._ratelimit import EndpointClass, EndpointGate
from .bodies import FileSlice, Response, StreamResponse, multipart_file
from .errors import Redactor
from .transport import Call, HttpStatistics, Transport

__all__ = ["HttpClient"]

_FORM: Final = "application/x-www-form-urlencoded"


@final
class HttpClient:
    """One provider's HTTP client: a lazily created session, gates, retries, stats.

    Args:
        provider: the provider's name, used in errors and logs.
        base_url: prefix of every path (``https://api.openai.com/v1``).
        headers: sent with every request to ``base_url`` (auth headers included: they are
            never logged, and never sent by ``put_file``).
        secrets: strings redacted from every error message, excerpt and repr (the API key).
        limits: rate and concurrency per endpoint class; the pool holds their total.
        retry: how each call is retried; ``timeout`` bounds all tries of one call,
            ``request_timeout`` each try (for streams and uploads: each socket read/connect).
        clock: every wait goes through it.
    """

    def __init__(
        self,
        *,
        provider: str,
        base_url: str,
        headers: Mapping[str, str],
        secrets: Sequence[str],
        limits: Limits,
        retry: RetryPolicy,
        clock: Clock,
    ) -> None:
        self.provider: Final = provider
        self.base_url: Final = base_url.rstrip("/")
        self.retry: Final = retry
        self._redactor = Redactor(secrets)
        self._transport = Transport(
            provider=provider,
            headers=headers,
            redactor=self._redactor,
            limits=limits,
            retry=retry,
            clock=clock,
        )

    # -- lifecycle ------------------------------------------------------------------------------

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the session and its connections; later calls raise ``ClosedError``."""
        await self._transport.aclose()

    def __repr__(self) -> str:
        return self.redact(
            f"HttpClient(provider={self.provider!r}, base_url={self.base_url!r}, "
            f"state={self._transport.state})"
        )

    def gate(self, cls: EndpointClass) -> EndpointGate:
        """The gate of one endpoint class."""
        return self._transport.gates[cls]

    def statistics(self) -> HttpStatistics:
        """A frozen snapshot of this client's traffic and gates."""
        return self._transport.statistics()

    # -- call shapes ----------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        cls: EndpointClass,
        json: bytes | None = None,
        form: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool = True,
        passthrough: Collection[int] = (),
        follow_redirects: bool = True,
    ) -> Response:
        """Send a control-plane call and read its body fully.

        Args:
            method: the HTTP method.
            path: appended to ``base_url`` (``/batches``).
            cls: the endpoint class whose gate the call passes.
            json: the already encoded JSON body, if any.
            form: fields sent as an ``application/x-www-form-urlencoded`` body (not with
                ``json``).
            params: query parameters.
            headers: extra headers for this call.
            idempotent: ``False`` for calls that create something without an idempotency
                key: retried only when the failure proves nothing was created (a 4xx answer,
                or a connection never established); anything ambiguous raises.
            passthrough: statuses returned as a ``Response`` instead of raised or retried.
            follow_redirects: ``False`` returns a 3xx answer as it is (its ``location`` in
                ``headers``, its body unchecked) instead of following it.

        Raises:
            ProviderError: a non-2xx answer (subclass by status) after the retries.
            TransportError: no usable answer (``ProtocolError`` for a 2xx body that is not
                JSON).
        """
        if json is not None and form is not None:
            raise ValueError("pass json= or form=, not both")
        body, extra = json, {"Content-Type": "application/json"}
        if form is not None:
            body, extra = urlencode(form).encode(), {"Content-Type": _FORM}
        call = Call(
            method=method,
            url=self._url(path),
            label=path,
            cls=cls,
            data=(lambda: body) if body is not None else None,
            size=len(body) if body is not None else 0,
            params=params,
            headers={**(extra if body is not None else {}), **(headers or {})},
            idempotent=idempotent,
            passthrough=passthrough,
            redirects=follow_redirects,
        )
        return await self._send(call)

    @asynccontextmanager
    async def stream(
        self,
        method: str,
        path: str,
        *,
        cls: EndpointClass = "download",
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> AsyncIterator[StreamResponse]:
        """Open a call whose body is read incrementally; retried only until it answers 2xx.

        The gate slot is held until the block exits. A body that breaks off raises
        ``ProtocolError`` from the iterators.
        """
        call = Call(
            method=method,
            url=self._url(path),
            label=path,
            cls=cls,
            params=params,
            headers=headers,
            stream=True,
        )
        async with self._transport.exchange(call) as (resp, response):
            yield StreamResponse(resp, response, self._transport)

    async def upload_file(
        self,
        path: str,
        url_path: str,
        *,
        fields: Mapping[str, str],
        file_field: str,
        filename: str,
        offset: int = 0,
        length: int,
        content_type: str = "application/octet-stream",
        cls: EndpointClass = "upload",
    ) -> Response:
        """POST ``multipart/form-data``: ``fields`` plus ``length`` bytes of ``path`` from
        ``offset`` as ``file_field``, streamed from disk (re-read on every retry).

        Serves both whole-file uploads and Uploads API parts. Raises like ``request``.
        """
        build = partial(
            multipart_file, path, offset, length, fields, file_field, filename, content_type
        )
        call = Call(
            method="POST",
            url=self._url(url_path),
            label=url_path,
            cls=cls,
            data=build,
            size=length,
            bulk=True,
        )
        return await self._send(call)

    async def send_stream(
        self,
        method: str,
        path: str,
        *,
        body: Callable[[], AsyncIterable[bytes]],
        size: int,
        cls: EndpointClass,
        content_type: str = "application/json",
        idempotent: bool = True,
    ) -> Response:
        """Send a body produced chunk by chunk (chunked transfer), and read a JSON answer.

        ``body`` is called once per try, so a retry streams the body again from its source.
        ``size`` only feeds the statistics. Raises like ``request``.
        """
        call = Call(
            method=method,
            url=self._url(path),
            label=path,
            cls=cls,
            data=body,
            size=size,
            headers={"Content-Type": content_type},
            idempotent=idempotent,
            bulk=True,
        )
        return await self._send(call)

    async def put_file(
        self,
        url: str,
        path: str,
        *,
        offset: int = 0,
        length: int | None = None,
        content_type: str = "application/octet-stream",
        headers: Mapping[str, str] | None = None,
        cls: EndpointClass = "upload",
    ) -> Response:
        """``PUT`` part of a file to an absolute URL (a presigned storage URL), streamed from
        disk with a ``Content-Length`` and re-read on every retry.

        None of the client's headers go with it (no key leaves for the storage host): only a
        ``User-Agent``, the ``Content-Type`` and ``headers``. The URL is sent exactly as given
        (a signature's percent-encoding intact); its query string is kept out of logs and
        errors. Retried on 5xx, 429 and connection errors per the ``RetryPolicy``; the answer's
        body is not checked (storage answers are rarely JSON).

        Args:
            url: absolute ``http(s)`` URL.
            path: the file on disk.
            offset: first byte sent.
            length: bytes sent (default: the rest of the file from ``offset``).
            content_type: the ``Content-Type`` of the body.
            headers: extra headers (those a presigned URL was signed with).
            cls: the endpoint class whose gate the call passes.

        Raises:
            ValueError: ``url`` is not an absolute http(s) URL.
            ProviderError: a non-2xx answer (subclass by status) after the retries.
            TransportError: no usable answer.
        """
        target = yarl.URL(url, encoded=True)
        if target.scheme not in ("http", "https") or not target.host:
            raise ValueError("put_file needs an absolute http(s) URL")
        self._transport.check_open()
        if length is None:
            length = (await anyio.Path(path).stat()).st_size - offset
        call = Call(
            method="PUT",
            url=target,
            label=str(target.with_query(None).with_fragment(None)),
            cls=cls,
            data=partial(FileSlice, path, offset, length, content_type=content_type, filename=None),
            size=length,
            headers=headers,
            authorized=False,
            expect_json=False,
            bulk=True,
            secrets=_query_secrets(target),
        )
        return await self._send(call)

    async def _send(self, call: Call) -> Response:
        """Send ``call`` through the transport and return its fully read answer."""
        async with self._transport.exchange(call) as (_, response):
            return response

    def _url(self, path: str) -> str:
        self._transport.check_open()
        return f"{self.base_url}/{path.lstrip('/')}"

    # -- shared machinery -------------------------------------------------------------------

    def redact(self, text: str) -> str:
        """``text`` with every secret replaced by ``[REDACTED]``."""
        return self._redactor.redact(text)

    @contextmanager
    def map_errors(self) -> Iterator[None]:
        """Turn aiohttp's exceptions into batchpump's ``TransportError`` tree (chained)."""
        with self._transport.map_errors():
            yield


def _query_secrets(url: yarl.URL) -> tuple[str, ...]:
    """A signed URL's query and its longer values (raw and decoded): kept out of errors."""
    raw = [part.partition("=")[2] for part in url.raw_query_string.split("&")]
    values = {*raw, *url.query.values(), url.raw_query_string, url.query_string}
    return tuple(v for v in values if len(v) >= 8)
