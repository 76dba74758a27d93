"""``batchpump stream`` as a subprocess: stdin as it comes, Ctrl-C, the command it prints.

The emulator runs in this process on 127.0.0.1 port 0 (scaled clock); the CLI runs as a
subprocess with a fake key, reading a pipe the test writes to. On Ctrl-C it prints the whole
command that continues the stream; the test runs exactly that command (its address given on
the command line, not in the environment) with the same input and more.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import sys
from collections import Counter
from pathlib import Path

import anyio
import msgspec

from batchpump import Result
from batchpump.cli import EXIT_INTERRUPTED, EXIT_OK
from batchpump.emulator._server import RunningEmulator

from .conftest import KEY, request

ROOT = Path(__file__).resolve().parents[2]
_decoder = msgspec.json.Decoder(Result)


def _lines(first: int, stop: int) -> bytes:
    return b"".join(msgspec.json.encode(request(f"s-{i}")) + b"\n" for i in range(first, stop))


def _results(path: Path) -> Counter[str]:
    data = path.read_bytes() if path.exists() else b""
    return Counter(r.custom_id for r in _decoder.decode_lines(data))


async def test_stream_command_continues_after_ctrl_c(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    out = tmp_path / "results.jsonl"
    state = tmp_path / "my state"  # a space: the printed command must quote it
    args = [
        "stream",
        "feed",
        "--out",
        str(out),
        "--journal",
        str(state),
        "--base-url",
        emulator.openai_base_url,
        "--flush-lines",
        "10",
        "--flush-after",
        "250.5",
        "--max-pending",
        "5000",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OPENAI_API_KEY": KEY}
    env.pop("OPENAI_BASE_URL", None)
    python = [sys.executable, "-m", "batchpump"]
    async with await anyio.open_process(python + args, env=env, cwd=tmp_path) as first:
        assert first.stdin is not None
        assert first.stderr is not None
        await first.stdin.send(_lines(0, 30))  # three batches, cut by size as they come
        while len(_results(out)) < 30:  # noqa: ASYNC110 (the results file is the only signal)
            await anyio.sleep(0.01)
        await first.stdin.send(_lines(30, 35))  # an open segment: not cut before the stop
        first.send_signal(signal.SIGINT)
        assert await first.wait() == EXIT_INTERRUPTED
        stopped = b"".join([chunk async for chunk in first.stderr]).decode()
    found = re.search(r"continue with: (.+?) \(Ctrl-C again", stopped)
    assert found is not None, stopped
    words = shlex.split(found.group(1))
    assert KEY not in found.group(1)
    assert words[0] == "batchpump"
    assert words[:3] == ["batchpump", "stream", "feed"]
    given = dict(zip(args[2::2], args[3::2], strict=True))
    assert dict(zip(words[3::2], words[4::2], strict=True)) == {
        **given,
        "--provider": "openai",
        "--endpoint": "/v1/chat/completions",
    }
    async with await anyio.open_process(python + words[1:], env=env, cwd=tmp_path) as again:
        assert again.stdin is not None
        assert again.stderr is not None
        await again.stdin.send(_lines(0, 50))  # the same input again, and more
        await again.stdin.aclose()
        assert await again.wait() == EXIT_OK
        said = b"".join([chunk async for chunk in again.stderr]).decode()
    assert _results(out) == Counter(f"s-{i}" for i in range(50))
    repeated = re.search(r"(\d+) lines repeated a custom_id the stream had already accepted", said)
    assert repeated is not None, said
    assert 30 <= int(repeated.group(1)) <= 35  # the last 5 may or may not be in before the stop
    assert "were skipped" in said
    assert not emulator.emulator.stats.duplicate_tags()


async def test_stream_command_names_bad_lines_and_goes_on(
    emulator: RunningEmulator, tmp_path: Path
) -> None:
    """A bad line from stdin is refused by its line number, a repeated id skipped, and the
    rest (a bad last line without its newline included) goes through: exit 0."""
    out = tmp_path / "results.jsonl"
    good = _lines(0, 3).splitlines(keepends=True)
    data = good[0] + b"not json\n" + b"\n" + good[0] + good[1] + good[2] + b"[1, 2]"
    args = ["stream", "bad", "--out", str(out), "--journal", str(tmp_path / "state")]
    args += ["--base-url", emulator.openai_base_url, "--flush-after", "1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OPENAI_API_KEY": KEY}
    async with await anyio.open_process(
        [sys.executable, "-m", "batchpump", *args], env=env, cwd=tmp_path
    ) as proc:
        assert proc.stdin is not None
        assert proc.stderr is not None
        await proc.stdin.send(data)
        await proc.stdin.aclose()
        assert await proc.wait() == EXIT_OK
        said = b"".join([chunk async for chunk in proc.stderr]).decode()
    assert _results(out) == Counter(f"s-{i}" for i in range(3))
    assert "stdin line 2: refused: not valid JSON" in said
    assert "stdin line 7: refused:" in said  # the last line, no newline; blank line 3 counted
    assert "1 line repeated a custom_id the stream had already accepted" in said
    assert "2 lines refused (see above)" in said
    assert KEY not in said
