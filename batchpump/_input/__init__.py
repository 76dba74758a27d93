"""PKGDOC"""

from __future__ import annotations

from .block import BlockChecker, envelope_bytes
from .check import Checked, LineChecker, Problem
from .lines import bad_utf8_lines, iter_blocks
from .readback import iter_shard_ids, load_ids, write_retry_shard
from .shard import HASH_DIGEST_SIZE, ShardingOutcome, hash_file, line_checker, shard_file
from .spooling import spool

__all__ = [
    "HASH_DIGEST_SIZE",
    "BlockChecker",
    "Checked",
    "LineChecker",
    "Problem",
    "ShardingOutcome",
    "bad_utf8_lines",
    "envelope_bytes",
    "hash_file",
    "iter_blocks",
    "iter_shard_ids",
    "line_checker",
    "load_ids",
    "shard_file",
    "spool",
    "write_retry_shard",
]
