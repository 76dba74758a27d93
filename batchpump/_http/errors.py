"""What an HTTP answer means: status -> ``ProviderError``, the JSON check, secret redaction.

The status half of the HTTP layer's error mapping, kept free of aiohttp so it is a set of pure
functions over ``(status, headers, body)``. The transport half (aiohttp's exceptions ->
``TransportError``) is ``Transport.map_errors``, the one place aiohttp exceptions
are caught. Every text taken from a response passes ``Redactor.redact`` before it is kept.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final, final

import msgspec

from .._errors import (
    BODY_EXCERPT_CHARS,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    NotFoundError,
    ProtocolError,
    ProviderError,
    ProviderUnavailableError,
    RateLimitedError,
)
from .._retry import error_fields, header, parse_retry_after

__all__ = [
    "REDACTED",
    "STATUS_ERRORS",
    "Redactor",
    "check_json",
    "limit_requests",
    "request_id",
    "status_error",
]

REDACTED: Final = "[REDACTED]"
#: Characters of a body scanned for secrets when building an error (the excerpt is shorter).
SCAN_CHARS: Final = 64 * 1024
#: Statuses with a meaning of their own; any other is ``ProviderUnavailableError`` from 500 up
#: and plain ``ProviderError`` below.
STATUS_ERRORS: Final[Mapping[int, type[ProviderError]]] = {
    400: BadRequestError,
    422: BadRequestError,
    401: AuthenticationError,
    403: AuthenticationError,
    404: NotFoundError,
    409: ConflictError,
    429: RateLimitedError,
}
_ANY_JSON: Final = msgspec.json.Decoder(msgspec.Raw)


@final
class Redactor:
    """Replaces every secret (longest first, so a key's prefix never half-masks it)."""

    __slots__ = ("_secrets",)

    def __init__(self, secrets: Sequence[str]) -> None:
        self._secrets = tuple(sorted((s for s in secrets if s), key=len, reverse=True))

    def redact(self, text: str) -> str:
        """``text`` with every secret replaced by ``[REDACTED]``."""
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text

    def extended(self, secrets: Sequence[str]) -> Redactor:
        """This redactor plus ``secrets`` (itself when there are none)."""
        return Redactor((*self._secrets, *secrets)) if any(secrets) else self


def status_error(
    provider: str,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float,
    redact: Redactor,
) -> ProviderError:
    """The ``ProviderError`` subclass for a non-2xx answer, with its redacted details.

    Args:
        provider: the provider's name, carried by the error.
        status: the HTTP status.
        headers: the answer's headers (``Retry-After`` is read relative to ``now``).
        body: the raw body; its message is taken from a JSON ``error`` object if there is one.
        now: the wall-clock time (unix seconds) for an HTTP-date ``Retry-After``.
        redact: scrubs the message and the body excerpt.
    """
    kind = STATUS_ERRORS.get(status) or (
        ProviderUnavailableError if status >= 500 else ProviderError
    )
    code, message = error_fields(body)
    excerpt = redact.redact(body[:SCAN_CHARS].decode("utf-8", "replace"))
    if message is None:
        looks_html = excerpt.lstrip()[:1] == "<"
        message = "non-JSON error page" if looks_html else excerpt[:200] or "empty body"
    return kind(
        redact.redact(message),
        provider=provider,
        status=status,
        request_id=request_id(headers),
        retry_after=parse_retry_after(headers, now, status=status),
        body=excerpt[:BODY_EXCERPT_CHARS],
        code=code,
    )


def check_json(provider: str, status: int, body: bytes, *, redact: Redactor) -> None:
    """Raise ``ProtocolError`` unless ``body`` is JSON (a 204 may be empty)."""
    if status == 204 or not body.strip():
        if status != 204:
            raise ProtocolError(f"{provider}: empty body where JSON was expected")
        return
    try:
        _ANY_JSON.decode(body)
    except msgspec.DecodeError as exc:
        start = redact.redact(body[:80].decode("utf-8", "replace"))
        raise ProtocolError(
            f"{provider}: HTTP {status} body is not JSON (starts {start!r})"
        ) from exc


def request_id(headers: Mapping[str, str]) -> str | None:
    """The provider's request id (``x-request-id``, else ``request-id``)."""
    return header(headers, "x-request-id") or header(headers, "request-id")


def limit_requests(headers: Mapping[str, str]) -> float | None:
    """The advertised request ceiling (``x-ratelimit-limit-requests``), if readable."""
    value = header(headers, "x-ratelimit-limit-requests")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
