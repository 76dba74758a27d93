"""The Together emulator's state: its batch jobs, over its files (``TogetherState.files``).

Batch jobs reuse the OpenAI emulator's ``BatchRecord`` timeline (validating, running at an even
pace, a short write-out, expiry, cancel), shown through Together's own face: UPPER-CASE
statuses, ``progress`` in percent, no ``finalizing`` (the write-out is ``IN_PROGRESS`` at 100),
cancel effective at once (``CANCELLED``; the spec has no ``CANCELING``). Lines that never ran
(expired/cancelled jobs) are in neither result file. Every check the live API makes
synchronously raises ``ApiError`` here.
"""

from __future__ import annotations

from typing import Final, final

import msgspec

from .._faults import LINE_FATAL, LINE_OK, draw_line_codes, plan_timeline
from .._openai import BatchErrorObject, BatchRecord, InputLine, response_body, script_codes
from .._routing import ApiError
from .._state import Emulator
from .files import TogetherFileStore, together_uuid
from .wire import ALLOWED_ENDPOINTS, BatchJob, CreateBatchBody, OutputLine
from .wire import rfc3339 as _rfc3339

__all__ = ["MAX_CUSTOM_ID", "MAX_LINES", "TogetherState", "parse_input"]

MAX_LINES: Final = 50_000
MAX_CUSTOM_ID: Final = 64
USER_ID: Final = "user-emulator"
#: Input file names starting with this carry a batchpump shard-attempt tag (``stats.tags``).
TAG_PREFIX: Final = "bp1-"
_LINE_ERRORS: Final = {
    LINE_FATAL: ("invalid_request", "Invalid request (emulated non-retryable line failure)."),
}
_RETRY_ERROR: Final = ("timeout", "The request timed out (emulated retryable line failure).")
_line_decoder: Final = msgspec.json.Decoder(InputLine)
_encoder: Final = msgspec.json.Encoder()


def parse_input(data: bytes) -> tuple[list[InputLine], str | None, str | None]:
    """Validate a batch input file; return its lines, the first problem (or ``None``), model."""
    raw_lines = [raw for raw in data.split(b"\n") if raw.strip()]
    if not raw_lines:
        return [], "The input file is empty.", None
    if len(raw_lines) > MAX_LINES:
        return [], f"The input file has {len(raw_lines)} requests; the limit is {MAX_LINES}.", None
    lines: list[InputLine] = []
    seen: set[str] = set()
    model: str | None = None
    for number, raw in enumerate(raw_lines, start=1):
        try:
            line = _line_decoder.decode(raw)
            body = msgspec.json.decode(line.body) if line.body else None
        except msgspec.DecodeError:
            return [], f"Line {number} is not valid JSON.", None
        if not line.custom_id or not isinstance(body, dict):
            return [], f"Line {number} needs a custom_id and a body object.", None
        if len(line.custom_id) > MAX_CUSTOM_ID:
            return [], f"Line {number}: custom_id is longer than {MAX_CUSTOM_ID} characters.", None
        if line.custom_id in seen:
            return [], f"Line {number}: custom_id '{line.custom_id}' is not unique.", None
        seen.add(line.custom_id)
        model = model or body.get("model")
        lines.append(line)
    return lines, None, model


