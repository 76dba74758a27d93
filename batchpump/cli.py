"""The ``batchpump`` command line.

Exit codes (also in the README):

====  ==========================================================================
0     every line has a result and all of them succeeded
1     the run finished, but some lines errored, expired, were cancelled or rejected
2     usage or input error (nothing was sent)
3     the provider refused us (authentication, permission, bad request)
4     the journal cannot be used (locked by another process, corrupt, disk full)
5     a network or provider failure outlasted the retries; ``batchpump resume`` continues
130   interrupted (Ctrl-C); ``batchpump resume RUN_ID`` continues
====  ==========================================================================
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Final

import anyio
from rich.console import Console

from . import __version__
from ._engine import RunOptions
from ._errors import (
    AuthenticationError,
    BadRequestError,
    BatchpumpError,
    JournalError,
    NotFoundError,
    UsageError,
    unwrap_group,
)
from ._progress import ProgressMode, follow, summary_table
from ._provider import Provider
from ._pump import Pump, Run, default_results_path

__all__ = ["main"]

EXIT_OK: Final = 0
EXIT_SOME_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_REFUSED: Final = 3
EXIT_JOURNAL: Final = 4
EXIT_FAILED: Final = 5
EXIT_INTERRUPTED: Final = 130

DEFAULT_STATE_DIR: Final = ".batchpump"
PROVIDERS: Final = ("openai", "azure", "together", "anthropic", "llamacloud", "telus")
#: Surfaces ``batchpump emulate`` serves by default (all of them share one server).
EMULATED: Final = PROVIDERS


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="batchpump",
        description="Push large JSONL request sets through provider batch APIs.",
    )
    parser.add_argument("--version", action="version", version=f"batchpump {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def journal_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--journal",
            type=Path,
            help="state directory (default: .batchpump beside the results file, or here)",
        )
        p.add_argument("--provider", choices=PROVIDERS, default="openai")
        p.add_argument("--job-type", choices=("parse_v2", "extract_v2"), help="llamacloud")
        p.add_argument("--config-id", help="llamacloud: the parse or extract configuration")
        p.add_argument("--work-flow-id", help="telus: the workflow of items that name none")
        p.add_argument(
            "--progress",
            choices=("auto", "bar", "json", "none"),
            default="auto",
            help="a bar on a terminal, JSON lines otherwise (default: auto)",
        )

    run = sub.add_parser("run", help="submit a JSONL file and wait for every result")
    run.add_argument("input", type=Path)
    run.add_argument("--endpoint", default="/v1/chat/completions")
    run.add_argument("--out", type=Path, help="results file (default: INPUT.results.jsonl)")
    run.add_argument("--max-attempts", type=int, default=RunOptions().max_attempts)
    run.add_argument("--max-lines", type=int, help="most lines per batch (provider limit)")
    run.add_argument("--max-bytes", type=int, help="most bytes per batch (provider limit)")
    run.add_argument("--token-budget", type=int, help="most enqueued tokens per model")
    run.add_argument("--on-invalid", choices=("raise", "skip"), default="raise")
    run.add_argument("--fresh", action="store_true", help="start over, even if this run exists")
    journal_arg(run)

    for name, text in (("resume", "continue a run"), ("cancel", "cancel a run")):
        p = sub.add_parser(name, help=text)
        p.add_argument("run_id")
        journal_arg(p)

    stream = sub.add_parser("stream", help="stream JSONL from stdin, as it comes, into batches")
    stream.add_argument("name", help="the stream's name; the same name continues it")
    stream.add_argument("--endpoint", default="/v1/chat/completions")
    stream.add_argument("--out", type=Path, required=True, help="results file (appended to)")
    stream.add_argument("--flush-lines", type=int, default=50_000, help="lines per batch")
    stream.add_argument("--flush-bytes", type=int, help="bytes per batch (provider limit)")
    stream.add_argument("--flush-after", type=float, default=300.0, help="seconds a batch waits")
    stream.add_argument("--max-pending", type=int, default=1_000_000, help="unfinished lines")
    journal_arg(stream)

    status = sub.add_parser("status", help="list runs in a journal")
    status.add_argument("run_id", nargs="?")
    status.add_argument("--journal", type=Path)

    emulate = sub.add_parser("emulate", help="serve the provider emulator on loopback")
    emulate.add_argument("--host", default="127.0.0.1")
    emulate.add_argument("--port", type=int, default=8080)
    emulate.add_argument(
        "--providers",
        default=",".join(EMULATED),
        help=f"comma-separated surfaces to serve (default: {','.join(EMULATED)})",
    )
    emulate.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="emulated seconds per real second (3600: a 24 h window in 24 s)",
    )

    demo = sub.add_parser("demo", help="a real run against the in-process emulator (no key)")
    demo.add_argument("--lines", type=int, default=100_000)
    demo.add_argument("--dir", type=Path, help="where to keep the demo's files (default: temp)")
    demo.add_argument("--progress", choices=("auto", "bar", "json", "none"), default="auto")
    return parser


def make_provider(name: str, args: argparse.Namespace | None = None) -> Provider:
    """Build a provider from its usual environment variables (read by the adapters' defaults).

    ``openai``: ``OPENAI_API_KEY``, ``OPENAI_BASE_URL``. ``azure``: ``AZURE_OPENAI_API_KEY``,
    ``AZURE_OPENAI_ENDPOINT``, ``OPENAI_API_VERSION``. ``together``: ``TOGETHER_API_KEY``,
    ``TOGETHER_BASE_URL``. ``anthropic``: ``ANTHROPIC_API_KEY``, ``ANTHROPIC_BASE_URL``.
    ``llamacloud``: ``LLAMA_CLOUD_API_KEY``, ``LLAMA_CLOUD_BASE_URL``. ``telus``:
    ``TELUS_GTSTUDIO_API_KEY``, ``TELUS_GTSTUDIO_PROJECT_ID``, ``TELUS_GTSTUDIO_BASE_URL``.
    """
    if name == "openai":
        from .providers.openai import OpenAI

        return OpenAI()
    if name == "azure":
        from .providers.azure import AzureOpenAI

        return AzureOpenAI()
    if name == "together":
        from .providers.together import Together

        return Together()
    if name == "anthropic":
        from .providers.anthropic import Anthropic

        return Anthropic()
    if name == "llamacloud":
        from .providers.llamacloud import LlamaCloud

        extract = getattr(args, "job_type", None) == "extract_v2"
        return LlamaCloud(
            job_type="extract_v2" if extract else "parse_v2",
            configuration_id=getattr(args, "config_id", None),
        )
    if name == "telus":
        from .providers.telus import Telus

        return Telus(work_flow_id=getattr(args, "work_flow_id", None))
    raise UsageError(f"unknown provider {name!r}; choose one of {', '.join(PROVIDERS)}")


async def _finish(run: Run, mode: ProgressMode, console: Console) -> int:
    async with anyio.create_task_group() as tg:
        tg.start_soon(partial(follow, run, mode=mode))
        counts = await run.wait()
    console.print(summary_table(run.statistics(), str(run.results_path)))
    return EXIT_OK if counts.succeeded == counts.total else EXIT_SOME_FAILED


async def _run(args: argparse.Namespace, console: Console) -> int:
    out: Path = args.out
    state: Path = args.journal
    options = RunOptions(
        max_attempts=args.max_attempts,
        max_lines=args.max_lines,
        max_bytes=args.max_bytes,
        token_budget=args.token_budget,
        on_invalid=args.on_invalid,
    )
    async with Pump(make_provider(args.provider, args), state_dir=state) as pump:
        run = await pump.submit(
            args.input, endpoint=args.endpoint, out=out, options=options, fresh=args.fresh
        )
        console.print(f"run {run.id}: results go to {run.results_path}")
        return await _finish(run, args.progress, console)


async def _resume(args: argparse.Namespace, console: Console) -> int:
    state = args.journal or Path(DEFAULT_STATE_DIR)
    async with Pump(make_provider(args.provider, args), state_dir=state) as pump:
        run = await pump.resume(args.run_id)
        if args.command == "cancel":
            run.cancel()
        return await _finish(run, args.progress, console)


async def _stream(args: argparse.Namespace, console: Console) -> int:
    """``batchpump stream``: stdin into the named stream, its results appended to ``--out``."""
    from ._stream import pipe_stream

    state = args.journal or args.out.resolve().parent / DEFAULT_STATE_DIR
    async with (
        Pump(make_provider(args.provider, args), state_dir=state) as pump,
        pump.stream(
            args.name,
            endpoint=args.endpoint,
            flush_lines=args.flush_lines,
            flush_bytes=args.flush_bytes,
            flush_after=args.flush_after,
            max_pending=args.max_pending,
        ) as stream,
    ):
        console.print(f"stream {args.name}: reading stdin; results go to {args.out}")
        counts = await pipe_stream(stream, sys.stdin.fileno(), args.out, console.print)
    console.print(
        f"stream {args.name}: {counts.total:,} results, {counts.succeeded:,} succeeded, "
        f"{counts.errored:,} errored, {counts.expired:,} expired, {counts.canceled:,} canceled"
    )
    return EXIT_OK if counts.succeeded == counts.total else EXIT_SOME_FAILED


async def _status(args: argparse.Namespace, console: Console) -> int:
    from ._journal import SqliteJournal

    state = args.journal or Path(DEFAULT_STATE_DIR)
    journal_path = state / "journal.sqlite3"
    if not journal_path.exists():
        raise UsageError(f"no journal at {journal_path}; pass --journal DIR")
    journal = await SqliteJournal.open(journal_path)
    try:
        runs = await journal.list_runs()
    finally:
        await journal.aclose()
    for record in runs:
        if args.run_id and record.run_id != args.run_id:
            continue
        c = record.counts
        console.print(
            f"{record.run_id}  {record.state:<9}  {c.total:>9,}/{record.total_lines:<9,} lines  "
            f"ok={c.succeeded:,} errored={c.errored:,} expired={c.expired:,} "
            f"canceled={c.canceled:,} rejected={c.rejected:,}  {record.out_path}"
        )
    return EXIT_OK


def _emulate(args: argparse.Namespace) -> int:
    from ._clock import ScaledClock
    from .emulator import run_emulator

    providers = tuple(p.strip() for p in args.providers.split(",") if p.strip())
    unknown = sorted(set(providers) - set(EMULATED))
    if unknown:
        raise UsageError(f"cannot emulate {', '.join(unknown)}; choose from {', '.join(EMULATED)}")
    run_emulator(
        host=args.host, port=args.port, clock=ScaledClock(args.time_scale), providers=providers
    )
    return EXIT_OK


async def _dispatch(args: argparse.Namespace, console: Console) -> int:
    if args.command == "run":
        return await _run(args, console)
    if args.command in ("resume", "cancel"):
        return await _resume(args, console)
    if args.command == "status":
        return await _status(args, console)
    if args.command == "stream":
        return await _stream(args, console)
    from ._demo import demo

    return await demo(lines=args.lines, directory=args.dir, mode=args.progress, console=console)


async def _interruptible(args: argparse.Namespace, console: Console) -> int:
    """Run the command; the first Ctrl-C (or SIGTERM) stops it cleanly, a second one at once.

    Stopping cleanly cancels the work at its next await: every journal commit either happened
    or did not (each is one transaction), a batch whose create was in flight is reconciled by
    its tag on resume, and results past the last commit are cut off on resume.
    """
    code = EXIT_INTERRUPTED
    try:
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for _ in signals:
                        signal.signal(signal.SIGINT, signal.SIG_DFL)  # the second is final
                        console.print(
                            "stopping; the journal is consistent and `batchpump resume RUN_ID` "
                            "continues (Ctrl-C again to stop at once)"
                        )
                        tg.cancel_scope.cancel()
                        return

            tg.start_soon(watch)
            code = await _dispatch(args, console)
            tg.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        raise unwrap_group(group) from None
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit code (the console script exits with it)."""
    args = _parser().parse_args(argv)
    console = Console(stderr=True)
    if args.command == "emulate":
        try:
            return _emulate(args)
        except UsageError as exc:
            console.print(f"[red]error:[/red] {exc}", highlight=False)
            return EXIT_USAGE
    if args.command == "run":  # defaults that need the file system, resolved before the loop
        if not args.input.is_file():
            what = "is a directory" if args.input.is_dir() else "no such file"
            console.print(f"[red]error:[/red] {args.input}: {what}", highlight=False)
            return EXIT_USAGE
        args.out = args.out or default_results_path(args.input)
        args.journal = args.journal or args.out.resolve().parent / DEFAULT_STATE_DIR
    try:
        return anyio.run(_interruptible, args, console, backend="asyncio")
    except KeyboardInterrupt:
        console.print("interrupted; the journal is consistent: `batchpump resume RUN_ID` goes on")
        return EXIT_INTERRUPTED
    except UsageError as exc:
        console.print(f"[red]error:[/red] {exc}", markup=True, highlight=False)
        return EXIT_USAGE
    except (AuthenticationError, BadRequestError, NotFoundError) as exc:
        console.print(f"[red]refused:[/red] {exc}", highlight=False)
        return EXIT_REFUSED
    except JournalError as exc:
        console.print(f"[red]journal:[/red] {exc}", highlight=False)
        return EXIT_JOURNAL
    except BatchpumpError as exc:
        console.print(f"[red]failed:[/red] {exc}; `batchpump resume` continues", highlight=False)
        return EXIT_FAILED


def entry() -> None:
    sys.exit(main())
