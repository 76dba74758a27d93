"""What every benchmark shares: the machine, the JSON record, the emulator in its own process.

- :func:`machine_info` describes where a figure was measured (platform, CPUs, Python, library
  versions and the load average, since the benchmark machines are shared).
- :func:`write_record` writes ``benchmarks/results/<name>.json``.
- :func:`open_emulator_process` starts ``python -m batchpump.emulator`` in a child process on
  127.0.0.1 port 0, parses the ``batchpump emulator listening on http://HOST:PORT`` line and
  stops the child when the block exits. The child also gets ``SIGTERM`` if this process dies
  (Linux ``PR_SET_PDEATHSIG``), so no emulator outlives a killed benchmark.
- :func:`route_counts` sums the emulator's ``/_emulator/stats`` answers per route.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import re
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiohttp
import anyio
import msgspec
from anyio.abc import Process

from batchpump.emulator import EmulatorConfig

__all__ = [
    "BENCH_KEY",
    "RESULTS_DIR",
    "EmulatorProcess",
    "machine_info",
    "machine_line",
    "open_emulator_process",
    "percentiles",
    "process_cpu_seconds",
    "route_counts",
    "write_record",
]

RESULTS_DIR: Final = Path(__file__).resolve().parent / "results"
REPO_ROOT: Final = Path(__file__).resolve().parent.parent
#: The bearer token every benchmark sends to the emulator (any non-empty token passes).
BENCH_KEY: Final = "sk-bench-emulator-not-a-real-key"
#: Seconds the emulator child has to print its URL, and to exit after SIGTERM.
_START_TIMEOUT: Final = 30.0
_STOP_TIMEOUT: Final = 10.0
_URL_LINE: Final = re.compile(rb"listening on (http://\S+)")
_VERSIONS: Final = ("msgspec", "aiohttp", "anyio", "aiolimiter", "openai", "httpx")

# Run in the child: ask Linux for SIGTERM when the parent dies, then run the emulator's main.
_CHILD: Final = """\
import ctypes, os, runpy, signal, sys
parent = int(sys.argv[1])
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
except (AttributeError, OSError):
    pass
if os.getppid() != parent:
    sys.exit(0)
sys.argv = ["batchpump.emulator", *sys.argv[2:]]
runpy.run_module("batchpump.emulator", run_name="__main__", alter_sys=True)
"""


def machine_info(**extra: Any) -> dict[str, Any]:
    """Where the figures come from: platform, CPUs, Python, library versions, load."""
    versions = {}
    for name in _VERSIONS:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    try:
        load: list[float] | None = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "msgspec": versions.get("msgspec"),
        "versions": versions,
        "load_avg_1_5_15": load,
        **extra,
    }


def machine_line(machine: Mapping[str, Any]) -> str:
    """One line for the console: ``Linux-... x86_64, 2 CPUs, Python 3.11.7, load 0.4``."""
    load = machine.get("load_avg_1_5_15")
    shown = f", load {load[0]}" if load else ""
    return f"{machine['platform']}, {machine['cpu_count']} CPUs, Python {machine['python']}{shown}"


def write_record(name: str, record: Mapping[str, Any]) -> Path:
    """Write ``record`` as ``benchmarks/results/<name>.json``; return the path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def percentiles(values: list[float], *points: float) -> dict[str, float | None]:
    """``{"p50": ..., "p95": ...}`` by nearest rank (``None`` for an empty list)."""
    ordered = sorted(values)
    out: dict[str, float | None] = {}
    for point in points:
        key = f"p{point:g}"
        if not ordered:
            out[key] = None
            continue
        rank = min(len(ordered) - 1, max(0, round(point / 100 * len(ordered)) - 1))
        out[key] = ordered[rank]
    return out


def process_cpu_seconds(pid: int | None = None) -> float | None:
    """User + system CPU seconds used so far by process ``pid`` (default: this process).

    Reads ``/proc/PID/stat`` (Linux); ``None`` where it cannot be read. For a child that is
    still running (the emulator), where ``resource.getrusage`` cannot see it.
    """
    if pid is None:
        return time.process_time()
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
    # After the ")" of the command name: state is field 3, utime 14 and stime 15 (1-based).
    return (int(fields[11]) + int(fields[12])) / ticks


