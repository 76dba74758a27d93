"""``batchpump stream``: JSONL from a pipe into a stream, results into a file.

Lines are read from a file descriptor (stdin) as they come, a chunk at a time, so it works
behind ``tail -f``: each chunk's complete lines go in with one ``put_many`` (one durable
commit). A chunk with bad lines is put line by line instead, so only the bad ones are refused
(and reported by their line number on stdin, the last line without its newline included); a
line whose ``custom_id`` the stream accepted before (earlier in the input, or in an earlier
run of the command) is skipped and counted, so the same input can be piped in again after a
stop.

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
    seen = 0  # physical lines read so far, blank ones included (the numbers a user sees)
    tally = _Tally(say)
    while chunk := await anyio.to_thread.run_sync(
        os.read, source, READ_BYTES, abandon_on_cancel=True
    ):
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        await _put_lines(stream, lines, seen, tally)
        seen += len(lines)
    if rest.strip():  # the last line, without its newline: the same rules
        await _put_lines(stream, [rest], seen, tally)
    tally.report()


class _Tally:
    """What the command skipped and refused, said as it goes and summed up at the end."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say
        self.skipped = 0
        self.refused = 0

    def report(self) -> None:
        if self.skipped:
            self.say(
                f"{_lines(self.skipped)} repeated a custom_id the stream had already accepted "
                "(earlier in this input, or in an earlier run) and "
                f"{'was' if self.skipped == 1 else 'were'} skipped"
            )
        if self.refused:
            self.say(f"{_lines(self.refused)} refused (see above)")


def _lines(count: int) -> str:
    return f"{count:,} line{'' if count == 1 else 's'}"


async def _put_lines(stream: Stream, lines: list[bytes], before: int, tally: _Tally) -> None:
    """Put ``lines`` (the input's lines ``before + 1``...) in one commit, or one by one if
    some are bad or were accepted before: only those are skipped or refused."""
    numbered = [(before + n, line) for n, line in enumerate(lines, 1) if line.strip()]
    if not numbered:
        return
    try:
        await stream.put_many([line for _, line in numbered])
        return
    except InputError:
        pass
    for number, line in numbered:
        try:
            await stream.put(line)
        except InputError as exc:
            if "duplicate custom_id" in str(exc) and len(exc.problems) == 1:
                tally.skipped += 1
            else:
                tally.refused += 1
                problem = exc.problems[0]
                hint = f" ({problem.hint})" if problem.hint else ""
                tally.say(f"stdin line {number:,}: refused: {problem.message}{hint}")


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
