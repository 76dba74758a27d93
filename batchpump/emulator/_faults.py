"""Emulator knobs: batch timing, fault rates and rate limits, plus the pure logic that applies them.

Everything here is free of aiohttp: ``EmulatorConfig`` (timing + ``Faults`` + seed) is a frozen
``msgspec.Struct`` so it can be dumped, loaded from ``--config`` JSON and replaced at runtime;
``TokenBucket`` is a request-rate limiter on the emulator's ``Clock``; ``pick_fault`` draws one
request's fault and ``draw_line_codes`` the outcome of each line of a file-based batch (OpenAI,
Together) from the seeded RNGs; ``plan_timeline`` fixes such a batch's lifecycle at create.
"""

from __future__ import annotations

import math
import random
from typing import Final, Literal, NamedTuple, TypeAlias, final

import msgspec

from .._clock import Clock

__all__ = [
    "DEFAULT_CANCEL_SECONDS",
    "DEFAULT_FINALIZE_SECONDS",
    "DEFAULT_RUN_SECONDS",
    "DEFAULT_VALIDATE_SECONDS",
    "LINE_FATAL",
    "LINE_OK",
    "LINE_RETRY_429",
    "LINE_RETRY_500",
    "EmulatorConfig",
    "Fault",
    "Faults",
    "RateLimit",
    "Timeline",
    "TokenBucket",
    "done_when_expired",
    "draw_line_codes",
    "format_duration",
    "pick_fault",
    "plan_timeline",
]


DEFAULT_VALIDATE_SECONDS: Final = 2.0
DEFAULT_RUN_SECONDS: Final = 10.0
DEFAULT_FINALIZE_SECONDS: Final = 2.0
DEFAULT_CANCEL_SECONDS: Final = 2.0

#: What one request gets instead of (or on top of) a normal answer.
Fault: TypeAlias = Literal["none", "storm429", "5xx", "html502", "reset", "slow", "truncate"]


class RateLimit(msgspec.Struct, frozen=True, kw_only=True):
    """A request-rate limit: ``requests`` per ``per_seconds`` (emulator-clock seconds, default 60).

    The bucket holds ``requests`` tokens and refills continuously.
    """

    requests: int
    per_seconds: float = 60.0

    def __post_init__(self) -> None:
        if self.requests < 1 or self.per_seconds <= 0:
            raise ValueError("RateLimit needs requests >= 1 and per_seconds > 0")


