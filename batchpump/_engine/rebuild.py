"""Rebuilding a run's results file from what survives of it and from the provider's copies.

A results file that was deleted or cut short is never padded (``results``). ``rebuild`` makes
it whole again where it can:

1. complete lines of the surviving file, within the committed length, are kept as they are;
2. for every settled shard attempt that had a batch, newest attempt first, the batch's output is
   downloaded again (``Provider.retrieve`` then ``Provider.results``) and a line's result is
   taken from the newest attempt that still has it. A retryable result of an attempt that was
   followed by another is not final (the line went again), so it is not taken;
3. lines of the last attempt the provider never reported are settled as the collector did;
4. lines rejected at the input check come from checking the input again (the caller passes
   them, when the input file is still there and unchanged);
5. what is left (the provider no longer has the output) is reported, never made up.

The new file is written beside the old one, fsynced and moved into place; the journal then
commits its length and counts. A run can be resumed afterwards as usual.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Sequence
from contextlib import aclosing
from pathlib import Path
from typing import Final

import msgspec

from .._errors import BatchpumpError
from .._fileio import create_private, run_io
from .._input import load_ids
from .._models import (
    BatchInfo,
    Canceled,
    Errored,
    Expired,
    Rejected,
    Result,
    ResultCounts,
    RunRecord,
    ShardRecord,
)
from .._provider import Provider
from .collect import _retryable

__all__ = ["RebuildReport", "rebuild_results"]

logger: Final = logging.getLogger("batchpump.rebuild")

_encoder: Final = msgspec.json.Encoder()
_decoder: Final = msgspec.json.Decoder(Result)
#: How many unrecoverable ``custom_id`` values a report lists.
LISTED_LOST: Final = 20


class RebuildReport(msgspec.Struct, frozen=True, kw_only=True):
    """What ``Pump.rebuild_results`` did.

    Attributes:
        run_id: the run.
        path: the results file written.
        kept: results taken from the surviving file.
        recovered: results downloaded again from the provider (or settled again).
        lost: lines of the run with no result in the new file.
        lost_ids: the first ``custom_id`` values of those lines, where the shard files still
            name them.
        unavailable_batches: batches whose output the provider no longer gives.
    """

    run_id: str
    path: str
    kept: int
    recovered: int
    lost: int
    lost_ids: tuple[str, ...] = ()
    unavailable_batches: tuple[str, ...] = ()

    def describe(self) -> str:
        """One paragraph for a person."""
        text = (
            f"rebuilt {self.path} for run {self.run_id}: {self.kept:,} results kept from the "
            f"old file, {self.recovered:,} recovered from the provider"
        )
        if not self.lost:
            return text + "; every line has its result"
        listed = ", ".join(self.lost_ids)
        more = f" (first: {listed})" if listed else ""
        gone = (
            f"; output no longer available for batch(es) {', '.join(self.unavailable_batches)}"
            if self.unavailable_batches
            else ""
        )
        return f"{text}; {self.lost:,} line(s) could not be recovered{more}{gone}"


async def rebuild_results(
    provider: Provider,
    run: RunRecord,
    shards: list[ShardRecord],
    rejected: Sequence[Rejected] = (),
) -> tuple[RebuildReport, ResultCounts, int]:
    """Write the run's results file anew; return the report, the counts and the new length.

    Args:
        provider: the run's provider (it must still hold the batches' output).
        run: the run's journal record (``out_path``, ``out_offset``, ``total_lines``).
        shards: every shard attempt of the run.
        rejected: the run's ``Rejected`` results, from checking its input again.
    """
    path = Path(run.out_path)
    kept = await run_io(_surviving, path, run.out_offset)
    have: dict[str, Result] = dict(kept)
    recovered: list[Result] = []
    unavailable: list[str] = []
    for rejection in rejected:
        if rejection.custom_id not in have:
            have[rejection.custom_id] = rejection
            recovered.append(rejection)
    by_index: dict[int, list[ShardRecord]] = defaultdict(list)
    for shard in shards:
        by_index[shard.index].append(shard)
    for attempts in by_index.values():
        attempts.sort(key=lambda s: s.attempt, reverse=True)
        newest = attempts[0].attempt
        for shard in attempts:
            if shard.state != "done" or shard.batch_id is None:
                continue
            later = shard.attempt < newest
            got = await _download(provider, shard, have, later=later)
            if got is None:
                unavailable.append(shard.batch_id)
                continue
            for result in got:
                have[result.custom_id] = result
                recovered.append(result)
    lost_ids = await run_io(_lost_ids, shards, have)
    counts = ResultCounts()
    for final in have.values():
        counts.add(final)
    lost = max(run.total_lines - len(have), len(lost_ids))
    length = await run_io(_write, path, [r for _, r in kept], recovered)
    report = RebuildReport(
        run_id=run.run_id,
        path=str(path),
        kept=len(kept),
        recovered=len(recovered),
        lost=lost,
        lost_ids=tuple(sorted(lost_ids)[:LISTED_LOST]),
        unavailable_batches=tuple(unavailable),
    )
    return report, counts, length


async def _download(
    provider: Provider,
    shard: ShardRecord,
    have: dict[str, Result],
    *,
    later: bool,
) -> list[Result] | None:
    """The final results one attempt still gives for lines without one; ``None`` if its
    output is gone."""
    assert shard.batch_id is not None
    try:
        batch = await provider.retrieve(shard.batch_id)
        found: list[Result] = []
        reported: set[str] = set()
        async with aclosing(provider.results(batch, attempt=shard.attempt)) as results:
            async for result in results:
                reported.add(result.custom_id)
                if result.custom_id in have or (later and _retryable(result, False)):
                    continue
                found.append(result)
    except BatchpumpError as exc:
        logger.warning("batch %s: output not available again (%s)", shard.batch_id, exc)
        return None
    if not later:
        found.extend(await run_io(_unreported, shard, batch, have, reported))
    return found


def _unreported(
    shard: ShardRecord, batch: BatchInfo, have: dict[str, Result], reported: set[str]
) -> list[Result]:
    """The last attempt's lines the provider never reported, settled as the collector does."""
    try:
        ids = load_ids(Path(shard.path))
    except OSError:
        return []
    out: list[Result] = []
    for custom_id in sorted(ids - reported - have.keys()):
        if batch.state == "cancelled":
            out.append(Canceled(custom_id=custom_id, batch_id=batch.id, attempt=shard.attempt))
        elif batch.state == "expired":
            out.append(Expired(custom_id=custom_id, batch_id=batch.id, attempt=shard.attempt))
        else:
            out.append(
                Errored(
                    custom_id=custom_id,
                    batch_id=batch.id,
                    attempt=shard.attempt,
                    code="missing_result",
                    message=f"batch {batch.id} ended {batch.raw_status!r} without a result "
                    "for this line",
                    retryable=True,
                )
            )
    return out