def route_counts(snapshot: Mapping[str, Any]) -> dict[str, int]:
    """Answers per provider route in a ``/_emulator/stats`` snapshot (all statuses summed).

    The emulator's own control routes (``emulator.*``) are left out.
    """
    counts: dict[str, int] = {}
    for row in snapshot.get("requests", []):
        route = str(row["route"])
        if route.startswith("emulator."):
            continue
        counts[route] = counts.get(route, 0) + int(row["count"])
    return dict(sorted(counts.items()))


@dataclass(frozen=True, slots=True)
class EmulatorProcess:
    """A running emulator child.

    Attributes:
        url: ``http://127.0.0.1:PORT``.
        time_scale: emulator seconds per real second.
        config: the ``EmulatorConfig`` it started with.
        pid: the child's process id.
    """

    url: str
    time_scale: float
    config: EmulatorConfig
    pid: int

    @property
    def openai_base_url(self) -> str:
        return f"{self.url}/v1"

    async def stats(self) -> dict[str, Any]:
        """``GET /_emulator/stats`` (settles every terminal batch first: call it between runs)."""
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{self.url}/_emulator/stats") as resp,
        ):
            resp.raise_for_status()
            data: dict[str, Any] = await resp.json()
            return data

    async def configure(self, config: EmulatorConfig, session: aiohttp.ClientSession) -> None:
        """``PUT /_emulator/config``: takes effect for batches created from now on."""
        async with session.put(
            f"{self.url}/_emulator/config", data=msgspec.json.encode(config)
        ) as resp:
            resp.raise_for_status()
            await resp.read()


@asynccontextmanager
async def open_emulator_process(
    config: EmulatorConfig, *, time_scale: float = 1.0
) -> AsyncIterator[EmulatorProcess]:
    """Run ``python -m batchpump.emulator --port 0`` in a child process for the block.

    Args:
        config: the emulator's configuration (written to a temporary ``--config`` file).
        time_scale: emulator seconds per real second (``--time-scale``).

    Raises:
        RuntimeError: the child exited or printed no URL within 30 s (its stderr is included).
    """
    with tempfile.TemporaryDirectory(prefix="bench-emu-") as tmp:
        config_path = Path(tmp) / "config.json"
        config_path.write_bytes(msgspec.json.encode(config))
        stderr_path = Path(tmp) / "stderr.txt"
        argv = [
            sys.executable,
            "-c",
            _CHILD,
            str(os.getpid()),
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--time-scale",
            repr(float(time_scale)),
            "--config",
            str(config_path),
        ]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
        )
        with stderr_path.open("wb") as stderr:
            process = await anyio.open_process(
                argv, stdin=None, stdout=-1, stderr=stderr, env=env, cwd=tmp
            )
            try:
                url = await _read_url(process, stderr_path)
                yield EmulatorProcess(url, time_scale, config, process.pid)
            finally:
                with anyio.CancelScope(shield=True):
                    await _stop(process)


async def _read_url(process: Process, stderr_path: Path) -> str:
    assert process.stdout is not None
    buffer = b""
    with anyio.move_on_after(_START_TIMEOUT):
        while b"\n" not in buffer:
            try:
                buffer += await process.stdout.receive()
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                break
        match = _URL_LINE.search(buffer)
        if match is not None:
            return match.group(1).decode()
    tail = (await anyio.Path(stderr_path).read_text(errors="replace"))[-2000:]
    raise RuntimeError(f"the emulator printed no URL (stdout {buffer[:200]!r}); stderr:\n{tail}")


async def _stop(process: Process) -> None:
    if process.returncode is None:
        process.terminate()
        with anyio.move_on_after(_STOP_TIMEOUT):
            await process.wait()
    if process.returncode is None:
        process.kill()
        await process.wait()
    if process.stdout is not None:
        await process.stdout.aclose()
