"""Line reading and validation: every bad-input case, its message, line number and hint.

Rules: files in ``tmp_path`` only; ``on_invalid="raise"`` must leave no shard file behind.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from batchpump import InputError, InputProblem
from batchpump._input import Problem, RequestLineChecker, iter_blocks, shard_file
from batchpump._models import Capabilities

ENDPOINT = "/v1/chat/completions"
GOOD = b'{"custom_id":"%s","method":"POST","url":"/v1/chat/completions","body":{"model":"m"}}'


def good(cid: str) -> bytes:
    return GOOD % cid.encode()


def write(tmp_path: Path, *lines: bytes, raw: bytes | None = None) -> Path:
    path = tmp_path / "in.jsonl"
    path.write_bytes(raw if raw is not None else b"\n".join(lines) + b"\n")
    return path


def problems_of(path: Path, **caps: int | None) -> list[InputProblem]:
    out = path.parent / "shards"
    with pytest.raises(InputError) as info:
        shard_file(
            path,
            out_dir=out,
            run_id="run",
            endpoint=ENDPOINT,
            capabilities=Capabilities(**caps),  # type: ignore[arg-type]
        )
    assert list(out.iterdir()) == []  # nothing left behind, not even a .tmp
    assert str(path) in str(info.value)
    return info.value.problems


def only(problems: list[InputProblem], line: int) -> InputProblem:
    assert [p.line for p in problems] == [line], problems
    return problems[0]


def test_not_json_reports_position(tmp_path: Path) -> None:
    p = only(problems_of(write(tmp_path, good("a"), b'{"custom_id": "b", oops}')), 2)
    assert p.message.startswith("not valid JSON")
    assert "byte" in p.message
    assert "JSON object" in p.hint


def test_not_an_object(tmp_path: Path) -> None:
    p = only(problems_of(write(tmp_path, good("a"), b'"just a string"')), 2)
    assert p.message == "line is a JSON string, not an object"


def test_missing_custom_id(tmp_path: Path) -> None:
    p = only(problems_of(write(tmp_path, b'{"body": {"model": "m"}}')), 1)
    assert p.message == "missing custom_id"
    assert "unique" in p.hint


def test_custom_id_not_a_string(tmp_path: Path) -> None:
    p = only(problems_of(write(tmp_path, b'{"custom_id": 17, "body": {}}')), 1)
    assert p.message == "custom_id must be a string, got number"
    assert '"custom_id": "17"' in p.hint


def test_custom_id_empty(tmp_path: Path) -> None:
    p = only(problems_of(write(tmp_path, good("a"), good(""))), 2)
    assert p.message == "custom_id is empty"


def test_custom_id_too_long(tmp_path: Path) -> None:
    p = only(problems_of(write(tmp_path, good("x" * 65)), custom_id_max_len=64), 1)
    assert p.message == "custom_id is 65 characters, above the provider's limit of 64"


def test_duplicate_custom_id_names_both_lines(tmp_path: Path) -> None:
    path = write(tmp_path, good("a"), good("b"), good("x"), good("c"), good("x"), good("x"))
    problems = problems_of(path)
    assert [p.line for p in problems] == [5, 6]
    assert problems[0].message == "duplicate custom_id 'x' (first seen on line 3)"
    assert problems[1].message == "duplicate custom_id 'x' (first seen on line 3)"


def test_missing_body(tmp_path: Path) -> None:
    p = only(problems_of(write(tmp_path, b'{"custom_id": "a"}')), 1)
    assert p.message == "missing body"


def test_body_not_an_object(tmp_path: Path) -> None:
    p = only(problems_of(write(tmp_path, b'{"custom_id": "a", "body": [1]}')), 1)
    assert p.message == "body must be a JSON object, got array"


def test_model_not_a_string(tmp_path: Path) -> None:
    p = only(problems_of(write(tmp_path, b'{"custom_id": "a", "body": {"model": 4}}')), 1)
    assert p.message == "body.model must be a string, got number"


def test_method_not_post(tmp_path: Path) -> None:
    line = b'{"custom_id": "a", "method": "GET", "body": {}}'
    p = only(problems_of(write(tmp_path, line)), 1)
    assert p.message == "method must be 'POST', got 'GET'"


def test_url_mismatch(tmp_path: Path) -> None:
    line = b'{"custom_id": "a", "url": "/v1/embeddings", "body": {}}'
    p = only(problems_of(write(tmp_path, line)), 1)
    assert p.message == (
        "url '/v1/embeddings' does not match the run's endpoint '/v1/chat/completions'"
    )


def test_line_above_max_line_bytes(tmp_path: Path) -> None:
    big = b'{"custom_id": "big", "body": {"x": "' + b"y" * 500 + b'"}}'
    p = only(problems_of(write(tmp_path, good("a"), big, good("b")), max_line_bytes=200), 2)
    assert p.message == f"line is {len(big)} bytes, above the limit of 200 bytes"


def test_huge_line_is_skipped_without_buffering(tmp_path: Path) -> None:
    big = b'{"custom_id": "big", "body": {"x": "' + b"y" * 300_000 + b'"}}'
    path = write(tmp_path, good("a"), big, good("b"), big)
    blocks = list(iter_blocks(path, max_line_bytes=1000, chunk_bytes=4096))
    oversized = [(b.first, b.oversized) for b in blocks if b.oversized]
    assert oversized == [(2, len(big)), (4, len(big))]
    assert max(len(line) for b in blocks for line in b.lines) < 1000
    problems = problems_of(path, max_line_bytes=1000)
    assert [p.line for p in problems] == [2, 4]


def test_invalid_utf8(tmp_path: Path) -> None:
    bad = b'{"custom_id": "a", "body": {"content": "caf\xe9"}}'
    p = only(problems_of(write(tmp_path, good("z"), bad)), 2)
    offset = bad.index(b"\xe9")
    assert p.message == f"invalid UTF-8 at byte {offset}"
    assert "UTF-8" in p.hint


def test_nul_byte(tmp_path: Path) -> None:
    p = only(problems_of(write(tmp_path, good("a"), b'{"custom_id": "b"\x00}')), 2)
    assert p.message == "contains a NUL byte at byte 17"


def test_utf16_file(tmp_path: Path) -> None:
    path = write(tmp_path, raw=(good("a") + b"\n").decode().encode("utf-16"))
    problems = problems_of(path)
    assert problems[0].line == 1
    assert "UTF-16" in problems[0].hint or "UTF-8" in problems[0].hint


@pytest.mark.parametrize("raw", [b"", b"\n\n  \n", b"\xef\xbb\xbf"])
def test_empty_input(tmp_path: Path, raw: bytes) -> None:
    p = only(problems_of(write(tmp_path, raw=raw)), 0)
    assert p.message == "the input is empty: no request lines"
    assert str(p).startswith("input: ")


def test_json_array_hint(tmp_path: Path) -> None:
    path = write(tmp_path, b"[" + good("a") + b", " + good("b") + b"]")
    p = only(problems_of(path), 1)
    assert p.hint == "this looks like a JSON array; write one object per line (JSONL)"


def test_pretty_json_array_hint(tmp_path: Path) -> None:
    path = write(tmp_path, b"[", good("a") + b",", good("b"), b"]")
    problems = problems_of(path)
    assert problems[0].hint == "this looks like a JSON array; write one object per line (JSONL)"
    assert "trailing comma" in problems[1].hint


def test_csv_hint(tmp_path: Path) -> None:
    path = write(tmp_path, b"custom_id,prompt", b"a,hello")
    problems = problems_of(path)
    assert problems[0].line == 1
    assert problems[0].hint.startswith("this looks like CSV")


def test_problems_are_capped(tmp_path: Path) -> None:
    path = write(tmp_path, *([b"nope"] * 1100))
    problems = problems_of(path)
    assert len(problems) == 1001
    assert problems[-1].line == 0
    assert "stopped checking after 1000 problems" in problems[-1].message


def test_bom_crlf_and_blank_lines_are_tolerated(tmp_path: Path) -> None:
    raw = b"\xef\xbb\xbf" + good("a") + b"\r\n\r\n   \n" + good("b") + b"\r\n" + good("c")
    path = write(tmp_path, raw=raw)
    blocks = list(iter_blocks(path, max_line_bytes=10_000))
    lines = [(b.first + i, line) for b in blocks for i, line in enumerate(b.lines)]
    assert lines == [(1, good("a")), (2, b""), (3, b"   "), (4, good("b")), (5, good("c"))]
    outcome = shard_file(
        path, out_dir=tmp_path / "s", run_id="r", endpoint=ENDPOINT, capabilities=Capabilities()
    )
    assert outcome.total_lines == 3
    shard = Path(outcome.shards[0].path).read_bytes()
    assert shard == good("a") + b"\n" + good("b") + b"\n" + good("c") + b"\n"


def test_checker_fills_in_method_and_url() -> None:
    checker = RequestLineChecker(endpoint=ENDPOINT, max_line_bytes=1000)
    result = checker.check(b'{"custom_id": "a", "extra": 1, "body": {"model": "m", "n": 2}}')
    assert result == (
        "a",
        "m",
        len(b'{"model": "m", "n": 2}'),
        b'{"custom_id":"a","method":"POST","url":"/v1/chat/completions",'
        b'"body":{"model": "m", "n": 2}}',
    )


def test_checker_keeps_complete_lines_as_they_are() -> None:
    checker = RequestLineChecker(endpoint=ENDPOINT, max_line_bytes=1000)
    line = good("a")
    result = checker.check(line)
    assert not isinstance(result, Problem)
    assert result[3] is line
