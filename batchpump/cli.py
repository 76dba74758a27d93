"""The ``batchpump`` command line.

Each subcommand is one ``_add_<name>`` (its options) and one ``_cmd_<name>`` (what it does).
Streams: the summary a command produces (the end-of-run table, ``status``, ``clean``, or their
``--json`` form) goes to stdout; progress, diagnostics, hints and errors go to stderr, so
``batchpump run x.jsonl --json > summary.json`` keeps the two apart.

Exit codes (also in ``batchpump --help`` and the README):

====  ==========================================================================
0     every line has a result and all of them succeeded
1     the run finished, but some lines errored, expired, were cancelled or rejected
2     usage or input error (nothing was sent), a plainly wrong setting, or a results file
      that is missing, cut short or another run's (``batchpump results RUN_ID --rebuild``)
3     the provider refused us (authentication, permission, bad request) or answered what
      every batch would get (a wrong base URL, key or setting): the run stopped, resumable
4     the journal cannot be used (locked by another process, corrupt, disk full)
5     a network or provider failure outlasted the retries; ``batchpump resume`` continues
130   interrupted (Ctrl-C); the printed ``batchpump resume ...`` continues
====  ==========================================================================
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Final, TextIO

import anyio
import anyio.to_thread
import msgspec
from rich.console import Console
from rich.table import Table

from . import __version__
from ._config import DEFAULT_CREATE_SETTLE, DEFAULT_MAX_ATTEMPTS, Price, RetryPolicy, RunOptions
from ._errors import (
    AuthenticationError,
    BadRequestError,
    BatchpumpError,
    ConfigurationError,
    JournalError,
    NotFoundError,
    UsageError,
    unwrap_group,
)
from ._formats import native_results_path, usage_by_batch, write_openai
from ._journal import JournalReader, SqliteJournal, connect_journal, is_postgres_url
from ._models import RunRecord, Usage
from ._progress import Notices, ProgressMode, follow, summary_dict, summary_table
from ._provider import Provider
from ._pump import Pump, Run, default_results_path, prune_run_files
from ._workers import DEFAULT_LEASE_SECONDS, export_results

__all__ = ["main"]

EXIT_OK: Final = 0
EXIT_SOME_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_REFUSED: Final = 3
EXIT_JOURNAL: Final = 4
EXIT_FAILED: Final = 5
EXIT_INTERRUPTED: Final = 130

DEFAULT_STATE_DIR: Final = ".batchpump"
JOURNAL_FILE: Final = "journal.sqlite3"
PROVIDERS: Final = ("openai", "azure", "together", "anthropic", "llamacloud", "telus")
#: The journal's provider name for each CLI name, where they differ.
RECORD_NAMES: Final = {"azure": "azure_openai"}
#: Each provider's environment variables: the key first.
PROVIDER_ENV: Final = {
    "openai": ("OPENAI_API_KEY", "OPENAI_BASE_URL"),
    "azure": ("AZURE_OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT", "OPENAI_API_VERSION"),
    "together": ("TOGETHER_API_KEY", "TOGETHER_BASE_URL"),
    "anthropic": ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"),
    "llamacloud": ("LLAMA_CLOUD_API_KEY", "LLAMA_CLOUD_BASE_URL"),
    "telus": ("TELUS_GTSTUDIO_API_KEY", "TELUS_GTSTUDIO_PROJECT_ID", "TELUS_GTSTUDIO_BASE_URL"),
}
#: The file beside a run's shards that keeps the CLI settings ``resume`` and ``cancel`` reuse.
SETTINGS_FILE: Final = "cli.json"
#: The file another ``batchpump cancel`` writes to ask the process running a run to cancel it.
CANCEL_REQUEST_FILE: Final = "cancel-requested"
#: Seconds between looks for a cancel request from another terminal.
CANCEL_CHECK_INTERVAL: Final = 0.5
#: Bytes read from stdin at a time (``batchpump run -``).
STDIN_CHUNK: Final = 1 << 20

EPILOG: Final = (
    "providers read their keys and addresses from the environment (--api-key and --base-url "
    "override them):\n"
    + "".join(f"  {name:<11} {', '.join(env)}\n" for name, env in PROVIDER_ENV.items())
    + """
output: the summary (the end-of-run table, status, clean; JSON with --json) goes to stdout;
progress, warnings, hints and errors go to stderr.

exit codes:
  0    every line has a result and all of them succeeded
  1    the run finished, but some lines errored, expired, were cancelled or rejected
  2    usage or input error (nothing was sent)
  3    the provider refused us (authentication, permission, bad request)
  4    the journal cannot be used (locked by another process, corrupt, disk full)
  5    a network or provider failure outlasted the retries; the printed resume command goes on
  130  interrupted (Ctrl-C); the printed resume command goes on
"""
)


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the epilog's layout; wide enough that option help is not cut to 80 columns."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32, width=100)


@dataclass
class _Ui:
    """Where output goes: ``out`` (stdout) for summaries, ``err`` (stderr) for the rest."""

    out: Console
    err: Console
    json: bool = False
    #: The command that continues the current run, once it is known (printed on Ctrl-C).
    resume_hint: str | None = None
    notes: list[str] = field(default_factory=list)

    def print_json(self, data: object) -> None:
        self.out.file.write(msgspec.json.encode(data).decode() + "\n")
        self.out.file.flush()

    def error(self, label: str, message: str) -> None:
        message = _cli_words(message)
        if self.resume_hint is not None:  # a library hint with a placeholder: the whole command
            message = _RESUME_PLACEHOLDER.sub(self.resume_hint, message)
        self.err.print(f"[red]{label}:[/red] {message}", highlight=False)


def _console(stream: TextIO) -> Console:
    """A console that wraps at the terminal's width, and not at all into a pipe or file."""
    if stream.isatty():
        return Console(file=stream)
    return Console(file=stream, width=10_000, soft_wrap=True, no_color=True)


