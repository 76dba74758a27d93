"""The control plane (``/_emulator/*`` on the API's port) and its Python twins: reset, clock,
scripted rules, the request journal and the verdict.

Time is a ``ManualClock`` (the emulator's own clock is moved with ``advance``); loopback only.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import anyio
import msgspec
import pytest

from batchpump._clock import ManualClock
from batchpump.emulator import (
    EmulatorConfig,
    Faults,
    LineOutcome,
    Match,
    Respond,
    Rule,
    RunningEmulator,
    load_rules,
    open_emulator,
)

pytestmark = pytest.mark.timeout(30)

OPENAI = {"Authorization": "Bearer sk-test-not-a-real-key"}
ANTHROPIC = {"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01"}
CFG = EmulatorConfig(validate_seconds=10, run_seconds=100, finalize_seconds=10)
MSG = [{"role": "user", "content": "hi"}]


class Env(msgspec.Struct):
    running: RunningEmulator
    clock: ManualClock
    http: aiohttp.ClientSession

    async def call(
        self, method: str, path: str, *, headers: dict[str, str] | None = None, **kw: Any
    ) -> tuple[int, Any, Any]:
        async with self.http.request(
            method, self.running.url + path, headers=headers or OPENAI, **kw
        ) as resp:
            raw = await resp.read()
            body = msgspec.json.decode(raw) if resp.content_type == "application/json" else raw
            return resp.status, body, resp.headers

    async def control(self, method: str, what: str, body: Any = None) -> Any:
        status, answer, _ = await self.call(method, f"/_emulator/{what}", json=body)
        assert status == 200, answer
        return answer

    async def create(self, n: int = 3, tag: str = "t1") -> tuple[int, Any]:
        lines = [
            msgspec.json.encode(
                {
                    "custom_id": f"r{i}",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {"model": "gpt-4o-mini", "messages": MSG},
                }
            )
            for i in range(n)
        ]
        form = aiohttp.FormData()
        form.add_field("purpose", "batch")
        form.add_field("file", io.BytesIO(b"\n".join(lines) + b"\n"), filename="in.jsonl")
        status, file, _ = await self.call("POST", "/v1/files", data=form)
        assert status == 200, file
        payload = {
            "input_file_id": file["id"],
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
            "metadata": {"batchpump_shard": tag},
        }
        status, batch, _ = await self.call("POST", "/v1/batches", json=payload)
        return status, batch


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    clock = ManualClock()
    providers = ("openai", "anthropic", "together")
    async with (
        open_emulator(config=CFG, clock=clock, providers=providers) as running,
        aiohttp.ClientSession() as http,
    ):
        yield Env(running, clock, http)


async def until(condition: Callable[[], bool]) -> None:
    """Let the server run until ``condition()`` holds (bounded: fails after 5 s)."""
    with anyio.fail_after(5):
        while not condition():  # noqa: ASYNC110 - polls a counter, waits on no timing
            await anyio.sleep(0.005)


# -- reset ------------------------------------------------------------------------------------


async def test_reset_over_http_empties_stores_and_keeps_or_replaces_the_config(env: Env) -> None:
    await env.create()
    env.running.emulator.script([{"match": {"path": "/nowhere"}, "reset": True}])
    await env.control("POST", "reset")
    _, page, _ = await env.call("GET", "/v1/batches")
    assert page["data"] == []
    verdict = await env.control("GET", "verdict")
    assert verdict["batches_created"] == 0
    assert verdict["requests"] == 1  # the list above
    assert (await env.control("GET", "script"))["rules"] == []
    assert env.running.emulator.config == CFG
    new = msgspec.to_builtins(EmulatorConfig(run_seconds=5, faults=Faults(storm_429_rate=1.0)))
    answer = await env.control("POST", "reset", new)
    assert answer["config"]["faults"]["storm_429_rate"] == 1.0
    assert env.running.emulator.config.run_seconds == 5
    status, body, _ = await env.call("POST", "/_emulator/reset", data=b"{nope")
    assert status == 400
    assert "EmulatorConfig" in body["error"]["message"]


async def test_reset_in_python(env: Env) -> None:
    _, first = await env.create()
    emu = env.running.emulator
    emu.reset()
    assert emu.stats.batches_created == 0
    assert len(emu.requests) == 0
    _, again = await env.create()
    assert again["id"] == first["id"]  # ids restart from the seed


# -- clock ------------------------------------------------------------------------------------


async def test_clock_advance_moves_batches_over_http(env: Env) -> None:
    _, batch = await env.create()
    before = await env.control("GET", "clock")
    assert before["time_scale"] == 1.0
    after = await env.control("POST", "clock", {"advance": 200})
    assert after["now"] == pytest.approx(before["now"] + 200)
    assert after["advanced"] == 200
    _, got, _ = await env.call("GET", f"/v1/batches/{batch['id']}")
    assert got["status"] == "completed"
    scaled = await env.control("POST", "clock", {"time_scale": 50})
    assert scaled["time_scale"] == 50
    status, body, _ = await env.call("POST", "/_emulator/clock", json={"advance": -1})
    assert status == 400
    assert "forward" in body["error"]["message"]
    status, _, _ = await env.call("POST", "/_emulator/clock", json={"speed": 2})
    assert status == 400


async def test_advance_in_python_refills_rate_buckets(env: Env) -> None:
    from batchpump.emulator import RateLimit

    emu = env.running.emulator
    emu.set_faults(rate_limits={"poll": RateLimit(requests=1, per_seconds=60)})
    assert (await env.call("GET", "/v1/batches"))[0] == 200
    assert (await env.call("GET", "/v1/batches"))[0] == 429
    emu.advance(60)
    assert (await env.call("GET", "/v1/batches"))[0] == 200


async def test_time_scale_speeds_up_emulated_time() -> None:
    from batchpump._clock import ScaledClock

    async with open_emulator(clock=ScaledClock(1.0)) as running:
        emu = running.emulator
        emu.set_time_scale(1_000_000)
        start = emu.emulated_clock.monotonic()
        await emu.emulated_clock.sleep(3600)  # an emulated hour
        assert emu.emulated_clock.monotonic() - start >= 3600
        assert emu.time_scale == 1_000_000


# -- scripted rules ---------------------------------------------------------------------------


async def test_scripted_respond_once_then_normal(env: Env) -> None:
    rules = [
        {
            "match": {"method": "POST", "path": "/v1/batches", "provider": "openai"},
            "times": 1,
            "respond": {
                "status": 503,
                "headers": {"retry-after": "7"},
                "body": {"error": {"message": "scripted", "type": "server_error"}},
            },
        }
    ]
    added = await env.control("POST", "script", rules)
    assert added["added"] == 1
    status, body = await env.create()
    assert status == 503
    assert body["error"]["message"] == "scripted"
    assert (await env.control("GET", "script"))["rules"] == []
    status, _ = await env.create()
    assert status == 200


async def test_script_get_shows_what_is_left_and_delete_clears(env: Env) -> None:
    rule = {"match": {"path": "/v1/batches/*"}, "times": 3, "respond": {"status": 500}}
    await env.control("POST", "script", [rule, {"match": {"method": "GET"}, "delay": 5}])
    await env.call("GET", "/v1/batches/batch_x")
    left = (await env.control("GET", "script"))["rules"]
    assert [r["times"] for r in left] == [2, 1]
    assert (await env.control("DELETE", "script"))["cleared"] == 2
    assert (await env.control("GET", "script"))["rules"] == []
    status, body, _ = await env.call(
        "POST", "/_emulator/script", json=[{"reset": True, "delay": 1}]
    )
    assert status == 400
    assert "exactly one action" in body["error"]["message"]


async def test_scripted_delay_waits_for_the_clock(env: Env) -> None:
    emu = env.running.emulator
    emu.script([Rule(match=Match(method="GET", path="/v1/batches"), delay=30)])
    result: list[int] = []
    async with anyio.create_task_group() as tg:

        async def call() -> None:
            result.append((await env.call("GET", "/v1/batches"))[0])

        tg.start_soon(call)
        await until(lambda: emu.raw_stats.faults["scripted"] == 1)
        assert result == []
        emu.advance(30)
    assert result == [200]


async def test_scripted_reset_and_truncate(env: Env) -> None:
    # (POST: aiohttp's client retries a GET once on a dropped connection by itself.)
    env.running.emulator.script(
        [
            {"match": {"method": "POST", "path": "/v1/batches"}, "reset": True},
            {"match": {"method": "GET", "path": "/v1/batches"}, "truncate": True},
        ]
    )
    with pytest.raises(aiohttp.ClientError):
        await env.create()
    assert env.running.emulator.stats.batches_created == 0
    with pytest.raises(aiohttp.ClientPayloadError):
        await env.call("GET", "/v1/batches")
    assert (await env.call("GET", "/v1/batches"))[0] == 200


async def test_scripted_late_create(env: Env) -> None:
    emu = env.running.emulator
    emu.script([{"match": {"route": "openai.batches.create"}, "late_create": 45}])
    start = emu.now()
    answer: list[Any] = []
    async with anyio.create_task_group() as tg:

        async def create() -> None:
            answer.append(await env.create())

        tg.start_soon(create)
        await until(lambda: emu.raw_stats.faults["scripted"] == 1)
        assert emu.raw_stats.batches_created == 0
        emu.advance(45)
    [(status, batch)] = answer
    assert status == 200
    assert batch["created_at"] == int(start + 45)


async def test_scripted_outcomes_per_custom_id(env: Env) -> None:
    error = {"message": "policy", "type": "invalid_request_error", "code": "content_policy"}
    env.running.emulator.script(
        [Rule(outcome=LineOutcome(custom_ids=["r1"], error=error, status=400))]
    )
    _, batch = await env.create(n=3)
    env.clock.advance(200)
    _, done, _ = await env.call("GET", f"/v1/batches/{batch['id']}")
    assert done["request_counts"] == {"total": 3, "completed": 2, "failed": 1}
    _, raw, _ = await env.call("GET", f"/v1/files/{done['error_file_id']}/content")
    [line] = [msgspec.json.decode(x) for x in raw.splitlines()]
    assert line["custom_id"] == "r1"
    assert line["response"]["status_code"] == 400
    assert line["response"]["body"]["error"] == error
    # Anthropic: the scripted error object becomes the request's error.
    env.running.emulator.script([{"outcome": {"custom_ids": ["a0"], "error": {"type": "x"}}}])
    params = {"model": "m", "max_tokens": 1, "messages": MSG}
    reqs = [{"custom_id": f"a{i}", "params": params} for i in range(2)]
    _, ab, _ = await env.call(
        "POST", "/v1/messages/batches", json={"requests": reqs}, headers=ANTHROPIC
    )
    env.clock.advance(500)
    _, res, _ = await env.call("GET", f"/v1/messages/batches/{ab['id']}/results", headers=ANTHROPIC)
    got = {x["custom_id"]: x["result"] for x in map(msgspec.json.decode, res.splitlines())}
    assert got["a0"] == {"type": "errored", "error": {"type": "error", "error": {"type": "x"}}}
    assert got["a1"]["type"] == "succeeded"


def test_rules_load_from_json_and_python_alike() -> None:
    text = '[{"match": {"method": "POST"}, "times": null, "respond": {"status": 429}}]'
    [rule] = load_rules(text)
    assert rule == Rule(match=Match(method="POST"), times=None, respond=Respond(status=429))
    with pytest.raises(ValueError, match="bad script"):
        load_rules('[{"respond": {"status": 1}, "unknown": 1}]')
    with pytest.raises(ValueError, match="exactly one action"):
        Rule()


# -- journal and verdict ----------------------------------------------------------------------


async def test_request_journal(env: Env) -> None:
    env.running.emulator.set_faults(storm_429_rate=0.0)
    _, batch = await env.create(tag="shard-7")
    await env.call("GET", f"/v1/batches/{batch['id']}")
    env.running.emulator.script([{"match": {"method": "GET"}, "respond": {"status": 502}}])
    await env.call("GET", f"/v1/batches/{batch['id']}")
    journal = (await env.control("GET", "requests"))["requests"]
    assert [(r["method"], r["route"], r["status"]) for r in journal] == [
        ("POST", "openai.files.create", 200),
        ("POST", "openai.batches.create", 200),
        ("GET", "openai.batches.retrieve", 200),
        ("GET", "openai.batches.retrieve", 502),
    ]
    assert journal[1]["tag"] == "shard-7"
    assert journal[2]["tag"] == batch["id"]
    assert journal[3]["fault"] == "script:respond"
    assert all(r["provider"] == "openai" for r in journal)
    last = (await env.control("GET", "requests?limit=1"))["requests"]
    assert last == journal[-1:]
    none = (await env.control("GET", "requests?provider=anthropic"))["requests"]
    assert none == []


async def test_verdict_reports_duplicates_double_billing_and_429s(env: Env) -> None:
    await env.create(tag="same")
    await env.create(tag="same")
    env.running.emulator.set_faults(storm_429_rate=1.0)
    await env.call("GET", "/v1/batches")
    env.running.emulator.set_faults(storm_429_rate=0.0)
    env.clock.advance(200)
    verdict = await env.control("GET", "verdict")
    assert verdict["ok"] is False
    assert verdict["creates_per_tag"] == {"same": 2}
    assert verdict["tags_created_twice"] == {"same": 2}
    assert verdict["lines_billed_twice"] == {"r0": 2, "r1": 2, "r2": 2}
    assert verdict["share_429"] == pytest.approx(1 / 5)
    assert verdict["requests_per_route"]["openai.batches.create"] == 2
    assert env.running.emulator.verdict()["tags_created_twice"] == {"same": 2}
