"""One Anthropic batch in the emulator: its fixed timeline and outcomes, and how it reads.

Nothing runs in the background: a batch stores its timeline (``end``: when processing ends
unless cancelled) and one outcome code per request at create; status, counts and results are
computed from the clock on each read. Requests run in input order at an even pace between
``created_at`` and ``end``; a cancel freezes how many ran and ends the batch ``cancel_seconds``
later with the rest ``canceled``. Results are archived 29 days after creation.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, Final, final

import msgspec

from .._script import LineOutcome
from .wire import CreateBatchBody, MessageBatch, RequestCounts, message_body, rfc3339

__all__ = [
    "ARCHIVE_AFTER",
    "DAY",
    "LINE_API_ERROR",
    "LINE_FATAL",
    "LINE_INVALID",
    "LINE_OK",
    "LINE_OVERLOADED",
    "AnthropicBatch",
]

DAY: Final = 86_400.0
ARCHIVE_AFTER: Final = 29 * DAY
#: Outcome codes of a request, one byte each in ``AnthropicBatch.codes``.
LINE_OK, LINE_API_ERROR, LINE_OVERLOADED, LINE_FATAL, LINE_INVALID = range(5)
_LINE_ERRORS: Final = {
    LINE_API_ERROR: ("api_error", "Internal server error"),
    LINE_OVERLOADED: ("overloaded_error", "Overloaded"),
    LINE_FATAL: ("invalid_request_error", "Invalid request (emulated non-retryable line failure)."),
}
_encoder: Final = msgspec.json.Encoder()


@final
class AnthropicBatch:
    """One batch's fixed timeline and outcomes; everything else is derived from the clock."""

    __slots__ = (
        "archived_at",
        "cancel_at",
        "cancel_end",
        "codes",
        "created_at",
        "custom_ids",
        "done_final",
        "end",
        "expires_at",
        "id",
        "invalid",
        "no_results_url",
        "params",
        "scripted",
        "settled",
    )

    def __init__(
        self, *, id: str, created_at: float, end: float, done_final: int, body: CreateBatchBody
    ) -> None:
        self.id = id
        self.created_at = created_at
        self.expires_at = created_at + DAY
        self.end = end
        self.done_final = done_final
        self.custom_ids = [r.custom_id for r in body.requests]
        self.params = [r.params for r in body.requests]
        self.codes = bytearray(len(self.custom_ids))
        self.invalid: dict[int, str] = {}
        #: Scripted per-request failures by index (``outcome`` rules).
        self.scripted: dict[int, LineOutcome] = {}
        self.cancel_at: float | None = None
        self.cancel_end: float | None = None
        self.archived_at = created_at + ARCHIVE_AFTER
        self.no_results_url = False
        self.settled = False

    def ended_at(self) -> float:
        """When processing ends (or ended)."""
        if self.cancel_at is not None and self.cancel_end is not None:
            return min(self.end, self.cancel_end)
        return self.end

    def status(self, t: float) -> str:
        if t >= self.ended_at():
            return "ended"
        return "canceling" if self.cancel_at is not None else "in_progress"

    def done(self) -> int:
        """Requests that ran before processing ended (in input order)."""
        if self.cancel_at is None or self.end <= self.cancel_at:
            return self.done_final
        span = self.end - self.created_at
        frac = 1.0 if span <= 0 else min(1.0, (self.cancel_at - self.created_at) / span)
        return math.floor(self.done_final * frac)

    def fate(self, i: int, done: int) -> str:
        if i >= done:
            cancelled = self.cancel_at is not None and self.end > self.cancel_at
            return "canceled" if cancelled else "expired"
        return "succeeded" if self.codes[i] == LINE_OK else "errored"

    def counts(self, t: float) -> RequestCounts:
        """``processing`` for every request until the batch ends, then the tallies."""
        if self.status(t) != "ended":
            return RequestCounts(processing=len(self.custom_ids))
        counts = RequestCounts()
        done = self.done()
        for i in range(len(self.custom_ids)):
            fate = self.fate(i, done)
            setattr(counts, fate, getattr(counts, fate) + 1)
        return counts

    def to_wire(self, t: float, origin: str) -> MessageBatch:
        ended = self.status(t) == "ended"
        return MessageBatch(
            id=self.id,
            processing_status=self.status(t),
            request_counts=self.counts(t),
            ended_at=rfc3339(self.ended_at()) if ended else None,
            created_at=rfc3339(self.created_at),
            expires_at=rfc3339(self.expires_at),
            archived_at=rfc3339(self.archived_at) if t >= self.archived_at else None,
            cancel_initiated_at=rfc3339(self.cancel_at) if self.cancel_at is not None else None,
            results_url=f"{origin}/v1/messages/batches/{self.id}/results"
            if ended and not self.no_results_url
            else None,
        )

    def result_lines(self, chunk: int = 1000) -> Iterator[bytes]:
        """The results JSONL in chunks of ``chunk`` lines."""
        done = self.done()
        buf = bytearray()
        for i, cid in enumerate(self.custom_ids):
            fate = self.fate(i, done)
            result: dict[str, Any] = {"type": fate}
            if fate == "succeeded":
                result["message"] = message_body(cid, self.params[i])
            elif fate == "errored" and i in self.scripted:
                result["error"] = {"type": "error", "error": self.scripted[i].error}
            elif fate == "errored":
                kind, message = _LINE_ERRORS.get(
                    self.codes[i], ("invalid_request_error", self.invalid.get(i, "invalid"))
                )
                result["error"] = {"type": "error", "error": {"type": kind, "message": message}}
            buf += _encoder.encode({"custom_id": cid, "result": result})
            buf += b"\n"
            if (i + 1) % chunk == 0:
                yield bytes(buf)
                buf.clear()
        if buf:
            yield bytes(buf)
