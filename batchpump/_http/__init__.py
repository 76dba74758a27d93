"""PKGDOC"""

from __future__ import annotations

from .bodies import read_into_at
from .client import HttpClient, HttpStatistics, Response
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

__all__ = [
    "NO_RETRY",
    "RETRY",
    "HttpClient",
    "HttpStatistics",
    "Response",
    "RetryVerdict",
    "backoff",
    "error_fields",
    "parse_duration",
    "parse_retry_after",
    "read_into_at",
    "retry_verdict",
]
