"""Fidelity fixes found by reading the providers' docs and SDKs beside the adapters (issue 15.5):
Azure's endpoint form, TELUS counters that lag the job POSTs, Together's file validation and
its multipart fallback, Anthropic's ``results_url`` joining, cancel of a batch that already
ended on every provider, and LlamaCloud timestamps without an offset.

Loopback only: the emulator on 127.0.0.1 port 0; odd server answers come from its scripted
rules. Time is a ``ManualClock`` moved through ``emulator.advance`` or a fast ``ScaledClock``.
"""

from __future__ import annotations

import calendar
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from batchpump import PollPolicy, Pump, RetryPolicy, RunOptions, ScaledClock
from batchpump._clock import ManualClock
from batchpump._errors import BadRequestError
from batchpump._models import ShardRecord
from batchpump.emulator import EmulatorConfig, open_emulator
from batchpump.emulator._openai import OpenAIState
from batchpump.emulator._telus import TelusSettings, TelusState
from batchpump.providers.anthropic import Anthropic
from batchpump.providers.anthropic._adapter import results_path
from batchpump.providers.azure import AzureOpenAI, azure_endpoint_form
from batchpump.providers.llamacloud._wire import parse_time
from batchpump.providers.openai import OpenAI
from batchpump.providers.telus import Telus
from batchpump.providers.together import Together

from ..helpers import assert_exactly_once, read_results, write_requests

pytestmark = pytest.mark.timeout(60)

KEY = "sk-fidelity-test-0123456789"
QUICK = EmulatorConfig(validate_seconds=1, run_seconds=5, finalize_seconds=1, cancel_seconds=1)
OPTIONS = RunOptions(
    max_lines=50,
    poll=PollPolicy(interval_min=0.005, interval_max=0.02),
    retry=RetryPolicy.no_wait(attempts=20),
)


