"""The TELUS GT Studio (Playment) emulator: envelopes, error codes, pages, timing, limits, stats.

Rules: loopback only (127.0.0.1, port 0), mounted with ``providers=("telus",)``; the emulator
runs on a ``ManualClock`` moved by ``advance`` (no real waits, no sleeps), so the 20 POST/s
bucket and the human-work delay are exact; a plain ``aiohttp.ClientSession`` talks to it and
every client and server is closed by its ``async with``; hard timeout 30 s.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
import pytest

from batchpump._clock import ManualClock
from batchpump.emulator import EmulatorConfig, Faults, RunningEmulator, open_emulator
from batchpump.emulator._telus import TelusSettings, TelusState

pytestmark = pytest.mark.timeout(30)

KEY = "telus-test-key-0123"
PID = "8d2c8a4e-5d4f-4a8e-9a61-0f0c8f3c9a01"
FLOW = "0b6f3c0e-9a1e-4a5f-8a0b-3f7c2d1e4b5a"
CFG = EmulatorConfig(validate_seconds=10, run_seconds=100, seed=3)


class Env(msgspec.Struct):
    running: RunningEmulator
    clock: ManualClock
    http: aiohttp.ClientSession

    @property
    def api(self) -> str:
        return f"{self.running.telus_base_url}/v1/projects/{PID}"

    @property
    def state(self) -> TelusState:
        return self.running.emulator.provider_state("telus", TelusState)

    async def call(self, method: str, url: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        async with self.http.request(method, url, json=body, **kw) as resp:
            return resp.status, await resp.json(content_type=None)

    async def batch(self, name: str = "b1") -> str:
        status, body = await self.call("POST", f"{self.api}/batch", {"name": name})
        assert status == 200, body
        return str(body["data"]["batch_id"])

    async def job(self, ref: str, batch_id: str | None = None, **extra: Any) -> tuple[int, Any]:
        job: dict[str, Any] = {
            "reference_id": ref,
            "work_flow_id": FLOW,
            "data": {"image_url": f"https://img.example/{ref}.png"},
        }
        if batch_id is not None:
            job["batch_id"] = batch_id
        job.update(extra)
        return await self.call(
            "POST", f"{self.api}/jobs", {k: v for k, v in job.items() if v != ...}
        )


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    clock = ManualClock()
    async with (
        open_emulator(config=CFG, clock=clock, providers=("telus",)) as running,
        aiohttp.ClientSession(headers={"x-api-key": KEY}) as http,
    ):
        yield Env(running, clock, http)


def error_code(body: Any) -> str:
    assert body["success"] is False
    return str(body["error"]["code"])


async def test_auth_is_x_api_key_401_or_400_by_configuration(env: Env) -> None:
    async with aiohttp.ClientSession() as bare:
        async with bare.get(f"{env.api}/details") as resp:
            assert resp.status == 401
            assert error_code(await resp.json()) == "unauthorized_request"
        env.state.configure(TelusSettings(auth_status=400, api_keys=("other",)))
        async with bare.get(f"{env.api}/details", headers={"x-api-key": KEY}) as resp:
            assert resp.status == 400
            assert error_code(await resp.json()) == "auth-failure"


async def test_batches_both_spellings_unique_names_and_counted_by_name(env: Env) -> None:
    first = await env.batch("alpha")
    assert uuid.UUID(first)
    legacy = f"{env.running.telus_base_url}/v1/project/{PID}/batch"
    status, body = await env.call("POST", legacy, {"name": "beta", "label": "x", "project_id": PID})
    assert status == 200
    assert body["success"] is True
    status, body = await env.call("POST", f"{env.api}/batch", {"name": "alpha"})
    assert (status, error_code(body)) == (400, "BATCH_CREATION")
    stats = env.running.emulator.stats
    assert stats.tags == {"alpha": 1, "beta": 1}
    assert stats.batches_created == 2


@pytest.mark.parametrize(
    ("extra", "code"),
    [
        ({"reference_id": ...}, "FS_0002"),
        ({"work_flow_id": ...}, "FS_0005"),
        ({"data": {}}, "FS_0004"),
        ({"data": ...}, "FS_0004"),
        ({"data": [1, 2]}, "FS_0003"),
        ({"data": {"image_url": "https://gone.invalid/x.png"}}, "FS_0007"),
        ({"batch_id": "not-a-uuid"}, "GE_0001"),
        ({"priority_weight": 10}, "FS_00012"),
        ({"type": "SOMETIMES"}, "FS_00011"),
        ({"surprise": 1}, "GE_0001"),
    ],
)
async def test_job_create_error_codes(env: Env, extra: dict[str, Any], code: str) -> None:
    status, body = await env.job("r1", **extra)
    assert (status, error_code(body)) == (400, code)
    assert not env.running.emulator.stats.billing


async def test_duplicate_reference_is_fs_0001_and_billed_once(env: Env) -> None:
    batch_id = await env.batch()
    status, body = await env.job("r1", batch_id)
    assert status == 200
    assert body["data"]["reference_id"] == "r1"
    assert body["data"]["work_flow_id"] == FLOW
    status, body = await env.job("r1", batch_id)
    assert (status, error_code(body)) == (400, "FS_0001")
    assert env.running.emulator.stats.billing == {"r1": 1}


async def test_job_without_batch_lands_in_the_default_batch(env: Env) -> None:
    status, _ = await env.job("loose")
    assert status == 200
    _, body = await env.call("GET", f"{env.api}/details")
    default = [b for b in body["data"]["batches"] if b["is_default"]]
    assert [b["total_jobs"] for b in default] == [1]


async def test_human_work_progresses_lazily_then_the_result_is_served(env: Env) -> None:
    batch_id = await env.batch()
    _, created = await env.job("r1", batch_id)
    job_url = f"{env.api}/jobs/{created['data']['job_id']}"
    statuses = []
    for step in (0, 10, 200):
        env.clock.advance(step)
        _, body = await env.call("GET", job_url)
        statuses.append(body["data"]["status"])
        assert body["data"]["tag"] == FLOW
    assert statuses == ["pending", "in_progress", "completed"]
    result_url = body["data"]["result"]
    assert result_url
    status, _ = await env.call("GET", result_url)  # private without a signature
    assert status == 403
    attachments = f"{env.running.telus_base_url}/v1/attachments"
    async with env.http.get(attachments, params={"url": result_url}, allow_redirects=False) as r:
        assert r.status == 302
    status, content = await env.call("GET", attachments, params={"url": result_url})
    assert status == 200
    assert content["reference_id"] == "r1"
    assert content["data"] == {"image_url": "https://img.example/r1.png"}


async def test_project_details_counters_and_status(env: Env) -> None:
    batch_id = await env.batch("counted")
    for i in range(3):
        await env.job(f"r{i}", batch_id)

    async def mine() -> dict[str, Any]:
        _, body = await env.call("GET", f"{env.api}/details")
        [batch] = [b for b in body["data"]["batches"] if b["id"] == batch_id]
        return dict(batch)

    first = await mine()
    assert (first["total_jobs"], first["completed_jobs"], first["status"]) == (3, 0, "Not Started")
    assert first["name"] == "counted"
    assert "+00:00" in first["created_at"]
    env.clock.advance(11)
    assert (await mine())["status"] == "In Progress"
    env.clock.advance(200)
    done = await mine()
    assert (done["completed_jobs"], done["status"]) == (3, "Complete")


async def test_batch_jobs_pages_of_100_with_numeric_tokens(env: Env) -> None:
    env.state.configure(TelusSettings(post_rate=None))
    batch_id = await env.batch()
    for i in range(250):
        await env.job(f"r{i:03d}", batch_id)
    url = f"{env.api}/batch/{batch_id}"
    refs: list[str] = []
    token = ""
    sizes = []
    while True:
        _, body = await env.call("GET", url, params={"page_token": token})
        page = body["data"]
        sizes.append(len(page["jobs"]))
        refs += [job["reference_id"] for job in page["jobs"]]
        token = page["next_page_token"]
        if not token:
            break
        assert token.isdigit()
    assert sizes == [100, 100, 50]
    assert refs == [f"r{i:03d}" for i in range(250)]
    status, body = await env.call("GET", url, params={"page_token": "12345"})
    assert (status, error_code(body)) == (400, "invalid_request_error")


async def test_posts_beyond_20_per_second_get_429_and_are_counted(env: Env) -> None:
    batch_id = await env.batch()  # one POST token
    statuses = [(await env.job(f"r{i}", batch_id))[0] for i in range(25)]
    assert statuses.count(200) == 19
    assert statuses[19:] == [429] * 6
    _, body = await env.job("late", batch_id)
    assert error_code(body) == "rate_limit_exceeded"
    env.clock.advance(0.05)  # one token back
    assert (await env.job("next", batch_id))[0] == 200
    stats = env.running.emulator.stats
    assert stats.status_count("telus.jobs.create", 429) == 7
    assert stats.faults["rate_limited"] == 7
    assert sum(stats.billing.values()) == 20


async def test_injected_5xx_uses_the_envelope_with_api_error(env: Env) -> None:
    env.running.emulator.set_faults(Faults(error_5xx_rate=1.0))
    status, body = await env.call("GET", f"{env.api}/details")
    assert status >= 500
    assert error_code(body) == "api_error"


async def test_scripted_and_random_retryable_codes(env: Env) -> None:
    batch_id = await env.batch()
    env.state.script_errors("r1", "FS_0008", "FS_0000")
    codes = [error_code((await env.job("r1", batch_id))[1]) for _ in range(2)]
    assert codes == ["FS_0008", "FS_0000"]
    assert (await env.job("r1", batch_id))[0] == 200
    env.running.emulator.set_faults(line_retryable_rate=1.0)
    assert error_code((await env.job("r2", batch_id))[1]) == "FS_0008"


async def test_unknown_route_and_bad_project_render_the_envelope(env: Env) -> None:
    status, body = await env.call("GET", f"{env.running.telus_base_url}/v1/nothing")
    assert status == 404
    assert body["success"] is False
    bad = f"{env.running.telus_base_url}/v1/projects/not-a-uuid/details"
    status, body = await env.call("GET", bad)
    assert (status, error_code(body)) == (400, "resource_error")
