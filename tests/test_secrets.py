"""The API key never reaches a sink, and the files batchpump writes are private.

Rules: the emulator runs in-process on 127.0.0.1 port 0 (scaled clock), or in its own process
for the CLI case; the key is a distinctive fake; logging is captured at DEBUG for every logger;
errors are provoked with emulator faults (HTTP errors) and an exception path (a provider call
that raises after the fact); every sink is then searched for the key's bytes: log records
(message, args, exception text), exception messages and reprs, the provider's/pump's/run's/HTTP
client's reprs, every file under the state directory (journal, ``-wal``, ``-shm``, shards,
parts), the results file, CLI stdout/stderr, and ``benchmarks/results``. The umask is set to
0o022 and 0o000 around a run and restored after.
"""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchpump import Limits, Pump, RetryPolicy, RunOptions, ScaledClock
from batchpump._errors import BatchpumpError
from batchpump.emulator import EmulatorConfig, Faults, open_emulator
from batchpump.providers.openai import OpenAI

from .helpers import assert_exactly_once, read_results, write_requests

KEY = "sk-proj-SECRETkey-7f3a9c1e5b2d4f6a8c0e1b3d5f7a9c1e"
KEY_BYTES = KEY.encode()
ROOT = Path(__file__).resolve().parents[1]
FAST = Limits(upload_rate=500.0, create_rate=500.0, poll_rate=500.0, download_rate=500.0)


def files_holding_key(root: Path) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and KEY_BYTES in p.read_bytes()]


@pytest.fixture
def umask() -> Iterator[None]:
    old = os.umask(0o022)
    os.umask(old)
    yield
    os.umask(old)


def check_private(state: Path, results: Path) -> None:
    written = [results, *(p for p in state.rglob("*") if p.is_file())]
    journal = [p for p in written if p.name.startswith("journal.sqlite3")]
    assert any(p.name == "journal.sqlite3-wal" for p in journal) or journal
    for path in [results, *journal]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == 0o600, f"{path} is {oct(mode)}"


class Boom(OpenAI):
    """Raises from ``retrieve`` with the provider in the message context (an exception path)."""

    async def retrieve(self, batch_id: str) -> object:  # type: ignore[override]
        raise BatchpumpError(f"could not read {batch_id} via {self!r}")


@pytest.mark.parametrize("mask", [0o022, 0o000])
async def test_key_in_no_sink_and_files_private(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, umask: None, mask: int
) -> None:
    os.umask(mask)
    caplog.set_level(logging.DEBUG)
    clock = ScaledClock(1_000)
    faults = Faults(error_5xx_rate=0.2, html_502_rate=0.1, storm_429_rate=0.1,
                    retry_after_seconds=1.0, line_fatal_rate=0.1)  # fmt: skip
    src = tmp_path / "in.jsonl"
    ids = write_requests(src, 200)
    state = tmp_path / "state"
    errors: list[BaseException] = []
    async with open_emulator(config=EmulatorConfig(faults=faults), clock=clock) as emu:
        retry = RetryPolicy(attempts=2, timeout=None, wait_initial=0.0)
        provider = OpenAI(
            api_key=KEY, base_url=emu.openai_base_url, clock=clock, limits=FAST, retry=retry
        )
        reprs = [repr(provider), repr(provider._http)]
        async with Pump(provider, state_dir=state, clock=clock) as pump:
            run = await pump.submit(src, options=RunOptions(max_lines=50, max_attempts=5))
            reprs += [repr(pump), repr(run)]
            try:
                await run.wait()
            except BatchpumpError as exc:  # a fault outlasting attempts=2 is a provoked error
                errors.append(exc)
            reprs += [repr(pump), repr(run), repr(run.statistics())]
        # An HTTP error on purpose: 404 for a batch that does not exist.
        other = OpenAI(api_key=KEY, base_url=emu.openai_base_url, clock=clock)
        try:
            await other.retrieve("batch_missing")
        except BatchpumpError as exc:
            errors.append(exc)
        finally:
            await other.aclose()
        # An exception path that formats the provider itself.
        boom = Boom(api_key=KEY, base_url=emu.openai_base_url, clock=clock)
        try:
            await boom.retrieve("batch_x")
        except BatchpumpError as exc:
            errors.append(exc)
        finally:
            await boom.aclose()
    assert len(errors) >= 2
    texts = reprs + [f"{e!s} {e!r} {''.join(traceback.format_exception(e))}" for e in errors]
    for err in errors:
        texts += [str(getattr(err, "body", "")), repr(err.__cause__), repr(err.__context__)]
    texts += [r.getMessage() + repr(r.args) + (r.exc_text or "") for r in caplog.records]
    assert any(r.levelno == logging.DEBUG for r in caplog.records), "DEBUG was not captured"
    leaks = [t for t in texts if KEY in t]
    assert not leaks, leaks[:3]
    assert not files_holding_key(tmp_path)
    if not errors[:-2]:  # the run itself finished: its results are exactly once
        assert_exactly_once_lenient(run.results_path, ids)
    check_private(state, run.results_path)


def assert_exactly_once_lenient(path: Path, ids: list[str]) -> None:
    seen = [line.split(b'"custom_id":"', 1)[1].split(b'"', 1)[0].decode()
            for line in path.read_bytes().splitlines()]  # fmt: skip
    assert sorted(seen) == sorted(ids)


def test_cli_never_prints_the_key(tmp_path: Path) -> None:
    """The CLI against an emulator process with faults: stdout, stderr, files, benchmark
    records: no key anywhere."""
    emu = subprocess.Popen(
        [sys.executable, "-m", "batchpump.emulator", "--port", "0", "--time-scale", "2000",
         "--faults", '{"error_5xx_rate": 0.2, "storm_429_rate": 0.1, "retry_after_seconds": 1}'],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        assert emu.stdout is not None
        url = emu.stdout.readline().rsplit(" ", 1)[1].strip()
        src = tmp_path / "in.jsonl"
        ids = write_requests(src, 300)
        out = tmp_path / "out.jsonl"
        env = {**os.environ, "OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": f"{url}/v1"}
        done = subprocess.run(
            [sys.executable, "-m", "batchpump", "run", str(src), "--out", str(out),
             "--max-lines", "100", "--progress", "json",
             # The emulator's 5xx come before any batch is made: a short settle window (the
             # default looks for 300 s) keeps this test about keys, not about late creates.
             "--create-settle", "1"],
            capture_output=True, env=env, cwd=ROOT, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr.decode()[-2000:]
        assert KEY_BYTES not in done.stdout + done.stderr
        bad = subprocess.run(  # an error path: a usage error naming the run
            [sys.executable, "-m", "batchpump", "resume", "nope", "--journal",
             str(tmp_path / ".batchpump")],
            capture_output=True, env=env, cwd=ROOT, timeout=60, check=False,
        )  # fmt: skip
        assert bad.returncode != 0
        assert KEY_BYTES not in bad.stdout + bad.stderr
    finally:
        emu.terminate()
        emu.wait(timeout=10)
        if emu.stdout is not None:
            emu.stdout.close()
    assert_exactly_once(read_results(out), ids)
    assert not files_holding_key(tmp_path)
    assert not files_holding_key(ROOT / "benchmarks" / "results")
