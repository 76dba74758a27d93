"""Time, behind one seam.

Every wait in batchpump goes through ``Clock.sleep`` and every timestamp through
``Clock.time``/``Clock.monotonic``, so tests and the emulator can run a 24-hour batch window
in milliseconds without patching ``sleep`` anywhere.
"""

from __future__ import annotations

import time
from typing import Protocol, final, runtime_checkable

import anyio

__all__ = ["Clock", "ManualClock", "ScaledClock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    """What the engine and the emulator need from time.

    A clock may also have a ``speed`` attribute: its seconds per real second (1 when absent).
    Rate limiters that can only pace in real time use it to convert rates.
    """

    def time(self) -> float:
        """Wall-clock seconds since the epoch (for provider timestamps)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (for intervals and deadlines)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""
        ...


@final
class SystemClock:
    """The real clock."""

    #: Clock seconds per real second (rate limiters that pace in real time read it).
    speed = 1.0

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(max(0.0, seconds))

    def __repr__(self) -> str:
        return "SystemClock()"


@final
class ScaledClock:
    """A clock that runs ``scale`` times faster than real time, from ``start`` (default: now).

    ``ScaledClock(3600)`` makes an hour pass per real second: a 24-hour batch window takes 24 s.
    """

    def __init__(self, scale: float, *, start: float | None = None) -> None:
        if scale <= 0:
            raise ValueError(f"scale must be positive, got {scale!r}")
        self.scale = scale
        self.speed = scale
        self._t0_real = time.monotonic()
        self._t0_wall = time.time() if start is None else start

    def monotonic(self) -> float:
        return (time.monotonic() - self._t0_real) * self.scale

    def time(self) -> float:
        return self._t0_wall + self.monotonic()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(max(0.0, seconds) / self.scale)

    def __repr__(self) -> str:
        return f"ScaledClock(scale={self.scale!r})"


@final
class ManualClock:
    """A clock that moves only when told to (``advance``), for deterministic tests.

    ``sleep`` waits until the clock has been advanced past the wake-up time.
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._start = start
        self._now = 0.0
        self._changed = anyio.Event()

    def monotonic(self) -> float:
        return self._now

    def time(self) -> float:
        return self._start + self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a ManualClock only moves forward")
        self._now += seconds
        event, self._changed = self._changed, anyio.Event()
        event.set()

    async def sleep(self, seconds: float) -> None:
        wake = self._now + max(0.0, seconds)
        while self._now < wake:
            await self._changed.wait()
        await anyio.lowlevel.checkpoint()

    def __repr__(self) -> str:
        return f"ManualClock(now={self._now!r})"
