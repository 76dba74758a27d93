"""The emulator's Together surface, over raw HTTP, against Together's OpenAPI spec and SDK.

Rules: loopback only (127.0.0.1, port 0), mounted with ``providers=("together",)``; a
``ManualClock`` moved by ``advance`` (no real waits); every session and server closed by its
``async with``; hard timeout 30 s. Spec checks load ``shared/specs/together-openapi.yaml`` once
(via the ``shared_dir`` fixture, skipped without it; ``nullable: true`` becomes a ``null``
union, the spec being 3.1 with a few 3.0 leftovers). The official ``together`` SDK (3.x) test is
skipped when the package is absent; it needs no network at import.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from multidict import CIMultiDict

from batchpump._clock import ManualClock
from batchpump.emulator import EmulatorConfig, RateLimit, RunningEmulator, open_emulator

from ..specs import assert_valid, components, validator

pytestmark = pytest.mark.timeout(30)

AUTH = {"Authorization": "Bearer tg-emulator-test-key"}
CFG = EmulatorConfig(validate_seconds=10, run_seconds=100, finalize_seconds=10)


@pytest.fixture
def check(shared_dir: Path) -> Any:
    """``check(schema, body)``: ``schema`` a component name or an inline schema."""
    found = components(shared_dir / "specs" / "together-openapi.yaml", "nullable")

    def run(schema: str | dict[str, Any], body: Any) -> None:
        assert_valid(validator(found, schema), schema, body)

    return run


@pytest.fixture
async def env() -> AsyncIterator[tuple[aiohttp.ClientSession, RunningEmulator]]:
    async with (
        open_emulator(config=CFG, clock=ManualClock(), providers=("together",)) as running,
        aiohttp.ClientSession(headers=AUTH) as http,
    ):
        yield http, running


def advance(emu: RunningEmulator, seconds: float) -> None:
    clock = emu.emulator.clock
    assert isinstance(clock, ManualClock)
    clock.advance(seconds)


async def call(
    http: aiohttp.ClientSession, method: str, url: str, **kw: Any
) -> tuple[int, CIMultiDict[str], Any]:
    async with http.request(method, url, **kw) as resp:
        raw = await resp.read()
        body = msgspec.json.decode(raw) if resp.content_type == "application/json" else raw
        return resp.status, CIMultiDict(resp.headers), body


def jsonl(n: int, prefix: str = "r") -> bytes:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    lines = [msgspec.json.encode({"custom_id": f"{prefix}{i}", "body": body}) for i in range(n)]
    return b"\n".join(lines) + b"\n"


async def upload(http: aiohttp.ClientSession, base: str, data: bytes) -> dict[str, Any]:
    form = aiohttp.FormData()
    form.add_field("purpose", "batch-api")
    form.add_field("file_name", "in.jsonl")
    form.add_field("file", io.BytesIO(data), filename="in.jsonl")
    status, _, body = await call(http, "POST", f"{base}/files/upload", data=form)
    assert status == 200
    return dict(body)


async def test_signed_url_upload_flow(
    env: tuple[aiohttp.ClientSession, RunningEmulator], check: Any
) -> None:
    http, emu = env
    base = emu.together_base_url
    form = {"purpose": "batch-api", "file_name": "in.jsonl", "file_type": "jsonl"}
    status, headers, _ = await call(http, "POST", f"{base}/files", data=form, allow_redirects=False)
    assert status == 302
    file_id, location = headers["X-Together-File-Id"], headers["Location"]
    assert file_id.startswith("file-")
    assert location.startswith(emu.url)
    forged = location.replace("sig=", "sig=0")
    async with aiohttp.ClientSession() as storage:  # presigned: no Together auth
        assert (await call(storage, "PUT", forged, data=jsonl(3)))[0] == 403
        assert (await call(storage, "PUT", location, data=jsonl(3)))[0] == 200
    status, _, file = await call(http, "POST", f"{base}/files/{file_id}/preprocess")
    assert status == 200
    assert file["Processed"]
    assert file["bytes"] == len(jsonl(3))
    check("FileResponse", file)
    status, _, listing = await call(http, "GET", f"{base}/files")
    check("FileList", listing)
    assert [f["id"] for f in listing["data"]] == [file_id]


async def test_batch_lifecycle_bodies_match_the_spec(
    env: tuple[aiohttp.ClientSession, RunningEmulator], check: Any
) -> None:
    http, emu = env
    base = emu.together_base_url
    file = await upload(http, base, jsonl(4))
    check("FileResponse", file)
    create = {"endpoint": "/v1/chat/completions", "input_file_id": file["id"]}
    check("CreateBatchRequest", create)
    status, _, created = await call(http, "POST", f"{base}/batches", json=create)
    assert status == 201
    assert created["job"]["status"] == "VALIDATING"
    assert created["warning"]
    check("BatchJobWithWarning", created)
    job_id = created["job"]["id"]
    seen = []
    for step in (0, 10, 60, 45, 10):
        advance(emu, step)
        _, _, job = await call(http, "GET", f"{base}/batches/{job_id}")
        check("BatchJob", job)
        seen.append((job["status"], job["progress"]))
    assert seen == [
        ("VALIDATING", 0.0),
        ("IN_PROGRESS", 0.0),
        ("IN_PROGRESS", 50.0),
        ("IN_PROGRESS", 100.0),
        ("COMPLETED", 100.0),
    ]
    _, _, listing = await call(http, "GET", f"{base}/batches")
    check({"type": "array", "items": {"$ref": "#/components/schemas/BatchJob"}}, listing)
    assert isinstance(listing, list)
    assert listing[0]["id"] == job_id
    _, _, output = await call(http, "GET", f"{base}/files/{job['output_file_id']}/content")
    lines = msgspec.json.Decoder(dict[str, Any]).decode_lines(output)
    assert sorted(line["custom_id"] for line in lines) == [f"r{i}" for i in range(4)]
    assert {line["response"]["status_code"] for line in lines} == {200}
    stats = emu.emulator.stats
    assert stats.tags[file["id"]] == 1
    assert set(stats.billing.values()) == {1}


async def test_error_bodies_have_both_shapes(
    env: tuple[aiohttp.ClientSession, RunningEmulator], check: Any
) -> None:
    http, emu = env
    base = emu.together_base_url
    status, _, body = await call(http, "GET", f"{base}/batches/nope")
    assert status == 404
    assert isinstance(body["error"], str)
    check("BatchErrorResponse", body)
    status, _, body = await call(http, "GET", f"{base}/files/nope")
    assert status == 404
    assert body["error"]["message"] == "File nope not found"
    check("ErrorData", body)
    bad = {"endpoint": "/v1/chat/completions", "input_file_id": "f", "metadata": {"a": "b"}}
    status, _, body = await call(http, "POST", f"{base}/batches", json=bad)
    assert status == 400
    assert "metadata" in body["error"]
    async with aiohttp.ClientSession() as anonymous:
        status, _, body = await call(anonymous, "GET", f"{base}/batches")
        assert status == 401
        assert isinstance(body["error"], str)
        status, _, body = await call(anonymous, "GET", f"{base}/files")
        assert status == 401
        assert body["error"]["code"] == "invalid_api_key"


async def test_429_carries_together_headers_and_retry_after(
    env: tuple[aiohttp.ClientSession, RunningEmulator], check: Any
) -> None:
    http, emu = env
    emu.emulator.set_faults(rate_limits={"poll": RateLimit(requests=1, per_seconds=60)})
    assert (await call(http, "GET", f"{emu.together_base_url}/batches"))[0] == 200
    status, headers, body = await call(http, "GET", f"{emu.together_base_url}/batches")
    assert status == 429
    check("BatchErrorResponse", body)
    assert headers["retry-after"] == "60"
    assert headers["x-ratelimit-reset"] == "60"
    assert headers["x-ratelimit-limit"] == "1"
    assert headers["x-ratelimit-remaining"] == "0"
    assert not any(name.endswith("-requests") for name in headers)


async def test_cancel_expiry_and_partial_failure(
    env: tuple[aiohttp.ClientSession, RunningEmulator],
) -> None:
    http, emu = env
    base = emu.together_base_url
    emu.emulator.set_faults(expire=True, expire_done_fraction=0.5, line_fatal_rate=0.5)
    file = await upload(http, base, jsonl(20))
    create = {"endpoint": "/v1/chat/completions", "input_file_id": file["id"], "model_id": "m"}
    _, _, expiring = await call(http, "POST", f"{base}/batches", json=create)
    assert "warning" not in expiring
    _, _, cancelled = await call(http, "POST", f"{base}/batches", json=create)
    advance(emu, 10)
    _, _, job = await call(http, "POST", f"{base}/batches/{cancelled['job']['id']}/cancel")
    assert job["status"] == "CANCELLED"
    status, _, again = await call(http, "POST", f"{base}/batches/{job['id']}/cancel")
    assert status == 400
    assert "CANCELLED" in again["error"]
    advance(emu, 86_400)
    _, _, expired = await call(http, "GET", f"{base}/batches/{expiring['job']['id']}")
    assert expired["status"] == "EXPIRED"
    assert expired["error_file_id"]
    _, _, errors = await call(http, "GET", f"{base}/files/{expired['error_file_id']}/content")
    lines = msgspec.json.Decoder(dict[str, Any]).decode_lines(errors)
    assert lines
    assert {line["error"]["code"] for line in lines} == {"invalid_request"}
    output_lines = 0
    if "output_file_id" in expired:
        _, _, out = await call(http, "GET", f"{base}/files/{expired['output_file_id']}/content")
        output_lines = len(out.splitlines())
    assert len(lines) + output_lines == 10, "half the lines ran before the window closed"


async def test_official_sdk_round_trip(
    env: tuple[aiohttp.ClientSession, RunningEmulator], tmp_path: Path
) -> None:
    together = pytest.importorskip("together")
    _, emu = env
    path = tmp_path / "batch.jsonl"
    path.write_bytes(jsonl(3))
    # together 3.x joins "/v1/..." paths to a host-level base URL.
    client = together.AsyncTogether(
        api_key="tg-sdk-key", base_url=f"{emu.url}/together", max_retries=0
    )
    try:
        file = await client.files.upload(file=path, purpose="batch-api")
        created = await client.batches.create(
            input_file_id=file.id, endpoint="/v1/chat/completions"
        )
        assert created.job.status == "VALIDATING"
        assert created.warning
        advance(emu, 200)
        job = await client.batches.retrieve(created.job.id)
        listed = await client.batches.list()
    finally:
        await client.close()
    assert job.status == "COMPLETED"
    assert job.output_file_id
    assert [b.id for b in listed] == [job.id]
    stats = emu.emulator.stats
    for route in ("files.create", "storage.put", "files.preprocess"):
        assert stats.route_count(f"together.{route}") == 1, route