def _surviving(path: Path, committed: int) -> list[tuple[str, Result]]:
    """Complete, decodable result lines of the old file within its committed length."""
    try:
        with path.open("rb") as f:
            data = f.read(committed)
    except FileNotFoundError:
        return []
    kept: list[tuple[str, Result]] = []
    seen: set[str] = set()
    for line in data[: data.rfind(b"\n") + 1].splitlines():
        try:
            result = _decoder.decode(line)
        except msgspec.DecodeError:
            continue  # a damaged line: its result is recovered from the provider if it can be
        if result.custom_id not in seen:
            seen.add(result.custom_id)
            kept.append((result.custom_id, result))
    return kept


def _lost_ids(shards: list[ShardRecord], have: dict[str, Result]) -> set[str]:
    """Lines the shard files name that have no result (empty where the files are gone)."""
    lost: set[str] = set()
    for shard in shards:
        if shard.attempt != 1:
            continue  # first attempts hold every line sent; later ones are subsets
        try:
            ids = load_ids(Path(shard.path))
        except OSError:
            continue
        lost |= ids - have.keys()
    return lost


def _write(path: Path, kept: list[Result], recovered: list[Result]) -> int:
    """Write the new file beside the old one, fsync it, move it into place; return its length."""
    tmp = path.with_name(path.name + ".rebuild")
    create_private(tmp, truncate=True)
    buffer = bytearray()
    for result in (*kept, *recovered):
        _encoder.encode_into(result, buffer, -1)
        buffer.extend(b"\n")
    with tmp.open("r+b") as f:
        f.write(buffer)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return len(buffer)
