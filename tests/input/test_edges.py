"""Input edges: an endpoint typo blamed once on the setting, and ``on_invalid="skip"`` keeping
one result per custom_id (repeated ids, lines without an id).

Rules: files in ``tmp_path`` only.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from batchpump import UsageError
from batchpump._input import ShardingOutcome, shard_file
from batchpump._models import Capabilities

ENDPOINT = "/v1/chat/completions"


def line(cid: str | None, url: str = ENDPOINT, body: str = '{"model":"m"}') -> bytes:
    head = f'"custom_id":"{cid}",' if cid is not None else ""
    return f'{{{head}"method":"POST","url":"{url}","body":{body}}}'.encode()


def shard(path: Path, *, endpoint: str = ENDPOINT, on_invalid: str = "skip") -> ShardingOutcome:
    return shard_file(
        path,
        out_dir=path.parent / "shards",
        run_id="run",
        endpoint=endpoint,
        capabilities=Capabilities(),
        on_invalid=on_invalid,  # type: ignore[arg-type]
    )


def write(tmp_path: Path, lines: list[bytes]) -> Path:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


@pytest.mark.parametrize("on_invalid", ["raise", "skip"])
def test_an_endpoint_typo_is_blamed_once_on_the_setting(tmp_path: Path, on_invalid: str) -> None:
    path = write(tmp_path, [line(f"r{i}") for i in range(2_000)])
    with pytest.raises(UsageError) as info:
        shard(path, endpoint="/v1/chat/completion", on_invalid=on_invalid)
    message = str(info.value)
    assert "--endpoint /v1/chat/completions" in message
    assert "problems" not in message
    assert "more" not in message
    assert message.count("\n") == 0
    assert not list((tmp_path / "shards").glob("*.jsonl"))


def test_one_line_of_another_endpoint_is_still_that_lines_problem(tmp_path: Path) -> None:
    path = write(tmp_path, [line("a"), line("b", url="/v1/embeddings"), line("c")])
    outcome = shard(path)
    rejected = outcome.rejected
    assert [(r.custom_id, r.line) for r in rejected] == [("b", 2)]


def test_skip_keeps_one_result_per_custom_id(tmp_path: Path) -> None:
    lines = [
        line("a"),
        line("dup"),
        line("b"),
        line("dup"),  # a repeat of a valid line: neither is sent
        line(None),  # no custom_id
        line("bad-and-dup", body="7"),  # bad body, and its id is repeated below
        line("bad-and-dup"),
        line(None),
        line("line-5"),  # an id that the old made-up ids would have clashed with
    ]
    outcome = shard(write(tmp_path, lines))
    rejected = outcome.rejected
    ids = [r.custom_id for r in rejected]
    assert sorted(ids) == ["", "", "bad-and-dup", "dup"]
    by_id = {r.custom_id: r for r in rejected if r.custom_id}
    assert by_id["dup"].line == 2
    assert "lines 2, 4" in by_id["dup"].message
    assert by_id["bad-and-dup"].line == 6
    assert "lines 6, 7" in by_id["bad-and-dup"].message
    assert sorted(r.line for r in rejected if not r.custom_id) == [5, 8]
    sent = sum(s.lines for s in outcome.shards)
    assert sent == 3  # a, b, line-5
    # One result per custom_id: the run expects 3 sent + 4 rejected results for 9 lines.
    assert outcome.total_lines == sent + len(rejected) == 7


def test_raise_still_names_each_repeat(tmp_path: Path) -> None:
    from batchpump import InputError

    with pytest.raises(InputError) as info:
        shard(write(tmp_path, [line("a"), line("a")]), on_invalid="raise")
    assert [p.line for p in info.value.problems] == [2]
    assert "first seen on line 1" in info.value.problems[0].message
