"""Serving the emulator: ``open_emulator`` (in-process, async, on the caller's event loop),
``emulator_thread`` (in-process, on its own thread and loop, for sync code and any test
plugin) and ``run_emulator`` (blocking, until a signal)."""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Final, final

import anyio
import anyio.from_thread
from aiohttp import web

from .._clock import Clock
from ._app import create_app
from ._faults import EmulatorConfig
from ._state import Emulator

__all__ = ["DEFAULT_HOST", "RunningEmulator", "emulator_thread", "open_emulator", "run_emulator"]

DEFAULT_HOST: Final = "127.0.0.1"
#: Seconds to let open connections finish at shutdown.
_SHUTDOWN_TIMEOUT: Final = 0.25


@final
@dataclass(frozen=True, slots=True)
class RunningEmulator:
    """A served emulator.

    Attributes:
        url: ``http://HOST:PORT`` (no trailing slash).
        emulator: the state, knobs (``set_faults``) and counters (``stats``).
    """

    url: str
    emulator: Emulator

    @property
    def openai_base_url(self) -> str:
        """``url + "/v1"``: the ``base_url`` for the official OpenAI SDK."""
        return f"{self.url}/v1"

    @property
    def together_base_url(self) -> str:
        """``url + "/together/v1"``: the ``base_url`` of Together clients (mount "together")."""
        return f"{self.url}/together/v1"

    @property
    def azure_endpoint(self) -> str:
        """The ``azure_endpoint`` for Azure OpenAI clients (mount ``"azure"``; routes under
        ``/openai``)."""
        return self.url

    @property
    def telus_base_url(self) -> str:
        """``url + "/telus"``: the ``base_url`` of GT Studio clients (mount ``"telus"``)."""
        return f"{self.url}/telus"

    @property
    def anthropic_base_url(self) -> str:
        """``url``: the ``base_url`` for the official Anthropic SDK (its paths start ``/v1``)."""
        return self.url

    @property
    def llamacloud_base_url(self) -> str:
        """``url``: the ``base_url`` for LlamaCloud clients (mount ``"llamacloud"``; paths
        start ``/api``)."""
        return self.url


@asynccontextmanager
async def open_emulator(
    *,
    config: EmulatorConfig | None = None,
    clock: Clock | None = None,
    emulator: Emulator | None = None,
    providers: Iterable[str] = ("openai",),
    host: str = DEFAULT_HOST,
    port: int = 0,
) -> AsyncIterator[RunningEmulator]:
    """Serve an emulator on ``host:port`` (default 127.0.0.1, port 0 = any free port).

    Args:
        config: the configuration of a new emulator (ignored when ``emulator`` is given).
        clock: the clock of a new emulator, default ``SystemClock()``.
        emulator: serve this existing state instead of a new one.
        providers: provider surfaces to mount, default ``("openai",)``.
        host: interface to bind.
        port: port to bind; 0 picks a free one.

    Yields:
        The running emulator; it is stopped and its sockets closed when the block exits.
    """
    emu = emulator if emulator is not None else Emulator(config=config, clock=clock)
    runner = web.AppRunner(
        create_app(emu, providers=providers), shutdown_timeout=_SHUTDOWN_TIMEOUT, access_log=None
    )
    await runner.setup()
    emu.emulated_clock.bind_loop()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        yield RunningEmulator(url=f"http://{shown}:{bound_port}", emulator=emu)
    finally:
        await runner.cleanup()


@contextmanager
def emulator_thread(
    *,
    config: EmulatorConfig | None = None,
    clock: Clock | None = None,
    emulator: Emulator | None = None,
    providers: Iterable[str] = ("openai",),
    host: str = DEFAULT_HOST,
    port: int = 0,
) -> Iterator[RunningEmulator]:
    """Serve an emulator on its own thread and event loop (arguments as ``open_emulator``).

    Sync clients (the official ``openai.OpenAI``...) and tests under any async plugin, or none,
    can talk to it. From the calling thread, ``emulator.advance``, ``set_faults``,
    ``script`` and ``reset`` are safe between requests; a ``ManualClock`` given as ``clock``
    must only be moved through ``emulator.advance``.
    """
    with anyio.from_thread.start_blocking_portal(backend="asyncio") as portal:
        served = open_emulator(
            config=config,
            clock=clock,
            emulator=emulator,
            providers=providers,
            host=host,
            port=port,
        )
        with portal.wrap_async_context_manager(served) as running:
            yield running


def run_emulator(
    host: str = DEFAULT_HOST,
    port: int = 0,
    config: EmulatorConfig | None = None,
    *,
    clock: Clock | None = None,
    providers: Iterable[str] = ("openai",),
    on_ready: Callable[[RunningEmulator], None] | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM (blocking; the entry of ``batchpump emulate``).

    Prints ``batchpump emulator listening on http://HOST:PORT`` (flushed) once serving, unless
    ``on_ready`` is given, which is then called instead.
    """

    async def serve() -> None:
        async with open_emulator(
            config=config, clock=clock, providers=providers, host=host, port=port
        ) as running:
            if on_ready is not None:
                on_ready(running)
            else:
                sys.stdout.write(f"batchpump emulator listening on {running.url}\n")
                sys.stdout.flush()
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    return

    with contextlib.suppress(KeyboardInterrupt):
        anyio.run(serve, backend="asyncio")
