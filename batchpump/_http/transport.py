"""The retry loop every HTTP call goes through, and aiohttp's exceptions mapped in one place.

``Transport`` owns the aiohttp session, the gates and the traffic counters. ``exchange`` sends
one ``Call``: each try passes the gate of the call's endpoint class, a failure becomes a
batchpump error (``map_errors`` for no usable answer, ``status_error`` for a non-2xx one), and
the ``RetryPolicy`` with the one predicate in ``_retry`` decides whether and when to try again.
``Call`` itself, the redirect rules and ``retry_wait`` are in ``_http_call``.
"""

from __future__ import annotations

import enum
import logging
import random
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from typing import Final, final

import aiohttp
import msgspec

from .._clock import Clock
from .._config import Limits, RetryPolicy
from .._errors import (
    ClosedError,
    ConnectError,
    ProtocolError,
    ProviderError,
    RateLimitedError,
    TransportError,
    TransportTimeoutError,
)
from .._ratelimit import ENDPOINT_CLASSES, EndpointClass, EndpointGate, GateStatistics
from .bodies import Response
from .call import MAX_REDIRECTS, Call, is_redirect, redirect_hop, retry_wait
from .errors import Redactor, check_json, limit_requests, request_id, status_error
from .retry import RETRY, retry_verdict

__all__ = ["USER_AGENT", "Call", "HttpStatistics", "Transport"]

logger: Final = logging.getLogger("batchpump.http")

USER_AGENT: Final = "batchpump/0.1"
#: Failures that prove the request never left: safe to retry even a create.
_NEVER_CONNECTED: Final = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)


