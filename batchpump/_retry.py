"""Retry maths: backoff, ``Retry-After`` parsing and the one retryability predicate.

Pure functions, no clock and no I/O: the caller passes ``now`` and a random source, so every
rule here is tested without sleeping. The predicate answers *no*, *yes* or *yes, after N
seconds* (stamina's backoff hook), and the HTTP layer turns "after N seconds" into one pause of
the whole endpoint class (see ``_ratelimit``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Final, Protocol, final

import msgspec

from ._config import RetryPolicy

__all__ = [
    "NO_RETRY",
    "RETRY",
    "RETRYABLE_STATUSES",
    "RetryVerdict",
    "backoff",
    "error_fields",
    "header",
    "parse_duration",
    "parse_retry_after",
    "retry_verdict",
]

#: Statuses retried unless the provider says ``x-should-retry: false`` (plus every ``>= 500``).
RETRYABLE_STATUSES: Final[frozenset[int]] = frozenset({408, 409, 429})
#: Statuses never retried, whatever the headers say.
NEVER_RETRY_STATUSES: Final[frozenset[int]] = frozenset({400, 401, 403, 404, 422})
#: The 429 error type/code meaning "out of money", which waiting does not fix.
QUOTA_CODE: Final = "insufficient_quota"

_DURATION_PART: Final = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|us|µs|ns|m|s)")
_DURATION_UNITS: Final[Mapping[str, float]] = {
    "h": 3600.0,
    "m": 60.0,
    "s": 1.0,
    "ms": 1e-3,
    "us": 1e-6,
    "µs": 1e-6,
    "ns": 1e-9,
}
_RESET_HEADERS: Final = ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens")
#: Exponents above this saturate at ``wait_max`` (avoids float overflow for huge ``n``).
_MAX_EXPONENT: Final = 64


class Random(Protocol):
    """The one method ``backoff`` needs from ``random.Random``."""

    def random(self) -> float: ...


@final
class RetryVerdict(msgspec.Struct, frozen=True):
    """The predicate's answer: ``retry`` or not, and ``after`` seconds if the provider said."""

    retry: bool
    after: float | None = None


#: Do not retry.
NO_RETRY: Final = RetryVerdict(False)
#: Retry after the policy's backoff.
RETRY: Final = RetryVerdict(True)


class _ErrorDetail(msgspec.Struct):
    message: str | None = None
    type: str | None = None
    code: str | int | None = None


class _ErrorEnvelope(msgspec.Struct):
    error: _ErrorDetail | str | None = None


_ENVELOPE: Final = msgspec.json.Decoder(_ErrorEnvelope)


def backoff(n: int, policy: RetryPolicy, rng: Random) -> float:
    """Seconds to wait before retry ``n`` (0-based), from the policy alone.

    ``min(wait_initial * wait_exp_base**n, wait_max)`` reduced by up to ``wait_jitter`` (a
    fraction: 0.25 gives 75-100 % of the base), the formula stamina and openai-python use.
    """
    if n > _MAX_EXPONENT:
        base = policy.wait_max
    else:
        base = min(policy.wait_initial * policy.wait_exp_base ** max(n, 0), policy.wait_max)
    return base * (1.0 - policy.wait_jitter * rng.random())


def header(headers: Mapping[str, str], name: str) -> str | None:
    """``headers[name]`` matched case-insensitively (``name`` is lower case)."""
    value = headers.get(name)
    if value is not None:
        return value
    for key, val in headers.items():
        if key.lower() == name:
            return val
    return None


def parse_duration(text: str) -> float | None:
    """Seconds in a Go-style duration (``1s``, ``6m0s``, ``12ms``, ``1h2m3.5s``), else ``None``."""
    text = text.strip()
    if not text:
        return None
    pos = 0
    total = 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            return None
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    return total if pos == len(text) else None


def _finite(value: float) -> float | None:
    return max(0.0, value) if math.isfinite(value) else None


