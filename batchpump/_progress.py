"""Progress for the CLI: a rich bar on a terminal, one JSON line per interval otherwise.

The line count moves with the providers' own progress (their request counts for batches still
running), not only with collected results, and the ETA is the rate of that count. Waits on a
provider's rate limit are shown calmly on the progress line ("pacing: rate limited"), not as
one warning per 429: ``Notices`` is the logging handler that sorts them out. The end-of-run
summary adds tokens per model and, given prices, their cost.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import deque
from collections.abc import Mapping
from typing import Final, Literal, Protocol, TextIO, TypeAlias

import anyio
import msgspec
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ._config import Price
from ._engine import RunStatistics
from ._errors import RateLimitedError
from ._models import Usage

__all__ = [
    "Notices",
    "ProgressMode",
    "RateWindow",
    "cost",
    "follow",
    "summary_dict",
    "summary_table",
]

ProgressMode: TypeAlias = Literal["auto", "bar", "json", "none"]

#: Seconds between JSON progress lines.
JSON_INTERVAL: Final = 5.0
#: Seconds between bar refreshes.
BAR_INTERVAL: Final = 0.2
#: Seconds of progress the ETA's rate is measured over.
RATE_WINDOW: Final = 60.0
#: A rate-limit wait is shown on the progress line for this long after the last 429.
PACING_SHOWN: Final = 10.0

_encoder: Final = msgspec.json.Encoder()


class _HasStatistics(Protocol):
    @property
    def done(self) -> bool: ...

    def statistics(self) -> RunStatistics: ...


class Notices(logging.Handler):
    """Where batchpump's log records go while the CLI shows progress.

    A retry after a rate-limit answer (429) is counted, not printed: the progress line says
    the run is pacing itself. Other warnings are printed on ``console`` (stderr), one line
    each. Install with ``Notices.install(console)``; ``uninstall`` puts things back.
    """

    def __init__(self, console: Console | None, *, quiet_retries: bool = False) -> None:
        super().__init__(logging.INFO)
        self.console = console
        self.quiet_retries = quiet_retries
        self.rate_limited = 0
        self.retried = 0
        self.last_rate_limited: float | None = None
        self._saved: tuple[int, bool] = (logging.NOTSET, True)

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) else ()
        if any(isinstance(a, RateLimitedError) for a in args) or "HTTP 429" in str(record.msg):
            self.rate_limited += 1
            self.last_rate_limited = time.monotonic()
            return
        if "retry" in str(record.msg):
            self.retried += 1
            if self.quiet_retries:
                return
        if self.console is not None and record.levelno >= logging.WARNING:
            self.console.print(
                f"[yellow]{record.levelname.lower()}:[/yellow] {record.getMessage()}",
                highlight=False,
                markup=True,
            )

    @property
    def pacing(self) -> bool:
        last = self.last_rate_limited
        return last is not None and time.monotonic() - last < PACING_SHOWN

    @classmethod
    def install(cls, console: Console | None, *, quiet_retries: bool = False) -> Notices:
        handler = cls(console, quiet_retries=quiet_retries)
        root = logging.getLogger("batchpump")
        handler._saved = (root.level, root.propagate)
        root.addHandler(handler)
        root.propagate = False
        if root.level == logging.NOTSET or root.level > logging.WARNING:
            root.setLevel(logging.WARNING)
        return handler

    def uninstall(self) -> None:
        """Remove the handler and put the logger's level and propagation back."""
        root = logging.getLogger("batchpump")
        root.removeHandler(self)
        root.setLevel(self._saved[0])
        root.propagate = self._saved[1]


class RateWindow:
    """The rate of a growing count over the last ``window`` seconds, and the ETA it gives."""

    def __init__(self, window: float = RATE_WINDOW) -> None:
        self.window = window
        self._samples: deque[tuple[float, int]] = deque()

    def add(self, now: float, count: int) -> None:
        self._samples.append((now, count))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window:
            self._samples.popleft()

    @property
    def rate(self) -> float | None:
        """Count per second over the window, or ``None`` until the count has moved."""
        if len(self._samples) < 2:
            return None
        (t0, c0), (t1, c1) = self._samples[0], self._samples[-1]
        if t1 <= t0 or c1 <= c0:
            return None
        return (c1 - c0) / (t1 - t0)

    def eta(self, remaining: int) -> float | None:
        """Seconds until ``remaining`` more at the current rate, or ``None`` if unknown."""
        rate = self.rate
        if remaining <= 0:
            return 0.0
        return None if rate is None else remaining / rate


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _tokens(usage: Mapping[str, Usage]) -> int:
    return sum(u.input_tokens + u.output_tokens for u in usage.values())


