"""Splitting a request file into shard files on disk, after checking every line.

:func:`shard_file` streams the input once: each line is checked (:mod:`._jsonl`), routed to
the open shard of its model and written out by a background thread that also hashes the
input. Duplicate ``custom_id`` detection keeps one 8-byte hash per valid line (in ``array``
buckets, not a set of strings); a hash match is confirmed by a second pass over the input, so a
hash collision never rejects a valid file. Shards are written as ``*.tmp`` and renamed only
once the whole input passed, so a crash or an ``InputError`` never leaves a shard that looks
complete. The engine uploads only after :func:`shard_file` returns.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Final, Literal

import msgspec

from .._errors import InputError, InputProblem, UsageError
from .._models import Capabilities, Rejected, ShardRecord
from ..providers.anthropic._convert import AnthropicLineChecker
from .block import BlockChecker
from .check import Checked, LineChecker, Problem
from .duplicates import MASK, IdHashes, confirm_duplicates
from .items import ItemCheck, ItemLineChecker
from .lines import LineBlock, bad_utf8_lines, iter_blocks
from .threads import Background, fsync_dir
from .writer import ShardWriter

__all__ = [
    "HASH_DIGEST_SIZE",
    "MAX_PROBLEMS",
    "ShardingOutcome",
    "hash_file",
    "line_checker",
    "shard_file",
]

#: Bytes of the blake2b digest behind ``input_hash`` (hex: twice as many characters).
HASH_DIGEST_SIZE: Final = 32
#: With ``on_invalid="raise"``, checking stops after this many problems.
MAX_PROBLEMS: Final = 1000
_HASH_CHUNK: Final = 8 * 1024 * 1024
#: Check blocks of standard OpenAI-format lines as a whole (:mod:`._block`). Off only in
#: tests that compare both paths.
FAST_BLOCKS = True
_EMPTY_HINT: Final = "write one JSON request object per line"


class ShardingOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """What :func:`shard_file` produced.

    Attributes:
        shards: the shard files, attempt 1, in index order.
        rejected: one ``Rejected`` per bad line (only with ``on_invalid="skip"``).
        total_lines: non-blank input lines (``len(rejected) + sum(s.lines for s in shards)``).
        input_hash: hex blake2b of the input's bytes (as :func:`hash_file`).
    """

    shards: list[ShardRecord]
    rejected: list[Rejected]
    total_lines: int
    input_hash: str


def hash_file(path: Path) -> str:
    """Hex blake2b (``HASH_DIGEST_SIZE`` bytes) of a file's bytes, read streaming."""
    digest = hashlib.blake2b(digest_size=HASH_DIGEST_SIZE)
    with path.open("rb", buffering=0) as file:
        while chunk := file.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _limit(name: str, asked: int | None, cap: int) -> int:
    if asked is None:
        return cap
    if not 1 <= asked <= cap:
        raise UsageError(f"{name}={asked} must be between 1 and the provider's limit of {cap}")
    return asked


def line_checker(
    endpoint: str,
    capabilities: Capabilities,
    *,
    max_lines: int | None = None,
    max_bytes: int | None = None,
    item_check: ItemCheck | None = None,
    item_group_field: str | None = None,
) -> tuple[int, int, int, LineChecker | AnthropicLineChecker | ItemLineChecker]:
    """The limits and the line checker of a run: ``(lines_cap, bytes_cap, line_cap, checker)``.

    Arguments as :func:`shard_file`; shared with streams, so both accept the same lines.

    Raises:
        UsageError: a limit above the provider's.
    """
    lines_cap = _limit("max_lines", max_lines, capabilities.max_lines)
    bytes_cap = _limit("max_bytes", max_bytes, capabilities.max_bytes)
    line_cap = min(capabilities.max_line_bytes, bytes_cap - 1)
    base = LineChecker(
        endpoint=endpoint,
        max_line_bytes=line_cap,
        custom_id_max_len=capabilities.custom_id_max_len,
    )
    checker: LineChecker | AnthropicLineChecker | ItemLineChecker = base
    if capabilities.line_format == "anthropic":  # native {custom_id, params}; chat converted
        checker = AnthropicLineChecker(base, max_line_bytes=line_cap)
    elif capabilities.line_format == "items":  # documents or jobs, checked by the adapter
        checker = ItemLineChecker(
            base,
            item_check,
            group_field=item_group_field,
            max_line_bytes=line_cap,
            custom_id_max_len=capabilities.custom_id_max_len,
        )
    return lines_cap, bytes_cap, line_cap, checker


class _Scan:
    """The findings of one pass over the input."""

    __slots__ = ("ids", "problems", "stopped", "total_lines")

    def __init__(self) -> None:
        self.problems: dict[int, Problem] = {}
        self.ids = IdHashes()
        self.total_lines = 0
        self.stopped = False


