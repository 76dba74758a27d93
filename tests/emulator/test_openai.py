"""The OpenAI emulator over HTTP, driven by a plain aiohttp client.

Rules: loopback only (127.0.0.1, port 0); time is a ``ManualClock`` moved by ``advance`` (no
real waits, no sleeps); every session and server is closed by its ``async with``; the module's
hard timeout is 30 s.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgspec
import pytest

from batchpump._clock import ManualClock
from batchpump.emulator import EmulatorConfig, Faults, RateLimit, RunningEmulator, open_emulator

pytestmark = pytest.mark.timeout(30)

AUTH = {"Authorization": "Bearer sk-test-not-a-real-key"}
CFG = EmulatorConfig(validate_seconds=10, run_seconds=100, finalize_seconds=10, cancel_seconds=5)


@dataclass
class Env:
    running: RunningEmulator
    clock: ManualClock
    http: aiohttp.ClientSession

    @property
    def url(self) -> str:
        return self.running.openai_base_url

    async def call(self, method: str, path: str, **kw: Any) -> tuple[int, Any, Any]:
        async with self.http.request(method, self.url + path, **kw) as resp:
            raw = await resp.read()
            body = msgspec.json.decode(raw) if resp.content_type == "application/json" else raw
            return resp.status, body, resp.headers

    async def upload(self, data: bytes, *, name: str = "in.jsonl", purpose: str = "batch") -> str:
        form = aiohttp.FormData()
        form.add_field("purpose", purpose)
        form.add_field("file", io.BytesIO(data), filename=name, content_type="application/jsonl")
        status, body, _ = await self.call("POST", "/files", data=form)
        assert status == 200, body
        return str(body["id"])

    async def create(self, file_id: str, **extra: Any) -> tuple[int, Any]:
        payload = {"input_file_id": file_id, "endpoint": "/v1/chat/completions"}
        payload["completion_window"] = "24h"
        payload.update(extra)
        status, body, _ = await self.call("POST", "/batches", json=payload)
        return status, body

    async def batch(self, batch_id: str) -> Any:
        status, body, _ = await self.call("GET", f"/batches/{batch_id}")
        assert status == 200, body
        return body

    async def lines(self, file_id: str) -> list[Any]:
        status, raw, _ = await self.call("GET", f"/files/{file_id}/content")
        assert status == 200
        return [msgspec.json.decode(line) for line in raw.splitlines()]


def jsonl(
    n: int, *, prefix: str = "r", model: str = "gpt-4o-mini", url: str | None = None
) -> bytes:
    lines = []
    for i in range(n):
        body = {"model": model, "messages": [{"role": "user", "content": f"hello {i}"}]}
        line: dict[str, Any] = {"custom_id": f"{prefix}{i}", "method": "POST"}
        line |= {"url": url or "/v1/chat/completions", "body": body}
        lines.append(msgspec.json.encode(line))
    return b"\n".join(lines) + b"\n"


async def make_env(config: EmulatorConfig = CFG) -> AsyncIterator[Env]:
    clock = ManualClock()
    async with (
        open_emulator(config=config, clock=clock) as running,
        aiohttp.ClientSession(headers=AUTH) as http,
    ):
        yield Env(running, clock, http)


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    async for e in make_env():
        yield e


# -- lifecycle --------------------------------------------------------------------------------


async def test_lifecycle_to_completed_with_output(env: Env) -> None:
    file_id = await env.upload(jsonl(10))
    status, batch = await env.create(file_id, metadata={"batchpump_shard": "bp1:run:0:1"})
    assert status == 200
    assert batch["status"] == "validating"
    assert batch["id"].startswith("batch_")
    assert batch["expires_at"] == batch["created_at"] + 86_400
    assert batch["request_counts"] == {"total": 0, "completed": 0, "failed": 0}
    env.clock.advance(10)
    b = await env.batch(batch["id"])
    assert (b["status"], b["in_progress_at"]) == ("in_progress", batch["created_at"] + 10)
    env.clock.advance(50)
    b = await env.batch(batch["id"])
    assert b["request_counts"] == {"total": 10, "completed": 5, "failed": 0}
    env.clock.advance(50)
    assert (await env.batch(batch["id"]))["status"] == "finalizing"
    env.clock.advance(10)
    b = await env.batch(batch["id"])
    assert b["status"] == "completed"
    assert b["error_file_id"] is None
    assert b["completed_at"] == batch["created_at"] + 120
    out = await env.lines(b["output_file_id"])
    assert sorted(line["custom_id"] for line in out) == sorted(f"r{i}" for i in range(10))
    first = next(line for line in out if line["custom_id"] == "r3")
    assert first["id"].startswith("batch_req_")
    assert first["error"] is None
    assert first["response"]["status_code"] == 200
    assert "hello 3" in first["response"]["body"]["choices"][0]["message"]["content"]
    assert first["response"]["body"]["usage"]["total_tokens"] > 0
    status, meta, _ = await env.call("GET", f"/files/{b['output_file_id']}")
    assert (status, meta["purpose"], meta["object"]) == (200, "batch_output", "file")
    stats = env.running.emulator.stats
    assert stats.batches_created == 1
    assert stats.tags == {"bp1:run:0:1": 1}
    assert sum(stats.billing.values()) == 10
    assert stats.double_billed() == {}


@pytest.mark.parametrize(
    ("endpoint", "key"),
    [
        ("/v1/embeddings", "data"),
        ("/v1/responses", "output"),
        ("/v1/completions", "choices"),
        ("/v1/moderations", "results"),
        ("/v1/images/generations", "usage"),
    ],
)
async def test_bodies_per_endpoint(env: Env, endpoint: str, key: str) -> None:
    line = {
        "custom_id": "a",
        "method": "POST",
        "url": endpoint,
        "body": {"model": "m", "input": "x"},
    }
    file_id = await env.upload(msgspec.json.encode(line))
    _, batch = await env.create(file_id, endpoint=endpoint)
    env.clock.advance(1000)
    b = await env.batch(batch["id"])
    (out,) = await env.lines(b["output_file_id"])
    assert key in out["response"]["body"]


async def test_double_billing_counted_across_batches(env: Env) -> None:
    file_id = await env.upload(jsonl(3))
    for _ in range(2):
        await env.create(file_id, metadata={"batchpump_shard": "same"})
    env.clock.advance(1000)
    stats = env.running.emulator.stats  # settles without any read of the batches
    assert stats.double_billed() == {"r0": 2, "r1": 2, "r2": 2}
    assert stats.duplicate_tags() == {"same": 2}


async def test_partial_line_failures_go_to_error_file() -> None:
    faults = Faults(line_retryable_rate=0.3, line_fatal_rate=0.3)
    async for env in make_env(msgspec.structs.replace(CFG, faults=faults, seed=7)):
        file_id = await env.upload(jsonl(60))
        _, batch = await env.create(file_id)
        env.clock.advance(1000)
        b = await env.batch(batch["id"])
        counts = b["request_counts"]
        assert counts["total"] == 60
        assert counts["failed"] > 0
        assert counts["completed"] > 0
        errors = await env.lines(b["error_file_id"])
        out = await env.lines(b["output_file_id"])
        assert len(errors) == counts["failed"]
        assert len(out) == counts["completed"]
        codes = {e["response"]["status_code"] for e in errors}
        assert codes <= {400, 429, 500}
        assert 400 in codes
        assert codes & {429, 500}
        assert all(e["error"] is None and "error" in e["response"]["body"] for e in errors)


async def test_all_lines_failed_completes_without_output() -> None:
    faults = Faults(line_fatal_rate=1.0)
    async for env in make_env(msgspec.structs.replace(CFG, faults=faults)):
        _, batch = await env.create(await env.upload(jsonl(4)))
        env.clock.advance(1000)
        b = await env.batch(batch["id"])
        assert (b["status"], b["output_file_id"]) == ("completed", None)
        assert b["request_counts"] == {"total": 4, "completed": 0, "failed": 4}
        assert len(await env.lines(b["error_file_id"])) == 4


async def test_shuffled_output_is_seeded() -> None:
    orders = []
    for _ in range(2):
        async for env in make_env(msgspec.structs.replace(CFG, shuffle_output=True, seed=3)):
            _, batch = await env.create(await env.upload(jsonl(20)))
            env.clock.advance(1000)
            b = await env.batch(batch["id"])
            orders.append([line["custom_id"] for line in await env.lines(b["output_file_id"])])
    assert orders[0] == orders[1]
    assert orders[0] != [f"r{i}" for i in range(20)]


# -- list, cancel, files, uploads -----------------------------------------------------------


async def test_list_pagination_newest_first(env: Env) -> None:
    file_id = await env.upload(jsonl(1))
    ids = [(await env.create(file_id))[1]["id"] for _ in range(7)]
    seen: list[str] = []
    after: str | None = None
    while True:
        params = {"limit": "3"} | ({"after": after} if after else {})
        status, page, _ = await env.call("GET", "/batches", params=params)
        assert status == 200
        assert page["object"] == "list"
        seen += [b["id"] for b in page["data"]]
        assert page["last_id"] == page["data"][-1]["id"]
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert seen == ids[::-1]
    status, body, _ = await env.call("GET", "/batches", params={"limit": "101"})
    assert (status, body["error"]["param"]) == (400, "limit")


async def test_cancel_then_409_on_terminal(env: Env) -> None:
    _, batch = await env.create(await env.upload(jsonl(10)))
    env.clock.advance(10 + 30)  # 3 of 10 lines ran
    status, b, _ = await env.call("POST", f"/batches/{batch['id']}/cancel")
    assert (status, b["status"]) == (200, "cancelling")
    assert b["cancelling_at"] is not None
    env.clock.advance(5)
    b = await env.batch(batch["id"])
    assert b["status"] == "cancelled"
    out = await env.lines(b["output_file_id"])
    errors = await env.lines(b["error_file_id"])
    assert len(out) == 3
    assert len(errors) == 7
    assert all(e["response"] is None for e in errors)
    assert {e["error"]["code"] for e in errors} == {"batch_cancelled"}
    status, body, _ = await env.call("POST", f"/batches/{batch['id']}/cancel")
    assert status == 409
    assert body["error"]["type"] == "invalid_request_error"


async def test_files_list_retrieve_delete(env: Env) -> None:
    a = await env.upload(jsonl(1))
    b = await env.upload(b"x", name="notes.txt", purpose="assistants")
    status, page, _ = await env.call("GET", "/files")
    assert [f["id"] for f in page["data"]] == [b, a]
    status, page, _ = await env.call("GET", "/files", params={"purpose": "batch"})
    assert [f["id"] for f in page["data"]] == [a]
    status, body, _ = await env.call("DELETE", f"/files/{a}")
    assert (status, body) == (200, {"id": a, "object": "file", "deleted": True})
    status, body, _ = await env.call("GET", f"/files/{a}")
    assert status == 404
    form = aiohttp.FormData({"purpose": "batch"}, default_to_multipart=True)
    status, body, _ = await env.call("POST", "/files", data=form)
    assert body["error"]["code"] == "missing_required_parameter"


async def test_multi_megabyte_file_roundtrip(env: Env) -> None:
    data = jsonl(30_000)
    assert len(data) > 3_000_000
    file_id = await env.upload(data)
    status, raw, _ = await env.call("GET", f"/files/{file_id}/content")
    assert (status, raw) == (200, data)


async def test_uploads_parts_order_and_size(env: Env) -> None:
    data = jsonl(50)
    half = len(data) // 2
    payload = {"filename": "big.jsonl", "purpose": "batch", "bytes": len(data)}
    payload["mime_type"] = "text/jsonl"
    status, up, _ = await env.call("POST", "/uploads", json=payload)
    assert (status, up["status"], up["object"]) == (200, "pending", "upload")
    part_ids = []
    for chunk in (data[half:], data[:half]):
        form = aiohttp.FormData()
        form.add_field("data", chunk, filename="blob")
        status, part, _ = await env.call("POST", f"/uploads/{up['id']}/parts", data=form)
        assert part["object"] == "upload.part"
        part_ids.append(part["id"])
    path = f"/uploads/{up['id']}/complete"
    status, body, _ = await env.call("POST", path, json={"part_ids": part_ids[:1]})
    assert (status, body["error"]["param"]) == (400, "part_ids")
    status, done, _ = await env.call("POST", path, json={"part_ids": part_ids[::-1]})
    assert (status, done["status"]) == (200, "completed")
    status, raw, _ = await env.call("GET", f"/files/{done['file']['id']}/content")
    assert raw == data
    status, up2, _ = await env.call("POST", "/uploads", json=payload)
    status, cancelled, _ = await env.call("POST", f"/uploads/{up2['id']}/cancel")
    assert cancelled["status"] == "cancelled"


# -- request validation -----------------------------------------------------------------------


async def test_auth_required(env: Env) -> None:
    async with aiohttp.ClientSession() as bare, bare.get(env.url + "/batches") as resp:
        body = await resp.json()
    assert resp.status == 401
    assert set(body["error"]) == {"message", "type", "param", "code"}


@pytest.mark.parametrize(
    ("payload", "status", "code", "param"),
    [
        (
            {"endpoint": "/v1/chat/completions", "completion_window": "24h"},
            400,
            "missing_required_parameter",
            "input_file_id",
        ),
        (
            {"input_file_id": "F", "completion_window": "24h"},
            400,
            "missing_required_parameter",
            "endpoint",
        ),
        (
            {"input_file_id": "F", "endpoint": "/v1/chat/completions"},
            400,
            "missing_required_parameter",
            "completion_window",
        ),
        (
            {"input_file_id": "F", "endpoint": "/v1/nope", "completion_window": "24h"},
            400,
            "invalid_value",
            "endpoint",
        ),
        (
            {"input_file_id": "F", "endpoint": "/v1/chat/completions", "completion_window": "1h"},
            400,
            "invalid_value",
            "completion_window",
        ),
        (
            {
                "input_file_id": "F",
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
                "bogus": 1,
            },
            400,
            "unknown_parameter",
            "bogus",
        ),
        (
            {
                "input_file_id": "F",
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
                "metadata": {f"k{i}": "v" for i in range(17)},
            },
            400,
            "object_above_max_properties",
            "metadata",
        ),
        (
            {
                "input_file_id": "F",
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
                "metadata": {"k" * 65: "v"},
            },
            400,
            "string_above_max_length",
            "metadata",
        ),
        (
            {
                "input_file_id": "F",
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
                "metadata": {"k": "v" * 513},
            },
            400,
            "string_above_max_length",
            "metadata.k",
        ),
        (
            {
                "input_file_id": "file-missing",
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
            },
            404,
            "not_found",
            "input_file_id",
        ),
    ],
)
async def test_create_rejections(
    env: Env, payload: dict[str, Any], status: int, code: str, param: str
) -> None:
    file_id = await env.upload(jsonl(1))
    if payload.get("input_file_id") == "F":
        payload = payload | {"input_file_id": file_id}
    got, body, _ = await env.call("POST", "/batches", json=payload)
    assert (got, body["error"]["code"], body["error"]["param"]) == (status, code, param)
    assert env.running.emulator.stats.batches_created == 0


async def test_wrong_purpose_and_unknown_ids(env: Env) -> None:
    other = await env.upload(jsonl(1), purpose="assistants")
    status, body = await env.create(other)
    assert (status, body["error"]["param"]) == (400, "input_file_id")
    for path in ("/batches/batch_nope", "/files/file-nope", "/files/file-nope/content"):
        status, body, _ = await env.call("GET", path)
        assert status == 404
        assert body["error"]["type"] == "invalid_request_error"
    status, body, _ = await env.call("POST", "/batches/batch_nope/cancel")
    assert status == 404
    status, body, _ = await env.call("GET", "/nothing/here")
    assert (status, body["error"]["message"]) == (404, "Invalid URL (GET /v1/nothing/here)")
    status, body, _ = await env.call("POST", "/batches", data=b"{not json")
    assert status == 400


@pytest.mark.parametrize(
    ("data", "code", "line"),
    [
        (b"", "empty_file", None),
        (
            jsonl(1) + b"{oops",
            "invalid_json_line",
            2,
        ),
        (jsonl(1) + jsonl(1), "duplicate_custom_id", 2),
        (jsonl(1, url="/v1/embeddings"), "url_mismatch", 1),
        (jsonl(1, prefix="a") + jsonl(1, prefix="b", model="other"), "model_mismatch", 2),
        (jsonl(50_001), "too_many_tasks", None),
    ],
    ids=["empty", "invalid_json", "duplicate", "url", "model", "too_many"],
)
async def test_validation_failures(env: Env, data: bytes, code: str, line: int | None) -> None:
    status, batch = await env.create(await env.upload(data))
    assert status == 200  # content problems surface at validating, not at create
    env.clock.advance(10)
    b = await env.batch(batch["id"])
    assert b["status"] == "failed"
    assert b["failed_at"] == b["created_at"] + 10
    assert b["in_progress_at"] is None
    (error,) = b["errors"]["data"]
    assert (error["code"], error["line"]) == (code, line)


async def test_token_limit_exceeded_at_validating() -> None:
    data = jsonl(30)
    faults = Faults(enqueued_token_limit=len(data) // 4 * 3 // 2)  # room for one such batch
    async for env in make_env(msgspec.structs.replace(CFG, faults=faults)):
        file_id = await env.upload(data)
        _, first = await env.create(file_id)
        _, second = await env.create(file_id)
        env.clock.advance(10)
        assert (await env.batch(first["id"]))["status"] == "in_progress"
        b = await env.batch(second["id"])
        assert b["status"] == "failed"
        (error,) = b["errors"]["data"]
        assert error["code"] == "token_limit_exceeded"
        assert error["message"].startswith("Enqueued token limit reached for gpt-4o-mini")
        env.clock.advance(1000)  # the first one finished: its tokens are released
        _, third = await env.create(file_id)
        env.clock.advance(10)
        assert (await env.batch(third["id"]))["status"] == "in_progress"


# -- batch-level faults -----------------------------------------------------------------------


async def test_expire_with_partial_lines() -> None:
    faults = Faults(expire=True, expire_done_fraction=0.4)
    async for env in make_env(msgspec.structs.replace(CFG, faults=faults)):
        _, batch = await env.create(await env.upload(jsonl(10)))
        env.clock.advance(86_399)
        assert (await env.batch(batch["id"]))["status"] == "in_progress"
        env.clock.advance(1)
        b = await env.batch(batch["id"])
        assert (b["status"], b["expired_at"]) == ("expired", b["expires_at"])
        assert len(await env.lines(b["output_file_id"])) == 4
        errors = await env.lines(b["error_file_id"])
        assert {e["error"]["code"] for e in errors} == {"batch_expired"}
        assert len(errors) == 6


async def test_completed_without_output_and_stuck_finalizing() -> None:
    faults = Faults(completed_without_output=True)
    async for env in make_env(msgspec.structs.replace(CFG, faults=faults)):
        _, batch = await env.create(await env.upload(jsonl(3)))
        env.clock.advance(1000)
        b = await env.batch(batch["id"])
        assert (b["status"], b["output_file_id"]) == ("completed", None)
        assert b["request_counts"]["completed"] == 3
        env.running.emulator.set_faults(Faults(stuck_finalizing=True))
        _, stuck = await env.create(await env.upload(jsonl(3)))
        env.clock.advance(1_000_000)
        assert (await env.batch(stuck["id"]))["status"] == "finalizing"


# -- request-level faults ---------------------------------------------------------------------


async def test_rate_limit_bucket_headers(env: Env) -> None:
    env.running.emulator.set_faults(rate_limits={"poll": RateLimit(requests=2, per_seconds=60)})
    for remaining in ("1", "0"):
        status, _, headers = await env.call("GET", "/batches")
        assert (status, headers["x-ratelimit-remaining-requests"]) == (200, remaining)
    status, body, headers = await env.call("GET", "/batches")
    assert status == 429
    assert (body["error"]["type"], body["error"]["code"]) == ("requests", "rate_limit_exceeded")
    assert headers["retry-after"] == "30"
    assert headers["retry-after-ms"] == "30000"
    assert headers["x-ratelimit-limit-requests"] == "2"
    assert headers["x-ratelimit-reset-requests"] == "1m0s"
    env.clock.advance(30)
    assert (await env.call("GET", "/batches"))[0] == 200
    assert env.running.emulator.stats.rate_limited == 1


async def test_storm_429_and_turning_it_off(env: Env) -> None:
    env.running.emulator.set_faults(storm_429_rate=1.0, retry_after_seconds=300)
    status, body, headers = await env.call("GET", "/batches")
    assert body["error"]["code"] == "rate_limit_exceeded"
    assert (status, headers["retry-after"], headers["retry-after-ms"]) == (429, "300", "300000")
    assert headers["x-ratelimit-reset-requests"] == "5m0s"
    env.running.emulator.set_faults(Faults())
    assert (await env.call("GET", "/batches"))[0] == 200


async def test_5xx_and_html_502(env: Env) -> None:
    env.running.emulator.set_faults(error_5xx_rate=1.0)
    statuses = set()
    for _ in range(12):
        status, body, _ = await env.call("GET", "/batches")
        statuses.add(status)
        assert body["error"]["type"] == "server_error"
    assert statuses <= {500, 502, 503}
    assert len(statuses) > 1
    env.running.emulator.set_faults(Faults(html_502_rate=1.0))
    status, body, headers = await env.call("GET", "/batches")
    assert status == 502
    assert headers["Content-Type"].startswith("text/html")
    assert b"502 Bad Gateway" in body
    assert env.running.emulator.stats.server_errors == 13


async def test_reset_before_handling_leaves_no_batch(env: Env) -> None:
    file_id = await env.upload(jsonl(1))
    env.running.emulator.set_faults(reset_rate=1.0)
    with pytest.raises(aiohttp.ClientError):
        await env.create(file_id)
    env.running.emulator.set_faults(Faults())
    stats = env.running.emulator.stats
    assert (stats.batches_created, stats.resets) == (0, 1)
    assert stats.status_count("openai.batches.create", 0) == 1


async def test_reset_after_create_leaves_the_batch(env: Env) -> None:
    file_id = await env.upload(jsonl(1))
    env.running.emulator.set_faults(reset_after_create_rate=1.0)
    with pytest.raises(aiohttp.ClientError):
        await env.create(file_id, metadata={"batchpump_shard": "t1"})
    env.running.emulator.set_faults(Faults())
    _, page, _ = await env.call("GET", "/batches")
    assert [b["metadata"] for b in page["data"]] == [{"batchpump_shard": "t1"}]
    assert env.running.emulator.stats.faults["reset_after_create"] == 1


async def test_truncated_body(env: Env) -> None:
    env.running.emulator.set_faults(truncate_rate=1.0)
    with pytest.raises(aiohttp.ClientPayloadError):
        await env.call("GET", "/batches")
    assert env.running.emulator.stats.faults["truncate"] == 1


async def test_slow_response_waits_on_the_clock(env: Env) -> None:
    env.running.emulator.set_faults(slow_rate=1.0, slow_seconds=7)
    import anyio

    async with anyio.create_task_group() as tg:
        result: list[int] = []

        async def call() -> None:
            result.append((await env.call("GET", "/batches"))[0])

        tg.start_soon(call)
        while env.running.emulator.raw_stats.faults["slow"] == 0:
            await anyio.lowlevel.checkpoint()
        assert result == []
        env.clock.advance(7)
    assert result == [200]
