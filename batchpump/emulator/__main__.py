"""``python -m batchpump.emulator``: serve the emulator until interrupted.

Prints one line, ``batchpump emulator listening on http://HOST:PORT`` (flushed), so another
process can start it with ``--port 0`` and parse the URL.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import msgspec

from .._clock import Clock, ScaledClock, SystemClock
from ._app import PROVIDER_MODULES
from ._faults import EmulatorConfig, Faults
from ._server import DEFAULT_HOST, run_emulator

__all__ = ["main", "parse_args"]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(prog="python -m batchpump.emulator", description=__doc__)
    parser.add_argument("--host", default=DEFAULT_HOST, help="interface (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port (default 0: any free port)")
    parser.add_argument(
        "--time-scale", type=float, default=1.0, help="emulator seconds per real second (default 1)"
    )
    parser.add_argument("--seed", type=int, default=None, help="seed of every random choice")
    parser.add_argument(
        "--provider",
        action="append",
        choices=sorted(PROVIDER_MODULES),
        help="provider surface to mount (repeatable; default openai)",
    )
    parser.add_argument("--config", type=Path, help="EmulatorConfig as a JSON file")
    parser.add_argument("--faults", help="Faults as inline JSON, e.g. '{\"storm_429_rate\": 0.1}'")
    return parser.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    """The ``EmulatorConfig`` the arguments describe."""
    config = EmulatorConfig()
    if args.config is not None:
        config = msgspec.json.decode(args.config.read_bytes(), type=EmulatorConfig)
    if args.faults:
        faults = msgspec.json.decode(args.faults, type=Faults)
        config = msgspec.structs.replace(config, faults=faults)
    if args.seed is not None:
        config = msgspec.structs.replace(config, seed=args.seed)
    return config


def main(argv: Sequence[str] | None = None) -> int:
    """Run the emulator; returns the exit status."""
    args = parse_args(argv)
    clock: Clock = SystemClock() if args.time_scale == 1.0 else ScaledClock(args.time_scale)
    run_emulator(
        args.host,
        args.port,
        config_from_args(args),
        clock=clock,
        providers=tuple(args.provider or ("openai",)),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