def parse_retry_after(
    headers: Mapping[str, str], now: float, *, status: int | None = 429
) -> float | None:
    """Seconds the provider asked us to wait, or ``None`` if it did not say.

    Reads, in order: ``retry-after-ms`` (float milliseconds), ``retry-after`` (seconds, floats
    allowed, or an HTTP date, however far ahead: no 120 s cliff), then, for a 429 only, the
    larger of ``x-ratelimit-reset-requests`` / ``x-ratelimit-reset-tokens`` (durations).

    Args:
        headers: response headers (any case).
        now: the current wall-clock time in seconds since the epoch (for HTTP dates).
        status: the response status; the reset headers count only when it is 429.
    """
    raw_ms = header(headers, "retry-after-ms")
    if raw_ms is not None:
        try:
            result = _finite(float(raw_ms) / 1000.0)
        except ValueError:
            result = None
        if result is not None:
            return result
    raw = header(headers, "retry-after")
    if raw is not None:
        try:
            result = _finite(float(raw))
        except ValueError:
            result = _parse_http_date(raw, now)
        if result is not None:
            return result
    if status != 429:
        return None
    resets = [
        seconds
        for name in _RESET_HEADERS
        if (value := header(headers, name)) is not None
        and (seconds := parse_duration(value)) is not None
    ]
    return max(resets) if resets else None


def _parse_http_date(raw: str, now: float) -> float | None:
    try:
        when = parsedate_to_datetime(raw.strip())
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - now)


def error_fields(body: bytes) -> tuple[str | None, str | None]:
    """``(code, message)`` from a JSON error body ``{"error": {...}}``, or ``(None, None)``.

    ``code`` is ``error.code``, else ``error.type``; a body that is not such JSON gives
    ``(None, None)``.
    """
    try:
        envelope = _ENVELOPE.decode(body)
    except msgspec.DecodeError:
        return None, None
    detail = envelope.error
    if isinstance(detail, str):
        return None, detail
    if detail is None:
        return None, None
    code = detail.code if detail.code is not None else detail.type
    return (str(code) if code is not None else None), detail.message


def _is_quota(body: bytes) -> bool:
    if QUOTA_CODE.encode() not in body:
        return False
    try:
        envelope = _ENVELOPE.decode(body)
    except msgspec.DecodeError:
        return True
    detail = envelope.error
    if isinstance(detail, _ErrorDetail):
        return QUOTA_CODE in (detail.type, detail.code)
    return True


def retry_verdict(
    status: int | None,
    headers: Mapping[str, str] | None = None,
    body: bytes = b"",
    *,
    now: float,
) -> RetryVerdict:
    """Whether a failed try should be retried, and after how long if the provider said.

    Args:
        status: the HTTP status, or ``None`` for a transport failure (no response).
        headers: the response headers (any case); ``None`` when there was no response.
        body: the response body (checked for ``insufficient_quota`` on a 429).
        now: the current wall-clock time in seconds since the epoch.

    Returns:
        ``NO_RETRY``; or a verdict with ``retry=True`` and ``after`` set from the headers
        (``None``: use the policy's backoff). Transport failures always retry; 400, 401, 403,
        404 and 422 never do; otherwise ``x-should-retry`` decides when present, then 408, 409,
        429 (except ``insufficient_quota``) and ``>= 500`` retry.
    """
    if status is None:
        return RETRY
    if status in NEVER_RETRY_STATUSES or 200 <= status < 400:
        return NO_RETRY
    headers = headers or {}
    should = (header(headers, "x-should-retry") or "").strip().lower()
    if should == "false":
        return NO_RETRY
    if status == 429 and _is_quota(body):
        return NO_RETRY
    if should == "true" or status in RETRYABLE_STATUSES or status >= 500:
        return RetryVerdict(True, parse_retry_after(headers, now, status=status))
    return NO_RETRY