def openai_shard(tmp_path: Path, n: int = 3, url: str = "/v1/chat/completions") -> ShardRecord:
    path = tmp_path / f"{uuid.uuid4().hex}.jsonl"
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    lines = [
        msgspec.json.encode({"custom_id": f"r{i}", "method": "POST", "url": url, "body": body})
        for i in range(n)
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return ShardRecord(
        run_id="run", index=0, attempt=1, path=str(path), lines=n, bytes=0, tag="bp1:run:0:1"
    )


# -- Azure: /chat/completions ------------------------------------------------------------------


def test_azure_endpoint_form() -> None:
    assert azure_endpoint_form("/v1/chat/completions") == "/chat/completions"
    assert azure_endpoint_form("/chat/completions") == "/chat/completions"
    assert azure_endpoint_form("/v1/embeddings") == "/embeddings"


@pytest.mark.parametrize("endpoint", ["/v1/chat/completions", "/chat/completions"])
async def test_azure_sends_the_form_its_docs_show(tmp_path: Path, endpoint: str) -> None:
    async with open_emulator(config=QUICK, clock=ScaledClock(1_000), providers=("azure",)) as emu:
        src = tmp_path / "in.jsonl"
        ids = write_requests(src, 120, model="deployment")
        azure = AzureOpenAI(
            api_key=KEY, azure_endpoint=emu.azure_endpoint, retry=RetryPolicy.no_wait(30)
        )
        async with Pump(azure, state_dir=tmp_path / "state") as pump:
            run = await pump.submit(src, endpoint=endpoint, options=OPTIONS)
            counts = await run.wait()
        assert counts.succeeded == 120
        assert_exactly_once(read_results(run.results_path), ids)
        state = emu.emulator.provider_state("openai", OpenAIState)
        assert {b.endpoint for b in state.batches.values()} == {"/chat/completions"}
        urls = {line.url for b in state.batches.values() for line in b.lines}
        assert urls == {"/chat/completions"}


async def test_azure_emulator_takes_both_forms_and_openai_only_its_own(tmp_path: Path) -> None:
    async with open_emulator(providers=("openai", "azure")) as emu:
        for url in ("/v1/chat/completions", "/chat/completions"):
            async with AzureOpenAI(api_key=KEY, azure_endpoint=emu.azure_endpoint) as azure:
                shard = openai_shard(tmp_path, url=url)
                shard.input_ref = await azure.prepare(shard)
                batch = await OpenAI.create(azure, shard, endpoint=url, tag="t")
                assert batch.state == "pending"
        async with OpenAI(api_key=KEY, base_url=emu.openai_base_url) as openai:
            shard = openai_shard(tmp_path, url="/chat/completions")
            shard.input_ref = await openai.prepare(shard)
            with pytest.raises(BadRequestError, match="Supported values"):
                await openai.create(shard, endpoint="/chat/completions", tag="t")


# -- TELUS: done only when the counted jobs reach the jobs posted --------------------------------

PID = "8d2c8a4e-5d4f-4a8e-9a61-0f0c8f3c9a01"
FLOW = "0b6f3c0e-9a1e-4a5f-8a0b-3f7c2d1e4b5a"


def telus_shard(tmp_path: Path, n: int) -> ShardRecord:
    path = tmp_path / f"{uuid.uuid4().hex}.jsonl"
    lines = [
        msgspec.json.encode({"custom_id": f"i{i}", "data": {"image_url": f"https://x/{i}.png"}})
        for i in range(n)
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return ShardRecord(
        run_id="run", index=0, attempt=1, path=str(path), lines=n, bytes=0, tag="bp1:run:0:1"
    )


async def test_telus_lagging_counters_do_not_end_a_new_batch(tmp_path: Path) -> None:
    config = EmulatorConfig(validate_seconds=10, run_seconds=100)
    async with open_emulator(config=config, clock=ManualClock(), providers=("telus",)) as emu:
        emu.emulator.provider_state("telus", TelusState).configure(TelusSettings(post_rate=None))
        emu.emulator.set_faults(counter_lag_seconds=30)
        async with Telus(
            api_key=KEY,
            project_id=PID,
            base_url=emu.telus_base_url,
            work_flow_id=FLOW,
            retry=RetryPolicy.no_wait(attempts=4),
            job_rate=10_000,
        ) as telus:
            shard = telus_shard(tmp_path, 4)
            shard.input_ref = await telus.prepare(shard)
            created = await telus.create(shard, endpoint="", tag=str(shard.tag))
            lagging = await telus.retrieve(created.id)
            assert lagging.state == "pending"  # the counters show 0 of 0, not "done"
            assert lagging.total == 4
            emu.emulator.advance(300)
            done = await telus.retrieve(created.id)
            assert done.state == "completed"
            listed = [b async for b in telus.list_batches() if b.id == created.id]
            assert listed[0].state == "completed"


# -- Together: validation report and the multipart fallback -------------------------------------


def together_shard(tmp_path: Path) -> ShardRecord:
    shard = openai_shard(tmp_path)
    shard.model = "m"
    return shard


async def test_together_stops_on_an_invalid_format_report(tmp_path: Path) -> None:
    async with open_emulator(providers=("together",)) as emu:
        report = {
            "valid": False,
            "error": "line 2: missing 'body'",
            "error_type": "INVALID_FORMAT",
        }
        emu.emulator.script(
            [
                {
                    "match": {"path": "/together/v1/files/*/preprocess"},
                    "respond": {
                        "status": 200,
                        "body": {
                            "id": "file-00000000-0000-4000-8000-000000000000",
                            "object": "file",
                            "filename": "x",
                            "processing_status": "INVALID_FORMAT",
                            "validation_report": report,
                        },
                    },
                }
            ]
        )
        async with Together(api_key=KEY, base_url=emu.together_base_url) as together:
            with pytest.raises(BadRequestError, match="missing 'body'") as info:
                await together.prepare(together_shard(tmp_path))
        assert info.value.code == "INVALID_FORMAT"


async def test_together_falls_back_to_multipart_on_a_200_file(tmp_path: Path) -> None:
    async with open_emulator(providers=("together",)) as emu:
        emu.emulator.script(
            [
                {
                    "match": {"route": "together.files.create"},
                    "respond": {
                        "status": 200,
                        "body": {"id": "file-empty", "object": "file", "filename": "x"},
                    },
                }
            ]
        )
        async with Together(api_key=KEY, base_url=emu.together_base_url) as together:
            shard = together_shard(tmp_path)
            shard.input_ref = await together.prepare(shard)
            batch = await together.create(shard, endpoint="/v1/chat/completions", tag="bp1:run:0:1")
        assert batch.state == "pending"
        routes = [r.route for r in emu.emulator.requests.entries()]
        assert "together.files.upload" in routes
        assert "together.storage.put" not in routes


# -- Anthropic: results_url --------------------------------------------------------------------

DEFAULT = "/v1/messages/batches/b/results"


@pytest.mark.parametrize(
    ("base", "results_url", "expected"),
    [
        ("https://api.anthropic.com", f"https://api.anthropic.com{DEFAULT}", DEFAULT),
        ("https://proxy.example/anthropic", DEFAULT, f"/..{DEFAULT}"),  # RFC 3986: from the root
        ("https://proxy.example/anthropic", "https://proxy.example/anthropic/r?x=1", "/r?x=1"),
        ("https://proxy.example/a/b", "c/d", "/c/d"),
        ("https://api.anthropic.com", "https://files.example/v1/x", DEFAULT),  # other origin
        ("https://api.anthropic.com", "http://api.anthropic.com/v1/x", DEFAULT),  # other scheme
        ("https://api.anthropic.com", None, DEFAULT),
    ],
)
def test_anthropic_results_url_joining(base: str, results_url: str | None, expected: str) -> None:
    assert results_path(base, results_url, default=DEFAULT) == expected


async def test_anthropic_reads_results_from_a_relative_url_at_the_origin() -> None:
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    seen: list[str] = []

    async def results(request: web.Request) -> web.Response:
        seen.append(request.path)
        line = {"custom_id": "a", "result": {"type": "expired"}}
        return web.Response(body=msgspec.json.encode(line) + b"\n")

    app = web.Application()
    app.router.add_get("/v1/messages/batches/{id}/results", results)
    async with TestServer(app, host="127.0.0.1", port=0) as server:
        base = str(server.make_url("/anthropic"))
        async with Anthropic(api_key=KEY, base_url=base) as anthropic:
            from batchpump._models import BatchInfo

            batch = BatchInfo(
                id="b", state="completed", raw_status="ended", created_at=0.0, output_ref=DEFAULT
            )
            got = [r.custom_id async for r in anthropic.results(batch, attempt=1)]
    assert got == ["a"]
    assert seen == [DEFAULT]


# -- cancel of a batch that already ended ------------------------------------------------------


async def test_cancel_of_an_ended_batch_returns_it_on_every_provider(tmp_path: Path) -> None:
    providers = ("openai", "azure", "together", "anthropic", "llamacloud")
    async with open_emulator(config=QUICK, clock=ManualClock(), providers=providers) as emu:
        async with OpenAI(api_key=KEY, base_url=emu.openai_base_url) as openai:
            shard = openai_shard(tmp_path)
            shard.input_ref = await openai.prepare(shard)
            made = await openai.create(shard, endpoint="/v1/chat/completions", tag="t")
            emu.emulator.advance(100)
            assert (await openai.cancel(made.id)).state == "completed"  # OpenAI says 409
            emu.emulator.script(
                [
                    {
                        "match": {"route": "azure.batches.cancel"},
                        "respond": {"status": 400, "body": {"error": {"message": "ended"}}},
                    }
                ]
            )
            async with AzureOpenAI(api_key=KEY, azure_endpoint=emu.azure_endpoint) as azure:
                assert (await azure.cancel(made.id)).state == "completed"  # Azure says 400
        async with Together(api_key=KEY, base_url=emu.together_base_url) as together:
            shard = together_shard(tmp_path)
            shard.input_ref = await together.prepare(shard)
            job = await together.create(shard, endpoint="/v1/chat/completions", tag="bp1:run:0:1")
            emu.emulator.advance(100)
            assert (await together.cancel(job.id)).state == "completed"
        async with Anthropic(api_key=KEY, base_url=emu.anthropic_base_url) as anthropic:
            body = {
                "requests": [
                    {
                        "custom_id": "a",
                        "params": {
                            "model": "m",
                            "max_tokens": 1,
                            "messages": [{"role": "user", "content": "hi"}],
                        },
                    }
                ]
            }
            resp = await anthropic._http.request(
                "POST", "/v1/messages/batches", cls="create", json=msgspec.json.encode(body)
            )
            batch_id = msgspec.json.decode(resp.body)["id"]
            emu.emulator.advance(100)
            for status in (400, 409):
                emu.emulator.script(
                    [
                        {
                            "match": {"route": "anthropic.batches.cancel"},
                            "respond": {"status": status, "body": {"type": "error"}},
                        }
                    ]
                )
                assert (await anthropic.cancel(batch_id)).state == "completed"


async def test_llamacloud_cancel_accepts_400_and_409() -> None:
    from batchpump.providers.llamacloud import LlamaCloud

    async with (
        open_emulator(providers=("llamacloud",)) as emu,
        LlamaCloud(api_key=KEY, base_url=emu.llamacloud_base_url) as llama,
    ):
        for status in (400, 409):
            emu.emulator.script(
                [
                    {
                        "match": {"route": "llamacloud.batches.cancel"},
                        "respond": {"status": status, "body": {"detail": "already ended"}},
                    },
                    {
                        "match": {"route": "llamacloud.batches.get"},
                        "respond": {
                            "status": 200,
                            "body": {
                                "id": "bat-1",
                                "source_directory_id": "dir-1",
                                "status": "COMPLETED",
                                "created_at": "2026-01-01T00:00:00",
                            },
                        },
                    },
                ]
            )
            batch = await llama.cancel("bat-1")
            assert batch.state == "completed"


# -- LlamaCloud: timestamps without an offset are UTC -------------------------------------------


@pytest.fixture
def far_timezone(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("far_timezone")
def test_llamacloud_naive_timestamps_are_utc() -> None:
    expected = calendar.timegm((2026, 1, 2, 3, 4, 5, 0, 0, 0))
    assert parse_time("2026-01-02T03:04:05") == expected
    assert parse_time("2026-01-02T03:04:05Z") == expected
    assert parse_time("2026-01-02T08:34:05+05:30") == expected
    assert parse_time("garbage") == 0.0
