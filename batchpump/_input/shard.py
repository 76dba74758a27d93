"""Splitting a request file into shard files on disk, after checking every line.

:func:`shard_file` streams the input once: each line is checked by the provider's line checker
(:mod:`.check`), routed to the open shard of its group (its model) and written out by a
background thread that also hashes the input (:mod:`.writer`). An input of a few MB or more
is checked by worker processes instead, range by range (:mod:`.parallel`), with the same
results; the lines of the ranges they accept are copied to the shards as they are, and the
input is hashed on a thread of its own meanwhile. Duplicate ``custom_id``
detection keeps one 8-byte hash per valid line (:mod:`.duplicates`); a hash match is confirmed
by a second pass over the input, so a hash collision never rejects a valid file. Shards are
written as ``*.tmp`` and renamed only once the whole input passed, so a crash or an
``InputError`` never leaves a shard that looks complete. The engine uploads only after
:func:`shard_file` returns.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final, Literal

import msgspec

from .._errors import InputError, InputProblem, UsageError
from .._fileio import fsync_dir
from .._models import Capabilities, Rejected, ShardRecord
from . import parallel
from .block import BlockChecker
from .check import Checked, LineChecker, LineCheckerFactory, Problem, RequestLineChecker
from .duplicates import MASK, IdHashes, confirm_duplicates
from .lines import LineBlock, bad_utf8_lines, iter_blocks
from .parallel import CheckedRange, RangeChecker
from .writer import Background, ShardWriter

__all__ = [
    "HASH_DIGEST_SIZE",
    "MAX_PROBLEMS",
    "ShardingOutcome",
    "hash_file",
    "shard_file",
    "shard_limits",
]

#: Bytes of the blake2b digest behind ``input_hash`` (hex: twice as many characters).
HASH_DIGEST_SIZE: Final = 32
#: With ``on_invalid="raise"``, checking stops after this many problems.
MAX_PROBLEMS: Final = 1000
_HASH_CHUNK: Final = 1024 * 1024
#: Check blocks of standard request lines as a whole when the line checker offers it
#: (:mod:`.block`). Off only in tests that compare both paths.
FAST_BLOCKS = True
_EMPTY_HINT: Final = "write one JSON request object per line"


class ShardingOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """What :func:`shard_file` produced.

    Attributes:
        shards: the shard files, attempt 1, in index order.
        rejected: one ``Rejected`` per bad line (only with ``on_invalid="skip"``).
        total_lines: results the run will have (``len(rejected) + sum(s.lines for s in
            shards)``): the non-blank input lines, where a custom_id on several lines counts
            once (``on_invalid="skip"`` rejects it once).
        input_hash: hex blake2b of the input's bytes (as :func:`hash_file`).
    """

    shards: list[ShardRecord]
    rejected: list[Rejected]
    total_lines: int
    input_hash: str


def hash_file(path: Path) -> str:
    """Hex blake2b (``HASH_DIGEST_SIZE`` bytes) of a file's bytes, read streaming."""
    digest = hashlib.blake2b(digest_size=HASH_DIGEST_SIZE)
    buffer = memoryview(bytearray(_HASH_CHUNK))
    with path.open("rb", buffering=0) as file:
        while size := file.readinto(buffer):
            digest.update(buffer[:size])
    return digest.hexdigest()


def _limit(name: str, asked: int | None, cap: int) -> int:
    if asked is None:
        return cap
    if not 1 <= asked <= cap:
        raise UsageError(f"{name}={asked} must be between 1 and the provider's limit of {cap}")
    return asked


def shard_limits(
    capabilities: Capabilities, *, max_lines: int | None = None, max_bytes: int | None = None
) -> tuple[int, int, int]:
    """A run's limits: ``(lines per shard, bytes per shard, bytes per line)``.

    Arguments as :func:`shard_file`; shared with streams, so both cut and check alike.

    Raises:
        UsageError: a limit above the provider's.
    """
    lines_cap = _limit("max_lines", max_lines, capabilities.max_lines)
    bytes_cap = _limit("max_bytes", max_bytes, capabilities.max_bytes)
    return lines_cap, bytes_cap, min(capabilities.max_line_bytes, bytes_cap - 1)


