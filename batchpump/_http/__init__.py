"""batchpump's HTTP client: every call a provider adapter makes goes through here.

This package is the only importer of aiohttp's client. ``HttpClient`` sends a provider's calls
(``request``, ``stream``, ``upload_file``, ``send_stream``, ``put_file``) through the rate gate
of each call's endpoint class, retries them by the ``RetryPolicy``, follows redirects without
leaking keys to other hosts, and raises only batchpump errors, with every secret redacted. The
backoff maths, ``Retry-After`` parsing and the retryability predicate are exported too, for
the callers that retry work of their own (polling, job steps).
"""

from __future__ import annotations

from .bodies import Response, StreamResponse, read_into_at
from .client import HttpClient
from .retry import (
    NO_RETRY,
    RETRY,
    RetryVerdict,
    backoff,
    error_fields,
    parse_duration,
    parse_retry_after,
    retry_verdict,
)
from .transport import HttpStatistics

__all__ = [
    "NO_RETRY",
    "RETRY",
    "HttpClient",
    "HttpStatistics",
    "Response",
    "RetryVerdict",
    "StreamResponse",
    "backoff",
    "error_fields",
    "parse_duration",
    "parse_retry_after",
    "read_into_at",
    "retry_verdict",
]
