"""``--format openai``: each result status as an OpenAI batch output line.

Rules: pure functions and files in ``tmp_path``; no network.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from batchpump import Canceled, Errored, Expired, Rejected, Result, Succeeded, Usage
from batchpump._formats import native_results_path, openai_line, usage_by_batch, write_openai


def decode(result: Result) -> dict[str, object]:
    line: dict[str, object] = msgspec.json.decode(openai_line(result))
    assert set(line) == {"id", "custom_id", "response", "error"}
    assert str(line["id"]).startswith("batch_req_")
    assert line["custom_id"] == result.custom_id
    return line


def test_succeeded_keeps_the_body_byte_for_byte() -> None:
    body = b'{"id":"chatcmpl-1","object":"chat.completion","choices":[]}'
    line = decode(Succeeded(custom_id="a", batch_id="b", response=msgspec.Raw(body)))
    assert line["error"] is None
    assert line["response"] == {
        "status_code": 200,
        "request_id": None,
        "body": msgspec.json.decode(body),
    }
    assert body in openai_line(Succeeded(custom_id="a", batch_id="b", response=msgspec.Raw(body)))


def test_an_answered_error_is_a_response_an_unanswered_one_is_an_error() -> None:
    body = b'{"error":{"message":"bad","type":"invalid_request_error"}}'
    answered = decode(
        Errored(custom_id="a", code="x", message="bad", status_code=400, body=msgspec.Raw(body))
    )
    assert answered["error"] is None
    assert answered["response"] == {
        "status_code": 400,
        "request_id": None,
        "body": msgspec.json.decode(body),
    }
    unanswered = decode(Errored(custom_id="a", code="server_error", message="gone"))
    assert unanswered["response"] is None
    assert unanswered["error"] == {"code": "server_error", "message": "gone"}


def test_lines_that_never_ran_carry_openai_like_codes() -> None:
    assert decode(Expired(custom_id="e"))["error"] == {
        "code": "batch_expired",
        "message": Expired(custom_id="e").message,
    }
    assert decode(Canceled(custom_id="c"))["error"]["code"] == "batch_cancelled"  # type: ignore[index]
    rejected = decode(Rejected(custom_id="r", line=7, message="not JSON"))
    assert rejected["error"] == {"code": "invalid_request", "message": "line 7: not JSON"}


def test_ids_are_stable_and_distinct() -> None:
    a = Succeeded(custom_id="a", batch_id="b", response=msgspec.Raw(b"{}"))
    b = Succeeded(custom_id="b", batch_id="b", response=msgspec.Raw(b"{}"))
    assert decode(a)["id"] == decode(a)["id"] != decode(b)["id"]


def test_write_openai_and_usage_from_a_results_file(tmp_path: Path) -> None:
    native = tmp_path / "x.results.batchpump.jsonl"
    results = [
        Succeeded(
            custom_id=f"r{i}",
            batch_id="b1" if i < 2 else "b2",
            response=msgspec.Raw(b"{}"),
            usage=Usage(input_tokens=10, output_tokens=i),
        )
        for i in range(3)
    ]
    native.write_bytes(b"".join(msgspec.json.encode(r) + b"\n" for r in results))
    out = tmp_path / "x.results.jsonl"
    assert native_results_path(out) == native
    assert write_openai(native, out) == 3
    assert [msgspec.json.decode(x)["custom_id"] for x in out.read_bytes().splitlines()] == [
        "r0",
        "r1",
        "r2",
    ]
    usage = usage_by_batch(native, {"b1": "m1", "b2": "m2"})
    assert usage == {
        "m1": Usage(input_tokens=20, output_tokens=1),
        "m2": Usage(input_tokens=10, output_tokens=2),
    }