# ---------------------------------------------------------------------------------------------
# Options.


def _target_options(p: argparse.ArgumentParser) -> None:
    """Where a new run's (or stream's) requests go: provider, key, address, endpoint."""
    p.add_argument(
        "--provider",
        choices=PROVIDERS,
        default="openai",
        help="where the requests go (default: openai)",
    )
    _key_option(p)
    p.add_argument(
        "--base-url",
        metavar="URL",
        help="the provider's API address, e.g. an emulator's (default: its environment "
        "variable, else the provider's public API; for azure, the resource endpoint)",
    )
    p.add_argument(
        "--endpoint",
        default="/v1/chat/completions",
        help="the endpoint every line targets; lines may leave out url (default: "
        "/v1/chat/completions)",
    )


def _item_options(p: argparse.ArgumentParser) -> None:
    """The settings of the item providers (LlamaCloud documents, TELUS jobs)."""
    p.add_argument(
        "--job-type",
        choices=("parse_v2", "extract_v2"),
        default="parse_v2",
        help="llamacloud only: what each document gets (default: parse_v2)",
    )
    p.add_argument(
        "--config-id",
        metavar="ID",
        help="llamacloud only: the saved parse or extract configuration (needed for "
        "extract_v2; default: the parse preset)",
    )
    p.add_argument(
        "--work-flow-id",
        metavar="UUID",
        help="telus only: the workflow of lines that name none (default: each line's own)",
    )


def _journal_option(p: argparse.ArgumentParser, *, for_run: bool = False) -> None:
    default = (
        ".batchpump beside the results file" if for_run else ".batchpump in the current directory"
    )
    p.add_argument(
        "--journal",
        type=_journal_target,
        metavar="DIR|URL",
        help=f"state directory holding the journal and the runs' files (default: {default}), "
        "or a postgresql://USER:PASSWORD@HOST/DB URL that several workers share",
    )


def _journal_target(value: str) -> Path | str:
    """``--journal``: a ``postgresql://`` URL stays a string; anything else is a directory."""
    return value if is_postgres_url(value) else Path(value)


def _workers_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--limiter",
        metavar="URL",
        help="a redis://HOST:PORT/DB URL: share the provider's rate limits and 429 pauses with "
        "every worker given the same URL and key (default: this process's own limits)",
    )
    p.add_argument(
        "--lease-seconds",
        type=float,
        default=DEFAULT_LEASE_SECONDS,
        metavar="SECONDS",
        help="with a postgresql:// journal: a killed worker's shard attempts are taken over "
        f"this long after its last renewal (default: {DEFAULT_LEASE_SECONDS:g})",
    )


def _json_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--json", action="store_true", help="print the summary as one JSON object on stdout"
    )


def _progress_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--progress",
        choices=("auto", "bar", "json", "none"),
        default="auto",
        help="progress on stderr: a bar on a terminal, JSON lines otherwise (default: auto)",
    )


def _key_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--api-key",
        metavar="KEY",
        help="the provider's key (default: its environment variable, listed below); never printed",
    )


def _run_id_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "run_id",
        metavar="RUN_ID",
        help="the run's id as printed by `batchpump run` or `batchpump status` "
        "(a unique prefix is enough)",
    )


def _add_run(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "run",
        help="submit a JSONL file and wait for every result",
        description="Submit a JSONL file of requests and wait until every line has a result. "
        "Running the same command again continues the same run instead of paying twice.",
        epilog=EPILOG,
        formatter_class=_Formatter,
    )
    p.add_argument(
        "input", type=Path, metavar="INPUT", help="the JSONL file of requests; - reads stdin"
    )
    p.add_argument(
        "--out",
        type=Path,
        metavar="FILE",
        help="results file (default: INPUT.results.jsonl beside the input; for stdin, "
        "results.jsonl in the run's directory under the journal)",
    )
    p.add_argument(
        "--format",
        choices=("batchpump", "openai"),
        default="batchpump",
        help="results file shape: batchpump's (docs/results.md) or OpenAI's batch output; "
        "with openai, batchpump's own file is kept beside it as *.batchpump.jsonl "
        "(default: batchpump)",
    )
    _target_options(p)
    p.add_argument(
        "--max-attempts",
        type=int,
        default=DEFAULT_MAX_ATTEMPTS,
        metavar="N",
        help="tries per line before a retryable failure is final "
        f"(default: {DEFAULT_MAX_ATTEMPTS})",
    )
    p.add_argument(
        "--max-lines",
        type=int,
        metavar="N",
        help="most lines per batch (default: the provider's limit)",
    )
    p.add_argument(
        "--max-bytes",
        type=int,
        metavar="N",
        help="most bytes per batch (default: the provider's limit)",
    )
    p.add_argument(
        "--token-budget",
        type=int,
        metavar="N",
        help="most estimated tokens enqueued per model at once (default: no limit)",
    )
    p.add_argument(
        "--on-invalid",
        choices=("raise", "skip"),
        default="raise",
        help="bad input lines: raise stops before anything is sent; skip gives each a "
        "'rejected' result and sends the rest (default: raise)",
    )
    p.add_argument(
        "--fresh",
        action="store_true",
        help="start a new run even if this exact one exists (it is sent and paid again)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the results file even if another run owns it or it exists "
        "(default: refuse, leaving the file untouched)",
    )
    p.add_argument(
        "--create-settle",
        type=float,
        default=DEFAULT_CREATE_SETTLE,
        metavar="SECONDS",
        help="after a create that got no clear answer (timeout, reset, 5xx), look this long "
        "for the batch it may have made before creating it again "
        f"(default: {DEFAULT_CREATE_SETTLE:g})",
    )
    p.add_argument(
        "--keep-shards",
        action="store_true",
        help="keep the run's shard files (copies of the input) after it finishes "
        "(default: removed once every result is committed)",
    )
    p.add_argument(
        "--prices",
        type=Path,
        metavar="FILE",
        help='JSON prices per million tokens, {"MODEL": {"input": 0.15, "output": 0.6}}, '
        "for the cost in the summary (default: none; batchpump ships no prices)",
    )
    _item_options(p)
    _journal_option(p, for_run=True)
    _workers_options(p)
    _progress_option(p)
    _json_option(p)


