"""Pytest fixtures for testing against the emulator (registered via the ``pytest11`` entry point).

- ``batchpump_emulator``: a running emulator (function scope) on 127.0.0.1, port 0, serving
  every provider surface, on its own thread and event loop with a
  ``ScaledClock(FIXTURE_TIME_SCALE)`` (a default batch, 2 s + 10 s + 2 s emulator time,
  finishes in about 0.14 s; ``emulator.advance(seconds)`` jumps ahead at once). It is a plain
  fixture: sync tests with the official ``openai.OpenAI`` client and async tests under
  pytest-asyncio (strict or auto), the anyio plugin or any other, all use it alike.
- ``batchpump_emulator_sync``: the same fixture, under a name that says so.
- ``batchpump_emulator_factory``: ``factory(config=..., clock=..., providers=...)`` starts
  another one, also on its own thread; every one is stopped at teardown. The result may also
  be awaited (``await factory(...)``), as in earlier versions.

A test that wants the emulator on its own event loop (to share a ``ManualClock`` moved with
``clock.advance``) uses ``batchpump.emulator.open_emulator`` directly.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, Final, final

import pytest

from .._clock import Clock, ScaledClock
from ._command import PROVIDER_ORDER
from ._faults import EmulatorConfig
from ._server import RunningEmulator, emulator_thread

__all__ = [
    "FIXTURE_TIME_SCALE",
    "EmulatorFactory",
    "StartedEmulator",
    "batchpump_emulator",
    "batchpump_emulator_factory",
    "batchpump_emulator_sync",
]

#: Emulator seconds per real second in the fixtures.
FIXTURE_TIME_SCALE: Final = 100.0


@final
@dataclass(frozen=True, slots=True)
class StartedEmulator:
    """What the factory returns: the ``RunningEmulator``'s attributes, and awaitable to it."""

    running: RunningEmulator

    def __getattr__(self, name: str) -> Any:
        return getattr(self.running, name)

    def __await__(self) -> Generator[Any, None, RunningEmulator]:
        return self._resolved().__await__()

    async def _resolved(self) -> RunningEmulator:
        return self.running


EmulatorFactory = Callable[..., StartedEmulator]


@pytest.fixture
def batchpump_emulator_factory() -> Iterator[EmulatorFactory]:
    """Start emulators with custom settings; every one is stopped at teardown."""
    with ExitStack() as stack:

        def factory(
            *,
            config: EmulatorConfig | None = None,
            clock: Clock | None = None,
            providers: Iterable[str] = PROVIDER_ORDER,
        ) -> StartedEmulator:
            used = clock if clock is not None else ScaledClock(FIXTURE_TIME_SCALE)
            running = stack.enter_context(
                emulator_thread(config=config, clock=used, providers=providers)
            )
            return StartedEmulator(running)

        yield factory


@pytest.fixture
def batchpump_emulator() -> Iterator[RunningEmulator]:
    """A running emulator with default settings, every provider and a fast clock."""
    with emulator_thread(clock=ScaledClock(FIXTURE_TIME_SCALE), providers=PROVIDER_ORDER) as r:
        yield r


@pytest.fixture
def batchpump_emulator_sync(batchpump_emulator: RunningEmulator) -> RunningEmulator:
    """``batchpump_emulator`` (already served on its own thread, so sync clients work)."""
    return batchpump_emulator