class _Scan:
    """The findings of one pass over the input, fed block by block.

    Args:
        checker: the run's line checker.
        writer: where valid lines go (dropped once a problem makes the run raise).
        forced: line number -> problem, for lines known bad beforehand (repeated ids).
        max_problems: stop after this many problems (``None``: never).
        fast: the whole-block checker, if the line checker offers one (see :mod:`.block`).
    """

    __slots__ = (
        "_add",
        "_add_block",
        "_check",
        "_checker",
        "_fast",
        "_forced",
        "_limit",
        "_raising",
        "ids",
        "next_line",
        "problems",
        "stopped",
        "total_lines",
        "writer",
    )

    def __init__(
        self,
        checker: LineChecker,
        writer: ShardWriter | None,
        *,
        forced: dict[int, Problem],
        max_problems: int | None,
        fast: BlockChecker | None = None,
    ) -> None:
        self.problems: dict[int, Problem] = {}
        self.ids = IdHashes()
        self.total_lines = 0  # non-blank lines so far
        self.next_line = 1  # the number of the next line to come
        self.stopped = False
        self.writer = writer
        self._checker = checker
        self._check = checker.check
        self._fast = fast
        self._forced = forced
        self._raising = max_problems is not None
        self._limit = max_problems if max_problems is not None else sys.maxsize
        self._add = writer.add if writer is not None else None
        self._add_block = writer.add_block if writer is not None else None

    def feed(self, blocks: Iterator[LineBlock]) -> None:
        """Check every line, write the valid ones (while writing), hash their ids.

        A block of standard lines is checked and routed as a whole when ``fast`` is set (see
        :mod:`.block`); any other block goes line by line.
        """
        problems = self.problems
        appenders = self.ids.appenders
        check = self._check
        forced = self._forced
        fast = self._fast
        total = self.total_lines
        for first, lines, clean, oversized in blocks:
            self.next_line = first + (1 if oversized else len(lines))
            checked = fast.check(lines, clean) if fast is not None and not oversized else None
            if checked is not None and fast is not None:
                custom_ids, models = checked
                self.ids.add_all(custom_ids)
                if self._add_block is not None:
                    self._add_block(lines, models, custom_ids, fast.overhead)
                total += len(lines)
                continue
            if oversized:
                total += 1
                problems[first] = self._checker.oversized(oversized)
                bad = {}
            else:
                bad = {} if clean else bad_utf8_lines(lines)
            for index, line in enumerate(lines):
                if not line:
                    continue
                if bad and index in bad:
                    result: Checked | Problem = bad[index]
                elif forced and first + index in forced:
                    result = forced[first + index]
                else:
                    result = check(line, total == 0)
                if isinstance(result, Problem):
                    if not line.strip():
                        continue  # a blank line
                    problems[first + index] = result
                    if len(problems) >= self._limit:
                        self.stopped = True
                        break
                else:
                    cid, model, body_bytes, data = result
                    h = hash(cid)
                    appenders[h & MASK](h)
                    if self._add is not None:
                        self._add(model, data, body_bytes)
                total += 1
            if problems:
                self._stop_writing()
            if self.stopped:
                break
        self.total_lines = total

    def feed_checked(self, checked: CheckedRange, source: int) -> None:
        """Take a range a worker process checked; ``source`` is the input's descriptor."""
        assert self._fast is not None
        self.ids.add_bucketed(checked.hash_counts, checked.hashes)
        if self.writer is not None:
            self.writer.add_span(
                checked.rewritten or source,
                0 if checked.rewritten else checked.start,
                checked.line_ends,
                checked.models,
                checked.id_chars,
                self._fast.overhead,
                ends_newline=checked.ends_newline,
            )
        self.total_lines += checked.lines
        self.next_line += checked.lines

    def _stop_writing(self) -> None:
        if self.writer is not None and self._raising:
            self.writer.discard()  # the run will raise: stop writing
            self.writer = self._add = self._add_block = None


def _scan(
    blocks: Iterator[LineBlock],
    checker: LineChecker,
    writer: ShardWriter | None,
    *,
    forced: dict[int, Problem],
    max_problems: int | None,
    fast: BlockChecker | None = None,
) -> _Scan:
    """One pass over ``blocks`` in-process (see :class:`_Scan`)."""
    scan = _Scan(checker, writer, forced=forced, max_problems=max_problems, fast=fast)
    scan.feed(blocks)
    return scan


