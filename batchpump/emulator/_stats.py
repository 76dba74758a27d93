"""What the emulator has served, counted cheaply so tests can assert the pipeline's invariants.

``Stats`` is live (mutated by the middleware and the provider states). Read it through
``Emulator.stats``, which first settles batches that reached a terminal state, so ``billing``
is up to date with the emulator's clock.
"""

from __future__ import annotations

from collections import Counter
from contextvars import ContextVar
from typing import Any, Final, final

__all__ = ["CREATED_TAGS", "Stats", "Tags", "note_tag"]

#: Tags counted while serving the current request (the middleware sets a fresh list per request,
#: so its journal entry can name the batch tag the request created).
CREATED_TAGS: Final[ContextVar[list[str] | None]] = ContextVar("created_tags", default=None)


def note_tag(value: str) -> None:
    """Name what the current request is about in its journal entry (e.g. a job's
    ``reference_id``, which is the line's ``custom_id``)."""
    seen = CREATED_TAGS.get()
    if seen is not None:
        seen.append(value)


@final
class Tags(Counter[str]):
    """``Counter`` of tags that also notes each tag counted during the current request."""

    def __setitem__(self, key: str, value: int) -> None:
        super().__setitem__(key, value)
        seen = CREATED_TAGS.get()
        if seen is not None:
            seen.append(key)


@final
class Stats:
    """Counters of one emulator.

    Attributes:
        requests: answers per ``(route name, HTTP status)``; status 0 means the connection was
            reset without an answer.
        faults: injected faults served, by kind: ``rate_limited`` (token bucket 429),
            ``storm429``, ``5xx``, ``html502``, ``reset``, ``reset_after_create``, ``slow``,
            ``truncate``.
        batches_created: batches created (successful create calls, also those whose answer was
            then lost to ``reset_after_create``).
        tags: ``metadata["batchpump_shard"]`` values over all created batches; a tag seen twice
            means one shard attempt was created twice.
        billing: per ``custom_id``, how many times a line ran to success (settled when its
            batch reached a terminal state); a count above 1 is a double payment.
    """

    __slots__ = ("batches_created", "billing", "faults", "requests", "tags")

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, int]] = Counter()
        self.faults: Counter[str] = Counter()
        self.batches_created = 0
        self.tags: Counter[str] = Tags()
        self.billing: Counter[str] = Counter()

    @property
    def rate_limited(self) -> int:
        """429s served (bucket and storm)."""
        return self.faults["rate_limited"] + self.faults["storm429"]

    @property
    def server_errors(self) -> int:
        """5xx answers served as faults (JSON and HTML)."""
        return self.faults["5xx"] + self.faults["html502"]

    @property
    def resets(self) -> int:
        """Connections aborted (before handling or after a create)."""
        return self.faults["reset"] + self.faults["reset_after_create"]

    def status_count(self, route: str, status: int) -> int:
        """Answers with ``status`` on ``route`` (a route name such as ``openai.batches.create``)."""
        return self.requests[(route, status)]

    def route_count(self, route: str) -> int:
        """All answers on ``route``."""
        return sum(n for (name, _), n in self.requests.items() if name == route)

    def duplicate_tags(self) -> dict[str, int]:
        """Tags carried by more than one created batch."""
        return {tag: n for tag, n in self.tags.items() if n > 1}

    def double_billed(self) -> dict[str, int]:
        """``custom_id``s that ran to success more than once."""
        return {cid: n for cid, n in self.billing.items() if n > 1}

    def verdict(self) -> dict[str, Any]:
        """What a pipeline test asserts on: creates per tag, tags created twice, lines billed
        twice, the share of answers that were 429s, and answers per route."""
        total = sum(self.requests.values())
        limited = sum(n for (_, status), n in self.requests.items() if status == 429)
        per_route: Counter[str] = Counter()
        for (route, _), n in self.requests.items():
            per_route[route] += n
        duplicates, double = self.duplicate_tags(), self.double_billed()
        return {
            "ok": not duplicates and not double,
            "batches_created": self.batches_created,
            "creates_per_tag": dict(self.tags),
            "tags_created_twice": duplicates,
            "lines_billed": sum(self.billing.values()),
            "lines_billed_twice": double,
            "requests": total,
            "share_429": limited / total if total else 0.0,
            "requests_per_route": dict(sorted(per_route.items())),
        }

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready copy (used by the ``/_emulator/stats`` control route)."""
        return {
            "requests": [
                {"route": r, "status": s, "count": n} for (r, s), n in sorted(self.requests.items())
            ],
            "faults": dict(self.faults),
            "batches_created": self.batches_created,
            "tags": dict(self.tags),
            "billed_lines": sum(self.billing.values()),
            "double_billed": self.double_billed(),
        }

    def __repr__(self) -> str:
        return (
            f"Stats(requests={sum(self.requests.values())}, batches_created={self.batches_created},"
            f" faults={dict(self.faults)!r})"
        )
