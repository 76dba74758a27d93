"""The crash soak (``benchmarks/soak_kill9.py``) as tests: SIGKILL the CLI, rerun, exactly once.

Rules: the emulator runs in its own process on 127.0.0.1 port 0 (its state outlives the killed
clients) on a scaled clock; the CLI runs as a subprocess with a fake key; kills come after
seeded random delays or on observed states (the seed is logged and in the failure message);
every child is waited for. The quick form (3 kills, small input) is in the default suite; the
full 20-kill form is marked ``slow``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from benchmarks.soak_kill9 import SoakReport, soak

logger = logging.getLogger("tests.soak")


def check(report: SoakReport, kills: int) -> None:
    assert len(report.kills) == kills
    assert report.resumes >= kills
    assert report.duplicates == 0, report.summary()
    assert report.missing == 0, report.summary()
    assert report.unexpected == 0, report.summary()
    assert not report.duplicate_tags, report.summary()
    assert not report.double_billed, report.summary()
    assert not report.journal_problems, report.journal_problems
    assert report.batches_created == report.shard_attempts_sent, report.summary()
    assert report.sigint_clean_exit == 130, report.summary()
    assert report.sigint_double_exit is not None
    assert report.ok


async def test_soak_quick(tmp_path: Path) -> None:
    report = await soak(
        kills=3, lines=400, max_lines=100, seed=7, workdir=tmp_path, max_delay=1.5, say=logger.info
    )
    logger.info(report.summary())
    check(report, 3)


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_soak_full(tmp_path: Path) -> None:
    report = await soak(kills=20, workdir=tmp_path, say=logger.info)
    logger.info(report.summary())
    check(report, 20)
