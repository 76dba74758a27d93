"""The Anthropic Message Batches emulator: routes, lifecycle, faults, the official SDK, the spec.

Rules: loopback only (127.0.0.1, port 0); the emulator runs on a ``ManualClock`` moved by
``advance`` (no real waits, no sleeps); the ``anthropic`` SDK runs unchanged with
``max_retries=0``; every client and server is closed by its ``async with``; hard timeout 30 s.
Spec tests validate bodies against ``shared/specs/anthropic-openapi-unofficial-2024-11.yaml``
(found through the ``shared_dir`` fixture, skipped when absent); the one adaptation is that
``type: null`` entries (a YAML null, meaning "no type keyword") are dropped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import msgspec
import pytest
from anthropic import AsyncAnthropic

from batchpump._clock import ManualClock
from batchpump.emulator import EmulatorConfig, Faults, RateLimit, RunningEmulator, open_emulator
from batchpump.emulator._anthropic import AnthropicState, anthropic_state
from batchpump.providers.anthropic._adapter import _request_body
from batchpump.providers.anthropic._chat import chat_to_anthropic

from ..specs import assert_valid, components, validator

pytestmark = pytest.mark.timeout(30)

KEY = "sk-ant-test-not-real"
HEADERS = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
CFG = EmulatorConfig(run_seconds=100, cancel_seconds=5)
PATH = "/v1/messages/batches"


def request(cid: str, **params: Any) -> dict[str, Any]:
    base = {"model": "claude-x", "max_tokens": 16, "messages": [{"role": "user", "content": cid}]}
    return {"custom_id": cid, "params": {**base, **params}}


def requests(n: int, prefix: str = "r") -> list[dict[str, Any]]:
    return [request(f"{prefix}{i}") for i in range(n)]


class Env(msgspec.Struct):
    running: RunningEmulator
    clock: ManualClock
    http: aiohttp.ClientSession

    @property
    def url(self) -> str:
        return self.running.url + PATH

    def state(self) -> AnthropicState:
        return self.running.emulator.provider_state("anthropic", AnthropicState)

    async def call(self, method: str, path: str = "", **kw: Any) -> tuple[int, Any, Any]:
        async with self.http.request(method, self.url + path, **kw) as resp:
            raw = await resp.read()
            body = msgspec.json.decode(raw) if resp.content_type == "application/json" else raw
            return resp.status, body, resp.headers


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    clock = ManualClock()
    async with (
        open_emulator(config=CFG, clock=clock, providers=("openai", "anthropic")) as running,
        aiohttp.ClientSession(headers=HEADERS) as http,
    ):
        yield Env(running, clock, http)


def results(raw: bytes) -> dict[str, dict[str, Any]]:
    lines = [msgspec.json.decode(line) for line in raw.splitlines()]
    return {line["custom_id"]: line["result"] for line in lines}


# -- lifecycle ----------------------------------------------------------------------------------


async def test_lifecycle_counts_and_results(env: Env) -> None:
    bad = {"custom_id": "bad", "params": {"model": "claude-x", "messages": []}}
    status, batch, headers = await env.call("POST", json={"requests": [*requests(3), bad]})
    assert status == 200
    assert headers["request-id"]
    assert batch["processing_status"] == "in_progress"
    assert batch["request_counts"]["processing"] == 4
    assert batch["results_url"] is None
    status, _, _ = await env.call("GET", f"/{batch['id']}/results")
    assert status == 400
    env.clock.advance(100)
    _, done, _ = await env.call("GET", f"/{batch['id']}")
    assert done["processing_status"] == "ended"
    assert done["ended_at"]
    assert done["request_counts"] == {
        "processing": 0, "succeeded": 3, "errored": 1, "canceled": 0, "expired": 0
    }  # fmt: skip
    assert done["results_url"] == f"{env.url}/{batch['id']}/results"
    _, raw, _ = await env.call("GET", f"/{batch['id']}/results")
    lines = results(raw)
    assert lines["r0"]["type"] == "succeeded"
    assert lines["r0"]["message"]["usage"]["service_tier"] == "batch"
    assert lines["bad"]["error"]["error"] == {
        "type": "invalid_request_error", "message": "max_tokens: Field required"
    }  # fmt: skip
    stats = env.running.emulator.stats
    assert stats.batches_created == 1
    assert set(stats.billing) == {"r0", "r1", "r2"}
    assert list(stats.tags.values()) == [1]


async def test_cancel_then_delete(env: Env) -> None:
    _, batch, _ = await env.call("POST", json={"requests": requests(10)})
    env.clock.advance(30)  # 3 of 10 have run
    status, _, _ = await env.call("DELETE", f"/{batch['id']}")
    assert status == 400
    _, cancelling, _ = await env.call("POST", f"/{batch['id']}/cancel")
    assert cancelling["processing_status"] == "canceling"
    assert cancelling["cancel_initiated_at"]
    env.clock.advance(5)
    _, ended, _ = await env.call("GET", f"/{batch['id']}")
    assert ended["processing_status"] == "ended"
    assert ended["request_counts"]["canceled"] == 7
    assert ended["request_counts"]["succeeded"] == 3
    status, again, _ = await env.call("POST", f"/{batch['id']}/cancel")
    assert status == 400
    assert again["error"]["type"] == "invalid_request_error"
    status, deleted, _ = await env.call("DELETE", f"/{batch['id']}")
    assert deleted == {"id": batch["id"], "type": "message_batch_deleted"}
    status, gone, _ = await env.call("GET", f"/{batch['id']}")
    assert status == 404
    assert gone["error"]["type"] == "not_found_error"


async def test_expiry_and_line_faults(env: Env) -> None:
    env.running.emulator.set_faults(expire=True, expire_done_fraction=0.5)
    _, expiring, _ = await env.call("POST", json={"requests": requests(4, "e")})
    env.running.emulator.set_faults(Faults(line_retryable_rate=0.5, line_fatal_rate=0.5))
    _, failing, _ = await env.call("POST", json={"requests": requests(20, "f")})
    env.clock.advance(86_400)
    _, raw, _ = await env.call("GET", f"/{expiring['id']}/results")
    assert [r["type"] for r in results(raw).values()] == ["succeeded"] * 2 + ["expired"] * 2
    _, raw, _ = await env.call("GET", f"/{failing['id']}/results")
    kinds = {r["error"]["error"]["type"] for r in results(raw).values()}
    assert kinds == {"api_error", "overloaded_error", "invalid_request_error"}


async def test_archived_results(env: Env) -> None:
    _, batch, _ = await env.call("POST", json={"requests": requests(1)})
    env.clock.advance(29 * 86_400)
    _, done, _ = await env.call("GET", f"/{batch['id']}")
    assert done["archived_at"] is not None
    status, body, _ = await env.call("GET", f"/{batch['id']}/results")
    assert status == 404
    assert body["error"]["type"] == "not_found_error"


async def test_list_pages_both_ways(env: Env) -> None:
    ids = [
        (await env.call("POST", json={"requests": requests(1, f"b{i}")}))[1]["id"] for i in range(5)
    ]
    newest_first = ids[::-1]
    _, page, _ = await env.call("GET", params={"limit": "2"})
    assert [b["id"] for b in page["data"]] == newest_first[:2]
    assert page["has_more"]
    assert (page["first_id"], page["last_id"]) == (newest_first[0], newest_first[1])
    _, page, _ = await env.call("GET", params={"limit": "2", "after_id": newest_first[3]})
    assert [b["id"] for b in page["data"]] == newest_first[4:]
    assert not page["has_more"]
    _, page, _ = await env.call("GET", params={"limit": "2", "before_id": newest_first[3]})
    assert [b["id"] for b in page["data"]] == newest_first[1:3]
    assert page["has_more"]
    status, _, _ = await env.call("GET", params={"limit": "0"})
    assert status == 400


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"requests": [request("a"), request("a")]}, "duplicate custom_id"),
        ({"requests": [request("a b")]}, "String should match pattern"),
        ({"requests": []}, "expected 1 to"),
        ({"requests": requests(1), "extra": 1}, "Extra inputs"),
        ({"requests": [{"custom_id": "a", "params": [1]}]}, "valid dictionary"),
    ],
)
async def test_create_rejects(env: Env, body: dict[str, Any], needle: str) -> None:
    status, error, _ = await env.call("POST", json=body)
    assert status == 400
    assert error["type"] == "error"
    assert error["error"]["type"] == "invalid_request_error"
    assert needle in error["error"]["message"]
    assert env.running.emulator.stats.batches_created == 0


async def test_auth_and_version_headers(env: Env) -> None:
    async with aiohttp.ClientSession() as bare:
        async with bare.get(env.url, headers={"anthropic-version": "2023-06-01"}) as resp:
            body = await resp.json()
        assert resp.status == 401
        assert body["error"]["type"] == "authentication_error"
        async with bare.get(env.url, headers={"x-api-key": KEY}) as resp:
            assert resp.status == 400
    assert KEY not in repr(env.running.emulator.stats.snapshot())


async def test_429_uses_anthropic_shape_and_retry_after(env: Env) -> None:
    env.running.emulator.set_faults(storm_429_rate=1.0, retry_after_seconds=7)
    status, body, headers = await env.call("GET")
    assert status == 429
    assert body["type"] == "error"
    assert body["error"]["type"] == "rate_limit_error"
    assert headers["retry-after"] == "7"
    assert "retry-after-ms" not in headers
    env.running.emulator.set_faults(Faults(rate_limits={"poll": RateLimit(requests=1)}))
    assert (await env.call("GET"))[0] == 200
    status, body, headers = await env.call("GET")
    assert status == 429
    assert headers["anthropic-ratelimit-requests-limit"] == "1"
    env.running.emulator.set_faults(Faults(error_5xx_rate=1.0))
    status, body, _ = await env.call("GET")
    assert status >= 500
    assert body["error"]["type"] == "api_error"


# -- the official SDK ---------------------------------------------------------------------------


async def test_official_sdk_unchanged(env: Env) -> None:
    async with AsyncAnthropic(
        base_url=env.running.anthropic_base_url, api_key=KEY, max_retries=0
    ) as client:
        batch = await client.messages.batches.create(requests=requests(3))  # type: ignore[arg-type]
        assert batch.processing_status == "in_progress"
        assert (await client.messages.batches.retrieve(batch.id)).id == batch.id
        other = await client.messages.batches.create(requests=requests(2, "o"))  # type: ignore[arg-type]
        canceled = await client.messages.batches.cancel(other.id)
        assert canceled.processing_status == "canceling"
        listed = [b.id async for b in client.messages.batches.list(limit=1)]
        assert listed == [other.id, batch.id]
        env.clock.advance(1_000)
        seen = {
            r.custom_id: r.result.type
            async for r in await client.messages.batches.results(batch.id)
        }
        assert seen == {"r0": "succeeded", "r1": "succeeded", "r2": "succeeded"}
        canceled_results = await client.messages.batches.results(other.id)
        assert {r.result.type async for r in canceled_results} == {"canceled"}
        deleted = await client.messages.batches.delete(other.id)
        assert deleted.type == "message_batch_deleted"
        with pytest.raises(anthropic.NotFoundError):
            await client.messages.batches.retrieve(other.id)


async def test_state_helper_is_reachable(env: Env) -> None:
    _, batch, _ = await env.call("POST", json={"requests": requests(1)})
    env.clock.advance(1_000)
    env.state().archive(batch["id"])
    assert (await env.call("GET", f"/{batch['id']}/results"))[0] == 404
    assert anthropic_state is not None


# -- the spec -----------------------------------------------------------------------------------


def check(shared_dir: Path, name: str, body: Any) -> None:
    spec = shared_dir / "specs" / "anthropic-openapi-unofficial-2024-11.yaml"
    assert_valid(validator(components(spec, "null-type"), name), name, body)


async def test_bodies_match_the_spec(env: Env, shared_dir: Path, tmp_path: Path) -> None:
    shard = tmp_path / "shard.jsonl"
    turns = [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}]
    chat = {"model": "m", "messages": turns, "stop": "END", "temperature": 0.5, "user": "u"}
    lines = [*requests(3), {"custom_id": "conv", "params": chat_to_anthropic(chat)}]
    shard.write_bytes(b"".join(msgspec.json.encode(line) + b"\n" for line in lines))
    sent = b"".join([chunk async for chunk in _request_body(str(shard))])
    check(shared_dir, "BetaCreateMessageBatchParams", msgspec.json.decode(sent))
    bad = {"custom_id": "bad", "params": {"model": "claude-x", "max_tokens": 0, "messages": []}}
    created = msgspec.json.decode(sent)
    created["requests"].append(bad)
    _, batch, _ = await env.call("POST", json=created)
    check(shared_dir, "BetaMessageBatch", batch)
    _, cancelled, _ = await env.call(
        "POST", f"/{(await env.call('POST', json={'requests': requests(2, 'x')}))[1]['id']}/cancel"
    )
    check(shared_dir, "BetaMessageBatch", cancelled)
    env.clock.advance(1_000)
    _, page, _ = await env.call("GET", params={"limit": "5"})
    check(shared_dir, "BetaListResponse_MessageBatch_", page)
    _, raw, _ = await env.call("GET", f"/{batch['id']}/results")
    for line in raw.splitlines():
        check(shared_dir, "BetaMessageBatchIndividualResponse", msgspec.json.decode(line))
    _, raw, _ = await env.call("GET", f"/{cancelled['id']}/results")
    for line in raw.splitlines():
        check(shared_dir, "BetaMessageBatchIndividualResponse", msgspec.json.decode(line))
    for error in (await env.call("GET", "/msgbatch_nope"), await env.call("POST", json={})):
        assert error[0] in (400, 404)
        check(shared_dir, "BetaErrorResponse", error[1])
