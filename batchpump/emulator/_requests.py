"""The request journal: one entry per provider API request the emulator answered.

Each entry has the emulator time, the provider, method, path, route name, status (0: the
connection was reset without an answer), the fault or scripted rule that shaped the answer,
and a ``tag``: the batch tag a create counted, else the batch/job/file id in the path. The
journal keeps the newest ``limit`` entries (default 100,000).
"""

from __future__ import annotations

from collections import deque
from typing import Final, final

import msgspec

__all__ = ["RequestLog", "RequestRecord"]

_DEFAULT_LIMIT: Final = 100_000


class RequestRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One answered request."""

    time: float
    provider: str
    method: str
    path: str
    route: str
    status: int
    fault: str | None = None
    tag: str | None = None


@final
class RequestLog:
    """The newest ``limit`` request records, oldest first."""

    __slots__ = ("_entries", "dropped")

    def __init__(self, limit: int = _DEFAULT_LIMIT) -> None:
        self._entries: deque[RequestRecord] = deque(maxlen=limit)
        #: Entries pushed out by the limit.
        self.dropped = 0

    def add(self, record: RequestRecord) -> None:
        """Append a record (dropping the oldest beyond the limit)."""
        if len(self._entries) == self._entries.maxlen:
            self.dropped += 1
        self._entries.append(record)

    def entries(
        self, *, provider: str | None = None, limit: int | None = None
    ) -> list[RequestRecord]:
        """Records, oldest first; only ``provider``'s when given; the last ``limit`` when given."""
        picked = [r for r in self._entries if provider is None or r.provider == provider]
        return picked[-limit:] if limit is not None and limit >= 0 else picked

    def clear(self) -> None:
        """Forget every record."""
        self._entries.clear()
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._entries)
