"""How one HTTP call goes over the wire: tries, redirects, and failures made batchpump errors.

A ``Call`` describes everything needed to send it again on each try: its body factory,
endpoint class, headers, and whether it may be retried, streamed or redirected. ``Transport``
owns the aiohttp session, the gates and the traffic counters; ``Transport.exchange`` sends one
``Call``. Each try passes the gate of the call's endpoint class; a failure becomes a batchpump
error (``map_errors``, aiohttp's exceptions mapped in this one place, for no usable answer;
``status_error`` for a non-2xx one); ``retry_wait`` applies the ``RetryPolicy`` and the one
retryability predicate (``retry_verdict``) to decide whether and when to try again, and a call
that is not idempotent is retried only when the failure proves nothing happened.

Redirects of calls carrying the client's headers are followed here, not by aiohttp:
``redirect_hop`` keeps the headers for the same origin only and picks the method and body by
status (301/302/303 become a bodiless ``GET``; 307/308 repeat the call).
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import random
from collections.abc import AsyncIterator, Callable, Collection, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, Final, final

import aiohttp
import msgspec
import yarl

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
from .._retry import NO_RETRY, RETRY, RetryVerdict, backoff, retry_verdict
from .bodies import Response
from .errors import Redactor, check_json, limit_requests, request_id, status_error

__all__ = ["USER_AGENT", "Call", "HttpStatistics", "Transport"]

logger: Final = logging.getLogger("batchpump.http")

USER_AGENT: Final = "batchpump/0.1"
#: Redirects followed for one call before giving up.
MAX_REDIRECTS: Final = 5
#: Failures that prove the request never left: safe to retry even a create.
_NEVER_CONNECTED: Final = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class Call:
    """One logical call, sent once per try.

    ``data`` builds the body afresh for each try (``None``: no body); ``size`` only feeds the
    statistics. ``label`` names the call in logs (never a query string: it may be a signature).
    ``authorized=False`` sends none of the client's own headers (a storage PUT). With
    ``redirects=False`` a 3xx answer is returned as it is. ``secrets`` are redacted from this
    call's errors on top of the client's.
    """

    method: str
    url: str | yarl.URL
    label: str
    cls: EndpointClass
    data: Callable[[], Any] | None = None
    size: int = 0
    params: Mapping[str, str] | None = None
    headers: Mapping[str, str] | None = None
    authorized: bool = True
    idempotent: bool = True
    passthrough: Collection[int] = ()
    stream: bool = False
    bulk: bool = False
    redirects: bool = True
    expect_json: bool = True
    secrets: Sequence[str] = ()


def is_redirect(response: Response) -> bool:
    """Whether ``response`` is a 3xx answer naming where to go."""
    return 300 <= response.status < 400 and "location" in response.headers


def redirect_hop(call: Call, url: yarl.URL, response: Response) -> Call:
    """The call that ``response``, a redirect answering ``call`` sent to ``url``, asks for.

    The client's headers and the call's own go along only to the same origin.
    """
    target = url.join(yarl.URL(response.headers["location"]))
    same_origin = target.origin() == yarl.URL(str(call.url)).origin()
    return dataclasses.replace(
        call,
        method="GET" if response.status in (301, 302, 303) else call.method,
        url=target,
        params=None,
        authorized=same_origin,
        headers=call.headers if same_origin else None,
        data=call.data if response.status in (307, 308) else None,
    )


def retry_wait(
    failure: ProviderError | TransportError,
    verdict: RetryVerdict,
    *,
    tries: int,
    deadline: float | None,
    safe: bool,
    policy: RetryPolicy,
    rng: random.Random,
    clock: Clock,
) -> float:
    """Seconds to wait before the next try, or raise ``failure`` if there is none.

    Args:
        failure: what the last try raised.
        verdict: ``retry_verdict``'s answer for it.
        tries: tries made so far (>= 1).
        deadline: the ``clock.monotonic()`` instant all tries must end by, if any.
        safe: the call is idempotent, or the failure proves nothing was done.
        policy: the call's ``RetryPolicy``.
        rng: jitter source of the backoff.
        clock: what ``deadline`` is measured on.
    """
    if not safe:
        verdict = NO_RETRY
    if not verdict.retry or tries >= policy.attempts:
        raise failure
    wait = verdict.after if verdict.after is not None else backoff(tries - 1, policy, rng)
    if deadline is not None and clock.monotonic() + wait > deadline:
        raise failure
    return wait


@final
class _RateLimitWait:
    """The time one call spends waiting on rate limits, bounded by ``rate_limit_timeout``.

    The bound counts from the call's first 429. The time a try waits on the class pause is
    not charged to the call's ``timeout`` (``resumed`` hands it back to the deadline).
    """

    def __init__(self, bound: float | None) -> None:
        self._bound = bound
        #: 429s this call met.
        self.count = 0
        self._first: float | None = None
        self._since: float | None = None

    def allows(self, now: float, wait: float) -> bool:
        """Record a 429 at ``now``; whether waiting ``wait`` more stays within the bound."""
        if self._first is None:
            self._first = now
        self._since = now
        self.count += 1
        return self._bound is None or now + wait - self._first <= self._bound

    def resumed(self, now: float) -> float:
        """Seconds waited since the last 429 (0 if none), once per 429."""
        since, self._since = self._since, None
        return 0.0 if since is None else max(0.0, now - since)

    def describe(self, now: float) -> str:
        """How long the call has waited on rate limits, against its bound."""
        waited = 0.0 if self._first is None else now - self._first
        bound = "no bound" if self._bound is None else f"bound {self._bound:.0f}s"
        return f"rate-limited for {waited:.1f}s, {bound}"


class _State(enum.Enum):
    OPEN = "open"
    CLOSED = "closed"


@final
class HttpStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of one client's traffic (tries, not calls) and its gates.

    ``rate_limit_timeout`` is the policy's bound on one call's rate-limit waits; beside each
    gate's ``rate_limited_for`` it lets a progress line say "rate limited 2m of 1h".
    """

    requests: int
    retries: int
    rate_limited: int
    server_errors: int
    transport_errors: int
    bytes_sent: int
    bytes_received: int
    gates: tuple[GateStatistics, ...]
    rate_limit_timeout: float | None = None


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
            rate_limit_timeout=self.retry.rate_limit_timeout,
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
        sent = 0  # tries sent
        tries = 0  # tries that failed for another reason than a rate limit: the budget
        limited = _RateLimitWait(self.retry.rate_limit_timeout)
        while True:
            sent += 1
            async with AsyncExitStack() as stack:
                started = await stack.enter_async_context(gate.slot())
                if deadline is not None:
                    deadline += limited.resumed(self._clock.monotonic())
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
                    logger.debug("%s %s -> %d (try %d)", call.method, call.label, resp.status, sent)
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
                    failure.url = redactor.redact(f"{call.method} {str(call.url).split('?')[0]}")
                    verdict = retry_verdict(
                        response.status, response.headers, body, now=self._clock.time()
                    )
                    # Only a 429 proves nothing was done: a 408 or 409 may answer a create
                    # the server went on to make (the caller reconciles those).
                    proven = response.status == 429
                    self._server_errors += response.status >= 500
                    failure_headers = response.headers
            if isinstance(failure, RateLimitedError):
                self._rate_limited += 1
                if verdict.retry:
                    # A pace signal, not a failure: it spends no try, only rate-limit time.
                    now = self._clock.monotonic()
                    paused = gate.on_rate_limited(
                        verdict.after,
                        started=started,
                        limit_requests=limit_requests(failure_headers),
                        longest_guess=backoff(limited.count, self.retry, self._rng),
                    )
                    if not limited.allows(now, paused):
                        raise failure
                    self._retries += 1
                    logger.warning(
                        "%s %s rate limited (%s); waiting %.3fs (%s)",
                        call.method,
                        call.label,
                        failure,
                        paused,
                        limited.describe(now),
                    )
                    continue  # the retry waits on the class pause in gate.slot()
            tries += 1
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
