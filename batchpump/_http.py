"""The HTTP layer: one aiohttp session per provider client, gates, retries, error mapping.

This is the only module that imports aiohttp's client. Everything it raises is a batchpump
error (``ProviderError`` subclasses by status, ``TransportError`` subclasses for no usable
answer), mapped in one context manager and chained with ``from``. Every call passes the gate
of its endpoint class (``_ratelimit``) and is retried by the ``RetryPolicy`` and the one
predicate in ``_retry``. Keys never reach logs, errors or reprs: every text taken from a
response is redacted of the client's secrets before it is kept.

It is longer than the house 300 lines because the retry loop, the three call shapes that
share it (read fully, stream, multipart upload) and the error mapping only make sense together.
"""

from __future__ import annotations

import enum
import logging
import random
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Callable,
    Collection,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from typing import Any, Final, final

import aiohttp
import aiohttp.abc
import aiohttp.payload
import anyio
import msgspec

from ._clock import Clock
from ._config import Limits, RetryPolicy
from ._errors import (
    BODY_EXCERPT_CHARS,
    AuthenticationError,
    BadRequestError,
    ClosedError,
    ConflictError,
    ConnectError,
    NotFoundError,
    ProtocolError,
    ProviderError,
    ProviderUnavailableError,
    RateLimitedError,
    TransportError,
    TransportTimeoutError,
)
from ._ratelimit import ENDPOINT_CLASSES, EndpointClass, EndpointGate, GateStatistics
from ._retry import (
    NO_RETRY,
    RETRY,
    RetryVerdict,
    backoff,
    error_fields,
    header,
    parse_retry_after,
    retry_verdict,
)

__all__ = ["HttpClient", "HttpStatistics", "Response", "StreamResponse"]

logger: Final = logging.getLogger("batchpump.http")

USER_AGENT: Final = "batchpump/0.1"
REDACTED: Final = "[REDACTED]"
#: Bytes read from the socket at a time when streaming a body.
READ_CHUNK: Final = 64 * 1024
#: Bytes read from disk at a time when streaming an upload.
UPLOAD_CHUNK: Final = 1024 * 1024
#: Characters of a body scanned for secrets when building an error (the excerpt is shorter).
_SCAN_CHARS: Final = 64 * 1024
_STATUS_ERRORS: Final[Mapping[int, type[ProviderError]]] = {
    400: BadRequestError,
    422: BadRequestError,
    401: AuthenticationError,
    403: AuthenticationError,
    404: NotFoundError,
    409: ConflictError,
    429: RateLimitedError,
}
_ANY_JSON: Final = msgspec.json.Decoder(msgspec.Raw)
#: Failures that prove the request never left: safe to retry even a create.
_NEVER_CONNECTED: Final = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)


class _State(enum.Enum):
    OPEN = "open"
    CLOSED = "closed"


@final
class Response(msgspec.Struct, frozen=True, kw_only=True):
    """A fully read answer: ``headers`` have lower-case names, ``body`` is the raw bytes."""

    status: int
    headers: dict[str, str]
    body: bytes
    request_id: str | None = None


@final
class HttpStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of one client's traffic (tries, not calls) and its gates."""

    requests: int
    retries: int
    rate_limited: int
    server_errors: int
    transport_errors: int
    bytes_sent: int
    bytes_received: int
    gates: tuple[GateStatistics, ...]


@final
class StreamResponse:
    """A 2xx answer whose body is read incrementally (inside ``HttpClient.stream``)."""

    def __init__(
        self, resp: aiohttp.ClientResponse, response: Response, client: HttpClient
    ) -> None:
        self._resp = resp
        self._client = client
        self.status: Final = response.status
        self.headers: Final = response.headers
        self.request_id: Final = response.request_id

    async def iter_chunks(self, size: int = READ_CHUNK) -> AsyncIterator[bytes]:
        """Yield the body in chunks of at most ``size`` bytes; ProtocolError if truncated."""
        with self._client.map_errors():
            async for chunk in self._resp.content.iter_chunked(size):
                self._client._received(len(chunk))
                yield chunk

    async def iter_lines(self, *, max_line_bytes: int | None = None) -> AsyncIterator[bytes]:
        """Yield each non-blank line without its ``\\n``/``\\r\\n`` (a last line may lack one).

        Memory holds one chunk plus the longest line. Raises ``ProtocolError`` if the body is
        truncated or a line exceeds ``max_line_bytes`` (default: no limit).
        """
        buf = bytearray()
        scan = 0
        async for chunk in self.iter_chunks():
            buf += chunk
            start = 0
            while (nl := buf.find(b"\n", scan)) != -1:
                line = bytes(buf[start:nl]).rstrip(b"\r")
                start = scan = nl + 1
                if line.strip():
                    yield line
            del buf[:start]
            scan = len(buf)
            if max_line_bytes is not None and scan > max_line_bytes:
                raise ProtocolError(f"a line of the response exceeds {max_line_bytes} bytes")
        if buf.strip():
            yield bytes(buf).rstrip(b"\r")