def _add_resume(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "resume",
        help="continue a run (after Ctrl-C, a crash or a fix)",
        description="Continue a run with the provider, address, endpoint and options it was "
        "made with; only the key comes from the environment (or --api-key).",
        epilog=EPILOG,
        formatter_class=_Formatter,
    )
    _run_id_argument(p)
    _key_option(p)
    _journal_option(p)
    _workers_options(p)
    _progress_option(p)
    _json_option(p)


def _add_cancel(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "cancel",
        help="cancel a run (also one running in another terminal)",
        description="Cancel a run: nothing new is sent, its batches are cancelled and every "
        "line settles. If another batchpump is running it, that process is asked to cancel "
        "and this command returns at once.",
        epilog=EPILOG,
        formatter_class=_Formatter,
    )
    _run_id_argument(p)
    _key_option(p)
    _journal_option(p)
    _json_option(p)


def _add_results(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "results",
        help="check a run's results file against the journal, or rebuild it",
        description="Check that a run's results file holds every committed line; with "
        "--rebuild, rewrite it from what is left and the provider's copies of the batches' "
        "output, and list the lines that cannot be recovered.",
        epilog=EPILOG,
        formatter_class=_Formatter,
    )
    _run_id_argument(p)
    p.add_argument(
        "--rebuild",
        action="store_true",
        help="rewrite the file from what is left and the provider's output (default: check only)",
    )
    _key_option(p)
    _journal_option(p)


def _add_status(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "status",
        help="list the runs in a journal, or show one (works while a run is active)",
        description="Without RUN_ID, one line per run; with it, the run's provider, address, "
        "times, counts, batches and results file. Reads the journal without locking it.",
        epilog=EPILOG,
        formatter_class=_Formatter,
    )
    p.add_argument(
        "run_id",
        nargs="?",
        metavar="RUN_ID",
        help="the run to show (a unique prefix is enough; default: list every run)",
    )
    _journal_option(p)
    _json_option(p)


def _add_clean(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "clean",
        help="remove finished runs' leftover files and say what it freed",
        description="Remove the shard files (copies of the input), spooled inputs and leftover "
        "parts of finished runs, or of one run. The journal's records and the results files "
        "are kept, so running the same input again still finds its run.",
        epilog=EPILOG,
        formatter_class=_Formatter,
    )
    p.add_argument(
        "run_id",
        nargs="?",
        metavar="RUN_ID",
        help="clean only this run (a unique prefix is enough; default: every finished run)",
    )
    _journal_option(p)
    _json_option(p)


def _add_stream(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "stream",
        help="stream JSONL from stdin, as it comes, into batches",
        description="Read JSONL requests from stdin as they arrive (e.g. behind tail -f), cut "
        "them into batches by size or age and append every result to --out. Ctrl-C stops "
        "cleanly; the same command continues the stream, skipping lines it already accepted.",
        epilog=EPILOG,
        formatter_class=_Formatter,
    )
    p.add_argument(
        "name", metavar="NAME", help="the stream's name; the same name continues the stream"
    )
    p.add_argument(
        "--out", type=Path, required=True, metavar="FILE", help="results file (appended to)"
    )
    _target_options(p)
    p.add_argument(
        "--flush-lines",
        type=int,
        default=50_000,
        metavar="N",
        help="a batch is cut at this many lines, at most the provider's limit (default: 50000)",
    )
    p.add_argument(
        "--flush-bytes",
        type=int,
        metavar="N",
        help="... or at this many bytes (default: the provider's limit)",
    )
    p.add_argument(
        "--flush-after",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="... or this long after its first line (default: 300)",
    )
    p.add_argument(
        "--max-pending",
        type=int,
        default=1_000_000,
        metavar="N",
        help="stop reading stdin while this many accepted lines have no result (default: 1000000)",
    )
    _item_options(p)
    p.add_argument(
        "--journal",
        type=Path,
        metavar="DIR",
        help="state directory holding the stream's journal and segments "
        "(default: .batchpump beside the results file)",
    )
    _json_option(p)


def _add_emulate(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from .emulator import add_arguments as add_emulate_arguments

    emulate = sub.add_parser("emulate", help="serve the provider emulator on loopback")
    add_emulate_arguments(emulate)


def _add_demo(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "demo",
        help="a real run against the in-process emulator (no key needed)",
        description="Write a JSONL of requests, serve the OpenAI emulator in this process on "
        "a fast clock, and run every line through it.",
        formatter_class=_Formatter,
    )
    p.add_argument(
        "--lines", type=int, default=100_000, metavar="N", help="requests (default: 100000)"
    )
    p.add_argument(
        "--dir",
        type=Path,
        metavar="DIR",
        help="keep the demo's input, results and journal in DIR (default: a temporary "
        "directory removed at the end)",
    )
    _progress_option(p)
    _json_option(p)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="batchpump",
        description="Push large JSONL request sets through provider batch APIs, with exactly "
        "one result per input line.",
        epilog=EPILOG,
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"batchpump {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (
        _add_run,
        _add_resume,
        _add_cancel,
        _add_results,
        _add_status,
        _add_export,
        _add_clean,
        _add_stream,
        _add_emulate,
    ):
        add(sub)
    _add_demo(sub)
    return parser


