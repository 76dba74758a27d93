"""Small helpers shared by the tests: input generation and the exactly-once check."""

from __future__ import annotations

from collections import Counter
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