def describe(stats: RunStatistics, notices: Notices | None = None) -> str:
    """The progress line's words: state, batches, and a rate-limit wait if there is one."""
    words = (
        f"{stats.state}: {stats.shards_in_flight} batches in flight, "
        f"{stats.shards_waiting} waiting, {stats.batches_created} created"
    )
    if notices is not None and notices.pacing:
        words += " [cyan](pacing: the provider asked us to slow down)[/cyan]"
    return words


def progress_record(
    stats: RunStatistics, window: RateWindow, notices: Notices | None = None
) -> dict[str, object]:
    """One JSON progress line: the statistics plus the moving line count, the ETA, the tokens
    so far and whether the run is pacing itself to a provider's rate limit."""
    record: dict[str, object] = msgspec.to_builtins(stats)
    lines = stats.progress_lines
    record["elapsed"] = round(stats.elapsed, 1)
    record["progress_lines"] = lines
    eta = window.eta(stats.total_lines - lines) if stats.total_lines else None
    record["eta_seconds"] = None if eta is None else round(eta, 1)
    record["tokens"] = _tokens(stats.usage)
    record["pacing"] = notices is not None and notices.pacing
    return record


async def follow(
    run: _HasStatistics,
    *,
    mode: ProgressMode,
    stream: TextIO | None = None,
    notices: Notices | None = None,
) -> None:
    """Report ``run``'s progress until it is done."""
    out = stream or sys.stderr
    if mode == "auto":
        mode = "bar" if out.isatty() else "json"
    if mode == "none":
        return
    window = RateWindow()
    if mode == "json":
        while True:
            stats = run.statistics()
            window.add(time.monotonic(), stats.progress_lines)
            out.write(_encoder.encode(progress_record(stats, window, notices)).decode() + "\n")
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
        TextColumn("ETA {task.fields[eta]}  {task.fields[tokens]} tokens"),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("starting", total=None, eta="?", tokens="0")
        while True:
            stats = run.statistics()
            lines = stats.progress_lines
            window.add(time.monotonic(), lines)
            bar.update(
                task,
                total=stats.total_lines or None,
                completed=lines,
                description=describe(stats, notices),
                eta=format_seconds(window.eta(stats.total_lines - lines)),
                tokens=f"{_tokens(stats.usage):,}",
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


def cost(usage: Mapping[str, Usage], prices: Mapping[str, Price]) -> dict[str, float]:
    """What each priced model's tokens cost (prices are per million tokens)."""
    return {
        model: (u.input_tokens * prices[model].input + u.output_tokens * prices[model].output) / 1e6
        for model, u in usage.items()
        if model in prices
    }


def summary_dict(
    stats: RunStatistics,
    results_path: str,
    *,
    usage: Mapping[str, Usage] | None = None,
    prices: Mapping[str, Price] | None = None,
) -> dict[str, object]:
    """The end-of-run summary as plain data (``--json``)."""
    usage = stats.usage if usage is None else usage
    record: dict[str, object] = msgspec.to_builtins(stats)
    record["usage"] = {m: msgspec.to_builtins(u) for m, u in usage.items()}
    record["results_file"] = results_path
    costs = cost(usage, prices or {})
    record["cost"] = {**costs, "total": sum(costs.values())} if costs else None
    return record


def summary_table(
    stats: RunStatistics,
    results_path: str,
    *,
    usage: Mapping[str, Usage] | None = None,
    prices: Mapping[str, Price] | None = None,
) -> Table:
    """The end-of-run summary: counts, tokens per model and, given prices, cost."""
    usage = stats.usage if usage is None else usage
    table = Table(title=f"batchpump run {stats.run_id}", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value", justify="right", overflow="fold")
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
    ]
    for model, u in sorted(usage.items()):
        rows.append((f"tokens {model}", f"{u.input_tokens:,} in / {u.output_tokens:,} out"))
    costs = cost(usage, prices or {})
    for model, amount in sorted(costs.items()):
        rows.append((f"cost {model}", f"{amount:,.4f}"))
    if len(costs) > 1:
        rows.append(("cost total", f"{sum(costs.values()):,.4f}"))
    unpriced = sorted(set(usage) - set(costs)) if prices else []
    if unpriced:
        rows.append(("no price for", ", ".join(unpriced)))
    rows.append(("results file", results_path))
    for what, value in rows:
        table.add_row(what, value)
    return table