def _scan_ranges(
    path: Path,
    source: int,
    size: int,
    scan: _Scan,
    fast: BlockChecker,
    max_line_bytes: int,
    digest: hashlib.blake2b,
) -> None:
    """One pass over the input's first ``size`` bytes, its ranges checked by worker processes
    (:mod:`.parallel`); a range they did not check goes through :meth:`_Scan.feed`. The input
    is hashed into ``digest`` meanwhile, on a thread of its own (``hashlib`` releases the GIL).
    """
    stop = threading.Event()
    with ThreadPoolExecutor(1, thread_name_prefix="batchpump-hash") as hasher:
        hashed = hasher.submit(_hash_into, digest, source, size, stop)
        try:
            with RangeChecker(path, size, fast, max_line_bytes) as workers:
                for checked in workers.ranges():
                    if checked.lines >= 0:
                        scan.feed_checked(checked, source)
                        continue
                    blocks = iter_blocks(
                        path,
                        max_line_bytes=max_line_bytes,
                        start=checked.start,
                        stop=checked.end,
                        first_line=scan.next_line,
                    )
                    scan.feed(blocks)
                    if scan.stopped:
                        break
        except BaseException:
            stop.set()  # the hash will not be used
            raise
        hashed.result()


def _hash_into(digest: hashlib.blake2b, source: int, size: int, stop: threading.Event) -> None:
    """Hash the first ``size`` bytes of ``source`` (one reused buffer: no page faults)."""
    buffer = memoryview(bytearray(_HASH_CHUNK))
    offset = 0
    while offset < size and not stop.is_set():
        got = os.preadv(source, [buffer[: min(_HASH_CHUNK, size - offset)]], offset)
        if not got:
            raise OSError(f"the input is shorter than when it was checked (at {offset})")
        digest.update(buffer[:got])
        offset += got


def shard_file(
    path: Path,
    *,
    out_dir: Path,
    run_id: str,
    endpoint: str,
    capabilities: Capabilities,
    max_lines: int | None = None,
    max_bytes: int | None = None,
    on_invalid: Literal["raise", "skip"] = "raise",
    line_checker: LineCheckerFactory | None = None,
) -> ShardingOutcome:
    """Check every line of ``path`` and split the valid ones into shard files in ``out_dir``.

    Shards are ``out_dir / f"{index:05d}.a1.jsonl"``, each within ``max_lines`` lines and
    ``max_bytes`` bytes and, with ``capabilities.one_model_per_shard``, one group (model) each
    (groups in order of first appearance; indexes are global, so the same input always gives
    the same files). Each line is written as the line checker returns it and ends with exactly
    ``"\\n"``: with the standard checker, byte for byte, except that a line without
    ``method``/``url`` is re-encoded with ``"method": "POST"`` and ``"url": endpoint`` (other
    unknown top-level keys are then dropped). ``ShardRecord.tokens`` is an estimate: the
    shard's body bytes // 4.

    Args:
        path: the JSONL input.
        out_dir: where shard files go (created if missing).
        run_id: recorded in every ``ShardRecord``.
        endpoint: the run's endpoint; a line's ``url``, when given, must equal it.
        capabilities: the provider's limits.
        max_lines: lines per shard; may only lower ``capabilities.max_lines``.
        max_bytes: bytes per shard; may only lower ``capabilities.max_bytes``.
        on_invalid: ``"raise"``: any bad line raises ``InputError`` and no shard file is left;
            ``"skip"``: bad lines become ``Rejected`` results and the rest is sharded.
        line_checker: makes the provider's line checker for the run's endpoint and line limit
            (``Provider.line_checker``); default: the standard request-line checker.

    Raises:
        InputError: bad lines with ``on_invalid="raise"``, or an input with no lines at all.
        UsageError: a limit above the provider's.
    """
    lines_cap, bytes_cap, line_cap = shard_limits(
        capabilities, max_lines=max_lines, max_bytes=max_bytes
    )
    if line_checker is None:
        checker: LineChecker = RequestLineChecker(
            endpoint=endpoint,
            max_line_bytes=line_cap,
            custom_id_max_len=capabilities.custom_id_max_len,
        )
    else:
        checker = line_checker(endpoint=endpoint, max_line_bytes=line_cap)
    fast = checker.block_checker() if FAST_BLOCKS else None
    raising = on_invalid == "raise"
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("*.a1.jsonl.tmp"):
        stale.unlink()
    digest = hashlib.blake2b(digest_size=HASH_DIGEST_SIZE)
    with path.open("rb", buffering=0) as input_file, Background() as background:
        source = input_file.fileno()  # shard writes may copy from it until the commit

        def writer() -> ShardWriter:
            return ShardWriter(
                out_dir,
                run_id=run_id,
                max_lines=lines_cap,
                max_bytes=bytes_cap,
                per_model=capabilities.one_model_per_shard,
                background=background,
            )

        def on_chunk(chunk: bytes) -> None:
            background.submit(digest.update, chunk, size=len(chunk))

        out = writer()
        try:
            scan = _Scan(
                checker, out, forced={}, max_problems=MAX_PROBLEMS if raising else None, fast=fast
            )
            size = os.fstat(source).st_size
            if fast is not None and parallel.usable(size):
                _scan_ranges(path, source, size, scan, fast, line_cap, digest)
            else:
                scan.feed(iter_blocks(path, max_line_bytes=line_cap, on_chunk=on_chunk))
            background.drain()
            problems = scan.problems
            _blame_endpoint(problems, scan.total_lines, endpoint)
            if not raising:  # a bad line's id counts too: one result per custom_id
                scan.ids.add_all(p.custom_id for p in problems.values() if p.custom_id)
            candidates = set() if scan.stopped else scan.ids.colliding()
            duplicates: dict[int, Problem] = {}
            firsts: dict[str, int] = {}
            if candidates:
                duplicates = confirm_duplicates(
                    path, candidates, problems, line_cap, firsts, count_bad=not raising
                )
                if not raising:  # a repeated id is not sent at all (see ``_rejected``)
                    for cid, line in firsts.items():
                        duplicates[line] = problems.get(line) or Problem(
                            f"custom_id {cid!r} is on more than one line",
                            "custom_id must be unique across the input",
                            cid,
                        )
                problems.update(duplicates)
            if scan.total_lines == 0:
                problems = {0: Problem("the input is empty: no request lines", _EMPTY_HINT)}
            if problems and (raising or scan.total_lines == 0):
                out.discard()
                _raise(path, problems, stopped=scan.stopped)
            if duplicates:
                # Rare: shard again without the repeats, so shards stay as if never written.
                out.discard()
                out = writer()
                again = iter_blocks(path, max_line_bytes=line_cap)
                _scan(again, checker, out, forced=duplicates, max_problems=None)
            shards = out.commit()
        except BaseException:
            out.discard()
            raise
    fsync_dir(out_dir)
    rejected = _rejected(problems)
    return ShardingOutcome(
        shards=shards,
        rejected=rejected,
        total_lines=len(rejected) + sum(s.lines for s in shards),
        input_hash=digest.hexdigest(),
    )


