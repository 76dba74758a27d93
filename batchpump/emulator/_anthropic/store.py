"""The Anthropic emulator's batches: the rules that create, cancel, delete and list them.

The create rules (envelope checks, each request's outcome drawn from the fault knobs) live
here; one batch's lifecycle is ``batch``. With ``Faults.expire`` the batch runs
until ``expires_at`` (24 h) and only ``expire_done_fraction`` of it finishes; with
``stuck_finalizing`` every request finishes but the batch stays ``in_progress`` until
``expires_at``. Results are archived 29 days after creation (or at once through
:meth:`AnthropicState.archive`).

There is no metadata, so ``Stats.tags`` counts each created batch under
``anthropic:<first custom_id>:<size>:<digest of its custom_ids in order>``. A key counted twice
means the same requests were sent as two batches: a duplicate create, or a whole batch retried
after it expired or was cancelled (tests that count duplicates avoid the latter).
"""

from __future__ import annotations

import hashlib
from typing import Final, final

from .._faults import done_when_expired
from .._routing import ApiError
from .._state import Emulator
from .batch import (
    DAY,
    LINE_API_ERROR,
    LINE_FATAL,
    LINE_INVALID,
    LINE_OVERLOADED,
    AnthropicBatch,
)
from .wire import CreateBatchBody, ListPage, MessageBatch, check_params

__all__ = ["MAX_REQUESTS", "AnthropicState"]

MAX_REQUESTS: Final = 100_000


def _signature(custom_ids: list[str]) -> str:
    digest = hashlib.blake2b("\n".join(custom_ids).encode(), digest_size=8).hexdigest()
    return f"anthropic:{custom_ids[0]}:{len(custom_ids)}:{digest}"


def _not_found(batch_id: str) -> ApiError:
    return ApiError(404, f"No message batch found with id '{batch_id}'.", type="not_found_error")


