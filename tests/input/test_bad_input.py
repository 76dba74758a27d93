"""The bad-input catalogue (``docs/bad-input.md``): one test per row.

Rules: every case goes through ``Pump.submit`` with the in-memory ``FakeProvider`` (no sockets)
and a journal in ``tmp_path``; a refused input must name the line (or the file) and the fix, and
the provider must see ZERO calls (nothing prepared, uploaded or created: only the pump's final
``aclose``). Accepted oddities (blank lines, a BOM, CRLF) run to exactly-once results. The
300 MB line is a sparse file checked in a child process, so its peak memory is measured alone.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import msgspec
import pytest

from batchpump import InputError, MemoryJournal, PollPolicy, Pump, RunOptions, UsageError
from batchpump._models import Capabilities, RunRecord

from ..fakes import FakeProvider, WrappedJournal
from ..helpers import assert_exactly_once, read_results

FAST = RunOptions(poll=PollPolicy(interval_min=0.0, interval_max=0.001))
GOOD = b'{"custom_id":"a","body":{"model":"gpt-4o-mini","messages":[]}}'


def line(cid: str) -> bytes:
    return GOOD.replace(b'"a"', msgspec.json.encode(cid))


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


async def refused(
    tmp_path: Path, data: bytes, *, provider: FakeProvider | None = None
) -> tuple[InputError, FakeProvider]:
    """Submit ``data``; return the ``InputError`` and the provider (asserting it was untouched)."""
    src = tmp_path / "in.jsonl"
    src.write_bytes(data)
    fake = provider or FakeProvider()
    with pytest.raises(InputError) as info:
        async with Pump(fake, state_dir=tmp_path / "state") as pump:
            await pump.submit(src)
    assert dict(fake.calls) == {"aclose": 1}, f"the provider was called: {dict(fake.calls)}"
    assert "nothing was uploaded" in str(info.value)
    return info.value, fake


async def accepted(tmp_path: Path, data: bytes, ids: list[str]) -> FakeProvider:
    src = _write(tmp_path / "in.jsonl", data)
    fake = FakeProvider()
    async with Pump(fake, state_dir=tmp_path / "state") as pump:
        run = await pump.submit(src, options=FAST)
        counts = await run.wait()
    assert counts.succeeded == len(ids)
    assert_exactly_once(read_results(run.results_path), ids)
    return fake


# (row id, input bytes, the lines named, fragments of the message, in order of the lines)
REFUSED: list[tuple[str, bytes, list[int], list[str]]] = [
    ("not-json", GOOD + b"\n{not json}\n", [2], ["line 2: not valid JSON", "one JSON object"]),
    ("not-an-object", GOOD + b"\n[1, 2]\n", [2], ["line 2: line is a JSON array, not an object"]),
    ("number-line", GOOD + b"\n42\n", [2], ["line 2: line is a JSON number, not an object"]),
    (
        "missing-custom-id",
        GOOD + b'\n{"body": {}}\n',
        [2],
        ["line 2: missing custom_id", 'unique "custom_id"'],
    ),
    (
        "number-custom-id",
        GOOD + b'\n{"custom_id": 7, "body": {}}\n',
        [2],
        ["line 2: custom_id must be a string, got number", '"custom_id": "7"'],
    ),
    (
        "null-custom-id",
        GOOD + b'\n{"custom_id": null, "body": {}}\n',
        [2],
        ["line 2: custom_id must be a string, got null"],
    ),
    (
        "empty-custom-id",
        GOOD + b'\n{"custom_id": "", "body": {}}\n',
        [2],
        ["line 2: custom_id is empty", "non-empty custom_id"],
    ),
    (
        "duplicate-custom-id",
        GOOD + b"\n" + line("b") + b"\n" + GOOD + b"\n",
        [3],
        ["line 3: duplicate custom_id 'a' (first seen on line 1)", "must be unique"],
    ),
    ("missing-body", GOOD + b'\n{"custom_id": "b"}\n', [2], ["line 2: missing body", '"body"']),
    (
        "body-not-object",
        GOOD + b'\n{"custom_id": "b", "body": "hi"}\n',
        [2],
        ["line 2: body must be a JSON object, got string"],
    ),
    (
        "method-not-post",
        GOOD + b'\n{"custom_id": "b", "method": "GET", "body": {}}\n',
        [2],
        ["line 2: method must be 'POST', got 'GET'", "leave method out"],
    ),
    (
        "url-not-endpoint",
        GOOD + b'\n{"custom_id": "b", "url": "/v1/embeddings", "body": {}}\n',
        [2],
        ["line 2: url '/v1/embeddings' does not match the run's endpoint", "separate run"],
    ),
    (
        "invalid-utf8",
        GOOD + b'\n{"custom_id": "b", "body": {"x": "\xff\xfe"}}\n',
        [2],
        ["line 2: invalid UTF-8 at byte", "save the file as UTF-8"],
    ),
    (
        "nul-byte",
        GOOD + b'\n{"custom_id": "b", "body": {}}\x00\n',
        [2],
        ["line 2: contains a NUL byte", "save it as UTF-8 JSONL"],
    ),
    ("empty-file", b"", [0], ["input: the input is empty", "one JSON request object per line"]),
    ("blank-lines-only", b"\n  \n\n", [0], ["input: the input is empty"]),
    (
        "csv",
        b"custom_id,prompt\na,hello\n",
        [1, 2],
        ["line 1: not valid JSON", "this looks like CSV"],
    ),
    (
        "json-array-pretty",
        b'[\n  {"custom_id": "a", "body": {}}\n]\n',
        [1, 3],
        ["line 1: not valid JSON", "looks like a JSON array"],
    ),
    (
        "json-array-one-line",
        b'[{"custom_id": "a", "body": {}}]\n',
        [1],
        ["line 1: line is a JSON array, not an object", "looks like a JSON array"],
    ),
    (
        "pretty-printed-object",
        b'{\n  "custom_id": "a",\n  "body": {}\n}\n',
        [1, 2, 3, 4],
        ["line 1: not valid JSON", "pretty-printed JSON"],
    ),
    (
        "utf16-file",
        '{"custom_id": "a", "body": {}}\n'.encode("utf-16"),
        [1, 2],
        ["line 1: invalid UTF-8", "line 2: contains a NUL byte", "UTF-16"],
    ),
]


@pytest.mark.parametrize(("data", "lines", "fragments"), [r[1:] for r in REFUSED],
                         ids=[r[0] for r in REFUSED])  # fmt: skip
async def test_refused_before_anything_is_sent(
    tmp_path: Path, data: bytes, lines: list[int], fragments: list[str]
) -> None:
    error, _ = await refused(tmp_path, data)
    assert error.lines == lines
    text = str(error)
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in:\n{text}"
    position = [text.index(f"line {n}:") for n in lines if n > 0]
    assert position == sorted(position), "problems are listed in line order"
    # Skipping is offered only where there are lines to skip.
    assert ("--on-invalid skip" in text) == any(n > 0 for n in lines)


async def test_line_above_the_per_line_size(tmp_path: Path) -> None:
    small = FakeProvider(capabilities=Capabilities(max_line_bytes=1_000))
    big = b'{"custom_id": "b", "body": {"x": "' + b"y" * 2_000 + b'"}}'
    error, _ = await refused(tmp_path, GOOD + b"\n" + big + b"\n" + line("c"), provider=small)
    assert error.lines == [2]
    assert f"line 2: line is {len(big):,} bytes, above the limit of 1,000 bytes" in str(error)
    assert "split it" in str(error)


async def test_blank_lines_are_accepted_and_keep_the_numbering(tmp_path: Path) -> None:
    error, _ = await refused(tmp_path, b"\n" + GOOD + b"\n\n   \n" + b'{"custom_id": "b"}\n')
    assert error.lines == [5]  # the fifth physical line, blanks counted
    fake = await accepted(
        tmp_path / "ok", b"\n" + GOOD + b"\n\n\n" + line("b") + b"\n\n", ["a", "b"]
    )
    assert fake.calls["create"] == 1


async def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    await accepted(tmp_path, b"\xef\xbb\xbf" + GOOD + b"\n" + line("b") + b"\n", ["a", "b"])


async def test_crlf_line_ends_are_accepted(tmp_path: Path) -> None:
    await accepted(tmp_path, GOOD + b"\r\n" + line("b") + b"\r\n" + line("c"), ["a", "b", "c"])


async def test_missing_file(tmp_path: Path) -> None:
    fake = FakeProvider()
    with pytest.raises(UsageError, match="no such file"):
        async with Pump(fake, state_dir=tmp_path / "state") as pump:
            await pump.submit(tmp_path / "absent.jsonl")
    assert dict(fake.calls) == {"aclose": 1}


async def test_directory(tmp_path: Path) -> None:
    fake = FakeProvider()
    with pytest.raises(UsageError, match="is a directory; give the JSONL file inside it"):
        async with Pump(fake, state_dir=tmp_path / "state") as pump:
            await pump.submit(tmp_path)
    assert dict(fake.calls) == {"aclose": 1}


_BIG_LINE = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import anyio
    from batchpump import PollPolicy, Pump, RunOptions
    from batchpump import InputError
    from batchpump.providers.openai import OpenAI
    from tests.fakes import FakeProvider

    src = Path(sys.argv[1])
    good = b'{"custom_id":"a","body":{"model":"m","messages":[]}}\\n'
    with src.open("wb") as f:  # sparse: 300 MB of line, almost no disk
        f.write(good + b'{"custom_id":"big","body":{"x":"')
        f.seek(300_000_000, 1)
        f.write(b'"}}\\n' + good.replace(b'"a"', b'"c"'))

    async def main() -> None:
        fake = FakeProvider(capabilities=OpenAI.capabilities)
        started = time.monotonic()
        try:
            async with Pump(fake, state_dir=src.parent / "state") as pump:
                await pump.submit(src)
        except InputError as exc:
            print(repr(exc.lines))
            print(str(exc).splitlines()[1])
        print(dict(fake.calls))
        print(round(time.monotonic() - started, 2))
        # VmHWM, not ru_maxrss: across fork and exec Linux carries the parent's peak into the
        # child's ru_maxrss, so a big pytest process would be measured instead of this one.
        hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0]
        print(int(hwm.split()[1]) // 1024)

    anyio.run(main)
    """
)


