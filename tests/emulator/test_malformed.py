"""Malformed requests get the provider's own 4xx error body, never a 500: broken multipart
uploads (no boundary, a part cut short, garbage) and broken JSON, on every upload and create
route. Loopback only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
import pytest

from batchpump.emulator import RunningEmulator, open_emulator
from batchpump.emulator._command import PROVIDER_ORDER

pytestmark = pytest.mark.timeout(30)

HEADERS = {
    "Authorization": "Bearer sk-test",
    "x-api-key": "k-test",
    "anthropic-version": "2023-06-01",
    "api-key": "k-test",
}
MULTIPART = [
    (b"garbage", "multipart/form-data"),
    (b"--xx\r\nbad\r\n", "multipart/form-data; boundary=xx"),
    (
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\nabc',
        "multipart/form-data; boundary=b",
    ),
]


@pytest.fixture
async def running() -> AsyncIterator[RunningEmulator]:
    async with open_emulator(providers=PROVIDER_ORDER) as served:
        yield served


async def post(http: aiohttp.ClientSession, url: str, body: bytes, ctype: str) -> tuple[int, Any]:
    async with http.post(url, data=body, headers={**HEADERS, "Content-Type": ctype}) as resp:
        raw = await resp.read()
        return resp.status, msgspec.json.decode(raw) if raw else None


async def test_malformed_multipart_is_a_provider_400(running: RunningEmulator) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{running.url}/api/v1/beta/directories", json={"name": "d"}, headers=HEADERS
        ) as resp:
            directory = (await resp.json())["id"]
        # Each route, and the key of its provider's error body.
        routes = {
            f"{running.openai_base_url}/files": "error",
            f"{running.openai_base_url}/uploads/upload_x/parts": "error",
            f"{running.url}/openai/files?api-version=2024-10-21": "error",
            f"{running.together_base_url}/files/upload": "error",
            f"{running.together_base_url}/files": "error",
            f"{running.url}/api/v1/beta/directories/{directory}/files/upload": "detail",
        }
        for url, key in routes.items():
            for body, ctype in MULTIPART:
                status, answer = await post(http, url, body, ctype)
                assert 400 <= status < 500, (url, body, status, answer)
                assert answer[key], (url, answer)


async def test_malformed_json_is_a_provider_400(running: RunningEmulator) -> None:
    creates = [
        f"{running.openai_base_url}/batches",
        f"{running.together_base_url}/batches",
        f"{running.url}/v1/messages/batches",
        f"{running.url}/api/v2/batches",
        f"{running.telus_base_url}/v1/projects/8d2c8a4e-5d4f-4a8e-9a61-0f0c8f3c9a01/jobs",
    ]
    async with aiohttp.ClientSession() as http:
        for url in creates:
            for body in (b"{nope", b"[]", b"null", b""):
                status, _ = await post(http, url, body, "application/json")
                assert 400 <= status < 500, (url, body, status)
    assert not [
        (route, status) for (route, status) in running.emulator.stats.requests if status >= 500
    ]
