"""Azure OpenAI (``AzureOpenAI``) and OpenAI-compatible base URLs (``OpenAI(base_url=...)``).

Rules: loopback only (127.0.0.1, port 0): the emulator mounted with ``providers=("azure",)``,
the OpenAI emulator re-mounted under another path prefix as a stand-in "compatible service",
and a tiny recording ``aiohttp`` server for exact headers and query strings. Pump runs use a
scaled emulator clock and poll every few milliseconds; nothing sleeps in the tests themselves.
Hard timeout per test; every server and provider is closed by its ``async with``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from batchpump import (
    AuthenticationError,
    NotFoundError,
    PollPolicy,
    Pump,
    RetryPolicy,
    RunOptions,
    ScaledClock,
    UsageError,
)
from batchpump.emulator import Emulator, EmulatorConfig, create_app, open_emulator
from batchpump.providers.azure import AzureOpenAI
from batchpump.providers.openai import OpenAI

from ..helpers import assert_exactly_once, read_results, write_requests

pytestmark = pytest.mark.timeout(30)

KEY = "azure-test-KEY-0123456789abcdef"
DEPLOYMENT = "gpt-4o-mini-batch"  # Azure lines name a deployment, not a model
QUICK = EmulatorConfig(validate_seconds=1, run_seconds=5, finalize_seconds=1, cancel_seconds=1)
OPTIONS = RunOptions(
    max_lines=200,
    poll=PollPolicy(interval_min=0.005, interval_max=0.02),
    retry=RetryPolicy.no_wait(attempts=20),
)


class Recorder:
    """Records each request's headers and query; answers 404, or 401 echoing the key."""

    def __init__(self) -> None:
        self.seen: list[web.Request] = []
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append(request)
        if request.path.endswith("/echo"):
            body = {"error": {"message": f"bad key {KEY}", "code": "401"}}
            return web.json_response(body, status=401)
        body = {"error": {"message": "Batch not found", "code": "404", "type": "not_found"}}
        return web.json_response(body, status=404)


@pytest.fixture
async def recorder() -> AsyncIterator[tuple[Recorder, str]]:
    rec = Recorder()
    async with TestServer(rec.app, host="127.0.0.1", port=0) as server:
        yield rec, str(server.make_url("")).rstrip("/")


async def test_api_key_header_and_api_version_on_every_call(
    recorder: tuple[Recorder, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    rec, url = recorder
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", KEY)
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", url)
    monkeypatch.setenv("OPENAI_API_VERSION", "2025-03-01-preview")
    async with AzureOpenAI(retry=RetryPolicy.no_wait(attempts=1)) as azure:
        assert azure.base_url == f"{url}/openai"
        with pytest.raises(NotFoundError):
            await azure.retrieve("batch_1")
        with pytest.raises(NotFoundError):
            await anext(azure.list_batches())
    first, second = rec.seen
    assert first.path == "/openai/batches/batch_1"
    assert second.path == "/openai/batches"
    for request in rec.seen:
        assert request.query["api-version"] == "2025-03-01-preview"
        assert request.headers["api-key"] == KEY
        assert "Authorization" not in request.headers
    assert second.query["limit"] == "100", "list params merge with api-version"


async def test_key_never_in_reprs_or_errors(recorder: tuple[Recorder, str]) -> None:
    _, url = recorder
    azure = AzureOpenAI(api_key=KEY, azure_endpoint=url, retry=RetryPolicy.no_wait(attempts=1))
    async with azure:
        assert KEY not in repr(azure)
        assert "2024-10-21" in repr(azure)
        with pytest.raises(AuthenticationError) as info:
            await azure.retrieve("echo")  # the server echoes the key in its error body
    exc = info.value
    assert "[REDACTED]" in str(exc)
    for text in (str(exc), repr(exc), exc.body):
        assert KEY not in text


def test_needs_key_and_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AZURE_OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT", "OPENAI_API_VERSION"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(UsageError, match="AZURE_OPENAI_API_KEY"):
        AzureOpenAI(azure_endpoint="https://r.openai.azure.com")
    with pytest.raises(UsageError, match="AZURE_OPENAI_ENDPOINT"):
        AzureOpenAI(api_key=KEY)
    azure = AzureOpenAI(api_key=KEY, azure_endpoint="https://r.openai.azure.com/")
    assert (azure.name, azure.api_version) == ("azure_openai", "2024-10-21")
    assert azure.capabilities.max_lines == 100_000
    assert azure.capabilities.metadata_tag


async def test_emulator_refuses_calls_without_api_version_or_key() -> None:
    async with open_emulator(providers=("azure",)) as emu:
        bare = OpenAI(api_key=KEY, base_url=f"{emu.azure_endpoint}/openai")  # no api-version
        async with bare:
            with pytest.raises(NotFoundError, match="Resource not found"):
                await bare.retrieve("batch_x")
        assert emu.emulator.stats.status_count("azure.batches.retrieve", 404) == 1


async def test_pump_run_against_azure(tmp_path: Path) -> None:
    async with open_emulator(config=QUICK, clock=ScaledClock(1_000), providers=("azure",)) as emu:
        src = tmp_path / "in.jsonl"
        ids = write_requests(src, 1_000, model=DEPLOYMENT)
        azure = AzureOpenAI(
            api_key=KEY, azure_endpoint=emu.azure_endpoint, retry=RetryPolicy.no_wait(30)
        )
        async with Pump(azure, state_dir=tmp_path / "state") as pump:
            run = await pump.submit(src, options=OPTIONS)
            counts = await run.wait()
        assert_exactly_once(read_results(run.results_path), ids)
        assert counts.succeeded == 1_000
        stats = emu.emulator.stats
        assert len(stats.tags) == 5
        assert set(stats.tags.values()) == {1}
        assert set(stats.billing.values()) == {1}
        assert {route for route, _ in stats.requests} <= {
            "azure.files.create",
            "azure.batches.create",
            "azure.batches.list",
            "azure.files.content",
        }
        assert all(status < 400 for _, status in stats.requests)


async def test_openai_compatible_base_url_under_another_prefix(tmp_path: Path) -> None:
    """Any OpenAI-compatible service: ``OpenAI(base_url=...)``, here ``/compat/v1``."""
    emulator = Emulator(config=QUICK, clock=ScaledClock(1_000))
    root = web.Application()
    root.add_subapp("/compat", create_app(emulator))
    async with TestServer(root, host="127.0.0.1", port=0) as server:
        base = str(server.make_url("/compat/v1"))
        src = tmp_path / "in.jsonl"
        ids = write_requests(src, 400)
        compat = OpenAI(api_key=KEY, base_url=base, retry=RetryPolicy.no_wait(30))
        async with Pump(compat, state_dir=tmp_path / "state") as pump:
            run = await pump.submit(src, options=OPTIONS)
            await run.wait()
    assert_exactly_once(read_results(run.results_path), ids)
    assert set(emulator.stats.tags.values()) == {1}
    assert emulator.stats.batches_created == 2
