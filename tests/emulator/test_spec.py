"""Emulator bodies validated against OpenAI's published OpenAPI schemas.

Rules: loopback only (127.0.0.1, port 0); a ``ManualClock`` moved by ``advance`` (no real
waits); every session and server closed by its ``async with``; hard timeout 60 s (the YAML
specs are parsed once per module). Skipped when ``shared/specs`` is not beside the repo.

Two documented adaptations of the specs to JSON Schema 2020-12:

- the 2025-04 spec is OpenAPI 3.0: ``nullable: true`` becomes ``type: [T, "null"]``;
- the live API (and the SDK's own types) return ``null`` for optional fields not yet set
  (``output_file_id``, ``completed_at``, ``errors``, ``Upload.file``, ``first_id`` of an empty
  list...), which the 3.1 spec types as plain strings/objects. For the response schemas checked
  here, each property that is *not required* also accepts ``null``; required ones stay strict.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from functools import cache
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from jsonschema import Draft202012Validator

from batchpump._clock import ManualClock
from batchpump._provider import TAG_METADATA_KEY, shard_tag
from batchpump.emulator import EmulatorConfig, Faults, open_emulator

from ..specs import assert_valid, load_spec, nullable_to_union, validator

pytestmark = pytest.mark.timeout(60)

SPECS = Path(__file__).resolve().parents[3] / "shared" / "specs"
MAIN_SPEC = SPECS / "openai-openapi.yaml"
MANUAL_SPEC = SPECS / "openai-openapi-manual_spec-2025-04.yaml"
if not (MAIN_SPEC.is_file() and MANUAL_SPEC.is_file()):
    pytest.skip(
        f"the providers' API specs are not in this checkout (looked in {SPECS})",
        allow_module_level=True,
    )

AUTH = {"Authorization": "Bearer sk-test-not-a-real-key"}
CFG = EmulatorConfig(validate_seconds=10, run_seconds=100, finalize_seconds=10, cancel_seconds=5)


def _optional_nullable(schema: dict[str, Any]) -> dict[str, Any]:
    required = set(schema.get("required", ()))
    props = {
        name: sub if name in required else {"anyOf": [sub, {"type": "null"}]}
        for name, sub in schema.get("properties", {}).items()
    }
    return schema | {"properties": props}


_RELAXED = ("Batch", "ListBatchesResponse", "OpenAIFile", "Upload", "BatchError")


@cache
def main_validator(name: str) -> Draft202012Validator:
    """A validator for ``components.schemas[name]`` of the main spec, refs resolved in-document."""
    components = dict(load_spec(MAIN_SPEC)["components"])
    schemas = dict(components["schemas"])
    for relaxed in _RELAXED:
        schemas[relaxed] = _optional_nullable(schemas[relaxed])
    components["schemas"] = schemas
    return validator(components, name)


@cache
def output_validator() -> Draft202012Validator:
    schema = load_spec(MANUAL_SPEC)["components"]["schemas"]["BatchRequestOutput"]
    return Draft202012Validator(nullable_to_union(schema))


def check(name: str, body: Any) -> None:
    assert_valid(main_validator(name), name, body)


@pytest.fixture
async def env() -> AsyncIterator[tuple[aiohttp.ClientSession, str, ManualClock]]:
    clock = ManualClock()
    async with (
        open_emulator(config=CFG, clock=clock) as running,
        aiohttp.ClientSession(headers=AUTH) as http,
    ):
        yield http, running.openai_base_url, clock


async def call(http: aiohttp.ClientSession, method: str, url: str, **kw: Any) -> Any:
    async with http.request(method, url, **kw) as resp:
        raw = await resp.read()
        return msgspec.json.decode(raw) if resp.content_type == "application/json" else raw


def jsonl(n: int, prefix: str = "r") -> bytes:
    line = {"method": "POST", "url": "/v1/chat/completions"}
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    lines = [
        msgspec.json.encode(line | {"custom_id": f"{prefix}{i}", "body": body}) for i in range(n)
    ]
    return b"\n".join(lines) + b"\n"


async def upload(http: aiohttp.ClientSession, url: str, data: bytes) -> Any:
    form = aiohttp.FormData()
    form.add_field("purpose", "batch")
    form.add_field("file", io.BytesIO(data), filename="in.jsonl")
    return await call(http, "POST", f"{url}/files", data=form)


def test_create_request_batchpump_sends_is_valid() -> None:
    body = {
        "input_file_id": "file-abc",
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
        "metadata": {TAG_METADATA_KEY: shard_tag("0123456789abcdef" * 4, 3, 2)},
    }
    check("CreateBatchRequest", body)
    errors = list(
        main_validator("CreateBatchRequest").iter_errors(body | {"completion_window": "1h"})
    )
    assert errors  # the schema is really applied


async def test_batch_file_list_bodies(env: tuple[aiohttp.ClientSession, str, ManualClock]) -> None:
    http, url, clock = env
    file = await upload(http, url, jsonl(4))
    check("OpenAIFile", file)
    check("ListBatchesResponse", await call(http, "GET", f"{url}/batches"))  # empty
    create = {"input_file_id": file["id"], "endpoint": "/v1/chat/completions"}
    create |= {"completion_window": "24h", "metadata": {"k": "v"}}
    ids = [(await call(http, "POST", f"{url}/batches", json=create))["id"] for _ in range(3)]
    bad = await upload(http, url, b"{broken\n")
    failed = await call(http, "POST", f"{url}/batches", json=create | {"input_file_id": bad["id"]})
    check("Batch", failed)  # validating
    clock.advance(60)
    check("Batch", await call(http, "GET", f"{url}/batches/{ids[0]}"))  # in_progress
    check("Batch", await call(http, "POST", f"{url}/batches/{ids[1]}/cancel"))  # cancelling
    clock.advance(1_000)
    for batch_id in (*ids, failed["id"]):
        check("Batch", await call(http, "GET", f"{url}/batches/{batch_id}"))
    page = await call(http, "GET", f"{url}/batches", params={"limit": "2"})
    check("ListBatchesResponse", page)
    assert page["has_more"]
    done = await call(http, "GET", f"{url}/batches/{ids[0]}")
    check("OpenAIFile", await call(http, "GET", f"{url}/files/{done['output_file_id']}"))
    check("DeleteFileResponse", await call(http, "DELETE", f"{url}/files/{file['id']}"))
    for status, body in (
        (404, await call(http, "GET", f"{url}/batches/batch_nope")),
        (409, await call(http, "POST", f"{url}/batches/{ids[0]}/cancel")),
        (400, await call(http, "POST", f"{url}/batches", json={"endpoint": "/v1/embeddings"})),
    ):
        check("ErrorResponse", body)
        assert body["error"]["message"], status


async def test_upload_bodies(env: tuple[aiohttp.ClientSession, str, ManualClock]) -> None:
    http, url, _ = env
    data = jsonl(3)
    payload = {
        "filename": "x.jsonl",
        "purpose": "batch",
        "bytes": len(data),
        "mime_type": "text/jsonl",
    }
    up = await call(http, "POST", f"{url}/uploads", json=payload)
    check("Upload", up)
    form = aiohttp.FormData()
    form.add_field("data", io.BytesIO(data), filename="blob")
    part = await call(http, "POST", f"{url}/uploads/{up['id']}/parts", data=form)
    check("UploadPart", part)
    done = await call(
        http, "POST", f"{url}/uploads/{up['id']}/complete", json={"part_ids": [part["id"]]}
    )
    check("Upload", done)
    assert done["file"]["bytes"] == len(data)


async def test_auth_and_rate_limit_errors() -> None:
    async with (
        open_emulator(config=CFG, clock=ManualClock()) as running,
        aiohttp.ClientSession() as bare,
        aiohttp.ClientSession(headers=AUTH) as http,
    ):
        url = running.openai_base_url
        check("ErrorResponse", await call(bare, "GET", f"{url}/batches"))
        running.emulator.set_faults(storm_429_rate=1.0)
        body = await call(http, "GET", f"{url}/batches")
        check("ErrorResponse", body)
        assert body["error"]["code"] == "rate_limit_exceeded"


async def test_result_lines_match_batch_request_output() -> None:
    faults = Faults(line_retryable_rate=0.3, line_fatal_rate=0.2)
    clock = ManualClock()
    config = msgspec.structs.replace(CFG, faults=faults, seed=5)
    async with (
        open_emulator(config=config, clock=clock) as running,
        aiohttp.ClientSession(headers=AUTH) as http,
    ):
        url = running.openai_base_url
        file = await upload(http, url, jsonl(40))
        create = {"input_file_id": file["id"], "endpoint": "/v1/chat/completions"}
        create["completion_window"] = "24h"
        full = await call(http, "POST", f"{url}/batches", json=create)
        cut = await call(http, "POST", f"{url}/batches", json=create)
        clock.advance(30)
        await call(http, "POST", f"{url}/batches/{cut['id']}/cancel")
        running.emulator.set_faults(expire=True)
        expiring = await call(http, "POST", f"{url}/batches", json=create)
        clock.advance(90_000)
        lines: list[Any] = []
        for batch_id in (full["id"], cut["id"], expiring["id"]):
            batch = await call(http, "GET", f"{url}/batches/{batch_id}")
            for key in ("output_file_id", "error_file_id"):
                raw = await call(http, "GET", f"{url}/files/{batch[key]}/content")
                lines += [msgspec.json.decode(line) for line in raw.splitlines()]
    kinds = {(x["response"] or {}).get("status_code") or x["error"]["code"] for x in lines}
    assert kinds >= {200, 400, "batch_cancelled", "batch_expired"}
    for line in lines:
        errors = list(output_validator().iter_errors(line))
        assert not errors, errors[0].message
