"""The OpenAI adapter against a small stateful fake of the Batch/Files/Uploads API.

Rules: loopback only (127.0.0.1, port 0 via aiohttp's TestServer); no dependency on
batchpump.emulator; a ManualClock and a zero-wait RetryPolicy, so nothing sleeps; a hard
timeout per test; the provider and the server are always closed.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp import BodyPartReader, web
from aiohttp.test_utils import TestServer

from batchpump import (
    BatchInfo,
    Canceled,
    Errored,
    Expired,
    Limits,
    ManualClock,
    ProtocolError,
    RetryPolicy,
    Succeeded,
    Usage,
    UsageError,
)
from batchpump._models import BatchError, ShardRecord
from batchpump._provider import TAG_METADATA_KEY
from batchpump.providers import Provider
from batchpump.providers.openai import OpenAI

pytestmark = pytest.mark.timeout(20)

KEY = "sk-openai-test-KEY-0123456789"
T0 = 1_700_000_000


class FakeOpenAI:
    """Just enough of api.openai.com/v1 to drive every verb of the adapter."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.parts: dict[str, bytes] = {}
        self.uploads: dict[str, dict[str, Any]] = {}
        self.batches: dict[str, dict[str, Any]] = {}  # insertion order = creation order
        self.creates: list[dict[str, Any]] = []
        self.list_calls: list[dict[str, str]] = []
        self.ids = itertools.count(1)
        self.app = web.Application()
        r = self.app.router
        r.add_post("/v1/files", self.create_file)
        r.add_get("/v1/files/{id}/content", self.file_content)
        r.add_post("/v1/uploads", self.create_upload)
        r.add_post("/v1/uploads/{id}/parts", self.add_part)
        r.add_post("/v1/uploads/{id}/complete", self.complete_upload)
        r.add_post("/v1/batches", self.create_batch)
        r.add_get("/v1/batches", self.list_batches)
        r.add_get("/v1/batches/{id}", self.get_batch)
        r.add_post("/v1/batches/{id}/cancel", self.cancel_batch)

    def add_batch(self, status: str = "in_progress", **fields: Any) -> dict[str, Any]:
        n = next(self.ids)
        batch = {
            "id": f"batch_{n:04d}",
            "object": "batch",
            "endpoint": "/v1/chat/completions",
            "input_file_id": "file-x",
            "completion_window": "24h",
            "status": status,
            "created_at": T0 + n,
            "metadata": None,
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
            **fields,
        }
        self.batches[batch["id"]] = batch
        return batch

    async def create_file(self, request: web.Request) -> web.Response:
        reader = await request.multipart()
        purpose, content = None, b""
        while (part := await reader.next()) is not None:
            assert isinstance(part, BodyPartReader)
            data = await part.read()
            if part.name == "purpose":
                purpose = data.decode()
            elif part.name == "file":
                content = data
        assert purpose == "batch"
        file_id = f"file-{next(self.ids)}"
        self.files[file_id] = content
        return web.json_response({"id": file_id, "object": "file", "bytes": len(content)})

    async def file_content(self, request: web.Request) -> web.Response:
        file_id = request.match_info["id"]
        if file_id not in self.files:
            return web.json_response(
                {"error": {"message": "no", "type": "invalid_request_error"}}, status=404
            )
        return web.Response(body=self.files[file_id], content_type="application/octet-stream")

    async def create_upload(self, request: web.Request) -> web.Response:
        body = await request.json()
        upload_id = f"upload_{next(self.ids)}"
        self.uploads[upload_id] = {**body, "parts": []}
        return web.json_response({"id": upload_id, "object": "upload", "status": "pending"})

    async def add_part(self, request: web.Request) -> web.Response:
        reader = await request.multipart()
        part = await reader.next()
        assert isinstance(part, BodyPartReader)
        assert part.name == "data"
        data = await part.read()
        part_id = f"part_{next(self.ids)}"
        self.parts[part_id] = data
        self.uploads[request.match_info["id"]]["parts"].append(part_id)
        return web.json_response({"id": part_id, "object": "upload.part"})

    async def complete_upload(self, request: web.Request) -> web.Response:
        upload = self.uploads[request.match_info["id"]]
        body = await request.json()
        content = b"".join(self.parts[p] for p in body["part_ids"])
        assert len(content) == upload["bytes"]
        file_id = f"file-{next(self.ids)}"
        self.files[file_id] = content
        upload["order"] = body["part_ids"]
        return web.json_response(
            {"id": request.match_info["id"], "status": "completed", "file": {"id": file_id}}
        )

    async def create_batch(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.creates.append(body)
        batch = self.add_batch(
            "validating",
            input_file_id=body["input_file_id"],
            endpoint=body["endpoint"],
            metadata=body.get("metadata"),
        )
        return web.json_response(batch)

    async def get_batch(self, request: web.Request) -> web.Response:
        return web.json_response(self.batches[request.match_info["id"]])

    async def list_batches(self, request: web.Request) -> web.Response:
        self.list_calls.append(dict(request.query))
        limit = int(request.query.get("limit", "20"))
        newest_first = list(reversed(self.batches.values()))
        after = request.query.get("after")
        if after is not None:
            index = next(i for i, b in enumerate(newest_first) if b["id"] == after)
            newest_first = newest_first[index + 1 :]
        page = newest_first[:limit]
        return web.json_response(
            {
                "object": "list",
                "data": page,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
                "has_more": len(newest_first) > limit,
            }
        )

    async def cancel_batch(self, request: web.Request) -> web.Response:
        batch = self.batches[request.match_info["id"]]
        if batch["status"] in {"completed", "failed", "expired", "cancelled"}:
            error = {
                "message": f"Cannot cancel a batch with status '{batch['status']}'.",
                "type": "invalid_request_error",
            }
            return web.json_response({"error": error}, status=409)
        batch["status"] = "cancelling"
        return web.json_response(batch)


@pytest.fixture
def fake() -> FakeOpenAI:
    return FakeOpenAI()


@pytest.fixture
async def provider(fake: FakeOpenAI) -> AsyncIterator[OpenAI]:
    server = TestServer(fake.app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        async with make(str(server.make_url("/v1"))) as openai:
            yield openai
    finally:
        await server.close()


def make(base_url: str, **kwargs: Any) -> OpenAI:
    return OpenAI(
        api_key=KEY,
        base_url=base_url,
        retry=RetryPolicy.no_wait(3),
        clock=ManualClock(),
        limits=Limits(upload_concurrency=3),
        **kwargs,
    )


def shard(path: Path, **kwargs: Any) -> ShardRecord:
    return ShardRecord(
        run_id="run1", index=0, attempt=1, path=str(path), lines=0, bytes=0, **kwargs
    )


def jsonl(n: int) -> bytes:
    return b"".join(b'{"custom_id": "r%05d", "body": {}}\n' % i for i in range(n))


def test_is_a_provider() -> None:
    openai = OpenAI(api_key=KEY, base_url="http://127.0.0.1:9/v1")
    assert isinstance(openai, Provider)
    assert openai.name == "openai"
    assert openai.capabilities.max_lines == 50_000
    assert openai.capabilities.metadata_tag
    assert KEY not in repr(openai)


def test_key_and_base_url_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(UsageError, match="OPENAI_API_KEY"):
        OpenAI()
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    assert OpenAI().base_url == "https://api.openai.com/v1"
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:1234/v1/")
    assert OpenAI().base_url == "http://127.0.0.1:1234/v1"


async def test_prepare_uploads_in_one_request(
    provider: OpenAI, fake: FakeOpenAI, tmp_path: Path
) -> None:
    path = tmp_path / "shard-0.jsonl"
    path.write_bytes(jsonl(100))
    file_id = await provider.prepare(shard(path))
    assert fake.files[file_id] == path.read_bytes()
    assert fake.uploads == {}


async def test_prepare_uses_the_uploads_api_above_the_threshold(
    fake: FakeOpenAI, tmp_path: Path
) -> None:
    server = TestServer(fake.app, host="127.0.0.1", port=0)
    await server.start_server()
    path = tmp_path / "big.jsonl"
    data = jsonl(3000)  # ~100 kB
    path.write_bytes(data)
    try:
        async with make(
            str(server.make_url("/v1")), multipart_threshold=10_000, part_size=7_000
        ) as openai:
            file_id = await openai.prepare(shard(path))
    finally:
        await server.close()
    assert fake.files[file_id] == data
    (upload,) = fake.uploads.values()
    assert upload["bytes"] == len(data)
    assert upload["purpose"] == "batch"
    assert upload["filename"] == "big.jsonl"
    assert len(upload["order"]) == -(-len(data) // 7_000)
    assert all(len(fake.parts[p]) == 7_000 for p in upload["order"][:-1])


async def test_create_sends_the_tag_and_is_found_by_reconcile(
    provider: OpenAI, fake: FakeOpenAI, tmp_path: Path
) -> None:
    fake.add_batch("completed")
    record = shard(tmp_path / "s.jsonl", input_ref="file-abc", tag="bp1:run1:0:1")
    info = await provider.create(record, endpoint="/v1/chat/completions", tag="bp1:run1:0:1")
    assert fake.creates == [
        {
            "input_file_id": "file-abc",
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
            "metadata": {TAG_METADATA_KEY: "bp1:run1:0:1"},
        }
    ]
    assert info.state == "pending"
    assert info.raw_status == "validating"
    assert info.tag == "bp1:run1:0:1"
    for _ in range(5):
        fake.add_batch("in_progress")
    found = await provider.reconcile(record, since=T0)
    assert found is not None
    assert found.id == info.id
    missing = shard(tmp_path / "s.jsonl", input_ref="file-abc", tag="bp1:run1:0:2")
    assert await provider.reconcile(missing, since=T0) is None


async def test_create_without_input_ref_is_a_usage_error(provider: OpenAI, tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        await provider.create(shard(tmp_path / "s"), endpoint="/v1/embeddings", tag="t")


@pytest.mark.parametrize(
    ("raw", "state"),
    [
        ("validating", "pending"),
        ("in_progress", "running"),
        ("finalizing", "finalizing"),
        ("completed", "completed"),
        ("failed", "failed"),
        ("expired", "expired"),
        ("cancelling", "cancelling"),
        ("cancelled", "cancelled"),
    ],
)
async def test_retrieve_maps_every_status(
    provider: OpenAI, fake: FakeOpenAI, raw: str, state: str
) -> None:
    batch = fake.add_batch(
        raw,
        metadata={TAG_METADATA_KEY: "tag-1", "other": "x"},
        output_file_id="file-out",
        error_file_id="file-err",
        request_counts={"total": 10, "completed": 7, "failed": 3},
        expires_at=T0 + 86_400,
        errors={
            "object": "list",
            "data": [{"code": "invalid_json_line", "line": 1, "message": "bad", "param": None}],
        },
    )
    info = await provider.retrieve(batch["id"])
    assert info == BatchInfo(
        id=batch["id"],
        state=state,  # type: ignore[arg-type]
        raw_status=raw,
        created_at=float(batch["created_at"]),
        tag="tag-1",
        output_ref="file-out",
        error_ref="file-err",
        total=10,
        completed=7,
        failed=3,
        errors=(BatchError(code="invalid_json_line", message="bad", line=1),),
        expires_at=float(T0 + 86_400),
    )


async def test_list_batches_paginates_lazily_newest_first(
    provider: OpenAI, fake: FakeOpenAI
) -> None:
    ids = [fake.add_batch()["id"] for _ in range(250)]
    seen = [b.id async for b in provider.list_batches()]
    assert seen == list(reversed(ids))
    assert fake.list_calls == [
        {"limit": "100"},
        {"limit": "100", "after": ids[-100]},
        {"limit": "100", "after": ids[-200]},
    ]
    fake.list_calls.clear()
    async with aclosing(provider.list_batches()) as batches:
        async for batch in batches:
            if batch.id == ids[-3]:
                break
    assert len(fake.list_calls) == 1


async def test_cancel_running_and_terminal(provider: OpenAI, fake: FakeOpenAI) -> None:
    running = fake.add_batch("in_progress")
    done = fake.add_batch("completed")
    assert (await provider.cancel(running["id"])).state == "cancelling"
    info = await provider.cancel(done["id"])
    assert info.state == "completed"
    assert provider.statistics().retries == 0  # 409 was passed through, not retried


def test_failure_is_transient() -> None:
    openai = OpenAI(api_key=KEY, base_url="http://127.0.0.1:9/v1")

    def failed(*errors: BatchError) -> BatchInfo:
        return BatchInfo(id="b", state="failed", raw_status="failed", created_at=0, errors=errors)

    assert openai.failure_is_transient(failed(BatchError(code="token_limit_exceeded", message="x")))
    assert openai.failure_is_transient(
        failed(
            BatchError(
                code="other", message="Enqueued request limit reached for text-embedding-3-small"
            )
        )
    )
    assert not openai.failure_is_transient(
        failed(BatchError(code="invalid_json_line", message="bad", line=1))
    )
    assert not openai.failure_is_transient(failed())


def line(
    custom_id: str, *, status: int | None = None, body: Any = None, error: Any = None
) -> bytes:
    response = (
        None if status is None else {"status_code": status, "request_id": "req", "body": body}
    )
    record = {
        "id": f"batch_req_{custom_id}",
        "custom_id": custom_id,
        "response": response,
        "error": error,
    }
    return msgspec.json.encode(record)


async def test_results_maps_every_line_kind(provider: OpenAI, fake: FakeOpenAI) -> None:
    chat = {
        "id": "chatcmpl",
        "usage": {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16},
    }
    resp_api = {"id": "resp", "usage": {"input_tokens": 3, "output_tokens": 4}}
    bad = {
        "error": {
            "message": "bad model",
            "type": "invalid_request_error",
            "code": "model_not_found",
        }
    }
    boom = {"error": {"message": "server fell over", "type": "server_error", "code": None}}
    fake.files["file-out"] = b"\n".join(
        [
            line("ok-1", status=200, body=chat),
            line("ok-2", status=200, body=resp_api),
            line("ok-3", status=200, body={}),
        ]
    )  # no final newline
    fake.files["file-err"] = (
        b"\n".join(
            [
                line("bad", status=400, body=bad),
                line("boom", status=500, body=boom),
                line("slow", status=429, body={"error": {"message": "rl", "type": "requests"}}),
                line("exp", error={"code": "batch_expired", "message": "window ended"}),
                line("can", error={"code": "batch_cancelled", "message": "cancelled"}),
                line("tmo", error={"code": "request_timeout", "message": "timed out"}),
            ]
        )
        + b"\n"
    )
    batch = BatchInfo(
        id="batch_x",
        state="completed",
        raw_status="completed",
        created_at=0,
        output_ref="file-out",
        error_ref="file-err",
    )
    got = {r.custom_id: r async for r in provider.results(batch, attempt=2)}
    assert len(got) == 9
    ok1 = got["ok-1"]
    assert isinstance(ok1, Succeeded)
    assert msgspec.json.decode(ok1.response) == chat
    assert (ok1.usage, ok1.batch_id, ok1.attempt, ok1.status_code) == (
        Usage(input_tokens=11, output_tokens=5),
        "batch_x",
        2,
        200,
    )
    assert isinstance(got["ok-2"], Succeeded)
    assert got["ok-2"].usage == Usage(input_tokens=3, output_tokens=4)
    assert isinstance(got["ok-3"], Succeeded)
    assert got["ok-3"].usage is None
    bad_r = got["bad"]
    assert isinstance(bad_r, Errored)
    assert (bad_r.code, bad_r.message, bad_r.status_code, bad_r.retryable) == (
        "model_not_found",
        "bad model",
        400,
        False,
    )
    assert isinstance(bad_r.body, msgspec.Raw)
    assert msgspec.json.decode(bad_r.body) == bad
    boom_r = got["boom"]
    assert isinstance(boom_r, Errored)
    assert (boom_r.code, boom_r.retryable) == ("server_error", True)
    slow = got["slow"]
    assert isinstance(slow, Errored)
    assert slow.retryable
    assert got["exp"] == Expired(
        custom_id="exp", batch_id="batch_x", attempt=2, message="window ended"
    )
    assert got["can"] == Canceled(
        custom_id="can", batch_id="batch_x", attempt=2, message="cancelled"
    )
    tmo = got["tmo"]
    assert isinstance(tmo, Errored)
    assert (tmo.code, tmo.retryable) == ("request_timeout", True)


async def test_results_without_files_yields_nothing(provider: OpenAI) -> None:
    batch = BatchInfo(id="b", state="completed", raw_status="completed", created_at=0)
    assert [r async for r in provider.results(batch, attempt=1)] == []


async def test_malformed_result_line_names_file_and_line(
    provider: OpenAI, fake: FakeOpenAI
) -> None:
    fake.files["file-out"] = line("ok", status=200, body={}) + b"\n{not json\n"
    batch = BatchInfo(
        id="b", state="completed", raw_status="completed", created_at=0, output_ref="file-out"
    )
    with pytest.raises(ProtocolError, match=r"file-out line 2"):
        _ = [r async for r in provider.results(batch, attempt=1)]
