"""A stateful fake of provider batch APIs, for tests and benchmarks (public).

Start one in-process::

    async with open_emulator(clock=ScaledClock(100)) as emu:
        client = AsyncOpenAI(base_url=emu.openai_base_url, api_key="sk-test")
        ...
        emu.emulator.set_faults(storm_429_rate=1.0)   # a 429 storm, until turned off
        assert not emu.emulator.stats.double_billed()

or out of process: ``python -m batchpump.emulator --port 0`` prints
``batchpump emulator listening on http://HOST:PORT``. Pytest users get the
``batchpump_emulator`` and ``batchpump_emulator_factory`` fixtures automatically.
"""

from __future__ import annotations

import contextlib

from ._app import PROVIDER_MODULES, create_app
from ._faults import EmulatorConfig, Faults, RateLimit
from ._server import RunningEmulator, open_emulator, run_emulator
from ._state import Emulator
from ._stats import Stats

__all__ = [
    "PROVIDER_MODULES",
    "Emulator",
    "EmulatorConfig",
    "Faults",
    "RateLimit",
    "RunningEmulator",
    "Stats",
    "create_app",
    "open_emulator",
    "run_emulator",
]

for _name in __all__:
    _obj = globals()[_name]
    if hasattr(_obj, "__module__") and callable(_obj):
        with contextlib.suppress(AttributeError, TypeError):  # C types keep their module
            _obj.__module__ = __name__
