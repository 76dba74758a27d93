"""The LlamaCloud emulator: directories, fixed-window uploads, v2 batches, per-file jobs, the spec.

Rules: loopback only (127.0.0.1, port 0); the emulator runs on a ``ManualClock`` moved by
``advance`` (no real waits, no sleeps); every client and server is closed by its ``async with``;
hard timeout 30 s. Spec tests validate bodies against
``shared/specs/llamacloud-openapi-unofficial-2026-08.yaml`` (through the ``shared_dir`` fixture,
skipped when absent). The official ``llama_cloud`` SDK test is skipped when it is not installed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from batchpump._clock import ManualClock
from batchpump.emulator import EmulatorConfig, RunningEmulator, open_emulator
from batchpump.emulator._llamacloud import LlamaCloudConfig, LlamaCloudState, llamacloud_state

from ..specs import assert_valid, components, validator

pytestmark = pytest.mark.timeout(30)

KEY = "llx-test-not-a-real-key"
CFG = EmulatorConfig(validate_seconds=2, run_seconds=10, cancel_seconds=3)
DIRS = "/api/v1/beta/directories"


class Env(msgspec.Struct):
    running: RunningEmulator
    clock: ManualClock
    http: aiohttp.ClientSession

    def state(self) -> LlamaCloudState:
        return llamacloud_state(self.running.emulator)

    async def call(self, method: str, path: str, **kw: Any) -> tuple[int, Any, Any]:
        async with self.http.request(method, self.running.url + path, **kw) as resp:
            raw = await resp.read()
            body = msgspec.json.decode(raw) if raw else None
            return resp.status, body, resp.headers

    async def directory(self, name: str = "d") -> str:
        status, body, _ = await self.call("POST", DIRS, json={"name": name})
        assert status == 201, body
        return str(body["id"])

    async def upload(self, directory_id: str, uid: str, data: bytes = b"hello") -> Any:
        form = aiohttp.FormData()
        form.add_field("upload_file", data, filename=f"{uid}.txt")
        form.add_field("unique_id", uid)
        return await self.call("POST", f"{DIRS}/{directory_id}/files/upload", data=form)

    async def batch_over(self, n: int, job: str = "parse_v2") -> dict[str, Any]:
        directory_id = await self.directory()
        for i in range(n):
            status, body, _ = await self.upload(directory_id, f"u{i}")
            assert status == 201, body
        config = {"job": {"type": job, "configuration_id": "cfg-PARSE_AGENTIC"}}
        status, body, _ = await self.call(
            "POST", "/api/v2/batches", json={"source_directory_id": directory_id, "config": config}
        )
        assert status == 201, body
        return dict(body)


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    clock = ManualClock()
    async with (
        open_emulator(config=CFG, clock=clock, providers=("openai", "llamacloud")) as running,
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {KEY}"}) as http,
    ):
        yield Env(running, clock, http)


async def test_auth_is_a_bearer_key(env: Env) -> None:
    async with aiohttp.ClientSession() as anonymous, anonymous.get(env.running.url + DIRS) as resp:
        assert resp.status == 401
        assert (await resp.json()) == {"detail": "Invalid authentication credentials"}


async def test_validation_errors_are_fastapi_422(env: Env) -> None:
    status, body, _ = await env.call("POST", DIRS, json={"type": "ephemeral"})
    assert status == 422
    assert body["detail"][0]["loc"] == ["body", "name"]
    status, body, _ = await env.call("POST", "/api/v2/batches", json={"config": {}})
    assert status == 422
    assert body["detail"][0]["type"] == "missing"
    status, body, _ = await env.call("GET", "/api/v2/batches/bat-nope")
    assert (status, body) == (404, {"detail": "Batch bat-nope not found"})


async def test_uploads_pass_a_fixed_window(env: Env) -> None:
    env.state().configure(LlamaCloudConfig(upload_limit=3, upload_window_seconds=5))
    directory_id = await env.directory()
    statuses = [(await env.upload(directory_id, f"u{i}"))[0] for i in range(4)]
    assert statuses == [201, 201, 201, 429]
    _, body, headers = await env.upload(directory_id, "u3")
    assert "3 uploads per 5 seconds" in body["detail"]
    assert 1 <= int(headers["retry-after"]) <= 5
    env.clock.advance(5)  # the window restarts: the full allowance again
    assert [(await env.upload(directory_id, f"v{i}"))[0] for i in range(3)] == [201] * 3


async def test_same_unique_id_replaces_the_file(env: Env) -> None:
    directory_id = await env.directory()
    first = (await env.upload(directory_id, "same"))[1]
    second = (await env.upload(directory_id, "same", b"new"))[1]
    assert first["id"] == second["id"]
    _, page, _ = await env.call("GET", f"{DIRS}/{directory_id}/files")
    assert [f["unique_id"] for f in page["items"]] == ["same"]


async def test_lifecycle_with_throttled_phases(env: Env) -> None:
    env.state().configure(LlamaCloudConfig(throttled_seconds=4, midrun_throttled_seconds=2))
    batch = await env.batch_over(4)
    assert batch["status"] == "PENDING"
    path = f"/api/v2/batches/{batch['id']}"
    seen: list[str] = []
    for _ in range(20):
        _, body, _ = await env.call("GET", path, params={"expand": "results"})
        if not seen or seen[-1] != body["status"]:
            seen.append(body["status"])
        if "RUNNING" not in seen:  # no mappings before the batch first runs
            assert body["results"] is None
        env.clock.advance(1)
    assert seen == ["PENDING", "THROTTLED", "RUNNING", "THROTTLED", "RUNNING", "COMPLETED"]
    assert len(body["results"]) == 4
    assert all(r["job_reference"]["id"].startswith("pjb-") for r in body["results"])
    _, plain, _ = await env.call("GET", path)
    assert plain["results"] is None


async def test_jobs_fail_inside_a_completed_batch(env: Env) -> None:
    env.state().configure(LlamaCloudConfig(job_failure_rate=0.5, mapping_error_rate=0.2))
    batch = await env.batch_over(40)
    env.clock.advance(100)
    _, body, _ = await env.call("GET", f"/api/v2/batches/{batch['id']}?expand=results")
    assert body["status"] == "COMPLETED"
    errors = [r for r in body["results"] if r["error_message"]]
    ids = [r["job_reference"]["id"] for r in body["results"] if r["job_reference"]]
    assert errors
    assert len(errors) + len(ids) == 40
    query = [("job_ids", i) for i in ids] + [("page_size", "100")]
    _, jobs, _ = await env.call("GET", "/api/v2/parse", params=query)
    statuses = {j["status"] for j in jobs["items"]}
    assert statuses == {"COMPLETED", "FAILED"}
    failed = next(j for j in jobs["items"] if j["status"] == "FAILED")
    assert failed["error_message"]
    done = next(j for j in jobs["items"] if j["status"] == "COMPLETED")
    _, result, _ = await env.call("GET", f"/api/v2/parse/{done['id']}?expand=markdown&expand=text")
    assert result["job"]["status"] == "COMPLETED"
    assert "hello" in result["markdown"]["pages"][0]["markdown"]
    assert "text" in result
    assert "items" not in result
    billed = env.running.emulator.stats.billing
    assert sum(billed.values()) == len(ids) - sum(j["status"] == "FAILED" for j in jobs["items"])


async def test_extract_jobs_are_flat(env: Env) -> None:
    batch = await env.batch_over(2, job="extract_v2")
    env.clock.advance(100)
    _, body, _ = await env.call("GET", f"/api/v2/batches/{batch['id']}?expand=results")
    job_id = body["results"][0]["job_reference"]["id"]
    assert job_id.startswith("ext-")
    _, job, _ = await env.call("GET", f"/api/v2/extract/{job_id}")
    assert job["status"] == "COMPLETED"
    assert job["extract_result"]["first_line"] == "hello"


async def test_cancel_then_terminal_cannot_be_cancelled(env: Env) -> None:
    batch = await env.batch_over(10)
    env.clock.advance(5)  # running, a few files mapped
    status, body, _ = await env.call("POST", f"/api/v2/batches/{batch['id']}/cancel")
    assert (status, body["status"]) == (200, "RUNNING")
    env.clock.advance(3)
    _, body, _ = await env.call("GET", f"/api/v2/batches/{batch['id']}?expand=results")
    assert body["status"] == "CANCELLED"
    assert 0 < len(body["results"]) < 10
    status, body, _ = await env.call("POST", f"/api/v2/batches/{batch['id']}/cancel")
    assert status == 400
    assert "CANCELLED" in body["detail"]


async def test_listing_pages_with_page_token(env: Env) -> None:
    made = [(await env.batch_over(1))["id"] for _ in range(5)]
    seen: list[str] = []
    token = None
    while True:
        params = {"page_size": "2", **({"page_token": token} if token else {})}
        _, page, _ = await env.call("GET", "/api/v2/batches", params=params)
        seen += [b["id"] for b in page["items"]]
        token = page.get("next_page_token")
        if not token:
            break
    assert seen == made[::-1]
    stats = env.running.emulator.stats
    assert stats.batches_created == 5
    assert stats.tags == {"llamacloud:d": 5}


# -- the spec -----------------------------------------------------------------------------------


def check(shared_dir: Path, schema: str, body: Any) -> None:
    spec = shared_dir / "specs" / "llamacloud-openapi-unofficial-2026-08.yaml"
    assert_valid(validator(components(spec, "null-type"), schema), schema, body)


async def test_bodies_match_the_spec(env: Env, shared_dir: Path) -> None:
    env.state().configure(LlamaCloudConfig(job_failure_rate=0.3))
    status, directory, _ = await env.call(
        "POST", DIRS, json={"name": "e", "type": "ephemeral", "expires_at": "2030-01-01T00:00:00Z"}
    )
    check(shared_dir, "DirectoryResponse", directory)
    _, file, _ = await env.upload(directory["id"], "u0")
    check(shared_dir, "DirectoryFileResponse", file)
    _, files, _ = await env.call("GET", f"{DIRS}/{directory['id']}/files")
    check(shared_dir, "DirectoryFileQueryResponse", files)
    batch = await env.batch_over(6)
    check(shared_dir, "BatchResponse", batch)
    env.clock.advance(100)
    _, full, _ = await env.call("GET", f"/api/v2/batches/{batch['id']}?expand=results")
    check(shared_dir, "BatchResponse", full)
    _, page, _ = await env.call("GET", "/api/v2/batches")
    check(shared_dir, "BatchQueryResponse", page)
    ids = [("job_ids", r["job_reference"]["id"]) for r in full["results"]]
    _, jobs, _ = await env.call("GET", "/api/v2/parse", params=ids)
    check(shared_dir, "ParseJobQueryResponse", jobs)
    for job in jobs["items"]:
        expand = [("expand", e) for e in ("markdown", "text", "items")]
        _, result, _ = await env.call("GET", f"/api/v2/parse/{job['id']}", params=expand)
        check(shared_dir, "ParseResultResponse", result)
    extract = await env.batch_over(1, job="extract_v2")
    env.clock.advance(100)
    _, full, _ = await env.call("GET", f"/api/v2/batches/{extract['id']}?expand=results")
    job_id = full["results"][0]["job_reference"]["id"]
    _, job, _ = await env.call("GET", f"/api/v2/extract/{job_id}")
    check(shared_dir, "ExtractV2Job", job)
    status, invalid, _ = await env.call("POST", "/api/v2/batches", json={})
    assert status == 422
    check(shared_dir, "HTTPValidationError", invalid)


# -- the official SDK -----------------------------------------------------------------------------


async def test_official_sdk_runs_a_batch(env: Env, tmp_path: Path) -> None:
    llama_cloud = pytest.importorskip("llama_cloud")
    doc = tmp_path / "doc.txt"
    doc.write_bytes(b"quarterly report")
    async with llama_cloud.AsyncLlamaCloud(
        api_key=KEY, base_url=env.running.llamacloud_base_url, max_retries=0
    ) as client:
        # The SDK hides expires_at (a Stainless change), so ephemeral ones must not need it.
        directory = await client.beta.directories.create(name="sdk", type="ephemeral")
        uploaded = await client.beta.directories.files.upload(
            directory.id, upload_file=doc, unique_id="doc-1"
        )
        assert uploaded.unique_id == "doc-1"
        batch = await client.batches.create(
            source_directory_id=directory.id,
            config={"job": {"type": "parse_v2", "configuration_id": "cfg-PARSE_AGENTIC"}},
        )
        assert batch.status == "PENDING"
        env.clock.advance(100)
        done = await client.batches.get(batch.id, expand=["results"])
        assert done.status == "COMPLETED"
        assert done.results
        listed = [b.id async for b in client.batches.list()]
        assert batch.id in listed
        job_id = done.results[0].job_reference.id
        parsed = await client.parsing.get(job_id, expand=["markdown"])
        assert parsed.job.status == "COMPLETED"
        assert parsed.markdown is not None
