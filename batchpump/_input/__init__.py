"""From an input file to shard files: everything that reads, checks and writes request lines.

The data path is :func:`shard_file`: the line reader (``lines``) yields blocks of lines, the
provider's :class:`LineChecker` checks each line (``check``; ``block`` checks whole blocks of
standard request lines at once; ``items`` checks item lines), duplicate ``custom_id``\\ s are
found in bounded memory (``duplicates``), and valid lines are written to shard files off the
parsing thread (``writer``). Large inputs are checked range by range in worker processes
(``parallel``), with the same results. ``readback`` reads shard files back (ids, retry shards) and
``spooling`` turns an async byte stream into an input file. Providers supply their checker
through ``Provider.line_checker``; nothing here names a provider.
"""

from __future__ import annotations

from .block import BlockChecker, envelope_bytes
from .check import Checked, LineChecker, LineCheckerFactory, Problem, RequestLineChecker
from .items import ItemCheck, ItemLineChecker
from .lines import bad_utf8_lines, iter_blocks
from .readback import iter_shard_ids, load_ids, write_retry_shard
from .shard import HASH_DIGEST_SIZE, ShardingOutcome, hash_file, shard_file, shard_limits
from .spooling import SpoolItem, spool

__all__ = [
    "HASH_DIGEST_SIZE",
    "BlockChecker",
    "Checked",
    "ItemCheck",
    "ItemLineChecker",
    "LineChecker",
    "LineCheckerFactory",
    "Problem",
    "RequestLineChecker",
    "ShardingOutcome",
    "SpoolItem",
    "bad_utf8_lines",
    "envelope_bytes",
    "hash_file",
    "iter_blocks",
    "iter_shard_ids",
    "load_ids",
    "shard_file",
    "shard_limits",
    "spool",
    "write_retry_shard",
]
