"""Small runs see their configured fault rates: stratified fault draws (``FaultStream``).

With independent coin flips the default seed drew no value below 0.1 in its first 35 draws, so
a user testing a 10% fault on a small run could see none. Now a kind at rate ``r`` fires once
per window of ``1/r`` draws: any ``n`` draws hold ``n * r`` events, give or take one.
"""

from __future__ import annotations

import math
import random

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchpump._clock import ManualClock
from batchpump.emulator import EmulatorConfig, Faults, open_emulator
from batchpump.emulator._faults import FaultStream, FaultStreams, draw_line_codes, pick_fault

pytestmark = pytest.mark.timeout(60)


def test_the_old_coin_flips_missed_a_10_percent_fault() -> None:
    """Why: the default seed's first 35 uniform draws are all at or above 0.1."""
    rng = random.Random(0)
    assert min(rng.random() for _ in range(35)) >= 0.1


@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(min_value=0.001, max_value=1.0),
    seed=st.integers(min_value=0, max_value=2**32),
    n=st.integers(min_value=1, max_value=2_000),
)
def test_any_prefix_holds_its_share_give_or_take_one(rate: float, seed: int, n: int) -> None:
    stream = FaultStream(rate, random.Random(seed))
    fired = sum(stream.fire() for _ in range(n))
    assert math.floor(n * rate) - 1 <= fired <= math.ceil(n * rate) + 1


def test_events_still_move_with_the_seed() -> None:
    def places(seed: int) -> list[int]:
        stream = FaultStream(0.1, random.Random(seed))
        return [i for i in range(100) if stream.fire()]

    assert places(1) != places(2)
    assert all(len(places(s)) == 10 for s in range(20))


def test_a_kind_that_loses_to_a_higher_one_is_served_next() -> None:
    streams = FaultStreams(0)
    faults = Faults(storm_429_rate=0.5, error_5xx_rate=0.5)
    picked = [pick_fault(faults, streams) for _ in range(100)]
    assert picked.count("storm429") == pytest.approx(50, abs=2)
    assert picked.count("5xx") == pytest.approx(50, abs=2)


def test_line_codes_of_a_small_batch() -> None:
    config = EmulatorConfig(faults=Faults(line_fatal_rate=0.1, line_retryable_rate=0.2))
    codes = draw_line_codes(20, config, FaultStreams(0))
    assert sum(code == 3 for code in codes) == pytest.approx(2, abs=1)
    assert sum(code in (1, 2) for code in codes) == pytest.approx(4, abs=1)


async def test_twenty_requests_at_ten_percent_see_two_errors() -> None:
    config = EmulatorConfig(faults=Faults(error_5xx_rate=0.1))  # the default seed
    async with (
        open_emulator(config=config, clock=ManualClock()) as running,
        aiohttp.ClientSession(headers={"Authorization": "Bearer sk-test"}) as http,
    ):
        statuses = []
        for _ in range(20):
            async with http.get(f"{running.openai_base_url}/batches") as resp:
                statuses.append(resp.status)
    assert sum(s >= 500 for s in statuses) == 2
    assert any(s >= 500 for s in statuses[:10])
