"""The faults soak (``benchmarks/soak_kill9.py --faults``) as a test: late creates, lagging
lists and 429s with no header at all, against the emulator in its own process on loopback.

Exactly once, nothing billed twice, and no shard attempt with two batches: the late creates are
found within the settle window instead of being created again.
"""

from __future__ import annotations

import logging
from pathlib import Path

from benchmarks.soak_kill9 import soak_faults

logger = logging.getLogger("tests.soak")


async def test_soak_faults_quick(tmp_path: Path) -> None:
    report = await soak_faults(
        rounds=1, lines=1_000, max_lines=100, seed=11, workdir=tmp_path, say=logger.info
    )
    logger.info(report.summary())
    assert report.missing == 0, report.summary()
    assert report.duplicates == 0, report.summary()
    assert report.unexpected == 0, report.summary()
    assert not report.double_billed, report.summary()
    assert report.batches_created == report.shard_attempts == 10, report.summary()
    assert report.ok
