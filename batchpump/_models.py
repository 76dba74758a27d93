"""Wire and disk records shared by every layer: results, batch snapshots, shards.

Everything here is a ``msgspec.Struct`` so it encodes to JSON (results files, journal) and
decodes back without hand-written code. Request and response bodies are ``msgspec.Raw``: their
bytes pass through untouched. New fields get defaults and types never change (msgspec schema
evolution), so old journals and result files stay readable.
"""

from __future__ import annotations

from typing import Final, Literal, TypeAlias

import msgspec

__all__ = [
    "TERMINAL_STATES",
    "BatchError",
    "BatchInfo",
    "BatchState",
    "Canceled",
    "Capabilities",
    "Errored",
    "Expired",
    "Rejected",
    "Result",
    "ResultCounts",
    "RunRecord",
    "RunState",
    "ShardRecord",
    "ShardState",
    "Succeeded",
    "Usage",
]

#: The normalized batch lifecycle. Every provider's raw status maps into it (one table per
#: adapter): ``pending -> running -> finalizing -> completed | failed | expired | cancelled``,
#: with ``cancelling`` on the way to ``cancelled``.
BatchState: TypeAlias = Literal[
    "pending", "running", "finalizing", "completed", "failed", "expired", "cancelling", "cancelled"
]
TERMINAL_STATES: Final[frozenset[str]] = frozenset({"completed", "failed", "expired", "cancelled"})


# ---------------------------------------------------------------------------------------------
# Results: exactly one per input custom_id.


class Usage(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Token usage reported for one line, when the provider gives it."""

    input_tokens: int = 0
    output_tokens: int = 0


class _ResultBase(msgspec.Struct, frozen=True, kw_only=True, tag_field="status"):
    custom_id: str
    batch_id: str | None = None
    attempt: int = 1


class Succeeded(_ResultBase, frozen=True, kw_only=True, tag="succeeded"):
    """The provider ran the request; ``response`` is its body, byte for byte."""

    response: msgspec.Raw
    status_code: int = 200
    usage: Usage | None = None


class Errored(_ResultBase, frozen=True, kw_only=True, tag="errored"):
    """The request failed for good (after ``attempt`` tries).

    ``body`` is the provider's error body when there was one (raw bytes; ``msgspec.UNSET``
    when there was none, a sentinel because msgspec cannot decode ``Raw | None``), ``code`` and
    ``message`` its short form, ``retryable`` whether another attempt could have succeeded.
    """

    code: str
    message: str
    status_code: int | None = None
    body: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    retryable: bool = False


class Expired(_ResultBase, frozen=True, kw_only=True, tag="expired"):
    """The batch's window ran out before the request ran, on the last allowed attempt."""

    message: str = "not run before the batch's completion window ended"


class Canceled(_ResultBase, frozen=True, kw_only=True, tag="canceled"):
    """The run or batch was cancelled before the request ran."""

    message: str = "cancelled before it ran"


class Rejected(_ResultBase, frozen=True, kw_only=True, tag="rejected"):
    """The input line was invalid and never sent (``on_invalid="skip"``)."""

    line: int
    message: str


Result: TypeAlias = Succeeded | Errored | Expired | Canceled | Rejected


class ResultCounts(msgspec.Struct, kw_only=True):
    """How many final results of each kind a run has produced so far."""

    succeeded: int = 0
    errored: int = 0
    expired: int = 0
    canceled: int = 0
    rejected: int = 0

    @property
    def total(self) -> int:
        return self.succeeded + self.errored + self.expired + self.canceled + self.rejected

    def add(self, result: Result) -> None:
        match result:
            case Succeeded():
                self.succeeded += 1
            case Errored():
                self.errored += 1
            case Expired():
                self.expired += 1
            case Canceled():
                self.canceled += 1
            case Rejected():
                self.rejected += 1

    def merge(self, other: ResultCounts) -> None:
        self.succeeded += other.succeeded
        self.errored += other.errored
        self.expired += other.expired
        self.canceled += other.canceled
        self.rejected += other.rejected


# ---------------------------------------------------------------------------------------------
# Provider-side objects, normalized.


