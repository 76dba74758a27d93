"""Emulator knobs: batch timing, fault rates and rate limits, plus the pure logic that applies them.

Everything here is free of aiohttp: ``EmulatorConfig`` (timing + ``Faults`` + seed) is a frozen
``msgspec.Struct`` so it can be dumped, loaded from ``--config`` JSON and replaced at runtime;
``TokenBucket`` is a request-rate limiter on the emulator's quota clock (real seconds);
``pick_fault`` draws one request's fault and ``draw_line_codes`` the outcome of each line of a
file-based batch (OpenAI, Together) from seeded ``FaultStreams``; ``plan_timeline`` fixes such
a batch's lifecycle at create.

Fault draws are stratified, not independent coin flips: a kind at rate ``r`` fires once in each
window of ``1/r`` draws, at a random place in it, so any ``n`` requests (or lines) see ``n * r``
faults of that kind give or take one. A user testing a 10% fault on 20 requests sees two.
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
    "FaultStream",
    "FaultStreams",
    "Faults",
    "RateLimit",
    "Timeline",
    "TokenBucket",
    "done_when_expired",
    "draw_line_codes",
    "format_duration",
    "malform_lines",
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
    """A request-rate limit: ``requests`` per ``per_seconds`` (default 60).

    The bucket holds ``requests`` tokens and refills continuously. Its seconds are real ones:
    those of the clock the emulator was given, plus ``advance`` jumps, never the time scale of
    batch lifecycles (``EmulatorClock.quota_clock``), as a provider counts its limits per real
    minute. The ``x-ratelimit-*`` headers and the ``retry-after`` of its 429s are in the same
    seconds, so a client pacing on its own clock paces at the bucket's rate.
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
        retry_after_seconds: ``retry-after`` sent with storm 429s (may be large, e.g. 300),
            in the client's (real) seconds like a bucket's.
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
        late_create_rate: chance a batch create is *late*: the server takes the request, waits
            ``late_create_seconds``, only then makes the batch and answers. A client that gave
            up before never hears of the batch, which exists all the same.
        late_create_seconds: how late a late create is, default 30.
        list_lag_seconds: batches stay out of list answers for this long after their creation
            (retrieve by id still finds them), default 0.
        clock_offset_seconds: the server's clock runs this far ahead (negative: behind) of the
            emulator clock: ``created_at`` and every other timestamp, and the ``Date`` header.
        advertise_rate_limits: send ``x-ratelimit-*`` headers (default True); False: a 429
            says nothing about the limit, only ``retry-after-ms``/``retry-after``.
        send_retry_after: send ``retry-after-ms``/``retry-after`` on 429s (default True).
        malformed_output_rate: chance an output line is cut in half (invalid JSON) in OpenAI,
            Azure and Together output files and Anthropic results.
        counter_lag_seconds: TELUS ``total_jobs``/``completed_jobs`` count a job only this long
            after it was posted, default 0.
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
    late_create_rate: float = 0.0
    late_create_seconds: float = 30.0
    list_lag_seconds: float = 0.0
    clock_offset_seconds: float = 0.0
    advertise_rate_limits: bool = True
    send_retry_after: bool = True
    malformed_output_rate: float = 0.0
    counter_lag_seconds: float = 0.0


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
    """A continuously refilling bucket of ``limit.requests`` tokens on ``clock.monotonic``
    (the emulator passes its ``quota_clock``: real seconds, not the time scale)."""

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


#: Events of one kind that may wait behind higher kinds.
_MAX_DEFERRED: Final = 8


@final
class FaultStream:
    """Stratified draws at one rate: the ``k``-th event falls at a uniformly random draw of the
    ``k``-th window of ``1/rate`` draws, so the first ``n`` draws hold ``n * rate`` events give
    or take one, and which draws they are still varies with the seed.

    Args:
        rate: the chance per draw, in [0, 1].
        rng: the seeded RNG that places each event in its window.
    """

    __slots__ = ("_k", "_n", "_next", "_rng", "rate")

    def __init__(self, rate: float, rng: random.Random) -> None:
        self.rate = rate
        self._rng = rng
        self._n = 0
        self._k = 0
        self._next = math.floor(rng.random() / rate) if rate > 0.0 else -1

    def fire(self) -> bool:
        """Whether this draw is an event."""
        if self.rate <= 0.0:
            return False
        hit = self._n >= self._next
        if hit:
            self._k += 1
            place = math.floor((self._k + self._rng.random()) / min(1.0, self.rate))
            self._next = max(self._n + 1, place)
        self._n += 1
        return hit


