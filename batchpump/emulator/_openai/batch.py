"""One OpenAI batch in the emulator: input validation and the lazily computed lifecycle.

Nothing runs in the background. A batch stores its timeline (``validate_end``, ``run_end``,
``final_end``) and its line outcomes at create; status, progress counts and timestamps are
computed from the clock on each read, so 20,000 live batches cost nothing between reads.

Lines run in input order at an even pace between ``validate_end`` and ``run_end``; line ``i``
is done once ``done(t) > i``.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from typing import Final, Literal, TypeAlias, final

import msgspec

from .._faults import LINE_FATAL, LINE_OK
from .._script import LineOutcome
from .wire import BatchErrorObject, BatchErrors, BatchObject, RequestCounts

__all__ = [
    "MAX_LINES",
    "BatchRecord",
    "InputLine",
    "Outcome",
    "parse_input",
    "script_codes",
]

MAX_LINES: Final = 50_000
_MAX_ERRORS: Final = 100


Outcome: TypeAlias = Literal["completed", "failed", "expired"]


_NO_BODY: Final = msgspec.Raw(b"")


class InputLine(msgspec.Struct, kw_only=True):
    """One input line (``BatchRequestInput``); the body stays raw."""

    custom_id: str | None = None
    method: str | None = None
    url: str | None = None
    body: msgspec.Raw = msgspec.field(default_factory=lambda: _NO_BODY)


class _BodyModel(msgspec.Struct):
    model: str | None = None


_line_decoder: Final = msgspec.json.Decoder(InputLine)
_model_decoder: Final = msgspec.json.Decoder(_BodyModel)


def parse_input(
    data: bytes, endpoint: str, *, azure: bool = False
) -> tuple[list[InputLine], list[BatchErrorObject], str | None]:
    """Validate an input file as the batch's validating step does.

    With ``azure``, a line's ``url`` may name the endpoint with or without ``/v1``
    (``/chat/completions`` is the form Azure's docs show).

    Returns the lines, the errors (codes from the live API: ``invalid_json_line``,
    ``duplicate_custom_id``, ``url_mismatch``, ``model_mismatch``, ``empty_file``,
    ``too_many_tasks``; at most 100) and the model the lines target.
    """
    raw_lines = data.split(b"\n")
    while raw_lines and not raw_lines[-1].strip():
        raw_lines.pop()
    errors: list[BatchErrorObject] = []
    if not raw_lines:
        return [], [BatchErrorObject(code="empty_file", message="The input file is empty.")], None
    if len(raw_lines) > MAX_LINES:
        msg = f"The input file contains {len(raw_lines)} requests; the limit is {MAX_LINES}."
        return [], [BatchErrorObject(code="too_many_tasks", message=msg)], None
    lines: list[InputLine] = []
    seen: set[str] = set()
    model: str | None = None
    for number, raw in enumerate(raw_lines, start=1):
        if len(errors) >= _MAX_ERRORS:
            break
        try:
            line = _line_decoder.decode(raw)
            probe = _model_decoder.decode(line.body) if line.body else _BodyModel()
        except msgspec.DecodeError:
            errors.append(_line_error("invalid_json_line", number))
            continue
        if line.custom_id is None or line.method is None or line.url is None or not line.body:
            errors.append(_line_error("invalid_json_line", number))
            continue
        if line.custom_id in seen:
            msg = f"The custom_id '{line.custom_id}' is used more than once in this batch."
            errors.append(BatchErrorObject(code="duplicate_custom_id", message=msg, line=number))
        seen.add(line.custom_id)
        if line.url != endpoint and not (azure and _same_endpoint(line.url, endpoint)):
            msg = f"The url '{line.url}' does not match the batch endpoint '{endpoint}'."
            errors.append(BatchErrorObject(code="url_mismatch", message=msg, line=number))
        if probe.model is not None:
            if model is None:
                model = probe.model
            elif probe.model != model:
                msg = f"The model '{probe.model}' differs from '{model}' used by earlier lines."
                errors.append(BatchErrorObject(code="model_mismatch", message=msg, line=number))
        lines.append(line)
    return lines, errors, model


def _same_endpoint(a: str, b: str) -> bool:
    return a.removeprefix("/v1") == b.removeprefix("/v1")


def script_codes(
    lines: list[InputLine], codes: bytes, outcomes: dict[str, LineOutcome]
) -> tuple[bytes, dict[int, LineOutcome]]:
    """The line codes with scripted failures applied, and the scripted outcome per line index."""
    if not outcomes:
        return codes, {}
    marked = bytearray(codes)
    scripted: dict[int, LineOutcome] = {}
    for i, line in enumerate(lines):
        outcome = outcomes.get(line.custom_id or "")
        if outcome is not None:
            marked[i] = LINE_FATAL
            scripted[i] = outcome
    return bytes(marked), scripted


def _line_error(code: str, number: int) -> BatchErrorObject:
    return BatchErrorObject(
        code=code, message="This line is not parseable as valid JSON.", line=number
    )


def _ts(value: float | None) -> int | None:
    return None if value is None else int(value)


@final
class BatchRecord:
    """A batch's fixed timeline and outcomes; everything else is derived from the clock."""

    __slots__ = (
        "cancel_at",
        "cancel_end",
        "codes",
        "created_at",
        "done_final",
        "endpoint",
        "error_file_id",
        "errors",
        "expires_at",
        "fail_idx",
        "final_end",
        "id",
        "input_file_id",
        "lines",
        "materialized",
        "metadata",
        "model",
        "no_output",
        "outcome",
        "output_file_id",
        "run_end",
        "scripted",
        "tokens",
        "validate_end",
    )

    def __init__(
        self,
        *,
        id: str,
        endpoint: str,
        input_file_id: str,
        metadata: dict[str, str] | None,
        model: str | None,
        created_at: float,
        validate_end: float,
        run_end: float,
        final_end: float | None,
        outcome: Outcome,
        lines: list[InputLine],
        codes: bytes,
        done_final: int,
        errors: list[BatchErrorObject],
        no_output: bool,
        tokens: int,
        scripted: dict[int, LineOutcome] | None = None,
    ) -> None:
        self.id = id
        self.endpoint = endpoint
        self.input_file_id = input_file_id
        self.metadata = metadata
        self.model = model
        self.created_at = created_at
        self.expires_at = created_at + 86_400.0
        self.validate_end = validate_end
        self.run_end = run_end
        self.final_end = final_end
        self.outcome: Outcome = outcome
        self.lines = lines
        self.codes = codes
        self.fail_idx = [i for i, c in enumerate(codes) if c != LINE_OK]
        self.done_final = done_final
        self.errors = errors
        self.no_output = no_output
        self.tokens = tokens
        #: Scripted per-line failures by line index (``outcome`` rules).
        self.scripted: dict[int, LineOutcome] = scripted or {}
        self.cancel_at: float | None = None
        self.cancel_end: float | None = None
        self.materialized = False
        self.output_file_id: str | None = None
        self.error_file_id: str | None = None

    def status(self, t: float) -> str:
        """The raw OpenAI status at clock time ``t``."""
        if self.cancel_at is not None and t >= self.cancel_at:
            assert self.cancel_end is not None
            return "cancelled" if t >= self.cancel_end else "cancelling"
        if t < self.validate_end:
            return "validating"
        if self.outcome == "failed":
            return "failed"
        if t < self.run_end:
            return "in_progress"
        if self.outcome == "expired":
            return "expired"
        if self.final_end is None or t < self.final_end:
            return "finalizing"
        return "completed"

    def done(self, t: float) -> int:
        """Lines run by clock time ``t`` (frozen at cancel time)."""
        if self.cancel_at is not None:
            t = min(t, self.cancel_at)
        if self.outcome == "failed" or t < self.validate_end:
            return 0
        span = self.run_end - self.validate_end
        frac = 1.0 if span <= 0.0 else min(1.0, (t - self.validate_end) / span)
        return math.floor(self.done_final * frac)

    def counts(self, t: float) -> RequestCounts:
        """``request_counts`` at ``t``: all zero while validating, then executed lines."""
        if t < self.validate_end and (self.cancel_at is None or self.cancel_at > self.validate_end):
            return RequestCounts(total=0, completed=0, failed=0)
        done = self.done(t)
        failed = bisect_left(self.fail_idx, done)
        return RequestCounts(total=len(self.lines), completed=done - failed, failed=failed)

    def cancel(self, t: float, cancel_seconds: float) -> None:
        """Start cancelling at ``t``; ``cancelled`` after ``cancel_seconds``."""
        self.cancel_at = t
        self.cancel_end = t + cancel_seconds

    def terminal(self, t: float) -> bool:
        """Whether the batch is completed, failed, expired or cancelled at ``t``."""
        return self.status(t) in ("completed", "failed", "expired", "cancelled")

    def to_wire(self, t: float) -> BatchObject:
        """The ``Batch`` object at ``t`` (call after the store materialized any result files)."""
        status = self.status(t)
        h = t if self.cancel_at is None else min(t, self.cancel_at)
        ran = self.outcome != "failed" and h >= self.validate_end
        return BatchObject(
            id=self.id,
            endpoint=self.endpoint,
            model=self.model,
            errors=BatchErrors(data=self.errors)
            if self.errors and h >= self.validate_end
            else None,
            input_file_id=self.input_file_id,
            completion_window="24h",
            status=status,
            output_file_id=self.output_file_id,
            error_file_id=self.error_file_id,
            created_at=int(self.created_at),
            in_progress_at=_ts(self.validate_end) if ran else None,
            expires_at=int(self.expires_at),
            finalizing_at=_ts(self.run_end)
            if ran and self.outcome == "completed" and h >= self.run_end
            else None,
            completed_at=_ts(self.final_end) if status == "completed" else None,
            failed_at=_ts(self.validate_end) if status == "failed" else None,
            expired_at=_ts(self.run_end) if status == "expired" else None,
            cancelling_at=_ts(self.cancel_at),
            cancelled_at=_ts(self.cancel_end) if status == "cancelled" else None,
            request_counts=self.counts(t),
            metadata=self.metadata,
        )