class BatchError(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One batch-level error the provider reported (validation, queue limit...)."""

    code: str
    message: str
    line: int | None = None


class BatchInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A provider batch (or job group) as every adapter normalizes it.

    ``raw_status`` keeps the provider's own word; ``state`` is the normalized one. ``tag`` is
    the shard-attempt tag batchpump attached at create (``None`` if the provider cannot carry
    one). ``output_ref``/``error_ref`` name whatever the adapter needs to fetch results.
    ``in_progress_at`` is when the provider started running it (epoch seconds), where it says.
    """

    id: str
    state: BatchState
    raw_status: str
    created_at: float
    tag: str | None = None
    output_ref: str | None = None
    error_ref: str | None = None
    total: int = 0
    completed: int = 0
    failed: int = 0
    errors: tuple[BatchError, ...] = ()
    expires_at: float | None = None
    in_progress_at: float | None = None

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES


class Capabilities(msgspec.Struct, frozen=True, kw_only=True):
    """What a provider adapter can do, declared once so the engine and tests never special-case.

    Attributes:
        cancel: the provider can cancel a batch.
        metadata_tag: ``create`` can attach our shard-attempt tag and listing returns it, so an
            interrupted create is reconciled exactly.
        inline_input: requests travel in the create call (no upload step).
        list_batches: the provider can list batches newest first (sweep polling).
        max_lines: most lines in one batch.
        max_bytes: most input bytes in one batch.
        max_line_bytes: most bytes in one input line.
        custom_id_max_len: longest ``custom_id`` the provider accepts, if it limits it.
        one_model_per_shard: a batch may only target one model (one group: what the
            provider's line checker returns as a line's group, e.g. an item's configuration).

    The shape of a line is not a capability: the provider's ``line_checker`` decides it.
    """

    cancel: bool = True
    metadata_tag: bool = True
    inline_input: bool = False
    list_batches: bool = True
    max_lines: int = 50_000
    max_bytes: int = 200 * 1024 * 1024
    max_line_bytes: int = 200 * 1024 * 1024
    custom_id_max_len: int | None = None
    one_model_per_shard: bool = True


# ---------------------------------------------------------------------------------------------
# Journal records.

RunState: TypeAlias = Literal["sharding", "running", "done", "cancelled", "failed"]

#: A shard attempt's life, written to the journal *before* the action it enables:
#: ``ready`` (file on disk) -> ``uploading`` -> ``uploaded`` (input_ref known) -> ``creating``
#: (tag sent; a crash here is reconciled by listing) -> ``submitted`` (batch_id known) ->
#: ``collecting`` -> ``done``. ``requeued`` attempts were replaced by a later attempt.
ShardState: TypeAlias = Literal[
    "ready", "uploading", "uploaded", "creating", "submitted", "collecting", "done", "requeued"
]


class RunRecord(msgspec.Struct, kw_only=True):
    """One run in the journal."""

    run_id: str
    provider: str
    base_url: str
    endpoint: str
    input_path: str
    out_path: str
    created_at: float
    state: RunState = "sharding"
    total_lines: int = 0
    out_offset: int = 0
    counts: ResultCounts = msgspec.field(default_factory=ResultCounts)
    options: msgspec.Raw = msgspec.field(default_factory=lambda: msgspec.Raw(b"{}"))
    input_hash: str = ""
    #: The provider's own settings that shape what is sent (TELUS ``work_flow_id``...).
    settings: dict[str, str] = msgspec.field(default_factory=dict)
    #: The run that took over ``out_path`` (``overwrite=True``); this run then owns no file.
    out_taken_by: str | None = None
    #: Set before the first cancel request: a resume finishes the cancel.
    cancel_requested: bool = False
    updated_at: float = 0.0
    #: Batches tagged with this run that the journal does not hold (a create answered late, a
    #: second state directory), and how many of them were cancelled before they ran.
    duplicates_found: int = 0
    duplicates_cancelled: int = 0


class ShardRecord(msgspec.Struct, kw_only=True):
    """One shard attempt: a slice of the run's lines that becomes one provider batch.

    ``(run_id, index, attempt)`` is the key. A retry of a shard's unfinished lines is the same
    ``index`` with ``attempt + 1`` and its own file; ``requeues`` counts attempts caused by
    provider queue limits, which do not count against ``max_attempts``.
    """

    run_id: str
    index: int
    attempt: int
    path: str
    lines: int
    bytes: int
    model: str | None = None
    tokens: int = 0
    state: ShardState = "ready"
    input_ref: str | None = None
    batch_id: str | None = None
    tag: str | None = None
    batch_state: BatchState | None = None
    not_before: float = 0.0
    requeues: int = 0
    intent_at: float = 0.0

    @property
    def key(self) -> tuple[int, int]:
        return (self.index, self.attempt)

    @property
    def tries(self) -> int:
        """Attempts that count against ``max_attempts``."""
        return self.attempt - self.requeues