# ---------------------------------------------------------------------------------------------
# Providers, settings and hints.


def make_provider(
    name: str,
    args: argparse.Namespace | None = None,
    *,
    base_url: str | None = None,
    settings: dict[str, str] | None = None,
) -> Provider:
    """Build a provider from the CLI's flags, else its usual environment variables.

    Args:
        name: the CLI's provider name (``openai``, ``azure``...).
        args: the parsed flags (``--api-key``, ``--base-url``, provider-specific ones).
        base_url: the address a run was made with (``resume``/``cancel``): wins over flags.
        settings: provider-specific settings a run was made with (``resume``/``cancel``).
    """
    settings = dict(settings or {})
    key: str | None = getattr(args, "api_key", None)
    url: str | None = base_url or getattr(args, "base_url", None)
    for option in ("job_type", "config_id", "work_flow_id"):
        value = getattr(args, option, None)
        if value is not None and option not in settings:
            settings[option] = value
    if name == "openai":
        from .providers.openai import OpenAI

        return OpenAI(api_key=key, base_url=url)
    if name == "azure":
        from .providers.azure import AzureOpenAI

        endpoint = url.removesuffix("/openai") if url else None
        return AzureOpenAI(api_key=key, azure_endpoint=endpoint)
    if name == "together":
        from .providers.together import Together

        return Together(api_key=key, base_url=url)
    if name == "anthropic":
        from .providers.anthropic import Anthropic

        return Anthropic(api_key=key, base_url=url)
    if name == "llamacloud":
        from .providers.llamacloud import LlamaCloud

        extract = settings.get("job_type") == "extract_v2"
        return LlamaCloud(
            api_key=key,
            base_url=url,
            job_type="extract_v2" if extract else "parse_v2",
            configuration_id=settings.get("config_id"),
        )
    if name == "telus":
        from .providers.telus import Telus

        project = None
        if base_url and (found := re.fullmatch(r"(.*)/v1/projects/([^/]+)", base_url)):
            url, project = found.group(1), found.group(2)
        return Telus(
            api_key=key, base_url=url, project_id=project, work_flow_id=settings.get("work_flow_id")
        )
    raise UsageError(f"unknown provider {name!r}; choose one of {', '.join(PROVIDERS)}")


def _cli_name(record: RunRecord) -> str:
    for cli, stored in RECORD_NAMES.items():
        if record.provider == stored:
            return cli
    return record.provider


#: Python spellings in library messages, and the CLI's words for them.
_CLI_WORDS: Final = (
    (re.compile(r"pass it as an argument or set"), "pass --api-key or set"),
    (re.compile(r"pass api_key= or set"), "pass --api-key or set"),
    (re.compile(r"pass azure_endpoint= or set"), "pass --base-url or set"),
    (re.compile(r'pass on_invalid="skip" \(CLI: --on-invalid skip\)'), "pass --on-invalid skip"),
    (re.compile(r"configuration_id="), "--config-id"),
    (re.compile(r"pass work_flow_id="), "pass --work-flow-id"),
    (re.compile(r" \(Python: endpoint=[^)]*\)"), ""),
    (re.compile(r"\bjob_type must be\b"), "--job-type must be"),
    (re.compile(r"\bmax_lines="), "--max-lines "),
    (re.compile(r"\bmax_bytes="), "--max-bytes "),
    (re.compile(r"\bmax_attempts must\b"), "--max-attempts must"),
    (re.compile(r"\btoken_budget must\b"), "--token-budget must"),
)


_RESUME_PLACEHOLDER: Final = re.compile(r"batchpump resume (?:RUN_ID|[0-9a-f]{24})(?![\w-])")


def _cli_words(message: str) -> str:
    for pattern, words in _CLI_WORDS:
        message = pattern.sub(words, message)
    return message


def _state_dir(args: argparse.Namespace) -> Path:
    """The state directory (shard files, parts; the SQLite journal unless a URL names one)."""
    journal: Path | str | None = args.journal
    return journal if isinstance(journal, Path) else Path(DEFAULT_STATE_DIR)


def _journal_url(args: argparse.Namespace) -> str | None:
    """The ``postgresql://`` journal ``--journal`` names, if it names one."""
    journal: Path | str | None = getattr(args, "journal", None)
    return journal if isinstance(journal, str) else None


def _pump(provider: Provider, state_dir: Path, args: argparse.Namespace) -> Pump:
    """The pump of a command: its state directory, and the shared journal and limiter
    ``--journal URL`` and ``--limiter`` name."""
    return Pump(
        provider,
        state_dir=state_dir,
        journal=_journal_url(args),
        limiter=getattr(args, "limiter", None),
        lease_seconds=getattr(args, "lease_seconds", DEFAULT_LEASE_SECONDS),
    )


def _command(verb: str, run_id: str, state_dir: Path) -> str:
    """A whole command, ready to paste: ``--journal`` only when it is not the default."""
    words = ["batchpump", verb, run_id]
    if Path(os.path.abspath(state_dir)) != Path(os.path.abspath(DEFAULT_STATE_DIR)):
        where = os.path.relpath(state_dir) if _under_cwd(state_dir) else str(state_dir)
        words += ["--journal", where]
    return shlex.join(words)


def _absolute(path: Path) -> Path:
    """``path`` made absolute without touching the disk (no symlinks resolved)."""
    return Path(os.path.abspath(path))


