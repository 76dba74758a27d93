"""The HTTP layer's facade: ``HttpClient``, one per provider, and the call shapes adapters use.

Its parts are the ``_http_*`` modules, the only importers of aiohttp's client: ``_http_shapes``
(the call shapes: ``request``, ``stream``, ``upload_file``, ``send_stream``, ``put_file``),
``_http_call`` (``Call``, redirect and retry rules), ``_http_exchange`` (session, gates, retry
loop, aiohttp exceptions mapped once), ``_http_errors`` (status -> ``ProviderError``,
redaction; no aiohttp) and ``_http_body`` (answers and file payloads).
Every call raises only batchpump errors, passes its endpoint class's gate and is retried by
the ``RetryPolicy``. Keys never reach logs, errors or reprs, nor a host other than the
provider's (``put_file`` sends none of the client's headers).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Final, final

from .._clock import Clock
from .._config import Limits, RetryPolicy
from .._ratelimit import EndpointClass, EndpointGate
from .bodies import READ_CHUNK as READ_CHUNK
from .bodies import UPLOAD_CHUNK as UPLOAD_CHUNK
from .bodies import Response, StreamResponse
from .errors import REDACTED as REDACTED
from .errors import Redactor
from .shapes import _CallShapes
from .transport import USER_AGENT as USER_AGENT
from .transport import HttpStatistics, Transport
from .transport import logger as logger

__all__ = ["HttpClient", "HttpStatistics", "Response", "StreamResponse"]


@final
class HttpClient(_CallShapes):
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
        self.retry: Final = retry
        self._redactor = Redactor(secrets)
        transport = Transport(
            provider=provider,
            headers=headers,
            redactor=self._redactor,
            limits=limits,
            retry=retry,
            clock=clock,
        )
        super().__init__(base_url=base_url, transport=transport)

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

    # -- shared machinery -------------------------------------------------------------------

    def redact(self, text: str) -> str:
        """``text`` with every secret replaced by ``[REDACTED]``."""
        return self._redactor.redact(text)

    @contextmanager
    def map_errors(self) -> Iterator[None]:
        """Turn aiohttp's exceptions into batchpump's ``TransportError`` tree (chained)."""
        with self._transport.map_errors():
            yield
