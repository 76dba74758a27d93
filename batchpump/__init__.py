"""batchpump: push very large request sets through provider batch APIs.

Fast, within each provider's rate limits, and with exactly one result per input line.
"""

from __future__ import annotations

from ._errors import (
    AuthenticationError,
    BadRequestError,
    BatchpumpError,
    BatchpumpInternalError,
    ClosedError,
    ConflictError,
    ConnectError,
    InputError,
    InputProblem,
    JournalCorruptError,
    JournalError,
    JournalLockedError,
    NotFoundError,
    ProtocolError,
    ProviderError,
    ProviderUnavailableError,
    RateLimitedError,
    TransportError,
    TransportTimeoutError,
    UsageError,
)
from ._models import Canceled, Errored, Expired, Rejected, Result, Succeeded

__version__ = "0.1.0.dev0"

__all__ = [
    "AuthenticationError",
    "BadRequestError",
    "BatchpumpError",
    "BatchpumpInternalError",
    "Canceled",
    "ClosedError",
    "ConflictError",
    "ConnectError",
    "Errored",
    "Expired",
    "InputError",
    "InputProblem",
    "JournalCorruptError",
    "JournalError",
    "JournalLockedError",
    "NotFoundError",
    "ProtocolError",
    "ProviderError",
    "ProviderUnavailableError",
    "RateLimitedError",
    "Rejected",
    "Result",
    "Succeeded",
    "TransportError",
    "TransportTimeoutError",
    "UsageError",
    "__version__",
]
