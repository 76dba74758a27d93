"""Progress for the CLI: a rich bar on a terminal, one JSON line per interval otherwise."""

from __future__ import annotations

import sys
from typing import Final, Literal, Protocol, TextIO, TypeAlias

import anyio
import msgspec
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ._engine import RunStatistics

__all__ = ["ProgressMode", "follow", "summary_table"]

ProgressMode: TypeAlias = Literal["auto", "bar", "json", "none"]

#: Seconds between JSON progress lines.
JSON_INTERVAL: Final = 5.0
#: Seconds between bar refreshes.
BAR_INTERVAL: Final = 0.2

_encoder: Final = msgspec.json.Encoder()


class _HasStatistics(Protocol):
    @property
    def done(self) -> bool: ...

    def statistics(self) -> RunStatistics: ...


def _describe(stats: RunStatistics) -> str:
    return (
        f"{stats.state}: {stats.shards_in_flight} batches in flight, "
        f"{stats.shards_waiting} waiting, {stats.batches_created} created"
    )


async def follow(run: _HasStatistics, *, mode: ProgressMode, stream: TextIO | None = None) -> None:
    """Report ``run``'s progress until it is done."""
    out = stream or sys.stderr
    if mode == "auto":
        mode = "bar" if out.isatty() else "json"
    if mode == "none":
        return
    if mode == "json":
        while True:
            stats = run.statistics()
            out.write(_encoder.encode(stats).decode() + "\n")
            out.flush()
            if run.done:
                return
            await _wait(run, JSON_INTERVAL)
    console = Console(file=out)
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("lines"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("starting", total=None)
        while True:
            stats = run.statistics()
            bar.update(
                task,
                total=stats.total_lines or None,
                completed=stats.results.total,
                description=_describe(stats),
            )
            if run.done:
                return
            await _wait(run, BAR_INTERVAL)


async def _wait(run: _HasStatistics, seconds: float) -> None:
    step = min(seconds, BAR_INTERVAL)
    waited = 0.0
    while waited < seconds and not run.done:
        await anyio.sleep(step)
        waited += step


def summary_table(stats: RunStatistics, results_path: str) -> Table:
    """The end-of-run summary."""
    table = Table(title=f"batchpump run {stats.run_id}", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value", justify="right")
    counts = stats.results
    rows = [
        ("state", stats.state),
        ("input lines", f"{stats.total_lines:,}"),
        ("succeeded", f"{counts.succeeded:,}"),
        ("errored", f"{counts.errored:,}"),
        ("expired", f"{counts.expired:,}"),
        ("canceled", f"{counts.canceled:,}"),
        ("rejected (bad input)", f"{counts.rejected:,}"),
        ("results", f"{counts.total:,}"),
        ("batches created", f"{stats.batches_created:,}"),
        ("line retries", f"{stats.retries:,}"),
        ("queue-limit requeues", f"{stats.requeues:,}"),
        ("elapsed", f"{stats.elapsed:.1f} s"),
        ("results file", results_path),
    ]
    for what, value in rows:
        table.add_row(what, value)
    return table