def test_300_mb_single_line_is_measured_not_loaded(tmp_path: Path) -> None:
    """A 300 MB line (above OpenAI's 200 MB per-line cap) is refused by line number; memory
    stays bounded by that cap (the reader buffers at most the longest acceptable line)."""
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", _BIG_LINE, str(tmp_path / "big.jsonl")],
        capture_output=True,
        text=True,
        cwd=root,
        timeout=60,
        check=True,
    ).stdout.splitlines()
    lines, message, calls, _seconds, peak_mib = out
    assert lines == "[2]"
    assert "line 2: line is 300,000,035 bytes, above the limit of" in message
    assert calls == "{'aclose': 1}"
    assert int(peak_mib) < 400, f"peak RSS {peak_mib} MiB for a 300 MB line"


class _GrowingJournal(WrappedJournal):
    """A journal that appends lines to the input right after the run was recorded: the file
    grows between the pump hashing it (the run id) and sharding it."""

    def __init__(self, src: Path, extra: bytes) -> None:
        super().__init__(MemoryJournal())
        self.src = src
        self.extra = extra

    async def open_run(self, run: RunRecord) -> tuple[RunRecord, bool]:
        with self.src.open("ab") as f:
            f.write(self.extra)
        return await self.inner.open_run(run)


async def test_file_growing_while_read_is_refused_or_cut_to_the_hashed_prefix(
    tmp_path: Path,
) -> None:
    src = tmp_path / "in.jsonl"
    src.write_bytes(GOOD + b"\n" + line("b") + b"\n")
    fake = FakeProvider()
    journal = _GrowingJournal(src, line("late") + b"\n")
    refusal: UsageError | None = None
    try:
        async with Pump(fake, state_dir=tmp_path / "state", journal=journal) as pump:
            run = await pump.submit(src, options=FAST)
            await run.wait()
    except UsageError as exc:  # refusing is right too, if it says why and sends nothing
        refusal = exc
    if refusal is not None:
        assert "changed" in str(refusal)
        assert fake.calls["create"] == 0
    else:
        # The run must hold exactly the bytes its id was made from: the first two lines.
        assert_exactly_once(read_results(run.results_path), ["a", "b"])