def _under_cwd(path: Path) -> bool:
    return not os.path.relpath(os.path.abspath(path)).startswith("..")


def _settings_path(state_dir: Path, run_id: str) -> Path:
    return state_dir / "runs" / run_id / SETTINGS_FILE


def _save_settings(state_dir: Path, run_id: str, settings: dict[str, str]) -> None:
    path = _settings_path(state_dir, run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(msgspec.json.encode(settings))


def _load_settings(state_dir: Path, run_id: str) -> dict[str, str]:
    try:
        return msgspec.json.decode(
            _settings_path(state_dir, run_id).read_bytes(), type=dict[str, str]
        )
    except (OSError, msgspec.DecodeError):
        return {}


def _read_prices(path: Path | None) -> dict[str, Price]:
    if path is None:
        return {}
    try:
        return msgspec.json.decode(path.read_bytes(), type=dict[str, Price])
    except OSError as exc:
        raise UsageError(f"--prices {path}: {exc.strerror}") from exc
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise UsageError(
            f'--prices {path}: {exc}; expected {{"MODEL": {{"input": 0.15, "output": 0.6}}}} '
            "(per million tokens)"
        ) from exc


async def _find(state_dir: Path, run_id: str, url: str | None = None) -> RunRecord:
    """The run ``run_id`` (or the only one it prefixes), read without taking the lock."""
    if url is not None:
        journal = await connect_journal(url)
        try:
            runs = await journal.list_runs()
        finally:
            await journal.aclose()
        found = [r for r in runs if r.run_id.startswith(run_id)]
        if len(found) != 1:
            what = "no run" if not found else f"{len(found)} runs"
            raise UsageError(f"{what} matching {run_id!r} in the journal at the given URL")
        return found[0]
    async with await JournalReader.open(state_dir / JOURNAL_FILE) as reader:
        return await reader.find_run(run_id)


# ---------------------------------------------------------------------------------------------
# Following a run to its end.


async def _stdin_lines() -> AsyncIterator[bytes]:
    """stdin in chunks of whole lines (the spool takes each item as whole lines)."""
    stream = sys.stdin.buffer
    read: Callable[[int], bytes] = getattr(stream, "read1", stream.read)
    rest = b""
    while True:
        chunk = await anyio.to_thread.run_sync(read, STDIN_CHUNK)
        if not chunk:
            break
        chunk = rest + chunk
        cut = chunk.rfind(b"\n") + 1
        rest = chunk[cut:]
        if cut:
            yield chunk[:cut]
    if rest:
        yield rest


async def _watch_cancel(run: Run, request: Path, ui: _Ui) -> None:
    """Cancel ``run`` when another terminal's ``batchpump cancel`` asks for it."""
    while not run.done:
        if await anyio.Path(request).exists():
            ui.err.print(f"cancel requested from another terminal: cancelling run {run.id}")
            run.cancel()
            await anyio.Path(request).unlink(missing_ok=True)
            return
        await anyio.sleep(CANCEL_CHECK_INTERVAL)


async def _finish(
    pump: Pump,
    run: Run,
    *,
    mode: ProgressMode,
    ui: _Ui,
    state_dir: Path,
    settings: dict[str, str],
    prices: dict[str, Price],
) -> int:
    """Follow ``run`` to its end, print the summary, write another format if asked."""
    request = state_dir / "runs" / run.id / CANCEL_REQUEST_FILE
    notices = Notices.install(ui.err)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(partial(follow, run, mode=mode, notices=notices))  # ends with the run
            async with anyio.create_task_group() as watching:
                watching.start_soon(_watch_cancel, run, request, ui)
                try:
                    counts = await run.wait()
                finally:
                    watching.cancel_scope.cancel()
    finally:
        notices.uninstall()
    models = {s.batch_id: s.model for s in await pump.journal.load_shards(run.id) if s.batch_id}
    usage: dict[str, Usage] = await anyio.to_thread.run_sync(
        usage_by_batch, run.results_path, models
    )
    stats = run.statistics()
    shown = str(run.results_path)
    if settings.get("format") == "openai" and (out := settings.get("out")):
        written = await anyio.to_thread.run_sync(write_openai, run.results_path, Path(out))
        shown = out
        ui.err.print(f"wrote {written:,} results in OpenAI's shape to {out}")
    if ui.json:
        ui.print_json(summary_dict(stats, shown, usage=usage, prices=prices))
    else:
        ui.out.print(summary_table(stats, shown, usage=usage, prices=prices))
    return EXIT_OK if counts.succeeded == counts.total else EXIT_SOME_FAILED


# ---------------------------------------------------------------------------------------------
# Subcommands.


async def _cmd_run(args: argparse.Namespace, ui: _Ui) -> int:
    from_stdin = str(args.input) == "-"
    if not from_stdin and not await anyio.Path(args.input).is_file():
        exists = await anyio.Path(args.input).is_dir()
        raise UsageError(f"{args.input}: {'is a directory' if exists else 'no such file'}")
    out: Path | None = args.out
    if out is None and not from_stdin:
        out = default_results_path(args.input)
    state_dir: Path = (
        args.journal
        if isinstance(args.journal, Path)
        else (
            _absolute(out).parent / DEFAULT_STATE_DIR
            if out is not None
            else Path(DEFAULT_STATE_DIR)
        )
    )
    settings = {
        k: v
        for k, v in (
            ("provider", args.provider),
            ("job_type", args.job_type if args.provider == "llamacloud" else None),
            ("config_id", args.config_id),
            ("work_flow_id", args.work_flow_id),
        )
        if v is not None
    }
    target = out
    if args.format == "openai":
        if out is None:
            raise UsageError("--format openai needs --out FILE when the input is stdin")
        settings["format"] = "openai"
        settings["out"] = str(_absolute(out))
        target = native_results_path(out)
    options = RunOptions(
        max_attempts=args.max_attempts,
        max_lines=args.max_lines,
        max_bytes=args.max_bytes,
        token_budget=args.token_budget,
        on_invalid=args.on_invalid,
        retry=RetryPolicy(create_settle=args.create_settle),
        keep_shards=args.keep_shards,
        prices=_read_prices(args.prices),
    )
    provider = make_provider(args.provider, args)
    async with _pump(provider, state_dir, args) as pump:
        source = _stdin_lines() if from_stdin else args.input
        run = await pump.submit(
            source,
            endpoint=args.endpoint,
            out=target,
            options=options,
            fresh=args.fresh,
            overwrite=args.overwrite,
        )
        await anyio.to_thread.run_sync(_save_settings, state_dir, run.id, settings)
        ui.resume_hint = _command("resume", run.id, state_dir)
        ui.err.print(
            f"run {run.id}: results go to {settings.get('out', run.results_path)}\n"
            f"  follow it from another terminal: {_command('status', run.id, state_dir)}",
            highlight=False,
        )
        return await _finish(
            pump,
            run,
            mode=args.progress,
            ui=ui,
            state_dir=state_dir,
            settings=settings,
            prices=options.prices,
        )


async def _cmd_resume(args: argparse.Namespace, ui: _Ui) -> int:
    state_dir = _state_dir(args)
    record = await _find(state_dir, args.run_id, _journal_url(args))
    settings = _load_settings(state_dir, record.run_id)
    provider = make_provider(_cli_name(record), args, base_url=record.base_url, settings=settings)
    async with _pump(provider, state_dir, args) as pump:
        # A cancel is journaled before the first cancel request: a resume finishes it.
        run = await pump.resume(record.run_id, cancel=args.command == "cancel")
        ui.resume_hint = _command("resume", run.id, state_dir)
        opts = msgspec.json.decode(record.options, type=RunOptions)
        return await _finish(
            pump,
            run,
            mode=getattr(args, "progress", "none"),
            ui=ui,
            state_dir=state_dir,
            settings=settings,
            prices=opts.prices,
        )


async def _cmd_cancel(args: argparse.Namespace, ui: _Ui) -> int:
    state_dir = _state_dir(args)
    if _journal_url(args) is not None:  # a shared journal: cancel through its run lease
        args.command = "cancel"
        return await _cmd_resume(args, ui)
    async with await JournalReader.open(state_dir / JOURNAL_FILE) as reader:
        record = await reader.find_run(args.run_id)
        holder = reader.holder()
    if record.state in ("done", "cancelled"):
        ui.err.print(f"run {record.run_id} is already {record.state}; nothing to cancel")
        return EXIT_OK
    if holder is not None:
        request = state_dir / "runs" / record.run_id / CANCEL_REQUEST_FILE
        await anyio.Path(request.parent).mkdir(parents=True, exist_ok=True)
        await anyio.Path(request).write_text(f"{datetime.now(UTC).isoformat()}\n")
        ui.err.print(
            f"asked the batchpump running run {record.run_id} ({holder}) to cancel it; it "
            f"checks within a second.\n  follow it: {_command('status', record.run_id, state_dir)}",
            highlight=False,
        )
        if ui.json:
            ui.print_json({"run_id": record.run_id, "cancel": "requested", "holder": holder})
        return EXIT_OK
    args.command = "cancel"
    return await _cmd_resume(args, ui)


async def _cmd_results(args: argparse.Namespace, ui: _Ui) -> int:
    state_dir = _state_dir(args)
    record = await _find(state_dir, args.run_id, _journal_url(args))
    settings = _load_settings(state_dir, record.run_id)
    provider = make_provider(_cli_name(record), args, base_url=record.base_url, settings=settings)
    async with _pump(provider, state_dir, args) as pump:
        if not args.rebuild:
            problem = await pump.check_results(record.run_id)
            if problem is not None:  # a diagnostic: stderr, like every problem
                ui.err.print(problem, highlight=False)
                return EXIT_SOME_FAILED
            ui.out.print(f"run {record.run_id}: the results file is intact", highlight=False)
            return EXIT_OK
        report = await pump.rebuild_results(record.run_id)
        ui.out.print(report.describe(), highlight=False)
        return EXIT_OK if not report.lost else EXIT_SOME_FAILED


def _when(timestamp: float) -> str:
    if not timestamp:
        return "-"
    return datetime.fromtimestamp(timestamp, tz=UTC).isoformat(timespec="seconds")


def _run_dict(record: RunRecord) -> dict[str, object]:
    c = record.counts
    return {
        "run_id": record.run_id,
        "state": record.state,
        "provider": record.provider,
        "base_url": record.base_url,
        "endpoint": record.endpoint,
        "created_at": _when(record.created_at),
        "updated_at": _when(max(record.updated_at, record.created_at)),
        "total_lines": record.total_lines,
        "results": c.total,
        "counts": msgspec.to_builtins(c),
        "input": record.input_path,
        "results_file": record.out_path,
    }


async def _cmd_status(args: argparse.Namespace, ui: _Ui) -> int:
    state_dir = _state_dir(args)
    url = _journal_url(args)
    if url is not None:
        return await _status_shared(url, args.run_id, ui)
    async with await JournalReader.open(state_dir / JOURNAL_FILE) as reader:
        holder = reader.holder()
        if args.run_id is None:
            runs = await reader.list_runs()
            if ui.json:
                ui.print_json(
                    {
                        "journal": str(reader.path),
                        "active": holder,
                        "runs": [_run_dict(r) for r in runs],
                    }
                )
                return EXIT_OK
            if holder:
                ui.err.print(f"journal in use by {holder}")
            table = Table(box=None, pad_edge=False)
            for column in ("run", "state", "results", "provider", "updated", "results file"):
                table.add_column(column, no_wrap=True)
            for r in runs:
                table.add_row(
                    r.run_id,
                    r.state,
                    f"{r.counts.total:,}/{r.total_lines:,}",
                    r.provider,
                    _when(max(r.updated_at, r.created_at)),
                    r.out_path,
                )
            ui.out.print(table if runs else f"no runs in {reader.path}", highlight=False)
            return EXIT_OK
        record = await reader.find_run(args.run_id)
        shards = await reader.load_shards(record.run_id)
    info = _run_dict(record)
    batches = [
        {
            "shard": s.index,
            "attempt": s.attempt,
            "lines": s.lines,
            "state": s.state,
            "batch_id": s.batch_id,
            "batch_state": s.batch_state,
        }
        for s in shards
    ]
    settings = _load_settings(state_dir, record.run_id)
    if settings.get("format") == "openai":
        info["results_file_openai"] = settings.get("out")
    info["active"] = holder if record.state in ("sharding", "running") else None
    if ui.json:
        ui.print_json({**info, "batches": batches})
        return EXIT_OK
    c = record.counts
    lines = [
        f"run        {record.run_id}",
        f"state      {record.state}" + (f" (being run by {holder})" if info["active"] else ""),
        f"provider   {record.provider} at {record.base_url}",
        f"endpoint   {record.endpoint}",
        f"created    {info['created_at']}",
        f"updated    {info['updated_at']}",
        f"results    {c.total:,} of {record.total_lines:,} lines: succeeded {c.succeeded:,}, "
        f"errored {c.errored:,}, expired {c.expired:,}, canceled {c.canceled:,}, "
        f"rejected {c.rejected:,}",
        f"input      {record.input_path}",
        f"results to {settings.get('out') or record.out_path}",
    ]
    ui.out.print("\n".join(lines), highlight=False)
    table = Table(box=None, pad_edge=False, title=None)
    for column in ("shard", "attempt", "lines", "state", "batch", "batch state"):
        table.add_column(column, no_wrap=True)
    for b in batches:
        table.add_row(
            str(b["shard"]),
            str(b["attempt"]),
            f"{b['lines']:,}",
            str(b["state"]),
            str(b["batch_id"] or "-"),
            str(b["batch_state"] or "-"),
        )
    if batches:
        ui.out.print(table)
    if record.state in ("sharding", "running") and not holder:
        ui.err.print(
            f"not running now; continue it: {_command('resume', record.run_id, state_dir)}"
        )
    return EXIT_OK


async def _status_shared(url: str, run_id: str | None, ui: _Ui) -> int:
    """``status`` of a journal on a server: every run (or the one ``run_id`` prefixes)."""
    journal = await connect_journal(url)
    try:
        runs = await journal.list_runs()
    finally:
        await journal.aclose()
    if run_id is not None:
        runs = [r for r in runs if r.run_id.startswith(run_id)]
        if not runs:
            raise UsageError(f"no run matching {run_id!r} in the journal at the given URL")
    if ui.json:
        ui.print_json({"runs": [_run_dict(r) for r in runs]})
        return EXIT_OK
    for r in runs:
        c = r.counts
        ui.out.print(
            f"{r.run_id}  {r.state:<9}  {c.total:>9,}/{r.total_lines:<9,} lines  "
            f"ok={c.succeeded:,} errored={c.errored:,} expired={c.expired:,} "
            f"canceled={c.canceled:,} rejected={c.rejected:,}  {r.out_path}",
            highlight=False,
        )
    if not runs:
        ui.out.print("no runs in the journal at the given URL", highlight=False)
    return EXIT_OK


def _add_export(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "export",
        help="write a run's results file, complete and atomically, from its journal",
        description="Write the committed results of a run to FILE (a temporary file renamed "
        "into place): from a PostgreSQL journal, whichever worker ran it; from a SQLite "
        "journal, the committed part of its results file.",
        epilog=EPILOG,
        formatter_class=_Formatter,
    )
    _run_id_argument(p)
    p.add_argument("--out", type=Path, required=True, metavar="FILE", help="the file to write")
    _journal_option(p)


async def _cmd_export(args: argparse.Namespace, ui: _Ui) -> int:
    state_dir = _state_dir(args)
    url = _journal_url(args)
    journal_path = state_dir / JOURNAL_FILE
    if url is None and not await anyio.Path(journal_path).is_file():
        raise UsageError(f"no journal at {journal_path}; pass --journal DIR or URL")
    journal = await connect_journal(url or journal_path)
    try:
        size = await export_results(journal, args.run_id, args.out)
    finally:
        await journal.aclose()
    ui.out.print(f"{args.run_id}: {size:,} bytes of results written to {args.out}", highlight=False)
    return EXIT_OK


def _clean_files(state_dir: Path, runs: list[RunRecord], every: list[RunRecord]) -> int:
    freed = 0
    for record in runs:
        freed += prune_run_files(state_dir / "runs" / record.run_id, Path(record.input_path))
    spool = state_dir / "spool"
    if spool.is_dir():  # spools of no run at all: a crash between spool and run
        inputs = {r.input_path for r in every}
        for path in spool.iterdir():
            if str(path.resolve()) not in inputs:
                freed += path.stat().st_size
                path.unlink()
    return freed


async def _cmd_clean(args: argparse.Namespace, ui: _Ui) -> int:
    state_dir = _state_dir(args)
    path = state_dir / JOURNAL_FILE
    if not await anyio.Path(path).is_file():
        raise UsageError(f"no journal at {path}; pass --journal DIR (the state directory)")
    async with await SqliteJournal.open(path) as journal:  # locked: no run is active
        every = await journal.list_runs()
        if args.run_id is not None:
            async with await JournalReader.open(path) as reader:
                record = await reader.find_run(args.run_id)
            if record.state not in ("done", "cancelled"):
                raise UsageError(
                    f"run {record.run_id} is {record.state}: its files are what resume needs; "
                    f"finish it ({_command('resume', record.run_id, state_dir)}) or cancel it "
                    f"({_command('cancel', record.run_id, state_dir)}) first"
                )
            runs = [record]
        else:
            runs = [r for r in every if r.state in ("done", "cancelled")]
        freed = await anyio.to_thread.run_sync(_clean_files, state_dir, runs, every)
    ids = [r.run_id for r in runs]
    if ui.json:
        ui.print_json({"runs": ids, "freed_bytes": freed})
    else:
        which = f"{len(ids)} finished run{'s' if len(ids) != 1 else ''}"
        ui.out.print(
            f"freed {_size(freed)} from {which} in {state_dir} (journal records and "
            "results files kept)",
            highlight=False,
        )
    return EXIT_OK


def _size(count: int) -> str:
    if count < 1024:
        return f"{count:,} bytes"
    size = float(count)
    for unit in ("KB", "MB", "GB"):
        size /= 1024
        if size < 1024 or unit == "GB":
            break
    return f"{size:,.1f} {unit}"


def _emulate(args: argparse.Namespace) -> int:
    from .emulator import run_from_args

    return run_from_args(args)


async def _cmd_demo(args: argparse.Namespace, ui: _Ui) -> int:
    from ._demo import demo

    return await demo(
        lines=args.lines,
        directory=args.dir,
        mode=args.progress,
        console=ui.err,
        out=ui.out,
        as_json=ui.json,
    )


async def _cmd_stream(args: argparse.Namespace, ui: _Ui) -> int:
    """stdin into the named stream, its results appended to ``--out``."""
    from ._stream import continue_command, pipe_stream

    out: Path = args.out
    state_dir: Path = args.journal or _absolute(out).parent / DEFAULT_STATE_DIR
    provider = make_provider(args.provider, args)
    ui.resume_hint = continue_command(args)
    async with (
        Pump(provider, state_dir=state_dir) as pump,
        pump.stream(
            args.name,
            endpoint=args.endpoint,
            flush_lines=args.flush_lines,
            flush_bytes=args.flush_bytes,
            flush_after=args.flush_after,
            max_pending=args.max_pending,
        ) as stream,
    ):
        ui.err.print(f"stream {args.name}: reading stdin; results go to {out}", highlight=False)

        def say(message: str) -> None:
            ui.err.print(message, highlight=False)

        counts = await pipe_stream(stream, sys.stdin.fileno(), out, say)
    if ui.json:
        ui.print_json({"stream": args.name, **msgspec.structs.asdict(counts)})
    else:
        ui.out.print(
            f"stream {args.name}: {counts.total:,} results, {counts.succeeded:,} succeeded, "
            f"{counts.errored:,} errored, {counts.expired:,} expired, "
            f"{counts.canceled:,} canceled",
            highlight=False,
        )
    return EXIT_OK if counts.succeeded == counts.total else EXIT_SOME_FAILED


COMMANDS: Final[dict[str, Callable[[argparse.Namespace, _Ui], Awaitable[int]]]] = {
    "run": _cmd_run,
    "resume": _cmd_resume,
    "cancel": _cmd_cancel,
    "results": _cmd_results,
    "status": _cmd_status,
    "export": _cmd_export,
    "clean": _cmd_clean,
    "stream": _cmd_stream,
    "demo": _cmd_demo,
}


async def _interruptible(args: argparse.Namespace, ui: _Ui) -> int:
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
                        ui.err.print(
                            f"stopping; {_continue_words(ui)} (Ctrl-C again to stop at once)",
                            highlight=False,
                        )
                        tg.cancel_scope.cancel()
                        return

            tg.start_soon(watch)
            code = await COMMANDS[args.command](args, ui)
            tg.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        raise unwrap_group(group) from None
    return code


def _continue_words(ui: _Ui) -> str:
    if ui.resume_hint is None:
        return "nothing was sent yet: run the same command again to start over"
    return f"the journal is consistent; continue with: {ui.resume_hint}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit code (the console script exits with it)."""
    args = _parser().parse_args(argv)
    ui = _Ui(out=_console(sys.stdout), err=_console(sys.stderr), json=getattr(args, "json", False))
    if args.command == "emulate":
        try:
            return _emulate(args)
        except UsageError as exc:
            ui.error("error", str(exc))
            return EXIT_USAGE
    try:
        return anyio.run(_interruptible, args, ui, backend="asyncio")
    except KeyboardInterrupt:
        ui.err.print(f"interrupted; {_continue_words(ui)}", highlight=False)
        return EXIT_INTERRUPTED
    except UsageError as exc:
        ui.error("error", str(exc))
        return EXIT_USAGE
    except (AuthenticationError, BadRequestError, NotFoundError, ConfigurationError) as exc:
        ui.error("refused", str(exc))
        return EXIT_REFUSED
    except JournalError as exc:
        ui.error("journal", str(exc))
        return EXIT_JOURNAL
    except BatchpumpError as exc:
        hint = f"; `{ui.resume_hint}` continues" if ui.resume_hint else ""
        if ui.resume_hint and "batchpump resume" in str(exc):
            hint = ""  # the message names it already (made whole by ``error``)
        ui.error("failed", f"{exc}{hint}")
        return EXIT_FAILED


def entry() -> None:
    sys.exit(main())