@final
class TogetherState:
    """The batch jobs of the Together emulator, and the files they read and write."""

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        #: The files (``/files``), by id; batch inputs and results live here.
        self.files = TogetherFileStore(emulator)
        self.batches: dict[str, BatchRecord] = {}
        self.warnings: dict[str, str] = {}
        #: Input size per batch, fixed at create (the input file may be deleted later).
        self._sizes: dict[str, int] = {}
        self._unsettled: dict[str, BatchRecord] = {}

    # -- batches ----------------------------------------------------------------------------

    def create_batch(self, body: CreateBatchBody) -> BatchRecord:
        """``POST /batches``: check the request, then validate the file into a timeline."""
        if body.endpoint is None or body.input_file_id is None:
            missing = "endpoint" if body.endpoint is None else "input_file_id"
            raise ApiError(400, f"{missing} is required")
        if body.endpoint not in ALLOWED_ENDPOINTS:
            raise ApiError(400, f"Unsupported endpoint: {body.endpoint}")
        if body.completion_window not in (None, "24h"):
            raise ApiError(400, f"Unsupported completion_window: {body.completion_window}")
        source = self.files.get(body.input_file_id)
        if source is None or source.data is None:
            raise ApiError(404, f"Input file {body.input_file_id} not found")
        if source.purpose != "batch-api":
            raise ApiError(400, f"Input file {source.id} must have purpose batch-api")
        emu, config = self.emulator, self.emulator.config
        faults, now = config.faults, emu.now()
        lines, problem, model = parse_input(source.data)
        model = body.model_id or model
        tokens = len(source.data) // 4
        limit = faults.enqueued_token_limit
        if problem is None and limit is not None and self._enqueued(model, now) + tokens > limit:
            problem = (
                f"Enqueued token limit reached for {model or 'the model'}: limit {limit:,}"
                " tokens in the queue. Retry once running jobs finish."
            )
        validate_end = now + config.validate_seconds
        plan = plan_timeline(config, now=now, lines=len(lines), failed=problem is not None)
        outcome, run_end, final_end, done_final = plan
        if problem is not None:
            lines, tokens = [], 0
        codes = draw_line_codes(len(lines), config, emu.line_streams)
        outcomes = (
            emu.scripted.outcomes([line.custom_id or "" for line in lines], provider="together")
            if lines and len(emu.scripted)
            else {}
        )
        codes, scripted = script_codes(lines, codes, outcomes)
        batch = BatchRecord(
            id=together_uuid(emu.new_id("batch")),
            endpoint=body.endpoint,
            input_file_id=source.id,
            metadata=None,
            model=model,
            created_at=now,
            validate_end=validate_end,
            run_end=run_end,
            final_end=final_end,
            outcome=outcome,
            lines=lines,
            codes=codes,
            done_final=done_final,
            errors=[BatchErrorObject(code="failed", message=problem)] if problem else [],
            no_output=faults.completed_without_output,
            tokens=tokens,
            scripted=scripted,
        )
        self.batches[batch.id] = batch
        self._sizes[batch.id] = len(source.data)
        self._unsettled[batch.id] = batch
        if body.model_id is None:
            self.warnings[batch.id] = (
                "model_id was not given; the job uses the model named in the input lines."
            )
        stats = emu.raw_stats
        stats.batches_created += 1
        # batchpump names each input file after its shard attempt; other files count by id.
        stats.tags[source.filename if source.filename.startswith(TAG_PREFIX) else source.id] += 1
        return batch

    def _enqueued(self, model: str | None, now: float) -> int:
        return sum(
            b.tokens for b in self.batches.values() if b.model == model and not b.terminal(now)
        )

    def get_batch(self, batch_id: str) -> BatchRecord:
        """The job, or a 404 ``ApiError``."""
        batch = self.batches.get(batch_id)
        if batch is None:
            raise ApiError(404, f"Batch job {batch_id} not found")
        return batch

    def cancel_batch(self, batch_id: str) -> BatchRecord:
        """Cancel a running job at once; 400 when it is already terminal."""
        batch = self.get_batch(batch_id)
        now = self.emulator.now()
        if batch.terminal(now):
            status = self.wire(batch).status
            raise ApiError(400, f"Batch job {batch_id} is {status} and cannot be cancelled")
        batch.cancel(now, 0.0)
        return batch

    def list_batches(self) -> list[BatchJob]:
        """Every job, oldest first: the live API promises no order, so neither do we.

        Jobs younger than ``list_lag_seconds`` are left out (retrieve still finds them).
        """
        cutoff = self.emulator.now() - self.emulator.faults.list_lag_seconds
        return [self.wire(b) for b in self.batches.values() if b.created_at <= cutoff]

    def wire(self, batch: BatchRecord, *, at: float | None = None) -> BatchJob:
        """The ``BatchJob`` now (or ``at``), building its result files on the first terminal
        read."""
        now = self.emulator.now() if at is None else at
        raw = batch.status(now)
        if not batch.materialized and batch.terminal(now):
            self._materialize(batch, now)
        status = {"finalizing": "IN_PROGRESS", "cancelling": "CANCELLED"}.get(raw, raw.upper())
        n = len(batch.lines)
        progress = (
            100.0
            if raw in ("finalizing", "completed")
            else (round(100.0 * batch.done(now) / n, 2) if n else 0.0)
        )
        return BatchJob(
            id=batch.id,
            user_id=USER_ID,
            input_file_id=batch.input_file_id,
            file_size_bytes=self._sizes.get(batch.id, 0),
            status=status,
            job_deadline=_rfc3339(batch.expires_at),
            created_at=_rfc3339(batch.created_at),
            endpoint=batch.endpoint,
            progress=progress,
            model_id=batch.model,
            output_file_id=batch.output_file_id,
            error_file_id=batch.error_file_id,
            error=batch.errors[0].message if batch.errors else None,
            completed_at=_rfc3339(batch.final_end)
            if raw == "completed" and batch.final_end is not None
            else None,
        )

    # -- results ----------------------------------------------------------------------------

    def _materialize(self, batch: BatchRecord, now: float) -> None:
        batch.materialized = True
        self._unsettled.pop(batch.id, None)
        if batch.outcome == "failed" and not batch.lines:
            return
        out, err, buf = bytearray(), bytearray(), bytearray()
        succeeded: list[str] = []
        for i in range(batch.done(now)):
            line = batch.lines[i]
            cid = line.custom_id or ""
            code = batch.codes[i]
            if code == LINE_OK:
                body = response_body(batch.endpoint, bytes(line.body), cid, int(now))
                _encoder.encode_into(OutputLine.ok(cid, _encoder.encode(body)), buf)
                out += buf + b"\n"
                succeeded.append(cid)
            else:
                scripted = batch.scripted.get(i)
                if scripted is not None:
                    error = scripted.error
                    error_code = str(error.get("code", "scripted"))
                    message = str(error.get("message", ""))
                else:
                    error_code, message = _LINE_ERRORS.get(code, _RETRY_ERROR)
                _encoder.encode_into(OutputLine.failed(cid, error_code, message), buf)
                err += buf + b"\n"
        if out and not batch.no_output:
            output = self.emulator.malformed(bytes(out), batch.id)
            batch.output_file_id = self.files.add_file(
                f"{batch.id}-output.jsonl", "batch-generated", output
            ).id
        if err:
            batch.error_file_id = self.files.add_file(
                f"{batch.id}-errors.jsonl", "batch-generated", bytes(err)
            ).id
        self.emulator.raw_stats.billing.update(succeeded)

    def settle(self) -> None:
        """Build the result files (and bill) of every job that is terminal by now."""
        now = self.emulator.now()
        for batch in list(self._unsettled.values()):
            if batch.terminal(now):
                self._materialize(batch, now)
