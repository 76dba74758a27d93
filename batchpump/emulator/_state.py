"""The emulator's shared state: clock, configuration, seeded randomness, buckets, stats.

Provider route modules keep their own state (files, batches...) in a slot of the ``Emulator``
(``provider_state``), so adding a provider never touches this module.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol, TypeVar, final

import msgspec

from .._clock import Clock, SystemClock
from ._faults import EmulatorConfig, Faults, FaultStreams, TokenBucket, malform_lines
from ._requests import RequestLog, RequestRecord
from ._script import Rule, Script
from ._stats import Stats
from ._timeline import EmulatorClock

__all__ = ["Emulator"]

_T = TypeVar("_T")


class _Settles(Protocol):
    def settle(self) -> None: ...


@final
class Emulator:
    """State of one emulator: every provider's objects plus the knobs and counters.

    Emulated time is ``emulated_clock``: it follows ``clock`` and moves further on ``advance``
    (or faster with ``set_time_scale``); batches and expiry run on it. Rate buckets run on
    ``emulated_clock.quota_clock``: ``clock`` plus ``advance``, not the time scale (limits are
    per real second, whatever speed batches move at).

    Args:
        config: timing, seed and faults; default ``EmulatorConfig()`` (no faults).
        clock: the clock batches progress on; default ``SystemClock()``. Tests pass a
            ``ScaledClock`` (fast, real waits) or a ``ManualClock`` (moves on ``advance``; slow
            responses then wait for an advance).
    """

    def __init__(self, *, config: EmulatorConfig | None = None, clock: Clock | None = None) -> None:
        #: The clock given at construction (``emulated_clock`` follows it).
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.emulated_clock = EmulatorClock(self.clock)
        self._config = config if config is not None else EmulatorConfig()
        self._script = Script()
        self._log = RequestLog()
        self._start()

    def _start(self) -> None:
        self.rng = random.Random(self._config.seed)
        self.line_rng = random.Random(self._config.seed + 1)
        #: Stratified fault draws per request kind (see ``FaultStream``).
        self.streams = FaultStreams(self._config.seed)
        #: Stratified fault draws per line kind.
        self.line_streams = FaultStreams(f"{self._config.seed}:lines")
        self._id_rng = random.Random(self._config.seed + 2)
        self._ids = 0
        self._buckets: dict[str, TokenBucket] = {}
        self._stats = Stats()
        self._providers: dict[str, Any] = {}
        self._script.clear()
        self._log.clear()

    # -- control -----------------------------------------------------------------------------

    def reset(self, config: EmulatorConfig | None = None) -> None:
        """Every store, counter, journal entry and scripted rule back to empty.

        The configuration stays unless ``config`` is given; time does not go back.
        """
        if config is not None:
            self._config = config
        self._start()

    def advance(self, seconds: float) -> None:
        """Move emulated time ``seconds`` ahead: batches progress, windows expire, buckets
        refill, and delayed answers waiting on the clock wake."""
        self.emulated_clock.advance(seconds)

    @property
    def time_scale(self) -> float:
        """Emulated seconds per real second."""
        return self.emulated_clock.time_scale

    def set_time_scale(self, scale: float) -> None:
        """From now on, run ``scale`` emulated seconds per real second."""
        self.emulated_clock.set_time_scale(scale)

    def script(self, rules: Iterable[Rule | Mapping[str, Any]]) -> None:
        """Append scripted rules (``Rule`` objects or their JSON dicts), served in order before
        the random fault rates; see ``batchpump.emulator.Rule``.

        Raises:
            ValueError: a dict that is not a valid rule (then none is added).
        """
        self._script.extend(rules)

    @property
    def scripted(self) -> Script:
        """The live scripted rules (``pending()`` shows what is left, ``clear()`` drops them)."""
        return self._script

    @property
    def requests(self) -> RequestLog:
        """The request journal."""
        return self._log

    def record(self, record: RequestRecord) -> None:
        """Journal one answered request (the middleware calls it)."""
        self._log.add(record)

    def verdict(self) -> dict[str, Any]:
        """Creates per tag, tags created twice, lines billed twice, share of 429s, requests per
        route (after settling batches that ended by now)."""
        return self.stats.verdict()

    # -- configuration -----------------------------------------------------------------------

    @property
    def config(self) -> EmulatorConfig:
        """The current configuration (frozen; replace it with ``configure``)."""
        return self._config

    @property
    def faults(self) -> Faults:
        """The current fault knobs."""
        return self._config.faults

    def configure(self, config: EmulatorConfig) -> None:
        """Replace the whole configuration; takes effect on the next request or batch."""
        if config.faults.rate_limits != self._config.faults.rate_limits:
            self._buckets.clear()
        self._config = config

    def set_faults(self, faults: Faults | None = None, /, **changes: Any) -> Faults:
        """Replace the fault knobs (``faults``) or change some of them (``**changes``).

        ``emulator.set_faults(storm_429_rate=1.0)`` starts a storm, ``set_faults(Faults())``
        ends every fault. Returns the new knobs.
        """
        base = faults if faults is not None else self._config.faults
        new = msgspec.structs.replace(base, **changes) if changes else base
        self.configure(msgspec.structs.replace(self._config, faults=new))
        return new

    def bucket(self, endpoint_class: str) -> TokenBucket | None:
        """The request-rate bucket of an endpoint class, or ``None`` when it is unlimited."""
        limit = self._config.faults.rate_limits.get(endpoint_class)
        if limit is None:
            return None
        bucket = self._buckets.get(endpoint_class)
        if bucket is None or bucket.limit != limit:
            quota = self.emulated_clock.quota_clock
            bucket = self._buckets[endpoint_class] = TokenBucket(limit, quota)
        return bucket

    # -- shared helpers ----------------------------------------------------------------------

    def now(self) -> float:
        """The server's wall time (unix seconds): the clock's, plus ``clock_offset_seconds``."""
        return self.emulated_clock.time() + self._config.faults.clock_offset_seconds

    def new_id(self, prefix: str) -> str:
        """A fresh id such as ``batch_00000001a1b2c3d4e5f6``: unique, reproducible from the seed."""
        self._ids += 1
        return f"{prefix}{self._ids:08x}{self._id_rng.getrandbits(48):012x}"

    def malformed(self, data: bytes, key: str) -> bytes:
        """``data`` (JSONL) with lines cut at ``malformed_output_rate``; same cuts per ``key``."""
        rate = self._config.faults.malformed_output_rate
        if rate <= 0.0:
            return data
        return malform_lines(data, rate, random.Random(f"{self._config.seed}:malformed:{key}"))

    def provider_state(self, name: str, factory: Callable[[Emulator], _T]) -> _T:
        """The state slot of provider ``name``, created by ``factory(self)`` on first use."""
        state = self._providers.get(name)
        if state is None:
            state = self._providers[name] = factory(self)
        return state

    @property
    def stats(self) -> Stats:
        """Live counters, after settling every batch that reached a terminal state by now."""
        for state in self._providers.values():
            settle: _Settles | None = state if hasattr(state, "settle") else None
            if settle is not None:
                settle.settle()
        return self._stats

    @property
    def raw_stats(self) -> Stats:
        """The counters without settling (what the middleware writes to)."""
        return self._stats

    def __repr__(self) -> str:
        return f"Emulator(clock={self.emulated_clock!r}, providers={sorted(self._providers)!r})"
