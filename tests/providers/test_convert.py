"""OpenAI chat -> Anthropic params conversion, and the Anthropic line validator and sharder.

Pure units plus ``shard_file`` on files in ``tmp_path``: no network, no clock.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from batchpump import InputError, UsageError
from batchpump._input import LineChecker, Problem, shard_file
from batchpump.providers.anthropic import CAPABILITIES, Anthropic
from batchpump.providers.anthropic._chat import (
    DEFAULT_MAX_TOKENS,
    ConversionError,
    chat_to_anthropic,
)

USER = {"role": "user", "content": "hi"}


def body(**extra: Any) -> dict[str, Any]:
    return {"model": "claude-3-5-haiku-latest", "messages": [USER], **extra}


# -- mappings ------------------------------------------------------------------------------------


def test_minimal_body_gets_default_max_tokens() -> None:
    assert chat_to_anthropic(body()) == {
        "model": "claude-3-5-haiku-latest",
        "max_tokens": DEFAULT_MAX_TOKENS,
        "messages": [USER],
    }


def test_system_and_developer_messages_become_system() -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "developer", "content": [{"type": "text", "text": "no jokes"}]},
        USER,
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "again"},
    ]
    params = chat_to_anthropic(body(messages=messages))
    assert params["system"] == "be brief\n\nno jokes"
    assert [m["role"] for m in params["messages"]] == ["user", "assistant", "user"]


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"max_tokens": 7}, 7),
        ({"max_completion_tokens": 9, "max_tokens": 7}, 9),
    ],
)
def test_max_tokens(extra: dict[str, Any], expected: int) -> None:
    assert chat_to_anthropic(body(**extra))["max_tokens"] == expected


def test_default_max_tokens_is_a_parameter() -> None:
    assert chat_to_anthropic(body(), default_max_tokens=12)["max_tokens"] == 12


@pytest.mark.parametrize(
    ("stop", "expected"), [("END", ["END"]), (["a", "b"], ["a", "b"]), (None, None), ([], None)]
)
def test_stop_becomes_stop_sequences(stop: Any, expected: list[str] | None) -> None:
    assert chat_to_anthropic(body(stop=stop)).get("stop_sequences") == expected


def test_sampling_and_user() -> None:
    params = chat_to_anthropic(body(temperature=0.2, top_p=0.9, user="u-1"))
    assert (params["temperature"], params["top_p"]) == (0.2, 0.9)
    assert params["metadata"] == {"user_id": "u-1"}


def test_image_parts_map_to_image_blocks() -> None:
    content = [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
    ]
    params = chat_to_anthropic(body(messages=[{"role": "user", "content": content}]))
    text, b64, url = params["messages"][0]["content"]
    assert text == {"type": "text", "text": "what is this"}
    assert b64["source"] == {"type": "base64", "media_type": "image/png", "data": "AAAA"}
    assert url["source"] == {"type": "url", "url": "https://example.com/cat.jpg"}


def test_neutral_values_are_accepted() -> None:
    neutral = body(stream=False, n=1, logprobs=False, store=True, response_format={"type": "text"})
    assert chat_to_anthropic(neutral) == chat_to_anthropic(body())


# -- refusals ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"n": 2}, "body.n"),
        ({"n": True}, "body.n"),
        ({"logprobs": True}, "body.logprobs"),
        ({"response_format": {"type": "json_object"}}, "body.response_format"),
        ({"tools": [{"type": "function"}]}, "body.tools"),
        ({"seed": 3}, "body.seed"),
        ({"frequency_penalty": 0.5}, "body.frequency_penalty"),
        ({"temperature": 1.5}, "body.temperature"),
        ({"stop": 5}, "body.stop"),
        ({"max_tokens": 0}, "body.max_tokens"),
        ({"model": 3}, "body.model"),
        ({"messages": []}, "body.messages"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "body.messages[0].role"),
        (
            {"messages": [{"role": "user", "content": "x", "name": "bob"}]},
            "body.messages[0].name",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]},
            "body.messages[0].content[0]",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}]},
            "body.messages[0].content[0]",
        ),
        ({"messages": [USER, {"role": "system", "content": "late"}]}, "body.messages[1]"),
        ({"messages": [{"role": "system", "content": "only"}]}, "body.messages"),
    ],
)
def test_refusals_name_the_field(extra: dict[str, Any], field: str) -> None:
    with pytest.raises(ConversionError) as info:
        chat_to_anthropic(body(**extra))
    assert info.value.field == field
    assert str(info.value).startswith(field)
    assert isinstance(info.value, UsageError)


# -- the line checker ----------------------------------------------------------------------------


def anthropic() -> Anthropic:
    return Anthropic(api_key="sk-ant-test", base_url="http://127.0.0.1:9")  # sends nothing


def checker() -> LineChecker:
    return anthropic().line_checker(endpoint="/v1/chat/completions", max_line_bytes=10_000)


def line(obj: dict[str, Any]) -> bytes:
    return msgspec.json.encode(obj)


NATIVE = {"model": "claude-x", "max_tokens": 5, "messages": [USER]}


def test_native_line_is_kept_byte_for_byte() -> None:
    params = b'{"model":"claude-x","max_tokens":5,"messages":[]}'
    raw = b'{"custom_id": "a-1", "params": ' + params + b"}"
    assert checker().check(raw) == ("a-1", "claude-x", len(params), raw)


def test_native_line_with_extra_keys_is_reencoded() -> None:
    raw = line({"custom_id": "a", "params": NATIVE, "note": "x"})
    checked = checker().check(raw)
    assert not isinstance(checked, Problem)
    cid, model, _, data = checked
    assert (cid, model) == ("a", "claude-x")
    assert msgspec.json.decode(data) == {"custom_id": "a", "params": NATIVE}


def test_chat_line_is_converted() -> None:
    raw = line({"custom_id": "c", "url": "/v1/chat/completions", "body": body(max_tokens=3)})
    checked = checker().check(raw)
    assert not isinstance(checked, Problem)
    cid, model, _, data = checked
    assert (cid, model) == ("c", "claude-3-5-haiku-latest")
    params = msgspec.json.decode(data)["params"]
    assert params == {"model": "claude-3-5-haiku-latest", "max_tokens": 3, "messages": [USER]}


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({"custom_id": "a", "params": {"model": "m", "messages": []}}, "params has no max_tokens"),
        ({"custom_id": "a", "params": {"max_tokens": 0, "model": "m"}}, "positive integer"),
        ({"custom_id": "a", "params": {"max_tokens": 5}}, "params.model"),
        ({"custom_id": "a.b", "params": NATIVE}, "custom_id 'a.b' is not valid"),
        ({"custom_id": "x" * 65, "params": NATIVE}, "is not valid"),
        ({"params": NATIVE}, "missing custom_id"),
        ({"custom_id": "a"}, "missing params"),
        ({"custom_id": "a", "params": NATIVE, "body": body()}, "both params and body"),
        ({"custom_id": "a", "params": [1]}, "params must be a JSON object"),
        ({"custom_id": "a", "body": body(n=2)}, "cannot convert to Anthropic: body.n"),
        ({"custom_id": "a", "url": "/v1/embeddings", "body": body()}, "chat-completions"),
    ],
)
def test_bad_lines(obj: dict[str, Any], message: str) -> None:
    problem = checker().check(line(obj))
    assert isinstance(problem, Problem)
    assert message in problem.message
    assert problem.hint


def test_not_json_uses_the_common_diagnostics() -> None:
    problem = checker().check(b"[1, 2]", True)
    assert isinstance(problem, Problem)
    assert "JSON array" in problem.hint


# -- sharding ------------------------------------------------------------------------------------


def test_shard_file_writes_native_lines(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    native = line({"custom_id": "n1", "params": NATIVE})
    chat = line({"custom_id": "c1", "body": body()})
    src.write_bytes(native + b"\n" + chat + b"\n")
    out = shard_file(
        src, out_dir=tmp_path / "s", run_id="r", endpoint="/v1/chat/completions",
        capabilities=CAPABILITIES, line_checker=anthropic().line_checker,
    )  # fmt: skip
    models = sorted(s.model or "" for s in out.shards)
    assert models == ["claude-3-5-haiku-latest", "claude-x"]
    written = b"".join(Path(s.path).read_bytes() for s in out.shards)
    assert native + b"\n" in written
    for raw in written.splitlines():
        assert set(msgspec.json.decode(raw)) == {"custom_id", "params"}


def test_shard_file_reports_anthropic_problems_with_line_numbers(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    lines = [
        line({"custom_id": "ok", "params": NATIVE}),
        line({"custom_id": "m", "params": {"model": "m", "messages": [USER]}}),
        line({"custom_id": "bad id", "params": NATIVE}),
        line({"custom_id": "c", "body": body(logprobs=True)}),
    ]
    src.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(InputError) as info:
        shard_file(
            src, out_dir=tmp_path / "s", run_id="r", endpoint="/v1/chat/completions",
            capabilities=CAPABILITIES, line_checker=anthropic().line_checker,
        )  # fmt: skip
    assert info.value.lines == [2, 3, 4]
    text = str(info.value)
    assert "line 2: params has no max_tokens; Anthropic requires it" in text
    assert "body.logprobs" in text
    assert not list((tmp_path / "s").glob("*.jsonl"))
