"""Small helpers shared by the tests: input generation and the exactly-once check."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import msgspec

from batchpump import Result

_decoder = msgspec.json.Decoder(Result)


def write_requests(
    path: Path, count: int, *, model: str = "gpt-4o-mini", prefix: str = "req"
) -> list[str]:
    """Write ``count`` chat-completion request lines; return their custom_ids."""
    ids = [f"{prefix}-{i}" for i in range(count)]
    with path.open("wb") as f:
        for custom_id in ids:
            body = {"model": model, "messages": [{"role": "user", "content": f"say {custom_id}"}]}
            line = {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions"}
            f.write(msgspec.json.encode({**line, "body": body}) + b"\n")
    return ids


def read_results(path: Path) -> list[Result]:
    return _decoder.decode_lines(path.read_bytes())


def assert_exactly_once(results: list[Result], ids: list[str]) -> None:
    """Every input id has exactly one result, and there is no result for anything else."""
    counts = Counter(r.custom_id for r in results)
    duplicated = {k: v for k, v in counts.items() if v > 1}
    assert not duplicated, f"results given more than once: {list(duplicated.items())[:5]}"
    missing = sorted(set(ids) - set(counts))[:5]
    unexpected = sorted(set(counts) - set(ids))[:5]
    assert set(counts) == set(ids), f"missing {missing}, unexpected {unexpected}"


@contextmanager
def emulator_process(*args: str) -> Iterator[str]:
    """``batchpump emulate --port 0`` in its own process (a 2000x clock unless ``args`` say
    otherwise); yields its URL, read from the line it prints first, and stops it at the end."""
    scale = () if "--time-scale" in args else ("--time-scale", "2000")
    proc = subprocess.Popen(
        [sys.executable, "-m", "batchpump", "emulate", "--port", "0", *scale, *args],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("batchpump emulator listening on "), line
        yield line.rsplit(" ", 1)[1].strip()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
