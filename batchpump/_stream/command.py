"""``batchpump stream``: JSONL from a pipe into a stream, results into a file.

Lines are read from a file descriptor (stdin) as they come, a chunk at a time, so it works
behind ``tail -f``: each chunk's complete lines go in with one ``put_many`` (one durable
commit). A chunk with bad lines is put line by line instead, so only the bad ones are refused
(and reported); a line whose ``custom_id`` was accepted by an earlier run of the command is
skipped and counted, so the same input can be piped in again after a stop.

Results are appended to the output file in groups; a group is written, fsynced, and only then
acknowledged, all shielded from cancellation, so a Ctrl-C never leaves a result written and
unacknowledged (it would be written again next time). A kill -9 can, for the last group.
At the end of the input the stream is drained: every line's result is in the file.

``continue_command`` is the command line that continues a stopped stream (printed on Ctrl-C):
the same stream, address, endpoint, flushing rules and files, quoted for a POSIX shell, without
the key (it comes from the environment, or the user adds ``--api-key`` again).
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Final

import anyio
import msgspec
from anyio.streams.memory import MemoryObjectReceiveStream

from .._errors import InputError
from .._fileio import create_private, run_io
from .._models import Result, ResultCounts
from .stream import Stream

__all__ = ["continue_command", "pipe_stream"]

#: Bytes read from the input at a time (a read returns as soon as anything is there).
READ_BYTES: Final = 1 << 20
#: Results written, fsynced and acknowledged together at most.
WRITE_GROUP: Final = 4096

_encoder: Final = msgspec.json.Encoder()


def continue_command(args: argparse.Namespace) -> str:
    """The ``batchpump stream`` command that continues the stream ``args`` describe.

    Args:
        args: the parsed options of a ``batchpump stream`` command.

    Returns:
        the command, quoted with ``shlex``: the name, ``--out``, ``--provider``, ``--endpoint``,
        the flushing rules and ``--max-pending`` always; ``--base-url``, ``--journal``, the
        provider's own settings and ``--json`` when they were given. Never the key.
    """
    words = ["batchpump", "stream", args.name, "--out", str(args.out)]
    words += ["--provider", args.provider]
    if args.base_url is not None:
        words += ["--base-url", args.base_url]
    words += ["--endpoint", args.endpoint]
    words += ["--flush-lines", str(args.flush_lines)]
    if args.flush_bytes is not None:
        words += ["--flush-bytes", str(args.flush_bytes)]
    words += ["--flush-after", str(args.flush_after), "--max-pending", str(args.max_pending)]
    if args.provider == "llamacloud":
        words += ["--job-type", args.job_type]
    for option, value in (("--config-id", args.config_id), ("--work-flow-id", args.work_flow_id)):
        if value is not None:
            words += [option, value]
    if args.journal is not None:
        words += ["--journal", str(args.journal)]
    if args.json:
        words.append("--json")
    return shlex.join(words)


async def pipe_stream(
    stream: Stream, source: int, out: Path, say: Callable[[str], None]
) -> ResultCounts:
    """Put every line read from ``source`` (a file descriptor) into ``stream`` and write its
    results to ``out`` until the input ends and the stream is drained; return the counts."""
    await run_io(create_private, out)
    to_writer, from_results = anyio.create_memory_object_stream[Result](math.inf)
    async with anyio.create_task_group() as tg:

        async def deliver() -> None:
            async with to_writer:
                async for result in stream.results():
                    await to_writer.send(result)

        tg.start_soon(deliver)
        tg.start_soon(_write_results, stream, from_results, out)
        await _read_lines(stream, source, say)
        counts = await stream.drain()
    return counts


async def _read_lines(stream: Stream, source: int, say: Callable[[str], None]) -> None:
    rest = b""
    skipped = refused = 0
    while chunk := await anyio.to_thread.run_sync(
        os.read, source, READ_BYTES, abandon_on_cancel=True
    ):
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        lines = [line for line in lines if line.strip()]
        if not lines:
            continue
        try:
            await stream.put_many(lines)
            continue
        except InputError:
            pass
        for line in lines:  # some are bad or were accepted before: one by one
            try:
                await stream.put(line)
            except InputError as exc:
                if "duplicate custom_id" in str(exc) and len(exc.problems) == 1:
                    skipped += 1
                else:
                    refused += 1
                    say(f"refused: {exc.problems[0].message}")
    if rest.strip():
        await stream.put(rest)
    if skipped:
        say(f"{skipped:,} lines were accepted by an earlier run and skipped")
    if refused:
        say(f"{refused:,} lines were refused (see above)")


async def _write_results(
    stream: Stream, results: MemoryObjectReceiveStream[Result], out: Path
) -> None:
    async with results:
        async for first in results:
            group = [first]
            while len(group) < WRITE_GROUP:
                try:
                    group.append(results.receive_nowait())
                except (anyio.WouldBlock, anyio.EndOfStream):
                    break
            data = bytearray()
            for result in group:
                _encoder.encode_into(result, data, -1)
                data += b"\n"
            with anyio.CancelScope(shield=True):
                await run_io(_append, out, data)
                async with anyio.create_task_group() as tg:
                    for result in group:
                        tg.start_soon(stream.ack, result)


def _read(source: int) -> bytes:
    return os.read(source, READ_BYTES)


def _append(path: Path, data: bytearray) -> None:
    with path.open("ab") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
