"""The emulator's own time: the clock it was given, plus jumps (``advance``) and a time scale.

``EmulatorClock`` wraps any ``Clock``. ``advance(seconds)`` moves emulated time forward at
once (batch progression and expiry read it); ``time_scale`` changes how many emulated seconds
pass per second of the wrapped clock, from now on. Sleepers on it wake when either moves them
past their deadline.

Rate limits are not part of a batch's lifecycle: a provider counts them per real minute, and a
client paces itself on its own (real) clock. So the emulator's token buckets run on
``EmulatorClock.quota_clock``: the wrapped clock plus the ``advance`` jumps, never the time
scale. A limit, its ``x-ratelimit-*`` headers and its ``retry-after`` are then all in seconds of
the clock the emulator was given (real seconds for the default ``SystemClock``), whatever the
time scale batches run at.
"""

from __future__ import annotations

import asyncio
from typing import final

import anyio
import anyio.lowlevel

from .._clock import Clock

__all__ = ["EmulatorClock", "QuotaClock"]


@final
class EmulatorClock:
    """A ``Clock`` that follows ``base`` and can be advanced and sped up.

    Args:
        base: the clock to follow (``SystemClock``, ``ScaledClock``, ``ManualClock``...).
    """

    def __init__(self, base: Clock) -> None:
        self.base = base
        self._base_speed = float(getattr(base, "speed", 1.0))
        self._factor = 1.0
        self._base_at = base.monotonic()
        self._emu_at = self._base_at
        self._skip = 0.0
        self._changed = anyio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind_loop(self) -> None:
        """Note the running event loop, so ``advance`` from another thread wakes sleepers."""
        self._loop = asyncio.get_running_loop()

    @property
    def speed(self) -> float:
        """Emulated seconds per real second."""
        return self._base_speed * self._factor

    @property
    def time_scale(self) -> float:
        """The same as ``speed`` (the name the control plane uses)."""
        return self.speed

    @property
    def skipped(self) -> float:
        """Seconds added by ``advance`` so far."""
        return self._skip

    def monotonic(self) -> float:
        return self._emu_at + (self.base.monotonic() - self._base_at) * self._factor + self._skip

    def time(self) -> float:
        return self.base.time() + (self.monotonic() - self.base.monotonic())

    def advance(self, seconds: float) -> None:
        """Jump ``seconds`` ahead (never back)."""
        if seconds < 0:
            raise ValueError("the emulator clock only moves forward")
        self._skip += seconds
        self._wake()

    def set_time_scale(self, scale: float) -> None:
        """From now on, pass ``scale`` emulated seconds per real second."""
        if scale <= 0:
            raise ValueError(f"time_scale must be positive, got {scale!r}")
        now = self.monotonic() - self._skip
        self._base_at = self.base.monotonic()
        self._emu_at = now
        self._factor = scale / self._base_speed
        self._wake()

    def _wake(self) -> None:
        event, self._changed = self._changed, anyio.Event()
        loop = self._loop
        if loop is None or loop.is_closed() or _running_loop() is loop:
            event.set()
        else:  # called from another thread (a sync test beside a threaded emulator)
            loop.call_soon_threadsafe(event.set)

    async def sleep(self, seconds: float) -> None:
        deadline = self.monotonic() + max(0.0, seconds)
        while self.monotonic() < deadline:
            changed = self._changed
            async with anyio.create_task_group() as tg:

                async def on_base() -> None:
                    # Measured here, right before the base clock fixes its own wake-up time,
                    # so a base clock moved in between is not counted twice.
                    await self.base.sleep(max(0.0, deadline - self.monotonic()) / self._factor)
                    tg.cancel_scope.cancel()

                async def on_change(event: anyio.Event = changed) -> None:
                    await event.wait()
                    tg.cancel_scope.cancel()

                tg.start_soon(on_base)
                tg.start_soon(on_change)
        await anyio.lowlevel.checkpoint()

    @property
    def quota_clock(self) -> QuotaClock:
        """The clock rate limits run on: the wrapped clock plus ``advance`` jumps, unscaled."""
        return QuotaClock(self)

    def __repr__(self) -> str:
        return f"EmulatorClock({self.base!r}, skipped={self._skip!r}, speed={self.speed!r})"


@final
class QuotaClock:
    """The emulator's clock without its time scale: the wrapped clock plus ``advance`` jumps.

    Token buckets read it, so a limit is per second of the clock the emulator was given
    whatever ``time_scale`` batches run at, and ``advance`` still refills them.

    Args:
        emulated: the ``EmulatorClock`` whose jumps it follows.
    """

    __slots__ = ("_emulated",)

    def __init__(self, emulated: EmulatorClock) -> None:
        self._emulated = emulated

    @property
    def speed(self) -> float:
        """Seconds per real second: the wrapped clock's."""
        return self._emulated._base_speed

    def monotonic(self) -> float:
        return self._emulated.base.monotonic() + self._emulated.skipped

    def time(self) -> float:
        return self._emulated.base.time() + self._emulated.skipped

    async def sleep(self, seconds: float) -> None:
        await self._emulated.base.sleep(seconds)

    def __repr__(self) -> str:
        return f"QuotaClock({self._emulated.base!r}, skipped={self._emulated.skipped!r})"


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
