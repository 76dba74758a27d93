"""The OpenAI emulator's state: its batches, and the rules that create them, over its files.

Handlers in ``routes`` decode requests and call these methods (files and uploads through
``OpenAIState.files``, a ``FileStore``); every check that the live API makes synchronously
raises ``ApiError`` here. Listing is O(page) over append-only creation
order; result files are built once per batch, when a read first sees it terminal (or when
``settle`` runs for the stats).
"""

from __future__ import annotations

import heapq
import random
from typing import Final, final

from .._faults import draw_line_codes, plan_timeline
from .._routing import ApiError
from .._state import Emulator
from .batch import BatchRecord, InputLine, parse_input, script_codes
from .bodies import build_result_files
from .files import FileRecord, FileStore
from .wire import (
    ALLOWED_ENDPOINTS,
    BatchErrorObject,
    BatchObject,
    CreateBatchBody,
    ListPage,
)

__all__ = ["TAG_KEY", "OpenAIState"]

#: Endpoints the Azure surface takes: OpenAI's, and the same without ``/v1`` (Azure's docs).
AZURE_ENDPOINTS: Final = ALLOWED_ENDPOINTS | {e.removeprefix("/v1") for e in ALLOWED_ENDPOINTS}
#: The metadata key batchpump tags batches with (counted in ``Stats.tags``).
TAG_KEY: Final = "batchpump_shard"
_MAX_METADATA_PAIRS: Final = 16
_MAX_KEY: Final = 64
_MAX_VALUE: Final = 512


def _check_metadata(metadata: dict[str, str] | None) -> None:
    if metadata is None:
        return
    if len(metadata) > _MAX_METADATA_PAIRS:
        raise ApiError(
            400,
            "Invalid 'metadata': too many properties. Expected an object with at most 16"
            " properties.",
            param="metadata",
            code="object_above_max_properties",
        )
    for key, value in metadata.items():
        if len(key) > _MAX_KEY:
            raise ApiError(
                400,
                "Invalid 'metadata': key too long. Expected a key with at most 64 characters,"
                f" got {len(key)}.",
                param="metadata",
                code="string_above_max_length",
            )
        if len(value) > _MAX_VALUE:
            raise ApiError(
                400,
                f"Invalid 'metadata.{key}': string too long. Expected a string with maximum"
                f" length 512, but got a string with length {len(value)} instead.",
                param=f"metadata.{key}",
                code="string_above_max_length",
            )