class _State(enum.Enum):
    OPEN = "open"
    CLOSED = "closed"


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
class Transport:
    """The session, gates and counters of one ``HttpClient``, and its retry loop."""

    def __init__(
        self,
        *,
        provider: str,
        headers: Mapping[str, str],
        redactor: Redactor,
        limits: Limits,
        retry: RetryPolicy,
        clock: Clock,
    ) -> None:
        self.provider: Final = provider
        self.retry: Final = retry
        self.redactor: Final = redactor
        self._headers = {"User-Agent": USER_AGENT, **headers}
        self._clock = clock
        self._rng = random.Random()
        self.gates: Final[dict[EndpointClass, EndpointGate]] = {
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

    @property
    def state(self) -> str:
        return self._state.value

    def check_open(self) -> None:
        if self._state is _State.CLOSED:
            raise ClosedError(f"the {self.provider} HTTP client is closed")

    async def aclose(self) -> None:
        self._state = _State.CLOSED
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def statistics(self) -> HttpStatistics:
        return HttpStatistics(
            requests=self._requests,
            retries=self._retries,
            rate_limited=self._rate_limited,
            server_errors=self._server_errors,
            transport_errors=self._transport_errors,
            bytes_sent=self._sent,
            bytes_received=self._recv,
            gates=tuple(g.statistics() for g in self.gates.values()),
        )

    def _received(self, n: int) -> None:
        self._recv += n

    @contextmanager
    def map_errors(self, redactor: Redactor | None = None) -> Iterator[None]:
        """Turn aiohttp's exceptions into batchpump's ``TransportError`` tree (chained)."""

        def redact(text: str) -> str:
            return (redactor or self.redactor).redact(f"{self.provider}: {text}")

        try:
            yield
        except TimeoutError as exc:
            raise TransportTimeoutError(f"{self.provider}: no answer in time") from exc
        except aiohttp.ClientConnectorError as exc:
            raise ConnectError(redact(f"cannot connect: {exc}")) from exc
        except aiohttp.ClientPayloadError as exc:
            raise ProtocolError(redact(f"response body truncated or malformed: {exc}")) from exc
        except aiohttp.ClientConnectionError as exc:
            raise ConnectError(redact(f"connection lost: {exc}")) from exc
        except aiohttp.ClientError as exc:
            raise ProtocolError(redact(f"bad response: {exc}")) from exc

    def _ensure_session(self) -> aiohttp.ClientSession:
        self.check_open()
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._pool_size, limit_per_host=0)
            # No default headers: each try names its own, so a storage PUT carries no key.
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    def _try_timeout(self, deadline: float | None, *, bulk: bool) -> aiohttp.ClientTimeout:
        per_try = self.retry.request_timeout
        if deadline is not None:
            per_try = max(0.001, min(per_try, deadline - self._clock.monotonic()))
        if bulk:
            return aiohttp.ClientTimeout(total=None, sock_connect=per_try, sock_read=per_try)
        return aiohttp.ClientTimeout(total=per_try)

    @asynccontextmanager
    async def exchange(
        self, call: Call, *, hops: int = 0
    ) -> AsyncIterator[tuple[aiohttp.ClientResponse, Response]]:
        """Send ``call`` until it answers 2xx (or a passthrough/3xx status it returns), and
        yield the live aiohttp answer with its ``Response`` (body unread when streaming).

        Redirects of calls carrying our headers are followed here, not by aiohttp: to the same
        origin with the headers, anywhere else without them. aiohttp would re-send custom key
        headers (``x-api-key``, ``api-key``) to whatever host a redirect names, such as the
        storage host of a signed download URL.

        Raises:
            ProviderError: a non-2xx answer (subclass by status) after the retries.
            TransportError: no usable answer.
        """
        hop: Call | None = None
        async with self._exchange(call) as (resp, response):
            if not (call.redirects and call.authorized and is_redirect(response)):
                yield resp, response
                return
            if hops >= MAX_REDIRECTS:
                raise ProtocolError(f"{self.provider}: more than {MAX_REDIRECTS} redirects")
            hop = redirect_hop(call, resp.url, response)
        async with self.exchange(hop, hops=hops + 1) as answer:
            yield answer

    @asynccontextmanager
    async def _exchange(self, call: Call) -> AsyncIterator[tuple[aiohttp.ClientResponse, Response]]:
        session = self._ensure_session()
        gate = self.gates[call.cls]
        redactor = self.redactor.extended(call.secrets)
        headers = {**(self._headers if call.authorized else {"User-Agent": USER_AGENT})}
        headers.update(call.headers or {})
        timeout = self.retry.timeout
        deadline = self._clock.monotonic() + timeout if timeout is not None else None
        tries = 0
        while True:
            tries += 1
            async with AsyncExitStack() as stack:
                started = await stack.enter_async_context(gate.slot())
                self._requests += 1
                self._sent += call.size
                failure: ProviderError | TransportError
                failure_headers: Mapping[str, str] = {}
                try:
                    with self.map_errors(redactor):
                        resp = await stack.enter_async_context(
                            session.request(
                                call.method,
                                call.url,
                                data=call.data() if call.data is not None else None,
                                params=call.params,
                                headers=headers,
                                # ours are followed in exchange(), origin-aware
                                allow_redirects=call.redirects and not call.authorized,
                                timeout=self._try_timeout(deadline, bulk=call.bulk or call.stream),
                            )
                        )
                        redirect = 300 <= resp.status < 400 and (
                            not call.redirects or call.authorized
                        )
                        ok = 200 <= resp.status < 300 or resp.status in call.passthrough
                        ok = ok or redirect
                        body = b"" if ok and call.stream else await resp.read()
                    self._recv += len(body)
                    response = Response(
                        status=resp.status,
                        headers={k.lower(): v for k, v in resp.headers.items()},
                        body=body,
                        request_id=request_id(resp.headers),
                    )
                    logger.debug(
                        "%s %s -> %d (try %d)", call.method, call.label, resp.status, tries
                    )
                    if ok and not call.stream and call.expect_json and not redirect:
                        check_json(self.provider, resp.status, body, redact=redactor)
                    if ok:
                        gate.on_success(limit_requests=limit_requests(response.headers))
                except TransportError as exc:
                    failure = exc
                    self._transport_errors += 1
                    verdict = RETRY
                    proven = isinstance(exc.__cause__, _NEVER_CONNECTED)
                else:
                    if ok:
                        yield resp, response
                        return
                    failure = status_error(
                        self.provider,
                        response.status,
                        response.headers,
                        body,
                        now=self._clock.time(),
                        redact=redactor,
                    )
                    verdict = retry_verdict(
                        response.status, response.headers, body, now=self._clock.time()
                    )
                    proven = 400 <= response.status < 500
                    self._server_errors += response.status >= 500
                    failure_headers = response.headers
            wait = retry_wait(
                failure,
                verdict,
                tries=tries,
                deadline=deadline,
                safe=call.idempotent or proven,
                policy=self.retry,
                rng=self._rng,
                clock=self._clock,
            )
            if isinstance(failure, RateLimitedError):
                self._rate_limited += 1
                gate.on_rate_limited(
                    wait,
                    started=started,
                    limit_requests=limit_requests(failure_headers),
                )
                wait = 0.0  # the retry waits on the class pause in gate.slot()
            self._retries += 1
            logger.warning(
                "%s %s failed (%s); retry %d/%d in %.3fs",
                call.method,
                call.label,
                failure,
                tries,
                self.retry.attempts - 1,
                wait,
            )
            if wait > 0:
                await self._clock.sleep(wait)
