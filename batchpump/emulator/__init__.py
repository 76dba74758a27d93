"""A stateful fake of provider batch APIs, for tests and benchmarks (public).

Start one in-process::

    async with open_emulator(clock=ScaledClock(100)) as emu:
        client = AsyncOpenAI(base_url=emu.openai_base_url, api_key="sk-test")
        ...
        emu.emulator.set_faults(storm_429_rate=1.0)   # a 429 storm, until turned off
        emu.emulator.script([{"match": {"path": "/v1/batches"}, "respond": {"status": 503}}])
        emu.emulator.advance(3600)                    # an hour of emulated time, at once
        assert not emu.emulator.stats.double_billed()

or out of process: ``batchpump emulate`` (the same as ``python -m batchpump.emulator``) prints
``batchpump emulator listening on http://HOST:PORT`` and the lines to paste into a shell; its
control plane is under ``/_emulator/`` on the same port. Pytest users get the
``batchpump_emulator``, ``batchpump_emulator_sync`` and ``batchpump_emulator_factory`` fixtures.

Names load on first use, so ``batchpump emulate``'s option parser costs no aiohttp import.
"""

from __future__ import annotations

import contextlib
import importlib
from typing import TYPE_CHECKING, Any, Final

import msgspec

if TYPE_CHECKING:
    from ._app import PROVIDER_MODULES, create_app
    from ._command import add_arguments, main, run_from_args
    from ._faults import EmulatorConfig, Faults, RateLimit
    from ._requests import RequestLog, RequestRecord
    from ._script import LineOutcome, Match, Respond, Rule, load_rules
    from ._server import RunningEmulator, emulator_thread, open_emulator, run_emulator
    from ._state import Emulator
    from ._stats import Stats
    from ._timeline import EmulatorClock

#: Public name -> the module that defines it.
_HOMES: Final = {
    "PROVIDER_MODULES": "._app",
    "create_app": "._app",
    "add_arguments": "._command",
    "main": "._command",
    "run_from_args": "._command",
    "EmulatorConfig": "._faults",
    "Faults": "._faults",
    "RateLimit": "._faults",
    "RequestLog": "._requests",
    "RequestRecord": "._requests",
    "LineOutcome": "._script",
    "Match": "._script",
    "Respond": "._script",
    "Rule": "._script",
    "load_rules": "._script",
    "RunningEmulator": "._server",
    "open_emulator": "._server",
    "emulator_thread": "._server",
    "run_emulator": "._server",
    "Emulator": "._state",
    "Stats": "._stats",
    "EmulatorClock": "._timeline",
}

__all__ = [
    "PROVIDER_MODULES",
    "Emulator",
    "EmulatorClock",
    "EmulatorConfig",
    "Faults",
    "LineOutcome",
    "Match",
    "RateLimit",
    "RequestLog",
    "RequestRecord",
    "Respond",
    "Rule",
    "RunningEmulator",
    "Stats",
    "add_arguments",
    "create_app",
    "emulator_thread",
    "load_rules",
    "main",
    "open_emulator",
    "run_emulator",
    "run_from_args",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    obj = getattr(importlib.import_module(home, __name__), name)
    # Structs keep their home module: msgspec resolves their annotations there.
    struct = isinstance(obj, type) and issubclass(obj, msgspec.Struct)
    if callable(obj) and not struct:
        with contextlib.suppress(AttributeError, TypeError):  # C types keep their module
            obj.__module__ = __name__
    globals()[name] = obj
    return obj


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