@final
class OpenAIState:
    """The batches of the OpenAI emulator, and the files and uploads they read and write."""

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        #: Files and uploads (``/v1/files``, ``/v1/uploads``); batch inputs and results live here.
        self.files = FileStore(emulator)
        self.batches: dict[str, BatchRecord] = {}
        self._order: list[str] = []
        self._pos: dict[str, int] = {}
        self._unsettled: dict[str, BatchRecord] = {}
        self._enqueued: dict[str, int] = {}
        self._releases: list[tuple[float, int, str]] = []

    # -- batches ----------------------------------------------------------------------------

    def create_batch(self, body: CreateBatchBody, *, azure: bool = False) -> BatchRecord:
        """Create a batch (``POST /v1/batches``); raises ``ApiError`` for what the API rejects.

        With ``azure`` (the Azure surface), endpoints are also taken in the form Azure's docs
        show, without ``/v1`` (``/chat/completions``), for the batch and its lines.
        """
        for name in ("input_file_id", "endpoint", "completion_window"):
            if getattr(body, name) is None:
                raise ApiError(
                    400,
                    f"Missing required parameter: '{name}'.",
                    param=name,
                    code="missing_required_parameter",
                )
        assert body.input_file_id is not None
        assert body.endpoint is not None
        allowed_endpoints = AZURE_ENDPOINTS if azure else ALLOWED_ENDPOINTS
        if body.endpoint not in allowed_endpoints:
            allowed = ", ".join(f"'{e}'" for e in sorted(allowed_endpoints))
            raise ApiError(
                400,
                f"Invalid value: '{body.endpoint}'. Supported values are: {allowed}.",
                param="endpoint",
                code="invalid_value",
            )
        if body.completion_window != "24h":
            raise ApiError(
                400,
                f"Invalid value: '{body.completion_window}'. Supported values are: '24h'.",
                param="completion_window",
                code="invalid_value",
            )
        _check_metadata(body.metadata)
        oea = body.output_expires_after
        if oea is not None and (
            oea.anchor != "created_at"
            or oea.seconds is None
            or not 3600 <= oea.seconds <= 2_592_000
        ):
            raise ApiError(
                400,
                "Invalid 'output_expires_after': anchor must be 'created_at' and seconds"
                " between 3600 and 2592000.",
                param="output_expires_after",
                code="invalid_value",
            )
        source = self.files.get_file(body.input_file_id, param="input_file_id")
        if source.purpose != "batch":
            raise ApiError(
                400,
                f"The input file {source.id} must be uploaded with purpose 'batch'"
                f" (it has '{source.purpose}').",
                param="input_file_id",
                code="invalid_value",
            )
        return self._new_batch(
            body.input_file_id, body.endpoint, body.metadata, source, azure=azure
        )

    def _new_batch(
        self,
        file_id: str,
        endpoint: str,
        metadata: dict[str, str] | None,
        source: FileRecord,
        *,
        azure: bool = False,
    ) -> BatchRecord:
        emu, config = self.emulator, self.emulator.config
        faults = config.faults
        now = emu.now()
        lines, errors, model = parse_input(source.data, endpoint, azure=azure)
        tokens = len(source.data) // 4
        self._release(now)
        limit = faults.enqueued_token_limit
        key = model or ""
        if not errors and limit is not None and self._enqueued.get(key, 0) + tokens > limit:
            message = (
                f"Enqueued token limit reached for {model or 'the model'} in organization"
                f" org-emulator. Limit: {limit:,} enqueued tokens. Please try again once some"
                " in_progress batches have been completed."
            )
            errors = [BatchErrorObject(code="token_limit_exceeded", message=message)]
        validate_end = now + config.validate_seconds
        plan = plan_timeline(config, now=now, lines=len(lines), failed=bool(errors))
        outcome, run_end, final_end, done_final = plan
        if errors:
            lines, tokens = [], 0
        codes = draw_line_codes(len(lines), config, emu.line_streams)
        outcomes = (
            emu.scripted.outcomes([line.custom_id or "" for line in lines], provider="openai")
            if lines and len(emu.scripted)
            else {}
        )
        codes, scripted = script_codes(lines, codes, outcomes)
        batch = BatchRecord(
            id=emu.new_id("batch_"),
            endpoint=endpoint,
            input_file_id=file_id,
            metadata=metadata,
            model=model,
            created_at=now,
            validate_end=validate_end,
            run_end=run_end,
            final_end=final_end,
            outcome=outcome,
            lines=lines,
            codes=codes,
            done_final=done_final,
            errors=errors,
            no_output=faults.completed_without_output,
            tokens=tokens,
            scripted=scripted,
        )
        self._store(batch, key)
        return batch

    def _store(self, batch: BatchRecord, model_key: str) -> None:
        self.batches[batch.id] = batch
        self._pos[batch.id] = len(self._order)
        self._order.append(batch.id)
        self._unsettled[batch.id] = batch
        if batch.tokens:
            self._enqueued[model_key] = self._enqueued.get(model_key, 0) + batch.tokens
            release = batch.final_end if batch.outcome == "completed" else batch.run_end
            if release is not None:
                heapq.heappush(self._releases, (release, len(self._order), batch.id))
        stats = self.emulator.raw_stats
        stats.batches_created += 1
        if batch.metadata and TAG_KEY in batch.metadata:
            stats.tags[batch.metadata[TAG_KEY]] += 1

    def _release(self, now: float) -> None:
        while self._releases and self._releases[0][0] <= now:
            _, _, batch_id = heapq.heappop(self._releases)
            self._release_one(self.batches[batch_id])

    def _release_one(self, batch: BatchRecord) -> None:
        key = batch.model or ""
        self._enqueued[key] = self._enqueued.get(key, 0) - batch.tokens
        batch.tokens = 0

    def get_batch(self, batch_id: str) -> BatchRecord:
        """The batch, or a 404 ``ApiError``."""
        batch = self.batches.get(batch_id)
        if batch is None:
            raise ApiError(
                404, f"No batch found with id '{batch_id}'.", param="batch_id", code="not_found"
            )
        return batch

    def wire(self, batch: BatchRecord, *, at: float | None = None) -> BatchObject:
        """The batch as the API shows it now, or ``at`` (a create answers with the batch as it
        was made); result files are built on the first terminal read."""
        now = self.emulator.now() if at is None else at
        if not batch.materialized and batch.terminal(now):
            self._materialize(batch, now)
        return batch.to_wire(now)

    def cancel_batch(self, batch_id: str) -> BatchRecord:
        """Cancel (``POST /v1/batches/{id}/cancel``); 409 when the batch is already terminal."""
        batch = self.get_batch(batch_id)
        now = self.emulator.now()
        status = batch.status(now)
        if status in ("validating", "in_progress", "finalizing"):
            batch.cancel(now, self.emulator.config.cancel_seconds)
            if batch.tokens:
                heapq.heappush(
                    self._releases,
                    (now + self.emulator.config.cancel_seconds, len(self._order), batch.id),
                )
        elif status != "cancelling":
            raise ApiError(
                409, f"Cannot cancel a batch with status '{status}'.", code="batch_not_cancellable"
            )
        return batch

    def list_batches(self, *, after: str | None, limit: int) -> ListPage:
        """Newest first, ``limit`` per page, continuing after the batch ``after``.

        Batches younger than ``list_lag_seconds`` are left out (retrieve still finds them).
        """
        if after is None:
            start = len(self._order) - 1
        else:
            pos = self._pos.get(after)
            if pos is None:
                raise ApiError(
                    404, f"No batch found with id '{after}'.", param="after", code="not_found"
                )
            start = pos - 1
        cutoff = self.emulator.now() - self.emulator.faults.list_lag_seconds
        picked: list[BatchRecord] = []
        has_more = False
        for i in range(start, -1, -1):
            batch = self.batches[self._order[i]]
            if batch.created_at > cutoff:
                continue  # not in the list index yet (``list_lag_seconds``)
            if len(picked) == limit:
                has_more = True
                break
            picked.append(batch)
        data = [self.wire(b) for b in picked]
        return ListPage(
            data=data,
            first_id=data[0].id if data else None,
            last_id=data[-1].id if data else None,
            has_more=has_more,
        )

    # -- results ----------------------------------------------------------------------------

    def _materialize(self, batch: BatchRecord, now: float) -> None:
        batch.materialized = True
        self._unsettled.pop(batch.id, None)
        status = batch.status(now)
        if status == "failed":
            return
        seed = self.emulator.config.seed
        shuffle = (
            random.Random(f"{seed}:{batch.id}") if self.emulator.config.shuffle_output else None
        )
        files = build_result_files(
            batch,
            done=batch.done(now),
            unrun="cancelled" if status == "cancelled" else "expired",
            created=int(now),
            new_id=self.emulator.new_id,
            shuffle=shuffle,
        )
        if files.output and not batch.no_output:
            output = self.emulator.malformed(files.output, batch.id)
            batch.output_file_id = self.files.add_file(
                f"{batch.id}_output.jsonl", "batch_output", output
            ).id
        if files.errors:
            batch.error_file_id = self.files.add_file(
                f"{batch.id}_error.jsonl", "batch_output", files.errors
            ).id
        self.emulator.raw_stats.billing.update(files.succeeded)

    def settle(self) -> None:
        """Build the result files (and bill) of every batch that is terminal by now."""
        now = self.emulator.now()
        for batch in list(self._unsettled.values()):
            if batch.terminal(now):
                self._materialize(batch, now)

    def input_lines(self, batch_id: str) -> list[InputLine]:
        """The parsed input lines of a batch (for tests)."""
        return self.get_batch(batch_id).lines
