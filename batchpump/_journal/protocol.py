"""The ``Journal`` protocol and an in-memory journal.

The engine writes every state change through ``commit`` *before* the action it enables
(write-ahead intent); one ``commit`` is one atomic transaction, so a run record and the shard
records it depends on (a collected attempt and the retry attempt it spawns) never disagree
after a crash. ``MemoryJournal`` keeps the same contract in a dict, for tests and benchmarks.
The durable one is ``SqliteJournal`` (``sqlite``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, final, runtime_checkable

import msgspec

from .._errors import ClosedError
from .._models import RunRecord, ShardRecord

__all__ = ["Journal", "MemoryJournal"]


@runtime_checkable
class Journal(Protocol):
    """Durable record of runs and shard attempts."""

    async def open_run(self, run: RunRecord) -> tuple[RunRecord, bool]:
        """Insert ``run`` unless a run with its id exists; return the stored one and
        whether it was created now."""
        ...

    async def get_run(self, run_id: str) -> RunRecord | None: ...

    async def list_runs(self) -> list[RunRecord]: ...

    async def load_shards(self, run_id: str) -> list[ShardRecord]:
        """Every shard attempt of the run, ordered by ``(index, attempt)``."""
        ...

    async def commit(
        self, *, run: RunRecord | None = None, shards: Sequence[ShardRecord] = ()
    ) -> None:
        """Write ``run`` and ``shards`` (inserted or replaced by key) in one transaction."""
        ...

    async def delete_run(self, run_id: str) -> bool:
        """Remove the run and its shard attempts (a failed submit, ``batchpump clean``);
        whether it existed."""
        ...

    async def aclose(self) -> None: ...


# JSON, not msgpack: ``RunRecord.options`` is ``msgspec.Raw`` holding JSON bytes, which only
# round-trips through the JSON codec (msgpack would splice the JSON bytes in as msgpack).
_enc = msgspec.json.Encoder()
_run_dec = msgspec.json.Decoder(RunRecord)
_shard_dec = msgspec.json.Decoder(ShardRecord)


@final
class MemoryJournal:
    """A ``Journal`` in memory. Records are copied in and out, as a database would."""

    def __init__(self) -> None:
        self._runs: dict[str, bytes] = {}
        self._shards: dict[tuple[str, int, int], bytes] = {}
        self._closed = False
        self.commits = 0

    def _check(self) -> None:
        if self._closed:
            raise ClosedError("this journal is closed")

    async def open_run(self, run: RunRecord) -> tuple[RunRecord, bool]:
        self._check()
        if run.run_id in self._runs:
            return _run_dec.decode(self._runs[run.run_id]), False
        self._runs[run.run_id] = _enc.encode(run)
        return _run_dec.decode(self._runs[run.run_id]), True

    async def get_run(self, run_id: str) -> RunRecord | None:
        self._check()
        raw = self._runs.get(run_id)
        return None if raw is None else _run_dec.decode(raw)

    async def list_runs(self) -> list[RunRecord]:
        self._check()
        return [_run_dec.decode(raw) for raw in self._runs.values()]

    async def load_shards(self, run_id: str) -> list[ShardRecord]:
        self._check()
        keys = sorted(k for k in self._shards if k[0] == run_id)
        return [_shard_dec.decode(self._shards[k]) for k in keys]

    async def commit(
        self, *, run: RunRecord | None = None, shards: Sequence[ShardRecord] = ()
    ) -> None:
        self._check()
        if run is not None:
            self._runs[run.run_id] = _enc.encode(run)
        for shard in shards:
            self._shards[(shard.run_id, shard.index, shard.attempt)] = _enc.encode(shard)
        self.commits += 1

    async def delete_run(self, run_id: str) -> bool:
        self._check()
        for key in [k for k in self._shards if k[0] == run_id]:
            del self._shards[key]
        return self._runs.pop(run_id, None) is not None

    async def aclose(self) -> None:
        self._closed = True

    def __repr__(self) -> str:
        return f"<MemoryJournal runs={len(self._runs)} shards={len(self._shards)}>"