class _FileSlice(aiohttp.payload.Payload):
    """``length`` bytes of a file from ``offset``, read from disk as they are sent."""

    _autoclose = True

    def __init__(
        self, path: str, offset: int, length: int, *, content_type: str, filename: str
    ) -> None:
        super().__init__(path, content_type=content_type, filename=filename)
        self._path = path
        self._offset = offset
        self._size = length

    async def write(self, writer: aiohttp.abc.AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(
        self, writer: aiohttp.abc.AbstractStreamWriter, content_length: int | None
    ) -> None:
        remaining = self._size or 0
        if content_length is not None:
            remaining = min(remaining, content_length)
        # Each chunk is read by one thread call that opens, seeks, reads and closes: no file
        # handle lives across an await, so a cancelled body writer (aiohttp cancels it when the
        # connection breaks) can never leak one.
        offset = self._offset
        while remaining > 0:
            chunk = await anyio.to_thread.run_sync(
                _read_at, self._path, offset, min(UPLOAD_CHUNK, remaining)
            )
            if not chunk:
                raise OSError(f"{self._path} is shorter than expected")
            await writer.write(chunk)
            offset += len(chunk)
            remaining -= len(chunk)

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        raise TypeError("a streamed file payload cannot be decoded")


@final
class HttpClient:
    """One provider's HTTP client: a lazily created session, gates, retries, stats.

    Args:
        provider: the provider's name, used in errors and logs.
        base_url: prefix of every path (``https://api.openai.com/v1``).
        headers: sent with every request (auth headers included: they are never logged).
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
        self._headers = {"User-Agent": USER_AGENT, **headers}
        self._secrets = tuple(sorted((s for s in secrets if s), key=len, reverse=True))
        self._clock = clock
        self._rng = random.Random()
        self._gates: dict[EndpointClass, EndpointGate] = {
            cls: EndpointGate(
                cls,
                clock=clock,
                rate=getattr(limits, f"{cls}_rate"),
                concurrency=getattr(limits, f"{cls}_concurrency"),
            )
            for cls in ENDPOINT_CLASSES
        }
        self._pool_size = sum(getattr(limits, f"{cls}_concurrency") for cls in ENDPOINT_CLASSES)
        self._session: aiohttp.ClientSession | None = None
        self._state = _State.OPEN
        self._requests = self._retries = self._rate_limited = 0
        self._server_errors = self._transport_errors = 0
        self._sent = self._recv = 0

    # -- lifecycle ------------------------------------------------------------------------------

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the session and its connections; later calls raise ``ClosedError``."""
        self._state = _State.CLOSED
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def __repr__(self) -> str:
        return self.redact(
            f"HttpClient(provider={self.provider!r}, base_url={self.base_url!r}, "
            f"state={self._state.value})"
        )

    def gate(self, cls: EndpointClass) -> EndpointGate:
        """The gate of one endpoint class."""
        return self._gates[cls]

    def statistics(self) -> HttpStatistics:
        """A frozen snapshot of this client's traffic and gates."""
        return HttpStatistics(
            requests=self._requests,
            retries=self._retries,
            rate_limited=self._rate_limited,
            server_errors=self._server_errors,
            transport_errors=self._transport_errors,
            bytes_sent=self._sent,
            bytes_received=self._recv,
            gates=tuple(g.statistics() for g in self._gates.values()),
        )

    # -- the three call shapes --------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        cls: EndpointClass,
        json: bytes | None = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool = True,
        passthrough: Collection[int] = (),
    ) -> Response:
        """Send a JSON control-plane call and read its body fully.

        Args:
            method: the HTTP method.
            path: appended to ``base_url`` (``/batches``).
            cls: the endpoint class whose gate the call passes.
            json: the already encoded JSON body, if any.
            params: query parameters.
            headers: extra headers for this call.
            idempotent: ``False`` for calls that create something without an idempotency
                key: retried only when the failure proves nothing was created (a 4xx answer,
                or a connection never established); anything ambiguous raises.
            passthrough: statuses returned as a ``Response`` instead of raised or retried.

        Raises:
            ProviderError: a non-2xx answer (subclass by status) after the retries.
            TransportError: no usable answer (``ProtocolError`` for a body that is not JSON).
        """
        extra = {"Content-Type": "application/json"} if json is not None else {}
        async with self._exchange(
            method,
            path,
            cls=cls,
            data=(lambda: json) if json is not None else None,
            size=len(json) if json is not None else 0,
            params=params,
            headers={**extra, **(headers or {})},
            idempotent=idempotent,
            passthrough=passthrough,
            stream=False,
        ) as (_, response):
            return response

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
        async with self._exchange(
            method,
            path,
            cls=cls,
            data=None,
            size=0,
            params=params,
            headers=headers or {},
            idempotent=True,
            passthrough=(),
            stream=True,
        ) as (resp, response):
            yield StreamResponse(resp, response, self)

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

        def build() -> aiohttp.MultipartWriter:
            writer = aiohttp.MultipartWriter("form-data")
            for name, value in fields.items():
                part = writer.append(value, {"Content-Type": "text/plain; charset=utf-8"})
                part.set_content_disposition("form-data", name=name)
            payload = _FileSlice(path, offset, length, content_type=content_type, filename=filename)
            writer.append_payload(payload).set_content_disposition(
                "form-data", name=file_field, filename=filename
            )
            return writer

        async with self._exchange(
            "POST",
            url_path,
            cls=cls,
            data=build,
            size=length,
            params=None,
            headers={},
            idempotent=True,
            passthrough=(),
            stream=False,
            bulk=True,
        ) as (_, response):
            return response

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
        async with self._exchange(
            method,
            path,
            cls=cls,
            data=body,
            size=size,
            params=None,
            headers={"Content-Type": content_type},
            idempotent=idempotent,
            passthrough=(),
            stream=False,
            bulk=True,
        ) as (_, response):
            return response

    # -- shared machinery -------------------------------------------------------------------

    def redact(self, text: str) -> str:
        """``text`` with every secret replaced by ``[REDACTED]``."""
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text

    @contextmanager
    def map_errors(self) -> Iterator[None]:
        """Turn aiohttp's exceptions into batchpump's ``TransportError`` tree (chained)."""
        try:
            yield
        except TimeoutError as exc:
            raise TransportTimeoutError(f"{self.provider}: no answer in time") from exc
        except aiohttp.ClientConnectorError as exc:
            raise ConnectError(self.redact(f"{self.provider}: cannot connect: {exc}")) from exc
        except aiohttp.ClientPayloadError as exc:
            raise ProtocolError(
                self.redact(f"{self.provider}: response body truncated or malformed: {exc}")
            ) from exc
        except aiohttp.ClientConnectionError as exc:
            raise ConnectError(self.redact(f"{self.provider}: connection lost: {exc}")) from exc
        except aiohttp.ClientError as exc:
            raise ProtocolError(self.redact(f"{self.provider}: bad response: {exc}")) from exc

    def _received(self, n: int) -> None:
        self._recv += n

    def _url(self, path: str) -> str:
        if self._state is _State.CLOSED:
            raise ClosedError(f"the {self.provider} HTTP client is closed")
        return f"{self.base_url}/{path.lstrip('/')}"

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._pool_size, limit_per_host=0)
            self._session = aiohttp.ClientSession(connector=connector, headers=self._headers)
        return self._session

    def _try_timeout(self, deadline: float | None, *, bulk: bool) -> aiohttp.ClientTimeout:
        per_try = self.retry.request_timeout
        if deadline is not None:
            per_try = max(0.001, min(per_try, deadline - self._clock.monotonic()))
        if bulk:
            return aiohttp.ClientTimeout(total=None, sock_connect=per_try, sock_read=per_try)
        return aiohttp.ClientTimeout(total=per_try)

    def _status_error(self, status: int, headers: Mapping[str, str], body: bytes) -> ProviderError:
        kind = _STATUS_ERRORS.get(status) or (
            ProviderUnavailableError if status >= 500 else ProviderError
        )
        code, message = error_fields(body)
        excerpt = self.redact(body[:_SCAN_CHARS].decode("utf-8", "replace"))
        if message is None:
            looks_html = excerpt.lstrip()[:1] == "<"
            message = "non-JSON error page" if looks_html else excerpt[:200] or "empty body"
        return kind(
            self.redact(message),
            provider=self.provider,
            status=status,
            request_id=_request_id(headers),
            retry_after=parse_retry_after(headers, self._clock.time(), status=status),
            body=excerpt[:BODY_EXCERPT_CHARS],
            code=code,
        )

    @asynccontextmanager
    async def _exchange(
        self,
        method: str,
        path: str,
        *,
        cls: EndpointClass,
        data: Callable[[], Any] | None,
        size: int,
        params: Mapping[str, str] | None,
        headers: Mapping[str, str],
        idempotent: bool,
        passthrough: Collection[int],
        stream: bool,
        bulk: bool = False,
    ) -> AsyncIterator[tuple[aiohttp.ClientResponse, Response]]:
        url = self._url(path)
        session = self._ensure_session()
        gate = self._gates[cls]
        timeout = self.retry.timeout
        deadline = self._clock.monotonic() + timeout if timeout is not None else None
        tries = 0
        while True:
            tries += 1
            async with AsyncExitStack() as stack:
                started = await stack.enter_async_context(gate.slot())
                self._requests += 1
                self._sent += size
                failure: ProviderError | TransportError
                try:
                    with self.map_errors():
                        resp = await stack.enter_async_context(
                            session.request(
                                method,
                                url,
                                data=data() if data is not None else None,
                                params=params,
                                headers=headers,
                                timeout=self._try_timeout(deadline, bulk=bulk or stream),
                            )
                        )
                        ok = 200 <= resp.status < 300 or resp.status in passthrough
                        body = b"" if ok and stream else await resp.read()
                    self._recv += len(body)
                    response = Response(
                        status=resp.status,
                        headers={k.lower(): v for k, v in resp.headers.items()},
                        body=body,
                        request_id=_request_id(resp.headers),
                    )
                    logger.debug("%s %s -> %d (try %d)", method, path, resp.status, tries)
                    if ok and not stream:
                        self._check_json(response)
                    if ok:
                        gate.on_success(limit_requests=_limit_requests(response.headers))
                except TransportError as exc:
                    failure = exc
                    self._transport_errors += 1
                    verdict = RETRY
                    proven = isinstance(exc.__cause__, _NEVER_CONNECTED)
                else:
                    if ok:
                        yield resp, response
                        return
                    failure = self._status_error(response.status, response.headers, body)
                    verdict = retry_verdict(
                        response.status, response.headers, body, now=self._clock.time()
                    )
                    proven = 400 <= response.status < 500
                    self._server_errors += response.status >= 500
            wait = self._plan_retry(failure, verdict, tries, deadline, idempotent, proven)
            if isinstance(failure, RateLimitedError):
                self._rate_limited += 1
                gate.on_rate_limited(wait, started=started)
                wait = 0.0  # the retry waits on the class pause in gate.slot()
            self._retries += 1
            logger.warning(
                "%s %s failed (%s); retry %d/%d in %.3fs",
                method,
                path,
                failure,
                tries,
                self.retry.attempts - 1,
                wait,
            )
            if wait > 0:
                await self._clock.sleep(wait)

    def _plan_retry(
        self,
        failure: ProviderError | TransportError,
        verdict: RetryVerdict,
        tries: int,
        deadline: float | None,
        idempotent: bool,
        proven: bool,
    ) -> float:
        """Seconds to wait before the next try, or raise ``failure`` if there is none."""
        if not idempotent and not proven:
            verdict = NO_RETRY
        if not verdict.retry or tries >= self.retry.attempts:
            raise failure
        wait = (
            verdict.after
            if verdict.after is not None
            else backoff(tries - 1, self.retry, self._rng)
        )
        if deadline is not None and self._clock.monotonic() + wait > deadline:
            raise failure
        return wait

    def _check_json(self, response: Response) -> None:
        if response.status == 204 or not response.body.strip():
            if response.status != 204:
                raise ProtocolError(f"{self.provider}: empty body where JSON was expected")
            return
        try:
            _ANY_JSON.decode(response.body)
        except msgspec.DecodeError as exc:
            start = self.redact(response.body[:80].decode("utf-8", "replace"))
            raise ProtocolError(
                f"{self.provider}: HTTP {response.status} body is not JSON (starts {start!r})"
            ) from exc


def _read_at(path: str, offset: int, size: int) -> bytes:
    with open(path, "rb") as fp:
        fp.seek(offset)
        return fp.read(size)


def _request_id(headers: Mapping[str, str]) -> str | None:
    return header(headers, "x-request-id") or header(headers, "request-id")


def _limit_requests(headers: Mapping[str, str]) -> float | None:
    value = header(headers, "x-ratelimit-limit-requests")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
