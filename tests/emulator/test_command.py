"""The one emulator command: ``batchpump emulate`` and ``python -m batchpump.emulator`` share
options, defaults and the lines they print to paste into a shell.

Subprocesses listen on 127.0.0.1 port 0 and are terminated at the end of each test.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import msgspec
import pytest

from batchpump.cli import _parser as cli_parser
from batchpump.emulator import RunningEmulator, add_arguments, open_emulator, run_from_args
from batchpump.emulator._command import PROVIDER_ORDER, paste_lines, providers_from_args

pytestmark = pytest.mark.timeout(60)


def emulator_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser


def test_both_spellings_parse_the_same_options_and_defaults() -> None:
    direct = vars(emulator_parser().parse_args([]))
    via_cli = vars(cli_parser().parse_args(["emulate"]))
    via_cli.pop("command")
    assert via_cli == direct
    assert direct["port"] == 8080
    argv = ["--provider", "openai,telus", "--provider", "anthropic", "--seed", "4"]
    args = cli_parser().parse_args(["emulate", *argv])
    assert providers_from_args(args) == ("openai", "anthropic", "telus")
    assert args.seed == 4
    assert providers_from_args(emulator_parser().parse_args([])) == PROVIDER_ORDER
    old = emulator_parser().parse_args(["--providers", "together"])  # the old spelling
    assert providers_from_args(old) == ("together",)


def test_every_provider_module_is_offered() -> None:
    from batchpump.emulator import PROVIDER_MODULES

    assert set(PROVIDER_ORDER) == set(PROVIDER_MODULES)


def test_bad_options_exit_2_with_a_message(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_from_args(emulator_parser().parse_args(["--provider", "nope"])) == 2
    assert "cannot emulate nope" in capsys.readouterr().err
    assert run_from_args(emulator_parser().parse_args(["--faults", '{"x": 1}'])) == 2
    assert "bad emulator configuration" in capsys.readouterr().err


def exports(lines: list[str]) -> dict[str, str]:
    found = {}
    for line in lines:
        if line.startswith("export "):
            name, _, value = line.removeprefix("export ").partition("=")
            found[name] = shlex.split(value)[0]
    return found


async def test_pasted_lines_reach_every_provider() -> None:
    async with open_emulator(providers=PROVIDER_ORDER) as running:
        lines = paste_lines(running, PROVIDER_ORDER)
        env = exports(lines)
        assert env["OPENAI_BASE_URL"] == f"{running.url}/v1"
        assert env["TOGETHER_BASE_URL"] == f"{running.url}/together/v1"
        assert env["TELUS_GTSTUDIO_BASE_URL"] == f"{running.url}/telus"
        uuid.UUID(env["TELUS_GTSTUDIO_PROJECT_ID"])
        assert any("--work-flow-id" in line for line in lines)
        assert any("--config-id" in line for line in lines)
        await _each_answers(running, env)


async def _each_answers(running: RunningEmulator, env: dict[str, str]) -> None:
    calls = [
        (f"{env['OPENAI_BASE_URL']}/batches", {"Authorization": f"Bearer {env['OPENAI_API_KEY']}"}),
        (
            f"{env['AZURE_OPENAI_ENDPOINT']}/openai/batches?api-version={env['OPENAI_API_VERSION']}",
            {"api-key": env["AZURE_OPENAI_API_KEY"]},
        ),
        (
            f"{env['TOGETHER_BASE_URL']}/batches",
            {"Authorization": f"Bearer {env['TOGETHER_API_KEY']}"},
        ),
        (
            f"{env['ANTHROPIC_BASE_URL']}/v1/messages/batches",
            {"x-api-key": env["ANTHROPIC_API_KEY"], "anthropic-version": "2023-06-01"},
        ),
        (
            f"{env['LLAMA_CLOUD_BASE_URL']}/api/v2/batches",
            {"Authorization": f"Bearer {env['LLAMA_CLOUD_API_KEY']}"},
        ),
        (
            f"{env['TELUS_GTSTUDIO_BASE_URL']}/v1/projects/{env['TELUS_GTSTUDIO_PROJECT_ID']}"
            "/details",
            {"x-api-key": env["TELUS_GTSTUDIO_API_KEY"]},
        ),
    ]
    async with aiohttp.ClientSession() as http:
        for url, headers in calls:
            async with http.get(url, headers=headers) as resp:
                assert resp.status == 200, (url, await resp.text())


@contextmanager
def serving(argv: list[str]) -> Iterator[tuple[str, list[str]]]:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("batchpump emulator listening on "), first
        lines = []
        while not (line := proc.stdout.readline()).startswith("# control plane"):
            assert line, "the emulator stopped before printing its lines"
            lines.append(line.rstrip("\n"))
        yield first.rsplit(" ", 1)[1].strip(), lines
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


@pytest.mark.parametrize(
    "command",
    [[sys.executable, "-m", "batchpump", "emulate"], [sys.executable, "-m", "batchpump.emulator"]],
    ids=["batchpump-emulate", "python-m"],
)
async def test_the_command_prints_paste_lines_and_loads_a_script(
    command: list[str], tmp_path: Path
) -> None:
    script = tmp_path / "script.json"
    rule = {"match": {"path": "/v1/batches"}, "times": 2, "respond": {"status": 503}}
    script.write_bytes(msgspec.json.encode([rule]))
    argv = [*command, "--port", "0", "--provider", "openai,telus", "--script", str(script)]
    with serving(argv) as (url, lines):
        env = exports(lines)
        assert env["OPENAI_BASE_URL"] == f"{url}/v1"
        assert "TELUS_GTSTUDIO_PROJECT_ID" in env
        assert "ANTHROPIC_BASE_URL" not in env
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/_emulator/script") as resp:
                [left] = (await resp.json())["rules"]
            assert left["times"] == 2
            headers = {"Authorization": "Bearer sk-x"}
            async with http.get(f"{url}/v1/batches", headers=headers) as resp:
                assert resp.status == 503