def _rejected(problems: dict[int, Problem]) -> list[Rejected]:
    """One ``Rejected`` per custom_id (``on_invalid="skip"``).

    A custom_id on several lines (valid or not) was sent for none of them: its one result
    names every line. A line without a usable custom_id gets ``custom_id=""`` (which no line
    can have) and its line number.
    """
    by_id: dict[str, list[tuple[int, Problem]]] = {}
    rejected: list[Rejected] = []
    for line, problem in sorted(problems.items()):
        if problem.custom_id:
            by_id.setdefault(problem.custom_id, []).append((line, problem))
            continue
        rejected.append(Rejected(custom_id="", line=line, message=_words(problem)))
    for cid, found in by_id.items():
        line, problem = found[0]
        if len(found) == 1:
            message = _words(problem)
        else:
            lines = ", ".join(str(n) for n, _ in found)
            message = f"custom_id {cid!r} is on lines {lines}; none of them was sent"
        rejected.append(Rejected(custom_id=cid, line=line, message=message))
    rejected.sort(key=lambda r: r.line)
    return rejected


def _words(problem: Problem) -> str:
    return f"{problem.message} ({problem.hint})" if problem.hint else problem.message


def _blame_endpoint(problems: dict[int, Problem], total_lines: int, endpoint: str) -> None:
    """Every line checked names one other endpoint: the endpoint setting is wrong, not the
    input; say so once instead of once per line."""
    if len(problems) < max(2, min(total_lines, MAX_PROBLEMS)):  # one line says it itself
        return
    urls = {p.wrong_url for p in problems.values()}
    if len(urls) != 1 or None in urls:
        return
    (url,) = urls
    raise UsageError(
        f"the endpoint is {endpoint!r} but every line's url is {url!r}; pass --endpoint {url} "
        f"(Python: endpoint={url!r}), or leave url out of the lines (nothing was sent)"
    )


def _raise(path: Path, problems: dict[int, Problem], *, stopped: bool) -> None:
    listed = [InputProblem(n, p.message, p.hint) for n, p in sorted(problems.items())]
    if stopped:
        listed.append(
            InputProblem(0, f"stopped checking after {MAX_PROBLEMS} problems", "fix these first")
        )
    raise InputError(str(path), listed)
