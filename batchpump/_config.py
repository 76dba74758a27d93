"""Every option object, and their defaults.

Every default is a ``DEFAULT_*`` constant here, so the docs, the CLI and the code agree.
Options are ``msgspec.Struct(frozen=True)``: they validate themselves (an invalid value raises
``UsageError``), have a readable repr, and encode into the journal with the run. ``RunOptions``
holds one run's options; ``RetryPolicy``, ``PollPolicy`` and ``Limits`` group related knobs.
"""

from __future__ import annotations

from typing import Final, Literal, TypeAlias

import msgspec

from ._errors import UsageError

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_MAX_ATTEMPTS",
    "Limits",
    "OnInvalid",
    "PollPolicy",
    "Price",
    "RetryPolicy",
    "RunOptions",
]

OnInvalid: TypeAlias = Literal["raise", "skip"]

DEFAULT_MAX_ATTEMPTS: Final = 3
DEFAULT_CONCURRENCY: Final = 8
DEFAULT_COMPLETION_WINDOW: Final = "24h"

# Retries of one HTTP call (stamina's names).
DEFAULT_RETRY_ATTEMPTS: Final = 8
DEFAULT_RETRY_TIMEOUT: Final = 900.0
DEFAULT_WAIT_INITIAL: Final = 0.5
DEFAULT_WAIT_MAX: Final = 30.0
DEFAULT_WAIT_JITTER: Final = 0.25
DEFAULT_WAIT_EXP_BASE: Final = 2.0
DEFAULT_REQUEST_TIMEOUT: Final = 120.0
#: Seconds one call may spend waiting on rate limits (429s) before it gives up.
DEFAULT_RATE_LIMIT_TIMEOUT: Final = 3600.0
#: Seconds the engine keeps looking for the batch of a create whose answer never came.
DEFAULT_CREATE_SETTLE: Final = 300.0

# Polling.
DEFAULT_POLL_MIN: Final = 0.5
DEFAULT_POLL_MAX: Final = 60.0
DEFAULT_LATENCY_SHARE: Final = 0.01
DEFAULT_LATENCY_FLOOR: Final = 1.0
DEFAULT_SWEEP_SHARE: Final = 0.5
DEFAULT_FINALIZING_TIMEOUT: Final = 2 * 3600.0
DEFAULT_MISSING_OUTPUT_GRACE: Final = 300.0
DEFAULT_CANCELLING_TIMEOUT: Final = 3600.0


def _positive(name: str, value: float, *, zero_ok: bool = False) -> None:
    if value < 0 or (value == 0 and not zero_ok):
        raise UsageError(f"{name} must be {'>= 0' if zero_ok else '> 0'}, got {value!r}")


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """How one HTTP call is retried (408/409/429/5xx and connection errors).

    The wait before retry ``n`` (0-based) is ``min(wait_initial * wait_exp_base**n, wait_max)``
    reduced by up to ``wait_jitter`` (a fraction), unless the provider said how long to wait.

    Attributes:
        attempts: tries in total, the first included.
        timeout: seconds all tries of one call may take together; ``None`` for no bound.
        request_timeout: seconds one try may take.
        rate_limit_timeout: seconds one call may spend waiting on rate limits (429 answers),
            counted from its first 429; ``None`` for no bound. A 429 is a pace signal: it
            never spends ``attempts``, and the time waited on it does not count against
            ``timeout``.
        create_settle: after a create whose answer never came (timeout, reset, 408, 409,
            5xx after the body was sent), the engine keeps looking for the batch by its tag
            this many seconds before it creates again (the provider may make it late).
    """

    attempts: int = DEFAULT_RETRY_ATTEMPTS
    timeout: float | None = DEFAULT_RETRY_TIMEOUT
    wait_initial: float = DEFAULT_WAIT_INITIAL
    wait_max: float = DEFAULT_WAIT_MAX
    wait_jitter: float = DEFAULT_WAIT_JITTER
    wait_exp_base: float = DEFAULT_WAIT_EXP_BASE
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    rate_limit_timeout: float | None = DEFAULT_RATE_LIMIT_TIMEOUT
    create_settle: float = DEFAULT_CREATE_SETTLE

    def __post_init__(self) -> None:
        if self.rate_limit_timeout is not None:
            _positive("rate_limit_timeout", self.rate_limit_timeout, zero_ok=True)
        _positive("create_settle", self.create_settle, zero_ok=True)
        if self.attempts < 1:
            raise UsageError(f"attempts must be >= 1, got {self.attempts!r}")
        _positive("wait_initial", self.wait_initial, zero_ok=True)
        _positive("wait_max", self.wait_max, zero_ok=True)
        _positive("request_timeout", self.request_timeout)
        if not 0 <= self.wait_jitter <= 1:
            raise UsageError(f"wait_jitter must be within [0, 1], got {self.wait_jitter!r}")
        if self.wait_exp_base < 1:
            raise UsageError(f"wait_exp_base must be >= 1, got {self.wait_exp_base!r}")

    @classmethod
    def no_wait(cls, attempts: int = DEFAULT_RETRY_ATTEMPTS) -> RetryPolicy:
        """A policy that retries at once: for tests (stamina's ``set_testing``)."""
        return cls(
            attempts=attempts, wait_initial=0.0, wait_max=0.0, wait_jitter=0.0, create_settle=0.0
        )


class PollPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """How in-flight batches are polled.

    After each sweep the next one is planned from every tracked batch (``_engine.predict``):

    - a batch is swept again within ``max(latency_floor, latency_share * age)`` of the last
      sweep (``age``: seconds since it was created or adopted), and never later than its own
      age, so a new batch is seen at ``interval_min``, then 1 s, 2 s, 3 s... and a batch that
      took an hour is seen within 36 s of finishing;
    - a running batch whose ``completed + failed`` counters grew is expected to finish when
      they reach ``total`` at the rate they grew (plus the finalizing time the run's earlier
      batches took), and one without progress when the run's completed batches took as long;
      the next sweep follows the earliest expected finish, then backs off from it by doubling;
    - near a deadline the interval is at most a quarter of the time to (or since) the nearest
      tracked batch's ``expires_at``: it starts shrinking within ``4 * interval_max`` of it and
      is ``interval_min`` within ``4 * interval_min`` either side.

    The result is kept within ``[interval_min, interval_max]``. Cost is bounded too: sweeps
    take at most ``sweep_share`` of the time (a sweep that lasted ``T`` is followed by a rest
    of at least ``T * (1 - sweep_share) / sweep_share``). A sweep's requests leave one after
    another through the poll class's rate gate, so while it lasts they run at most at that
    class's rate, and on average at most at ``sweep_share`` of it.

    Attributes:
        interval_min: the shortest time between two sweeps' starts (the first sweep after a
            create comes this long after the one before, and near a deadline this often).
        interval_max: the longest time between sweeps while batches are in flight.
        latency_share: the share of a batch's age it may stay unseen after it finished.
        latency_floor: ...but it may always stay unseen this long (seconds).
        sweep_share: the share of time (and so of the poll class's rate) sweeps may take,
            in ``(0, 1]``.
        finalizing_timeout: a batch in ``finalizing`` longer than this is not trusted: it is
            cancelled where possible and its unfinished lines resubmitted.
        missing_output_grace: a ``completed`` batch with no result files is re-read for this
            long before its lines are treated as unfinished.
        cancelling_timeout: a batch still ``cancelling`` this long after it was first seen so
            is given up on: reported (``RunStatistics.stuck_cancelling``) and collected as
            cancelled, not polled forever.
    """

    interval_min: float = DEFAULT_POLL_MIN
    interval_max: float = DEFAULT_POLL_MAX
    latency_share: float = DEFAULT_LATENCY_SHARE
    latency_floor: float = DEFAULT_LATENCY_FLOOR
    sweep_share: float = DEFAULT_SWEEP_SHARE
    finalizing_timeout: float = DEFAULT_FINALIZING_TIMEOUT
    missing_output_grace: float = DEFAULT_MISSING_OUTPUT_GRACE
    cancelling_timeout: float = DEFAULT_CANCELLING_TIMEOUT

    def __post_init__(self) -> None:
        _positive("interval_min", self.interval_min, zero_ok=True)
        if self.interval_max < self.interval_min:
            raise UsageError("interval_max must be >= interval_min")
        _positive("latency_share", self.latency_share, zero_ok=True)
        _positive("latency_floor", self.latency_floor, zero_ok=True)
        if not 0 < self.sweep_share <= 1:
            raise UsageError(f"sweep_share must be in (0, 1], got {self.sweep_share!r}")
        _positive("finalizing_timeout", self.finalizing_timeout, zero_ok=True)
        _positive("missing_output_grace", self.missing_output_grace, zero_ok=True)
        _positive("cancelling_timeout", self.cancelling_timeout, zero_ok=True)


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """Rate and concurrency per endpoint class, for one provider client.

    Rates are requests per second (``None``: only learned from the provider's 429s and
    headers). Concurrency is the number of calls of that class in flight at once.
    """

    upload_rate: float | None = None
    create_rate: float | None = None
    poll_rate: float | None = None
    download_rate: float | None = None
    item_rate: float | None = None
    upload_concurrency: int = DEFAULT_CONCURRENCY
    create_concurrency: int = DEFAULT_CONCURRENCY
    poll_concurrency: int = 2
    download_concurrency: int = 4
    item_concurrency: int = 16

    def __post_init__(self) -> None:
        for name in ("upload_rate", "create_rate", "poll_rate", "download_rate", "item_rate"):
            value = getattr(self, name)
            if value is not None:
                _positive(name, value)
        for name in (
            "upload_concurrency",
            "create_concurrency",
            "poll_concurrency",
            "download_concurrency",
            "item_concurrency",
        ):
            if getattr(self, name) < 1:
                raise UsageError(f"{name} must be >= 1")


