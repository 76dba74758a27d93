"""batchpump's HTTP client: every call a provider adapter makes goes through here.

This package is the only importer of aiohttp's client. ``HttpClient`` sends a provider's calls
(``request``, ``stream``, ``upload_file``, ``send_stream``, ``put_file``) through the rate gate
of each call's endpoint class, retries them by the ``RetryPolicy``, follows redirects without
leaking keys to other hosts, and raises only batchpump errors, with every secret redacted.
"""

from __future__ import annotations

from .bodies import Response, StreamResponse, read_into_at
from .client import HttpClient
from .transport import HttpStatistics

__all__ = [
    "HttpClient",
    "HttpStatistics",
    "Response",
    "StreamResponse",
    "read_into_at",
]
