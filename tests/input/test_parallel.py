"""Checking in worker processes: the same shards, errors and hash as checking in-process.

Rules: files in ``tmp_path`` (or a temporary directory per hypothesis example); ranges are made
tiny (``parallel.BLOCK_BYTES``) so that a small input spans many of them, with lines across
range boundaries; every comparison is against the in-process pass over the same file.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchpump import BatchpumpError, InputError, UsageError
from batchpump._input import parallel, shard_file
from batchpump._input.parallel import CheckedRange
from batchpump._models import Capabilities

ENDPOINT = "/v1/chat/completions"
_ENC = msgspec.json.Encoder()
_MIN_BYTES = parallel.MIN_BYTES
_CHECK_RANGE = parallel.check_range
_TEXTS = ("hello", "héllo wörld", "漢字テキスト", "emoji 😀🚀", "tab\\there")


pytestmark = pytest.mark.skipif(
    not parallel._FORK,
    reason="inputs are checked in worker processes only where fork is safe (Python < 3.12)",
)


@pytest.fixture(autouse=True)
def _small_ranges(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parallel, "BLOCK_BYTES", 256)
    monkeypatch.setattr(parallel, "WORKERS", 2)


def request(cid: str, model: str = "m", text: str = "x", *, full: bool = True) -> bytes:
    body = {"model": model, "messages": [{"role": "user", "content": text}]}
    if full:
        return _ENC.encode({"custom_id": cid, "method": "POST", "url": ENDPOINT, "body": body})
    return _ENC.encode({"custom_id": cid, "body": body})


def outcome(path: Path, out: Path, *, in_workers: bool, **options: Any) -> object:
    """Everything a pass produced (files, records, rejected lines, hash) or its error."""
    parallel.MIN_BYTES = 0 if in_workers else 1 << 62
    caps = options.pop("caps", Capabilities())
    try:
        result = shard_file(
            path, out_dir=out, run_id="run", endpoint=ENDPOINT, capabilities=caps, **options
        )
    except InputError as exc:
        return ("input error", [(p.line, p.message, p.hint) for p in exc.problems])
    except UsageError as exc:
        return ("usage error", str(exc))
    finally:
        parallel.MIN_BYTES = _MIN_BYTES
    shards = [
        (
            Path(s.path).name,
            Path(s.path).read_bytes(),
            (s.index, s.lines, s.bytes, s.model, s.tokens),
        )
        for s in result.shards
    ]
    return (shards, result.rejected, result.total_lines, result.input_hash, sorted(os.listdir(out)))


def both(path: Path, work: Path, **options: Any) -> tuple[object, object]:
    here = outcome(path, work / "here", in_workers=False, **dict(options))
    there = outcome(path, work / "there", in_workers=True, **dict(options))
    return here, there


@st.composite
def inputs(draw: st.DrawFn) -> bytes:
    """A JSONL file of mostly valid lines with every kind of oddity the reader knows."""
    kinds = st.sampled_from(
        ["full"] * 8
        + ["partial", "blank", "space", "bad json", "bad id", "dup", "crlf", "bad utf8", "nul"]
    )
    count = draw(st.integers(1, 40))
    lines: list[bytes] = []
    ids: list[str] = []
    for index in range(count):
        kind = draw(kinds)
        cid = f"id-{index}"
        model = draw(st.sampled_from(["m", "m", "n"]))
        text = draw(st.sampled_from(_TEXTS)) * draw(st.integers(0, 12))
        if kind == "dup" and ids:
            cid = draw(st.sampled_from(ids))
        ids.append(cid)
        if kind in ("full", "dup"):
            lines.append(request(cid, model, text))
        elif kind == "partial":
            lines.append(request(cid, model, text, full=False))
        elif kind == "blank":
            lines.append(b"")
        elif kind == "space":
            lines.append(b"  \t")
        elif kind == "bad json":
            lines.append(request(cid, model, text)[:-3])
        elif kind == "bad id":
            lines.append(request(cid, model, text).replace(f'"{cid}"'.encode(), b"7"))
        elif kind == "crlf":
            lines.append(request(cid, model, text) + b"\r")
        elif kind == "bad utf8":
            lines.append(request(cid, model, "x@@").replace(b"@@", b"\xff"))
        else:
            lines.append(request(cid, model, "x@@").replace(b"@@", b"\x00"))
    data = b"\n".join(lines)
    if draw(st.booleans()):
        data += b"\n"
    if draw(st.integers(0, 9)) == 0:
        data = b"\xef\xbb\xbf" + data
    return data


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    data=inputs(),
    on_invalid=st.sampled_from(["raise", "skip"]),
    max_lines=st.sampled_from([None, 3, 7]),
    max_bytes=st.sampled_from([None, 700, 3000]),
    per_model=st.booleans(),
)
def test_workers_and_in_process_agree(
    data: bytes, on_invalid: str, max_lines: int | None, max_bytes: int | None, per_model: bool
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        path = work / "in.jsonl"
        path.write_bytes(data)
        here, there = both(
            path,
            work,
            on_invalid=on_invalid,
            max_lines=max_lines,
            max_bytes=max_bytes,
            caps=Capabilities(one_model_per_shard=per_model),
        )
        assert there == here


def _valid_file(path: Path, lines: int, *, final_newline: bool = True) -> list[bytes]:
    written = [
        request(f"req-{i}", ("a", "b")[i // 17 % 2], _TEXTS[i % len(_TEXTS)] * (i % 9))
        for i in range(lines)
    ]
    path.write_bytes(b"\n".join(written) + (b"\n" if final_newline else b""))
    return written


def _spy_ranges(monkeypatch: pytest.MonkeyPatch) -> list[CheckedRange]:
    seen: list[CheckedRange] = []
    ranges = parallel.RangeChecker.ranges

    def spy(self: parallel.RangeChecker) -> Iterator[CheckedRange]:
        for checked in ranges(self):
            seen.append(checked)
            yield checked

    monkeypatch.setattr(parallel.RangeChecker, "ranges", spy)
    return seen


@pytest.mark.parametrize("per_model", [True, False])
@pytest.mark.parametrize("final_newline", [True, False])
def test_valid_input_is_checked_by_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, per_model: bool, final_newline: bool
) -> None:
    written = _valid_file(tmp_path / "in.jsonl", 300, final_newline=final_newline)
    seen = _spy_ranges(monkeypatch)
    caps = Capabilities(one_model_per_shard=per_model)
    for options in ({}, {"max_lines": 40}, {"max_bytes": 5000}):
        seen.clear()
        here, there = both(
            tmp_path / "in.jsonl", tmp_path / str(len(options)), caps=caps, **options
        )
        assert there == here
        checked = [r for r in seen if r.lines >= 0]
        assert len(checked) > 20  # the workers checked (nearly) every range
        assert sum(r.lines for r in checked) > 250
        assert [r.start for r in seen[1:]] == [r.end for r in seen[:-1]]  # ranges tile the file
    shards = there[0]  # type: ignore[index]
    sent = b"".join(data for _, data, _ in shards).split(b"\n")[:-1]
    assert sorted(sent) == sorted(written)  # each line once, as it was
    assert not multiprocessing.active_children()  # the pool ended with the pass


def test_first_bad_line_by_position_wins(tmp_path: Path) -> None:
    lines = [request(f"r{i}") for i in range(200)]
    lines[150] = b'{"custom_id": "r150", "body": 3}'
    lines[120] = request("r7")  # a repeat of line 8's id
    lines[40] = b"not json"
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    here, there = both(path, tmp_path)
    assert there == here
    assert isinstance(there, tuple)
    assert there[0] == "input error"
    assert [line for line, _, _ in there[1]] == [41, 121, 151]


def _die_at_third_range(
    offset: int, path: str, block: int, size: int, max_line_bytes: int
) -> CheckedRange:
    if offset >= 2 * block:
        os.kill(os.getpid(), signal.SIGKILL)
    return _CHECK_RANGE(offset, path, block, size, max_line_bytes)


def test_a_worker_dying_fails_the_pass_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _valid_file(tmp_path / "in.jsonl", 200)
    monkeypatch.setattr(parallel, "check_range", _die_at_third_range)
    monkeypatch.setattr(parallel, "MIN_BYTES", 0)
    out = tmp_path / "out"
    with pytest.raises(BatchpumpError, match=r"worker process checking .* stopped unexpectedly"):
        shard_file(
            tmp_path / "in.jsonl",
            out_dir=out,
            run_id="run",
            endpoint=ENDPOINT,
            capabilities=Capabilities(),
        )
    assert list(out.iterdir()) == []  # no shard file left behind
    assert not multiprocessing.active_children()


def test_a_small_input_starts_no_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _valid_file(tmp_path / "in.jsonl", 50)
    assert (tmp_path / "in.jsonl").stat().st_size < parallel.MIN_BYTES
    seen = _spy_ranges(monkeypatch)
    result = shard_file(
        tmp_path / "in.jsonl",
        out_dir=tmp_path / "out",
        run_id="run",
        endpoint=ENDPOINT,
        capabilities=Capabilities(),
    )
    assert sum(s.lines for s in result.shards) == 50
    assert seen == []  # checked in-process: no pool was started
    assert not multiprocessing.active_children()


@pytest.mark.parametrize("final_newline", [True, False])
def test_a_crlf_input_is_checked_by_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, final_newline: bool
) -> None:
    written = _valid_file(tmp_path / "lf.jsonl", 200, final_newline=final_newline)
    crlf = (tmp_path / "lf.jsonl").read_bytes().replace(b"\n", b"\r\n")
    (tmp_path / "in.jsonl").write_bytes(crlf + (b"" if final_newline else b"\r"))
    seen = _spy_ranges(monkeypatch)
    here, there = both(tmp_path / "in.jsonl", tmp_path, max_lines=30)
    assert there == here
    assert sum(r.lines for r in seen if r.lines >= 0) > 150  # not left to the parent
    shards = there[0]  # type: ignore[index]
    sent = b"".join(data for _, data, _ in shards).split(b"\n")[:-1]
    assert sorted(sent) == sorted(written)  # LF line ends, no CR left
