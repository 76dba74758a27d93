"""A configuration error stops the run (resumable), it is not a line failure.

Rules: in-memory provider and journal, fast polling; every test bounded by the pytest timeout.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from batchpump import (
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    Errored,
    MemoryJournal,
    NotFoundError,
    ProviderError,
    Pump,
    Succeeded,
)

from ..fakes import FakeProvider
from ..helpers import assert_exactly_once, read_results, write_requests
from .test_engine import FAST


def _route_404() -> ProviderError:
    exc = NotFoundError("Unknown request URL: POST /files", provider="fake", status=404)
    exc.url = "POST http://127.0.0.1:9/files"
    return exc


@pytest.mark.parametrize(
    ("refusal", "setting"),
    [
        (_route_404(), "--base-url"),
        (AuthenticationError("Incorrect API key", provider="fake", status=401), "--api-key"),
        (
            BadRequestError("project 1234 does not exist", provider="fake", status=400),
            "--work-flow-id",
        ),
    ],
)
async def test_configuration_error_stops_the_run_and_it_resumes_after_the_fix(
    tmp_path: Path, refusal: ProviderError, setting: str
) -> None:
    src = tmp_path / "in.jsonl"
    ids = write_requests(src, 300)
    out = tmp_path / "in.results.jsonl"
    journal = MemoryJournal()
    wrong = FakeProvider(refuse=refusal)
    async with Pump(wrong, journal=journal, state_dir=tmp_path / "state") as pump:
        run = await pump.submit(src, options=FAST)
        with pytest.raises(ConfigurationError) as caught:
            await run.wait()
    message = str(caught.value)
    assert setting in message
    assert str(refusal) in message
    if refusal.url:
        assert "POST http://127.0.0.1:9/files" in message
    assert caught.value.status == refusal.status
    assert not wrong.calls["create"]
    assert read_results(out) == []  # no line was settled as errored
    record = await journal.get_run(run.id)
    assert record is not None
    assert record.state == "running"  # resumable

    fixed = FakeProvider()
    async with Pump(fixed, journal=journal, state_dir=tmp_path / "state") as pump:
        resumed = await pump.resume(run.id)
        counts = await resumed.wait()
    assert counts.succeeded == 300
    results = read_results(out)
    assert_exactly_once(results, ids)
    assert all(isinstance(r, Succeeded) for r in results)


async def test_a_400_about_the_file_still_settles_that_shard(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    ids = write_requests(src, 100)
    refusal = BadRequestError("line 3: invalid JSON", provider="fake", status=400)
    async with Pump(
        FakeProvider(refuse=refusal), journal=MemoryJournal(), state_dir=tmp_path / "state"
    ) as pump:
        run = await pump.submit(src, options=FAST)
        counts = await run.wait()
    assert counts.errored == 100
    results = read_results(tmp_path / "in.results.jsonl")
    assert_exactly_once(results, ids)
    assert all(isinstance(r, Errored) and r.code == "http_400" for r in results)