@final
class FaultStreams:
    """One ``FaultStream`` per fault kind, each seeded from ``seed`` and the kind's name, and
    restarted when its rate changes.

    Args:
        seed: the emulator's seed (plus a salt per use).
    """

    __slots__ = ("_deferred", "_seed", "_streams", "rng")

    def __init__(self, seed: int | str) -> None:
        self._seed = seed
        self._streams: dict[str, FaultStream] = {}
        #: Events drawn but not served yet, by kind.
        self._deferred: dict[str, int] = {}
        #: For the choices made once a fault fired (which 5xx, 500 or 429...).
        self.rng = random.Random(f"{seed}:choices")

    def draw(self, kind: str, rate: float) -> bool:
        """One draw of ``kind`` at ``rate``."""
        if rate <= 0.0:
            return False
        stream = self._streams.get(kind)
        if stream is None or stream.rate != rate:
            stream = self._streams[kind] = FaultStream(rate, random.Random(f"{self._seed}:{kind}"))
        return stream.fire()

    def first(self, kinds: tuple[tuple[str, float], ...]) -> str | None:
        """Draw every kind once; the first kind (in the given order of precedence) with an event
        due. Events that lose to a higher kind wait for the next calls, so every kind keeps its
        rate while the rates add up to at most 1."""
        for kind, rate in kinds:
            if self.draw(kind, rate):  # (at most a few wait: rates above 1 in all saturate)
                self._deferred[kind] = min(_MAX_DEFERRED, self._deferred.get(kind, 0) + 1)
            elif rate <= 0.0:
                self._deferred.pop(kind, None)
        for kind, _ in kinds:
            if self._deferred.get(kind, 0) > 0:
                self._deferred[kind] -= 1
                return kind
        return None


def pick_fault(faults: Faults, streams: FaultStreams) -> Fault:
    """Draw the fault for one request: at most one, in a fixed order of precedence."""
    chosen = streams.first(
        (
            ("storm429", faults.storm_429_rate),
            ("reset", faults.reset_rate),
            ("5xx", faults.error_5xx_rate),
            ("html502", faults.html_502_rate),
            ("truncate", faults.truncate_rate),
            ("slow", faults.slow_rate),
        )
    )
    return "none" if chosen is None else chosen  # type: ignore[return-value]


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


def draw_line_codes(n: int, config: EmulatorConfig, streams: FaultStreams) -> bytes:
    """The outcome code of each of ``n`` lines, drawn from the line fault rates.

    Args:
        n: how many lines the batch has.
        config: the emulator configuration (its ``faults`` give the rates).
        streams: the emulator's line fault streams (untouched when both rates are zero).
    """
    retry, fatal = config.faults.line_retryable_rate, config.faults.line_fatal_rate
    if retry <= 0.0 and fatal <= 0.0:
        return bytes(n)
    codes = bytearray(n)
    for i in range(n):
        chosen = streams.first((("line_retryable", retry), ("line_fatal", fatal)))
        if chosen == "line_retryable":
            codes[i] = LINE_RETRY_500 if streams.rng.random() < 0.5 else LINE_RETRY_429
        elif chosen == "line_fatal":
            codes[i] = LINE_FATAL
    return bytes(codes)


def malform_lines(data: bytes, rate: float, rng: random.Random) -> bytes:
    """``data`` (JSONL) with each line cut in half (invalid JSON) with chance ``rate``.

    Args:
        data: the lines, each ending with ``\\n``.
        rate: the chance per line; 0 returns ``data`` untouched (and draws nothing).
        rng: the seeded RNG of this file.
    """
    if rate <= 0.0 or not data:
        return data
    out = bytearray()
    stream = FaultStream(rate, rng)
    for line in data.splitlines(keepends=True):
        if stream.fire():
            body = line.rstrip(b"\n")
            out += body[: len(body) // 2] + b"\n"
        else:
            out += line
    return bytes(out)