class Price(msgspec.Struct, frozen=True, kw_only=True):
    """What one model's tokens cost, in the user's currency per million tokens.

    batchpump ships no prices: they change, and batch discounts differ by provider. The CLI
    reads them from ``--prices FILE`` (``{"gpt-4o-mini": {"input": 0.075, "output": 0.3}}``).
    """

    input: float = 0.0
    output: float = 0.0

    def __post_init__(self) -> None:
        _positive("input", self.input, zero_ok=True)
        _positive("output", self.output, zero_ok=True)


class RunOptions(msgspec.Struct, frozen=True, kw_only=True):
    """The options of one run that the engine needs (stored with the run in the journal).

    Attributes:
        endpoint: the provider endpoint every line targets (``/v1/chat/completions``).
        max_attempts: tries per line before a retryable failure becomes final.
        on_invalid: ``"raise"`` stops on bad input before anything is sent; ``"skip"`` turns
            bad lines into ``Rejected`` results.
        max_lines: most lines per shard (``None``: the provider's limit).
        max_bytes: most bytes per shard (``None``: the provider's limit).
        token_budget: most estimated enqueued tokens per model in flight at once (``None``:
            no client-side budget; the provider's queue-limit failures are still requeued).
        submit_concurrency: shard attempts being uploaded/created at once.
        collect_concurrency: finished batches being downloaded at once.
        poll: how in-flight batches are polled.
        retry: backoff between engine-level retries (creates after an ambiguous failure,
            downloads); each HTTP call also retries on its own inside the provider client.
        requeue_wait: seconds before a batch that hit a provider queue limit is tried again
            (doubled per requeue, capped at 16x).
        keep_shards: keep the run's shard files (copies of its input) after it finishes;
            by default they are removed once every result is committed.
        prices: price per million tokens by model name, for the cost in the statistics.
    """

    endpoint: str = "/v1/chat/completions"
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    on_invalid: OnInvalid = "raise"
    max_lines: int | None = None
    max_bytes: int | None = None
    token_budget: int | None = None
    submit_concurrency: int = 8
    collect_concurrency: int = 4
    poll: PollPolicy = msgspec.field(default_factory=PollPolicy)
    retry: RetryPolicy = msgspec.field(default_factory=RetryPolicy)
    requeue_wait: float = 60.0
    keep_shards: bool = False
    prices: dict[str, Price] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise UsageError(f"max_attempts must be >= 1, got {self.max_attempts!r}")
        if self.submit_concurrency < 1 or self.collect_concurrency < 1:
            raise UsageError("submit_concurrency and collect_concurrency must be >= 1")
        if self.token_budget is not None and self.token_budget < 1:
            raise UsageError("token_budget must be positive or None")