def _scan(
    blocks: Iterator[LineBlock],
    checker: LineChecker | AnthropicLineChecker | ItemLineChecker,
    writer: ShardWriter | None,
    *,
    forced: dict[int, Problem],
    max_problems: int | None,
    fast: BlockChecker | None = None,
) -> _Scan:
    """Check every line, write the valid ones (while ``writer`` is set), hash their ids.

    With ``fast``, a block of standard lines is checked and routed as a whole (see
    :mod:`._block`); any other block goes line by line.
    """
    scan = _Scan()
    problems = scan.problems
    appenders = scan.ids.appenders
    check = checker.check
    add = writer.add if writer is not None else None
    add_block = writer.add_block if writer is not None else None
    total = 0
    limit = max_problems if max_problems is not None else sys.maxsize
    for first, lines, clean, oversized in blocks:
        checked = fast.check(lines, clean) if fast is not None and not oversized else None
        if checked is not None and fast is not None:
            custom_ids, models = checked
            scan.ids.add_all(custom_ids)
            if add_block is not None:
                add_block(lines, models, custom_ids, fast.overhead)
            total += len(lines)
            continue
        if oversized:
            total += 1
            problems[first] = checker.oversized(oversized)
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
                if len(problems) >= limit:
                    scan.stopped = True
                    break
            else:
                cid, model, body_bytes, data = result
                h = hash(cid)
                appenders[h & MASK](h)
                if add is not None:
                    add(model, data, body_bytes)
            total += 1
        if problems and writer is not None and max_problems is not None:
            writer.discard()  # the run will raise: stop writing
            writer = add = add_block = None
        if scan.stopped:
            break
    scan.total_lines = total
    return scan


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
    item_check: ItemCheck | None = None,
    item_group_field: str | None = None,
) -> ShardingOutcome:
    """Check every line of ``path`` and split the valid ones into shard files in ``out_dir``.

    Shards are ``out_dir / f"{index:05d}.a1.jsonl"``, each within ``max_lines`` lines and
    ``max_bytes`` bytes and, with ``capabilities.one_model_per_shard``, one ``body.model``
    each (models in order of first appearance; indexes are global, so the same input always
    gives the same files). Lines are copied byte for byte, except that a line without
    ``method``/``url`` is re-encoded with ``"method": "POST"`` and ``"url": endpoint`` (other
    unknown top-level keys are then dropped) and each line ends with exactly ``"\\n"``.
    ``ShardRecord.tokens`` is an estimate: the shard's body bytes // 4. With
    ``capabilities.line_format == "anthropic"`` lines are ``{"custom_id", "params"}`` instead
    (native lines copied as they are, OpenAI chat lines converted; see ``_convert``).

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
        item_check: for ``line_format == "items"``, the adapter's ``check_line``.
        item_group_field: for items, the field that splits shards (like ``body.model``).

    Raises:
        InputError: bad lines with ``on_invalid="raise"``, or an input with no lines at all.
        UsageError: a limit above the provider's.
    """
    lines_cap, bytes_cap, line_cap, checker = line_checker(
        endpoint,
        capabilities,
        max_lines=max_lines,
        max_bytes=max_bytes,
        item_check=item_check,
        item_group_field=item_group_field,
    )
    fast = None
    if capabilities.line_format == "openai" and FAST_BLOCKS:
        fast = BlockChecker(
            endpoint=endpoint,
            max_line_bytes=line_cap,
            custom_id_max_len=capabilities.custom_id_max_len,
        )
    raising = on_invalid == "raise"
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("*.a1.jsonl.tmp"):
        stale.unlink()
    digest = hashlib.blake2b(digest_size=HASH_DIGEST_SIZE)
    with Background() as background:

        def writer() -> ShardWriter:
            return ShardWriter(
                out_dir,
                run_id=run_id,
                max_lines=lines_cap,
                max_bytes=bytes_cap,
                per_model=capabilities.one_model_per_shard,
                background=background,
            )

        out = writer()
        try:
            blocks = iter_blocks(
                path,
                max_line_bytes=line_cap,
                on_chunk=lambda chunk: background.submit(digest.update, chunk, size=len(chunk)),
            )
            scan = _scan(
                blocks,
                checker,
                out,
                forced={},
                max_problems=MAX_PROBLEMS if raising else None,
                fast=fast,
            )
            background.drain()
            candidates = set() if scan.stopped else scan.ids.colliding()
            problems = scan.problems
            duplicates: dict[int, Problem] = {}
            if candidates:
                duplicates = confirm_duplicates(path, candidates, problems, line_cap)
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
    rejected = [
        Rejected(
            custom_id=problem.custom_id or f"line-{line}",
            line=line,
            message=f"{problem.message} ({problem.hint})" if problem.hint else problem.message,
        )
        for line, problem in sorted(problems.items())
    ]
    return ShardingOutcome(
        shards=shards,
        rejected=rejected,
        total_lines=scan.total_lines,
        input_hash=digest.hexdigest(),
    )


def _raise(path: Path, problems: dict[int, Problem], *, stopped: bool) -> None:
    listed = [InputProblem(n, p.message, p.hint) for n, p in sorted(problems.items())]
    if stopped:
        listed.append(
            InputProblem(0, f"stopped checking after {MAX_PROBLEMS} problems", "fix these first")
        )
    raise InputError(str(path), listed)
