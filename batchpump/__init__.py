"""batchpump: push very large request sets through provider batch APIs.

Fast, within each provider's rate limits, and with exactly one result per input line.
"""

from __future__ import annotations

from contextlib import suppress as _suppress

from msgspec import Struct as _Struct

from ._clock import Clock, ManualClock, ScaledClock, SystemClock
from ._config import Limits, PollPolicy, Price, RetryPolicy, RunOptions
from ._engine import RunStatistics
from ._errors import (
    AuthenticationError,
    BadRequestError,
    BatchpumpError,
    BatchpumpInternalError,
    ClosedError,
    ConfigurationError,
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
    ResultsFileError,
    TransportError,
    TransportTimeoutError,
    UsageError,
)
from ._journal import Journal, MemoryJournal
from ._models import (
    BatchInfo,
    Canceled,
    Errored,
    Expired,
    Rejected,
    Result,
    ResultCounts,
    Succeeded,
    Usage,
)
from ._provider import Provider
from ._pump import Pump, Run

__version__ = "0.1.0.dev0"

__all__ = [
    "AuthenticationError",
    "BadRequestError",
    "BatchInfo",
    "BatchpumpError",
    "BatchpumpInternalError",
    "Canceled",
    "Clock",
    "ClosedError",
    "ConfigurationError",
    "ConflictError",
    "ConnectError",
    "Errored",
    "Expired",
    "InputError",
    "InputProblem",
    "Journal",
    "JournalCorruptError",
    "JournalError",
    "JournalLockedError",
    "Limits",
    "ManualClock",
    "MemoryJournal",
    "NotFoundError",
    "PollPolicy",
    "Price",
    "ProtocolError",
    "Provider",
    "ProviderError",
    "ProviderUnavailableError",
    "Pump",
    "RateLimitedError",
    "Rejected",
    "Result",
    "ResultCounts",
    "ResultsFileError",
    "RetryPolicy",
    "Run",
    "RunOptions",
    "RunStatistics",
    "ScaledClock",
    "Succeeded",
    "SystemClock",
    "TransportError",
    "TransportTimeoutError",
    "Usage",
    "UsageError",
    "__version__",
]


def _fix_module_names() -> None:
    """Make reprs and docs say ``batchpump.X`` whatever private module X lives in.

    msgspec Structs keep their module: msgspec resolves their postponed annotations there.
    """
    for name in __all__:
        obj = globals()[name]
        if isinstance(obj, type) and issubclass(obj, _Struct):
            continue
        if getattr(obj, "__module__", "").startswith("batchpump._"):
            with _suppress(AttributeError, TypeError):  # typing aliases such as Result
                obj.__module__ = __name__


_fix_module_names()
