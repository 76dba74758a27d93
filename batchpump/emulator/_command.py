"""The one emulator command: ``batchpump emulate`` and ``python -m batchpump.emulator``.

Both parse the same options (``add_arguments``) and run the same entry (``run``): serve the
chosen provider surfaces until interrupted, after printing ``batchpump emulator listening on
http://HOST:PORT`` (the first line, for scripts that start it with ``--port 0``) and then the
lines to paste into a shell: each provider's base-URL variable, a key, and the ids a provider
needs (a TELUS project UUID and workflow UUID, a LlamaCloud configuration id).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final, TextIO

import msgspec

from .._clock import SystemClock
from ._faults import EmulatorConfig, Faults

if TYPE_CHECKING:
    from ._script import Rule
    from ._server import RunningEmulator

__all__ = [
    "DEFAULT_PORT",
    "PROVIDER_ORDER",
    "add_arguments",
    "config_from_args",
    "main",
    "paste_lines",
    "providers_from_args",
    "run_from_args",
]

DEFAULT_HOST: Final = "127.0.0.1"
#: The port both spellings of the command listen on unless told otherwise.
DEFAULT_PORT: Final = 8080
#: Every surface, in the order the start-up lines list them (all are served by default).
PROVIDER_ORDER: Final = ("openai", "azure", "together", "anthropic", "llamacloud", "telus")
#: Ids the emulator accepts where a provider needs one (any UUID works for TELUS).
TELUS_PROJECT_ID: Final = "00000000-0000-4000-8000-000000000001"
TELUS_WORK_FLOW_ID: Final = "00000000-0000-4000-8000-000000000002"
LLAMACLOUD_CONFIG_ID: Final = "cfg-emulator"
#: API version the Azure surface is shown with (it takes any non-empty ``api-version``).
AZURE_API_VERSION: Final = "2024-10-21"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the emulator's options to ``parser`` (shared by both spellings of the command)."""
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help=f"interface to bind (default {DEFAULT_HOST})"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"port (default {DEFAULT_PORT}; 0 picks a free one)",
    )
    parser.add_argument(
        "--provider",
        "--providers",
        dest="provider",
        action="append",
        metavar="NAME[,NAME...]",
        help=f"surface to serve, repeatable or comma-separated (default: all of"
        f" {','.join(PROVIDER_ORDER)})",
    )
    parser.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="emulated seconds per real second for batch lifecycles (default 1; 3600: a 24 h window"
        " in 24 s); rate limits stay per real second",
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="seed of every random choice (default 0)"
    )
    parser.add_argument(
        "--config", type=Path, help="EmulatorConfig as a JSON file (default: no faults)"
    )
    parser.add_argument(
        "--faults",
        help="Faults as inline JSON, e.g. '{\"storm_429_rate\": 0.1}' (replaces the"
        " config file's faults)",
    )
    parser.add_argument(
        "--script",
        type=Path,
        help="a JSON list of scripted rules (as POST /_emulator/script takes), served first",
    )


def providers_from_args(args: argparse.Namespace) -> tuple[str, ...]:
    """The surfaces asked for, in ``PROVIDER_ORDER``.

    Raises:
        ValueError: an unknown surface name.
    """
    asked = [p.strip() for value in args.provider or () for p in value.split(",") if p.strip()]
    if not asked:
        return PROVIDER_ORDER
    unknown = sorted(set(asked) - set(PROVIDER_ORDER))
    if unknown:
        raise ValueError(
            f"cannot emulate {', '.join(unknown)}; choose from {', '.join(PROVIDER_ORDER)}"
        )
    return tuple(p for p in PROVIDER_ORDER if p in asked)


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    """The ``EmulatorConfig`` the arguments describe.

    Raises:
        ValueError: a config file or ``--faults`` that is not valid JSON for its type.
    """
    config = EmulatorConfig()
    try:
        if args.config is not None:
            config = msgspec.json.decode(args.config.read_bytes(), type=EmulatorConfig)
        if args.faults:
            faults = msgspec.json.decode(args.faults, type=Faults)
            config = msgspec.structs.replace(config, faults=faults)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ValueError(f"bad emulator configuration: {exc}") from None
    if args.seed is not None:
        config = msgspec.structs.replace(config, seed=args.seed)
    return config