class Faults(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Fault knobs. Rates are probabilities in [0, 1] drawn per request (or per line).

    Attributes:
        rate_limits: request-rate limit per endpoint class (``upload``, ``create``, ``poll``,
            ``download``, ``item``); a class not listed is unlimited.
        storm_429_rate: chance a request gets a 429 regardless of the bucket.
        retry_after_seconds: ``retry-after`` sent with storm 429s (may be large, e.g. 300).
        error_5xx_rate: chance of a JSON 500/502/503.
        html_502_rate: chance of an HTML 502 page, as a proxy would send it.
        reset_rate: chance the connection is aborted before the request is handled.
        reset_after_create_rate: chance the connection is aborted *after* a batch was created
            (the case clients must reconcile by listing).
        slow_rate: chance the answer is delayed by ``slow_seconds`` (emulator-clock seconds).
        slow_seconds: the delay of a slow answer, default 5.
        truncate_rate: chance the body is cut short (Content-Length larger than what is sent).
        line_retryable_rate: chance a line fails with a retryable 500 or 429.
        line_fatal_rate: chance a line fails with a non-retryable 400.
        expire: batches expire at ``expires_at`` instead of completing.
        expire_done_fraction: fraction of lines done when a batch expires, default 0.5.
        completed_without_output: completed batches report ``output_file_id: null``.
        stuck_finalizing: batches never leave ``finalizing``.
        enqueued_token_limit: enqueued-token quota per model (estimate: bytes / 4); a batch that
            would exceed it fails at validating with ``token_limit_exceeded``. ``None``: no quota.
    """

    rate_limits: dict[str, RateLimit] = msgspec.field(default_factory=dict)
    storm_429_rate: float = 0.0
    retry_after_seconds: float = 1.0
    error_5xx_rate: float = 0.0
    html_502_rate: float = 0.0
    reset_rate: float = 0.0
    reset_after_create_rate: float = 0.0
    slow_rate: float = 0.0
    slow_seconds: float = 5.0
    truncate_rate: float = 0.0
    line_retryable_rate: float = 0.0
    line_fatal_rate: float = 0.0
    expire: bool = False
    expire_done_fraction: float = 0.5
    completed_without_output: bool = False
    stuck_finalizing: bool = False
    enqueued_token_limit: int | None = None


class EmulatorConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Everything that shapes the emulator's behaviour. Times are emulator-clock seconds.

    Attributes:
        validate_seconds: time in ``validating``, default 2.
        run_seconds: time in ``in_progress``, default 10, plus ``line_seconds`` per line.
        line_seconds: extra running time per input line, default 0.
        finalize_seconds: time in ``finalizing``, default 2.
        cancel_seconds: time in ``cancelling``, default 2.
        shuffle_output: write output/error lines in a seeded random order, default False.
        seed: seed of every random choice (faults, line outcomes, ids), default 0.
        faults: the fault knobs (all off by default).
    """

    validate_seconds: float = DEFAULT_VALIDATE_SECONDS
    run_seconds: float = DEFAULT_RUN_SECONDS
    line_seconds: float = 0.0
    finalize_seconds: float = DEFAULT_FINALIZE_SECONDS
    cancel_seconds: float = DEFAULT_CANCEL_SECONDS
    shuffle_output: bool = False
    seed: int = 0
    faults: Faults = msgspec.field(default_factory=Faults)


@final
class TokenBucket:
    """A continuously refilling bucket of ``limit.requests`` tokens on ``clock.monotonic``."""

    __slots__ = ("_clock", "_stamp", "_tokens", "limit")

    def __init__(self, limit: RateLimit, clock: Clock) -> None:
        self.limit = limit
        self._clock = clock
        self._tokens = float(limit.requests)
        self._stamp = clock.monotonic()

    @property
    def _rate(self) -> float:
        return self.limit.requests / self.limit.per_seconds

    def _refill(self) -> None:
        now = self._clock.monotonic()
        self._tokens = min(
            float(self.limit.requests), self._tokens + (now - self._stamp) * self._rate
        )
        self._stamp = now

    def try_acquire(self) -> bool:
        """Take one token if there is one."""
        self._refill()
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    @property
    def remaining(self) -> int:
        """Whole tokens left."""
        self._refill()
        return int(self._tokens)

    def seconds_until_token(self) -> float:
        """Seconds until one token is available (0 if one is)."""
        self._refill()
        return max(0.0, (1.0 - self._tokens) / self._rate)

    def seconds_until_full(self) -> float:
        """Seconds until the bucket is full again."""
        self._refill()
        return max(0.0, (self.limit.requests - self._tokens) / self._rate)


def format_duration(seconds: float) -> str:
    """Format like OpenAI's ``x-ratelimit-reset-*`` headers (Go durations).

    Examples: ``12ms``, ``1s``, ``6m0s``, ``1h0m0s``.
    """
    if seconds < 1.0:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    hours, rest = divmod(seconds, 3600.0)
    minutes, secs = divmod(rest, 60.0)
    sec_text = f"{secs:.3f}".rstrip("0").rstrip(".")
    if hours:
        return f"{int(hours)}h{int(minutes)}m{sec_text}s"
    if minutes:
        return f"{int(minutes)}m{sec_text}s"
    return f"{sec_text}s"


def pick_fault(faults: Faults, rng: random.Random) -> Fault:
    """Draw the fault for one request: at most one, in a fixed order of precedence."""
    for fault, rate in (
        ("storm429", faults.storm_429_rate),
        ("reset", faults.reset_rate),
        ("5xx", faults.error_5xx_rate),
        ("html502", faults.html_502_rate),
        ("truncate", faults.truncate_rate),
        ("slow", faults.slow_rate),
    ):
        if rate > 0.0 and rng.random() < rate:
            return fault  # type: ignore[return-value]
    return "none"


#: How long a batch's completion window lasts, in emulator seconds (24 h).
WINDOW_SECONDS: Final = 86_400.0


def done_when_expired(faults: Faults, lines: int) -> int:
    """How many of ``lines`` finish before an expiring batch's window ends."""
    return math.floor(lines * min(1.0, max(0.0, faults.expire_done_fraction)))


class Timeline(NamedTuple):
    """When a file-based batch (OpenAI, Together) ends and how, fixed at create.

    ``run_end``: when it stops running; ``final_end``: when it reaches its final state (``None``:
    stuck in finalizing); ``done_final``: lines done by then.
    """

    outcome: Literal["completed", "failed", "expired"]
    run_end: float
    final_end: float | None
    done_final: int


def plan_timeline(config: EmulatorConfig, *, now: float, lines: int, failed: bool) -> Timeline:
    """The lifecycle the configuration and its faults give a batch created ``now``."""
    faults = config.faults
    validate_end = now + config.validate_seconds
    if failed:
        return Timeline("failed", validate_end, validate_end, lines)
    if faults.expire:
        run_end = now + WINDOW_SECONDS
        return Timeline("expired", run_end, run_end, done_when_expired(faults, lines))
    run_end = validate_end + config.run_seconds + config.line_seconds * lines
    final_end = None if faults.stuck_finalizing else run_end + config.finalize_seconds
    return Timeline("completed", run_end, final_end, lines)


#: Line outcome codes of a file-based batch (one byte per line).
LINE_OK: Final = 0
LINE_RETRY_500: Final = 1
LINE_RETRY_429: Final = 2
LINE_FATAL: Final = 3


def draw_line_codes(n: int, config: EmulatorConfig, rng: random.Random) -> bytes:
    """The outcome code of each of ``n`` lines, drawn from the line fault rates.

    Args:
        n: how many lines the batch has.
        config: the emulator configuration (its ``faults`` give the rates).
        rng: the emulator's seeded line RNG (untouched when both rates are zero).
    """
    retry, fatal = config.faults.line_retryable_rate, config.faults.line_fatal_rate
    if retry <= 0.0 and fatal <= 0.0:
        return bytes(n)
    codes = bytearray(n)
    for i in range(n):
        x = rng.random()
        if x < retry:
            codes[i] = LINE_RETRY_500 if rng.random() < 0.5 else LINE_RETRY_429
        elif x < retry + fatal:
            codes[i] = LINE_FATAL
        else:
            codes[i] = LINE_OK
    return bytes(codes)
