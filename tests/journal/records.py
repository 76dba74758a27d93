"""Records and raw-file helpers shared by the journal tests."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import msgspec

from batchpump._models import RunRecord, ShardRecord

__all__ = ["RUN", "make_run", "make_shard", "raw_db"]

RUN = "run-1"


def make_run(run_id: str = RUN, **changes: object) -> RunRecord:
    run = RunRecord(
        run_id=run_id,
        provider="openai",
        base_url="https://api.openai.com/v1",
        endpoint="/v1/chat/completions",
        input_path="/data/in.jsonl",
        out_path="/data/out.jsonl",
        created_at=1_700_000_000.0,
        options=msgspec.Raw(b'{"max_attempts":3}'),
    )
    return msgspec.structs.replace(run, **changes)


def make_shard(index: int, attempt: int = 1, run_id: str = RUN, **changes: object) -> ShardRecord:
    shard = ShardRecord(
        run_id=run_id,
        index=index,
        attempt=attempt,
        path=f"/data/.batchpump/{run_id}/{index:05d}-{attempt}.jsonl",
        lines=100,
        bytes=12_345,
    )
    return msgspec.structs.replace(shard, **changes)


@contextlib.contextmanager
def raw_db(path: Path) -> Iterator[sqlite3.Connection]:
    """A plain sqlite3 connection, for building and inspecting files behind the journal."""
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        yield conn