def rules_from_args(args: argparse.Namespace) -> list[Rule]:
    """The scripted rules of ``--script`` (none without it).

    Raises:
        ValueError: a script that is not a JSON list of rules.
    """
    if args.script is None:
        return []
    from ._script import load_rules

    return load_rules(args.script.read_bytes())


def paste_lines(running: RunningEmulator, providers: Sequence[str]) -> list[str]:
    """Shell lines that point each served provider's client at ``running``."""
    url = running.url
    values: dict[str, list[tuple[str, str]]] = {
        "openai": [("OPENAI_BASE_URL", running.openai_base_url), ("OPENAI_API_KEY", "sk-emulator")],
        "azure": [
            ("AZURE_OPENAI_ENDPOINT", running.azure_endpoint),
            ("AZURE_OPENAI_API_KEY", "azure-emulator-key"),
            ("OPENAI_API_VERSION", AZURE_API_VERSION),
        ],
        "together": [
            ("TOGETHER_BASE_URL", running.together_base_url),
            ("TOGETHER_API_KEY", "together-emulator-key"),
        ],
        "anthropic": [
            ("ANTHROPIC_BASE_URL", running.anthropic_base_url),
            ("ANTHROPIC_API_KEY", "sk-ant-emulator"),
        ],
        "llamacloud": [
            ("LLAMA_CLOUD_BASE_URL", running.llamacloud_base_url),
            ("LLAMA_CLOUD_API_KEY", "llx-emulator"),
        ],
        "telus": [
            ("TELUS_GTSTUDIO_BASE_URL", running.telus_base_url),
            ("TELUS_GTSTUDIO_API_KEY", "telus-emulator-key"),
            ("TELUS_GTSTUDIO_PROJECT_ID", TELUS_PROJECT_ID),
        ],
    }
    notes = {
        "llamacloud": f"# llamacloud: pass --config-id {LLAMACLOUD_CONFIG_ID} (any id is accepted)",
        "telus": f"# telus: pass --work-flow-id {TELUS_WORK_FLOW_ID} (ids must be UUIDs)",
    }
    lines = ["# paste into your shell to point clients at the emulator:"]
    for name in providers:
        lines += [f"export {var}={shlex.quote(value)}" for var, value in values.get(name, [])]
        if name in notes:
            lines.append(notes[name])
    lines.append(f"# control plane: {url}/_emulator/clock, /_emulator/script, /_emulator/verdict")
    return lines


def run_from_args(args: argparse.Namespace, *, out: TextIO | None = None) -> int:
    """Serve the emulator the parsed arguments describe until SIGINT/SIGTERM.

    Returns:
        0 after a clean stop; 2 for a bad option (the message goes to stderr).
    """
    stream = out if out is not None else sys.stdout
    try:
        providers = providers_from_args(args)
        config = config_from_args(args)
        rules = rules_from_args(args)
    except (OSError, ValueError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    if args.time_scale <= 0:
        sys.stderr.write("error: --time-scale must be positive\n")
        return 2
    from ._server import run_emulator

    def ready(running: RunningEmulator) -> None:
        # The time scale speeds batches up, not the real clock: rate limits stay per real second.
        running.emulator.set_time_scale(args.time_scale)
        if rules:
            running.emulator.script(rules)
        stream.write(f"batchpump emulator listening on {running.url}\n")
        stream.write("\n".join(paste_lines(running, providers)) + "\n")
        stream.flush()

    run_emulator(
        args.host, args.port, config, clock=SystemClock(), providers=providers, on_ready=ready
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m batchpump.emulator``: parse ``argv`` and run."""
    parser = argparse.ArgumentParser(
        prog="python -m batchpump.emulator",
        description="Serve the batch-API emulator (the same command as `batchpump emulate`).",
    )
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))
