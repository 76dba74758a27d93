"""Pytest fixtures for testing against the emulator (registered via the ``pytest11`` entry point).

- ``batchpump_emulator``: a running emulator (function scope) on 127.0.0.1, port 0, with a
  ``ScaledClock(FIXTURE_TIME_SCALE)`` so a default batch (2 s + 10 s + 2 s emulator time)
  finishes in about 0.14 s.
- ``batchpump_emulator_factory``: ``await factory(config=..., clock=..., providers=...)``
  starts another one; all are stopped at teardown.

Both are async fixtures on the asyncio backend (pytest-asyncio).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AsyncExitStack
from typing import Any, Final

import pytest

from .._clock import Clock, ScaledClock
from ._faults import EmulatorConfig
from ._server import RunningEmulator, open_emulator

try:  # pytest-asyncio in strict mode needs its own decorator; auto mode accepts both
    import pytest_asyncio

    _async_fixture: Any = pytest_asyncio.fixture
except ImportError:  # pragma: no cover - only without pytest-asyncio (e.g. anyio's plugin)
    _async_fixture = pytest.fixture

__all__ = [
    "FIXTURE_TIME_SCALE",
    "EmulatorFactory",
    "batchpump_emulator",
    "batchpump_emulator_factory",
]

#: Emulator seconds per real second in the fixtures.
FIXTURE_TIME_SCALE: Final = 100.0

EmulatorFactory = Callable[..., Awaitable[RunningEmulator]]


@_async_fixture  # type: ignore[untyped-decorator]  # pytest_asyncio.fixture is untyped here
async def batchpump_emulator_factory() -> AsyncIterator[EmulatorFactory]:
    """Start emulators with custom settings; every one is stopped at teardown."""
    async with AsyncExitStack() as stack:

        async def factory(
            *,
            config: EmulatorConfig | None = None,
            clock: Clock | None = None,
            providers: Iterable[str] = ("openai",),
        ) -> RunningEmulator:
            used = clock if clock is not None else ScaledClock(FIXTURE_TIME_SCALE)
            return await stack.enter_async_context(
                open_emulator(config=config, clock=used, providers=providers)
            )

        yield factory


@_async_fixture  # type: ignore[untyped-decorator]  # see above
async def batchpump_emulator() -> AsyncIterator[RunningEmulator]:
    """A running emulator with default settings and a fast clock."""
    async with open_emulator(clock=ScaledClock(FIXTURE_TIME_SCALE)) as running:
        yield running