@final
class AnthropicState:
    """Every Anthropic batch of one emulator, in creation order (for newest-first listing)."""

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self.batches: dict[str, AnthropicBatch] = {}
        self._order: list[str] = []
        self._pos: dict[str, int] = {}

    def create(self, body: CreateBatchBody) -> AnthropicBatch:
        """Create a batch; the envelope is checked here, each request's params per request."""
        n = len(body.requests)
        if not 1 <= n <= MAX_REQUESTS:
            raise ApiError(400, f"requests: expected 1 to {MAX_REQUESTS:,} items, got {n:,}")
        seen: set[str] = set()
        for i, request in enumerate(body.requests):
            if request.custom_id in seen:
                raise ApiError(
                    400, f"requests.{i}.custom_id: duplicate custom_id '{request.custom_id}'"
                )
            seen.add(request.custom_id)
        emu, config = self.emulator, self.emulator.config
        faults = config.faults
        now = emu.now()
        done_final = n
        if faults.expire:
            end = now + DAY
            done_final = done_when_expired(faults, n)
        elif faults.stuck_finalizing:
            end = now + DAY
        else:
            end = now + config.run_seconds + config.line_seconds * n
        batch = AnthropicBatch(
            id=emu.new_id("msgbatch_"), created_at=now, end=end, done_final=done_final, body=body
        )
        batch.no_results_url = faults.completed_without_output
        retry, fatal = faults.line_retryable_rate, faults.line_fatal_rate
        for i, params in enumerate(batch.params):
            reason = check_params(params)
            if reason is not None:
                batch.codes[i] = LINE_INVALID
                batch.invalid[i] = reason
            elif retry > 0.0 or fatal > 0.0:
                streams = emu.line_streams
                chosen = streams.first((("line_retryable", retry), ("line_fatal", fatal)))
                if chosen == "line_retryable":
                    batch.codes[i] = (
                        LINE_API_ERROR if streams.rng.random() < 0.5 else LINE_OVERLOADED
                    )
                elif chosen == "line_fatal":
                    batch.codes[i] = LINE_FATAL
        outcomes = (
            emu.scripted.outcomes(batch.custom_ids, provider="anthropic")
            if len(emu.scripted)
            else {}
        )
        for i, cid in enumerate(batch.custom_ids):
            if cid in outcomes and batch.codes[i] != LINE_INVALID:
                batch.codes[i] = LINE_FATAL
                batch.scripted[i] = outcomes[cid]
        self.batches[batch.id] = batch
        self._pos[batch.id] = len(self._order)
        self._order.append(batch.id)
        stats = emu.raw_stats
        stats.batches_created += 1
        stats.tags[_signature(batch.custom_ids)] += 1
        return batch

    def get(self, batch_id: str) -> AnthropicBatch:
        batch = self.batches.get(batch_id)
        if batch is None:
            raise _not_found(batch_id)
        return batch

    def wire(self, batch: AnthropicBatch, origin: str) -> MessageBatch:
        now = self.emulator.now()
        self._settle_one(batch, now)
        return batch.to_wire(now, origin)

    def cancel(self, batch_id: str) -> AnthropicBatch:
        """Start canceling; an ended batch cannot be canceled (400)."""
        batch = self.get(batch_id)
        now = self.emulator.now()
        status = batch.status(now)
        if status == "ended":
            raise ApiError(400, f"Batch '{batch_id}' has already ended and cannot be canceled.")
        if status == "in_progress":
            batch.cancel_at = now
            batch.cancel_end = now + self.emulator.config.cancel_seconds
        return batch

    def delete(self, batch_id: str) -> None:
        """Delete an ended batch (in-progress ones must be canceled first: 400)."""
        batch, now = self._ended(batch_id, "cancel it before deleting it.")
        self._settle_one(batch, now)
        del self.batches[batch_id]

    def archive(self, batch_id: str) -> None:
        """Archive an ended batch's results now (tests; the live API does so after 29 days)."""
        self.get(batch_id).archived_at = self.emulator.now()

    def results(self, batch_id: str) -> AnthropicBatch:
        """The batch whose results may be streamed, or the error the API answers with."""
        batch, now = self._ended(batch_id, "results are not available yet.")
        if now >= batch.archived_at:
            raise ApiError(
                404, f"Results of batch '{batch_id}' were archived.", type="not_found_error"
            )
        self._settle_one(batch, now)
        return batch

    def list(
        self, *, origin: str, limit: int, after_id: str | None, before_id: str | None
    ) -> ListPage:
        """Newest first; ``after_id`` pages to older batches, ``before_id`` to newer ones."""
        if after_id is not None and before_id is not None:
            raise ApiError(400, "Provide either after_id or before_id, not both.")
        cursor = after_id if after_id is not None else before_id
        if cursor is not None and cursor not in self._pos:
            raise _not_found(cursor)
        if before_id is not None:
            indexes = range(self._pos[before_id] + 1, len(self._order))
        else:
            start = self._pos[after_id] - 1 if after_id is not None else len(self._order) - 1
            indexes = range(start, -1, -1)
        picked: list[AnthropicBatch] = []
        has_more = False
        cutoff = self.emulator.now() - self.emulator.faults.list_lag_seconds
        for i in indexes:
            batch = self.batches.get(self._order[i])
            if batch is None or batch.created_at > cutoff:
                continue  # deleted, or not in the list index yet (``list_lag_seconds``)
            if len(picked) == limit:
                has_more = True
                break
            picked.append(batch)
        if before_id is not None:
            picked.reverse()
        data = [self.wire(b, origin) for b in picked]
        return ListPage(
            data=data,
            has_more=has_more,
            first_id=data[0].id if data else None,
            last_id=data[-1].id if data else None,
        )

    def _ended(self, batch_id: str, refused: str) -> tuple[AnthropicBatch, float]:
        """The batch and the time, once it ended; before, 400 "still processing; ``refused``"."""
        batch = self.get(batch_id)
        now = self.emulator.now()
        if batch.status(now) != "ended":
            raise ApiError(400, f"Batch '{batch_id}' is still processing; {refused}")
        return batch, now

    def _settle_one(self, batch: AnthropicBatch, now: float) -> None:
        if batch.settled or batch.status(now) != "ended":
            return
        batch.settled = True
        done = batch.done()
        billing = self.emulator.raw_stats.billing
        billing.update(
            cid for i, cid in enumerate(batch.custom_ids) if batch.fate(i, done) == "succeeded"
        )

    def settle(self) -> None:
        """Bill every batch that ended by now (``Emulator.stats`` calls this)."""
        now = self.emulator.now()
        for batch in self.batches.values():
            self._settle_one(batch, now)
