"""What every HTTP adapter shares: reading its key, its ``HttpClient``, lifecycle, statistics.

Adapters subclass ``HttpAdapter`` and call ``_connect`` from ``__init__``; the verbs stay theirs.
The line checker defaults to the standard OpenAI-format request line; adapters of other line
formats override ``line_checker``.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import ClassVar, Final, Self, TypeVar

import msgspec

from .._clock import Clock, SystemClock
from .._config import Limits, RetryPolicy
from .._errors import MalformedLine, MalformedOutputError, ProtocolError, UsageError
from .._http import HttpClient, HttpStatistics
from .._input import LineChecker, RequestLineChecker
from .._models import Capabilities
from .._provider import RateLimitWait
from .._ratelimit import ENDPOINT_CLASSES
from .._ratelimit_redis import RedisLimiter, limit_scope

__all__ = ["HttpAdapter", "check_base_url", "find_custom_id", "from_env"]

_T = TypeVar("_T")

#: A ``custom_id`` in the bytes of a line that does not decode.
_CUSTOM_ID: Final = re.compile(rb'"custom_id"\s*:\s*"((?:[^"\\]|\\.)*)"')


def find_custom_id(raw: bytes) -> str | None:
    """The ``custom_id`` a malformed result line names, if its bytes show one."""
    found = _CUSTOM_ID.search(raw)
    if found is None:
        return None
    try:
        return str(msgspec.json.decode(b'"' + found.group(1) + b'"'))
    except msgspec.DecodeError:
        return None


def from_env(value: str | None, names: str | Sequence[str], *, what: str) -> str:
    """``value``, else the first set environment variable of ``names``; ``UsageError`` if none.

    Args:
        value: what the caller passed (wins when given).
        names: the provider's usual variable(s), in order of preference.
        what: how the error names the missing thing (``"OpenAI API key"``).
    """
    names = (names,) if isinstance(names, str) else tuple(names)
    found = value or next((v for n in names if (v := os.environ.get(n))), None)
    if not found:
        raise UsageError(f"no {what}: pass it as an argument or set {names[0]}")
    return found


def check_base_url(
    url: str, *, what: str, variable: str, path: str | None = None, not_ending: str | None = None
) -> str:
    """Refuse a base URL that is plainly wrong, before anything is sent; return it as given.

    Args:
        url: the base URL (trailing ``/`` already stripped).
        what: the provider as the message names it (``"OpenAI"``).
        variable: its environment variable, named beside ``--base-url``.
        path: the path its API lives under (``"/v1"``): a URL with no path at all is refused.
        not_ending: a suffix the adapter adds itself (Anthropic's ``"/v1"``): refused.
    """
    fix = f"fix --base-url (or {variable})"
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(f"{what} base URL {url!r} is not an http(s) URL; {fix}")
    if path is not None and parts.path in ("", "/"):
        raise UsageError(
            f"{what} base URL {url} has no path, but {what}'s API lives under {path} "
            f"({url}{path}); {fix}. Nothing was sent"
        )
    if not_ending is not None and parts.path.endswith(not_ending):
        raise UsageError(
            f"{what} base URL {url} ends in {not_ending}, which batchpump adds itself; "
            f"{fix} to {url.removesuffix(not_ending)}. Nothing was sent"
        )
    return url


class HttpAdapter:
    """Base of the HTTP provider adapters (not a protocol: the verbs are in ``Provider``)."""

    name: ClassVar[str]
    capabilities: ClassVar[Capabilities]
    _http: HttpClient
    _clock: Clock

    def _connect(
        self,
        *,
        base_url: str,
        headers: Mapping[str, str],
        secrets: Sequence[str],
        limits: Limits | None,
        retry: RetryPolicy | None,
        clock: Clock | None,
    ) -> None:
        """Create the adapter's one HTTP client (its session opens lazily, on first use)."""
        self._clock = clock or SystemClock()
        self._limit_scope = limit_scope(self.name, base_url, secrets)
        self._http = HttpClient(
            provider=self.name,
            base_url=base_url.rstrip("/"),
            headers=headers,
            secrets=secrets,
            limits=limits or Limits(),
            retry=retry or RetryPolicy(),
            clock=self._clock,
        )

    @property
    def base_url(self) -> str:
        return self._http.base_url

    def share_limits(self, limiter: RedisLimiter) -> None:
        """Pace every endpoint class with the other workers using the same key (see
        ``_ratelimit_redis``): one rate limit and one 429 pause across processes."""
        speed = float(getattr(self._clock, "speed", 1.0))
        for cls in ENDPOINT_CLASSES:
            self._http.gate(cls).share(limiter.gate(self._limit_scope, cls, speed=speed))

    def line_checker(self, *, endpoint: str, max_line_bytes: int) -> LineChecker:
        """The standard request-line checker, with the provider's ``custom_id`` limit."""
        return RequestLineChecker(
            endpoint=endpoint,
            max_line_bytes=max_line_bytes,
            custom_id_max_len=self.capabilities.custom_id_max_len,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self._http.redact(self.base_url)!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP session."""
        await self._http.aclose()

    def statistics(self) -> HttpStatistics:
        """The HTTP client's snapshot: tries, retries, 429s, bytes, gates."""
        return self._http.statistics()

    def rate_limit_wait(self) -> RateLimitWait | None:
        """How long rate limits have held this provider's calls (for the progress line)."""
        stats = self._http.statistics()
        waits = [g.rate_limited_for for g in stats.gates if g.rate_limited_for is not None]
        if not waits:
            return None
        return RateLimitWait(seconds=max(waits), timeout=stats.rate_limit_timeout)

    def _decode(self, decoder: msgspec.json.Decoder[_T], body: bytes, what: str) -> _T:
        """Decode a control-plane answer; a shape we don't know is a ``ProtocolError``."""
        try:
            return decoder.decode(body)
        except msgspec.DecodeError as exc:
            raise ProtocolError(f"{self.name}: unexpected {what} object: {exc}") from exc

    async def _jsonl(
        self,
        path: str,
        decoder: msgspec.json.Decoder[_T],
        *,
        what: str,
        headers: Mapping[str, str] | None = None,
    ) -> AsyncGenerator[_T, None]:
        """Stream a JSONL download line by line (bounded memory), decoding each line.

        A line that does not decode is skipped and the rest of the file still read, so one bad
        line never hides the others.

        Raises:
            MalformedOutputError: at the end of the file, naming each line that did not decode
                (its number, and its ``custom_id`` where the bytes show one).
        """
        bad: list[MalformedLine] = []
        async with self._http.stream("GET", path, cls="download", headers=headers) as stream:
            number = 0
            async for raw in stream.iter_lines():
                number += 1
                try:
                    item = decoder.decode(raw)
                except msgspec.DecodeError as exc:
                    bad.append(MalformedLine(number, find_custom_id(raw), str(exc)))
                    continue
                yield item
        if bad:
            first = bad[0]
            more = f" (and {len(bad) - 1} more malformed lines)" if len(bad) > 1 else ""
            raise MalformedOutputError(
                f"{self.name}: {what} line {first.number}: {first.problem}{more}", bad
            )
