"""HttpClient against small aiohttp.web apps.

Rules: loopback only (127.0.0.1, port 0 via aiohttp's TestServer); every wait goes through a
ManualClock or a zero-wait RetryPolicy, so no test sleeps; each test has a hard timeout; every
client and server is closed (filterwarnings=error catches leaks).
"""

from __future__ import annotations

import hashlib
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import anyio
import pytest
from aiohttp import BodyPartReader, web
from aiohttp.test_utils import TestServer

from batchpump._clock import ManualClock
from batchpump._config import Limits, RetryPolicy
from batchpump._errors import (
    AuthenticationError,
    BadRequestError,
    ClosedError,
    ConnectError,
    ProtocolError,
    ProviderUnavailableError,
    RateLimitedError,
    TransportTimeoutError,
)
from batchpump._http import HttpClient

pytestmark = pytest.mark.timeout(20)

SECRET = "sk-test-SECRET-abcdef0123456789"
Serve = Callable[[web.Application], Awaitable[str]]


class SignalClock:
    """A ManualClock that records each sleep and signals when one starts."""

    def __init__(self) -> None:
        self.inner = ManualClock()
        self.sleeps: list[float] = []
        self.sleeping = anyio.Event()

    def time(self) -> float:
        return self.inner.time()

    def monotonic(self) -> float:
        return self.inner.monotonic()

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.sleeping.set()
        await self.inner.sleep(seconds)


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    servers: list[TestServer] = []

    async def start(app: web.Application) -> str:
        server = TestServer(app, host="127.0.0.1", port=0)
        await server.start_server()
        servers.append(server)
        return str(server.make_url("/v1"))

    yield start
    for server in servers:
        await server.close()


def make_client(
    base_url: str,
    *,
    retry: RetryPolicy | None = None,
    clock: SignalClock | ManualClock | None = None,
) -> HttpClient:
    return HttpClient(
        provider="testprov",
        base_url=base_url,
        headers={"Authorization": f"Bearer {SECRET}"},
        secrets=[SECRET],
        limits=Limits(),
        retry=retry or RetryPolicy.no_wait(attempts=4),
        clock=clock or ManualClock(),
    )


def app_with(
    path: str, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.Application:
    app = web.Application()
    app.router.add_route("*", path, handler)
    return app


async def test_retries_5xx_then_succeeds(serve: Serve) -> None:
    calls = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        if calls < 3:
            return web.json_response(
                {"error": {"message": "boom", "type": "server_error"}}, status=503
            )
        return web.json_response({"ok": True}, headers={"x-request-id": "req_1"})

    async with make_client(await serve(app_with("/v1/thing", handler))) as client:
        resp = await client.request("GET", "/thing", cls="poll")
        stats = client.statistics()
    assert resp.status == 200
    assert resp.body == b'{"ok": true}'
    assert resp.request_id == "req_1"
    assert calls == 3
    assert (stats.requests, stats.retries, stats.server_errors) == (3, 2, 2)


async def test_429_retry_after_ms_pauses_the_class_on_the_clock(serve: Serve) -> None:
    calls = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            return web.json_response(
                {
                    "error": {
                        "message": "slow down",
                        "type": "requests",
                        "code": "rate_limit_exceeded",
                    }
                },
                status=429,
                headers={"retry-after-ms": "1500"},
            )
        return web.json_response({"ok": True})

    clock = SignalClock()
    async with make_client(await serve(app_with("/v1/b", handler)), clock=clock) as client:
        result: list[int] = []
        async with anyio.create_task_group() as tg:

            async def call() -> None:
                result.append((await client.request("GET", "/b", cls="poll")).status)

            tg.start_soon(call)
            await clock.sleeping.wait()
            gate = client.gate("poll").statistics()
            assert gate.paused_until == 1.5
            assert gate.rate_limited == 1
            assert result == []
            clock.inner.advance(1.5)
        assert result == [200]
        assert clock.sleeps == [1.5]
        assert client.statistics().rate_limited == 1


async def test_retry_after_beyond_the_rate_limit_bound_raises_at_once(serve: Serve) -> None:
    """Rate-limit waits are bounded by ``rate_limit_timeout`` (not by ``attempts``)."""

    async def handler(request: web.Request) -> web.Response:
        return web.json_response(
            {"error": {"message": "later", "type": "requests"}},
            status=429,
            headers={"retry-after": "600"},
        )

    clock = SignalClock()
    policy = RetryPolicy(
        attempts=5, rate_limit_timeout=60.0, wait_initial=0.0, wait_max=0.0, wait_jitter=0.0
    )
    async with make_client(
        await serve(app_with("/v1/b", handler)), retry=policy, clock=clock
    ) as client:
        with pytest.raises(RateLimitedError) as info:
            await client.request("GET", "/b", cls="poll")
    assert info.value.retry_after == 600.0
    assert clock.sleeps == []


async def test_should_retry_false_is_obeyed(serve: Serve) -> None:
    calls = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        return web.json_response(
            {"error": {"message": "nope", "type": "server_error"}},
            status=503,
            headers={"x-should-retry": "false"},
        )

    async with make_client(await serve(app_with("/v1/b", handler))) as client:
        with pytest.raises(ProviderUnavailableError) as info:
            await client.request("GET", "/b", cls="poll")
    assert calls == 1
    assert info.value.status == 503
    assert info.value.code == "server_error"


async def test_400_is_not_retried_and_carries_the_details(serve: Serve) -> None:
    calls = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        body = {
            "error": {
                "message": "Missing required parameter: 'input_file_id'.",
                "type": "invalid_request_error",
                "param": "input_file_id",
                "code": "missing_required_parameter",
            }
        }
        return web.json_response(body, status=400, headers={"x-request-id": "req_400"})

    async with make_client(await serve(app_with("/v1/batches", handler))) as client:
        with pytest.raises(BadRequestError) as info:
            await client.request("POST", "/batches", cls="create", json=b"{}")
    exc = info.value
    assert calls == 1
    assert exc.code == "missing_required_parameter"
    assert exc.request_id == "req_400"
    assert "input_file_id" in str(exc)


async def test_non_idempotent_post_not_retried_on_5xx(serve: Serve) -> None:
    calls = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        return web.json_response({"error": {"message": "oops", "type": "server_error"}}, status=500)

    async with make_client(await serve(app_with("/v1/batches", handler))) as client:
        with pytest.raises(ProviderUnavailableError):
            await client.request("POST", "/batches", cls="create", json=b"{}", idempotent=False)
    assert calls == 1


async def test_reset_after_send_retried_only_when_idempotent(serve: Serve) -> None:
    calls = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        await request.read()
        assert request.transport is not None
        request.transport.close()
        return web.Response(status=200)

    url = await serve(app_with("/v1/batches", handler))
    async with make_client(url) as client:
        with pytest.raises(ConnectError):
            await client.request("POST", "/batches", cls="create", json=b"{}", idempotent=False)
        assert calls == 1
        with pytest.raises(ConnectError):
            await client.request("GET", "/batches", cls="poll")
        # aiohttp itself re-sends an idempotent request once on a reused, dropped connection
        assert calls >= 1 + 4
        assert client.statistics().requests == 1 + 4


async def test_non_idempotent_post_retried_after_429(serve: Serve) -> None:
    calls = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            return web.json_response({"error": {"message": "slow", "type": "requests"}}, status=429)
        return web.json_response({"id": "batch_1"})

    clock = ManualClock()
    async with make_client(await serve(app_with("/v1/batches", handler)), clock=clock) as client:
        resp = await client.request("POST", "/batches", cls="create", json=b"{}", idempotent=False)
    assert resp.status == 200
    assert calls == 2


async def test_connection_refused_is_retried_even_for_a_create() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with make_client(f"http://127.0.0.1:{port}/v1", retry=RetryPolicy.no_wait(3)) as client:
        with pytest.raises(ConnectError) as info:
            await client.request("POST", "/batches", cls="create", json=b"{}", idempotent=False)
        assert client.statistics().requests == 3
        assert client.statistics().transport_errors == 3
    assert info.value.__cause__ is not None


async def test_truncated_body_is_a_protocol_error(serve: Serve) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.content_length = 1000
        await resp.prepare(request)
        await resp.write(b'{"data": [1, 2')
        assert request.transport is not None
        request.transport.close()
        return resp

    async with make_client(
        await serve(app_with("/v1/b", handler)), retry=RetryPolicy.no_wait(2)
    ) as client:
        with pytest.raises(ProtocolError):
            await client.request("GET", "/b", cls="poll")
        assert client.statistics().requests == 2


async def test_html_502_maps_to_unavailable_with_an_excerpt(serve: Serve) -> None:
    page = "<html><body><h1>502 Bad Gateway</h1>cloudflare</body></html>"

    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=502, text=page, content_type="text/html")

    async with make_client(
        await serve(app_with("/v1/b", handler)), retry=RetryPolicy.no_wait(1)
    ) as client:
        with pytest.raises(ProviderUnavailableError) as info:
            await client.request("GET", "/b", cls="poll")
    assert info.value.status == 502
    assert "502 Bad Gateway" in info.value.body
    assert "non-JSON" in str(info.value)


async def test_html_200_where_json_expected_is_a_protocol_error(serve: Serve) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=200, text="<html>login</html>", content_type="text/html")

    async with make_client(
        await serve(app_with("/v1/b", handler)), retry=RetryPolicy.no_wait(1)
    ) as client:
        with pytest.raises(ProtocolError, match="not JSON"):
            await client.request("GET", "/b", cls="poll")


async def test_timeout_is_a_transport_timeout(serve: Serve) -> None:
    release = anyio.Event()

    async def handler(request: web.Request) -> web.Response:
        await release.wait()
        return web.json_response({})

    policy = RetryPolicy(attempts=1, request_timeout=0.2)
    async with make_client(await serve(app_with("/v1/b", handler)), retry=policy) as client:
        try:
            with pytest.raises(TransportTimeoutError) as info:
                await client.request("GET", "/b", cls="poll")
        finally:
            release.set()
    assert isinstance(info.value, TimeoutError)


async def test_the_key_never_leaks(serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    async def handler(request: web.Request) -> web.Response:
        auth = request.headers["Authorization"]
        assert SECRET in auth
        body = {
            "error": {
                "message": f"Incorrect API key provided: {auth}",
                "type": "invalid_request_error",
            }
        }
        return web.json_response(body, status=401 if request.method == "GET" else 500)

    caplog.set_level(logging.DEBUG, logger="batchpump")
    url = await serve(app_with("/v1/b", handler))
    client = make_client(url, retry=RetryPolicy.no_wait(2))
    errors: list[Exception] = []
    async with client:
        for method in ("GET", "POST"):
            try:
                await client.request(method, "/b", cls="poll")
            except Exception as exc:
                errors.append(exc)
        assert SECRET not in repr(client)
    assert len(errors) == 2
    for error in errors:
        assert "[REDACTED]" in str(error)
        for text in (str(error), repr(error), getattr(error, "body", "")):
            assert SECRET not in text
    assert caplog.records, "expected DEBUG/WARNING records"
    for record in caplog.records:
        assert SECRET not in record.getMessage()


async def test_stream_lines_across_chunks_and_a_last_line_without_newline(serve: Serve) -> None:
    lines = [b'{"custom_id": "%d", "x": "%s"}' % (i, b"y" * (i * 37 % 300)) for i in range(500)]
    payload = b"\n".join(lines[:250]) + b"\r\n" + b"\n".join(lines[250:])

    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        for start in range(0, len(payload), 777):
            await resp.write(payload[start : start + 777])
        await resp.write_eof()
        return resp

    async with make_client(await serve(app_with("/v1/files/f/content", handler))) as client:
        async with client.stream("GET", "/files/f/content") as stream:
            assert stream.status == 200
            got = [line async for line in stream.iter_lines()]
        assert client.statistics().bytes_received == len(payload)
    assert got == lines


async def test_stream_truncated_raises_protocol_error(serve: Serve) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.content_length = 10_000
        await resp.prepare(request)
        await resp.write(b'{"a": 1}\n{"b"')
        assert request.transport is not None
        request.transport.close()
        return resp

    async with make_client(await serve(app_with("/v1/f", handler))) as client:
        got: list[bytes] = []

        async def read_all() -> None:
            async with client.stream("GET", "/f") as stream:
                got.extend([line async for line in stream.iter_lines()])

        with pytest.raises(ProtocolError):
            await read_all()
    assert got == []  # the comprehension never finished: nothing half-read is handed out


async def test_stream_retries_before_the_first_byte(serve: Serve) -> None:
    calls = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            return web.Response(status=503, text="busy")
        return web.Response(body=b"a\nb\n")

    client = make_client(await serve(app_with("/v1/f", handler)))
    async with client, client.stream("GET", "/f") as stream:
        got = [line async for line in stream.iter_lines()]
    assert got == [b"a", b"b"]
    assert calls == 2


async def test_multipart_upload_streams_a_multi_megabyte_file(serve: Serve, tmp_path: Path) -> None:
    data = b"".join(b'{"custom_id": "r%07d"}\n' % i for i in range(250_000))  # ~6 MB
    path = tmp_path / "shard.jsonl"
    path.write_bytes(data)
    seen: dict[str, object] = {}

    async def handler(request: web.Request) -> web.Response:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            assert isinstance(part, BodyPartReader)
            if part.filename is None:
                seen[part.name or ""] = (await part.read()).decode()
                continue
            digest = hashlib.sha256()
            size = 0
            while chunk := await part.read_chunk(256 * 1024):
                digest.update(chunk)
                size += len(chunk)
            seen["file"] = (part.name, part.filename, size, digest.hexdigest())
        return web.json_response({"id": "file-1"})

    async with make_client(await serve(app_with("/v1/files", handler))) as client:
        resp = await client.upload_file(
            str(path),
            "/files",
            fields={"purpose": "batch"},
            file_field="file",
            filename="shard.jsonl",
            length=len(data),
            content_type="application/jsonl",
        )
        part = await client.upload_file(
            str(path), "/files", fields={}, file_field="data", filename="p", offset=100, length=1000
        )
        sent = client.statistics().bytes_sent
    assert resp.body == b'{"id": "file-1"}'
    assert part.status == 200
    assert seen["purpose"] == "batch"
    assert seen["file"] == ("data", "p", 1000, hashlib.sha256(data[100:1100]).hexdigest())
    assert sent == len(data) + 1000


async def test_upload_retry_reopens_the_file(serve: Serve, tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_bytes(b"x" * 300_000)
    sizes: list[int] = []

    async def handler(request: web.Request) -> web.Response:
        body = await request.read()
        sizes.append(len(body))
        if len(sizes) == 1:
            return web.Response(status=502, text="bad gateway")
        return web.json_response({"id": "file-2"})

    async with make_client(await serve(app_with("/v1/files", handler))) as client:
        resp = await client.upload_file(
            str(path),
            "/files",
            fields={"purpose": "batch"},
            file_field="file",
            filename="s.jsonl",
            length=300_000,
        )
    assert resp.status == 200
    assert len(sizes) == 2
    assert sizes[0] == sizes[1] > 300_000


async def test_closed_client_refuses_calls() -> None:
    client = make_client("http://127.0.0.1:9/v1")
    await client.aclose()
    with pytest.raises(ClosedError):
        await client.request("GET", "/b", cls="poll")
    assert "closed" in repr(client)


async def test_redirect_not_followed_returns_the_302_and_its_location(serve: Serve) -> None:
    seen: list[tuple[str, dict[str, str]]] = []

    async def files(request: web.Request) -> web.Response:
        seen.append((request.content_type, {k: str(v) for k, v in (await request.post()).items()}))
        headers = {"Location": "https://storage.example/up?sig=abc", "X-File-Id": "file-1"}
        return web.Response(status=302, headers=headers)

    async def followed(request: web.Request) -> web.Response:
        return web.json_response({"followed": True})

    app = app_with("/v1/files", files)
    app.router.add_route("*", "/v1/next", followed)
    url = await serve(app)
    async with make_client(url) as client:
        resp = await client.request(
            "POST",
            "/files",
            cls="upload",
            form={"purpose": "batch-api", "file_name": "a b.jsonl"},
            follow_redirects=False,
        )
        # The default still follows (here to a JSON answer on the same host).
        app_redirect = await client.request("GET", "/next", cls="poll")
    assert resp.status == 302
    assert resp.headers["location"] == "https://storage.example/up?sig=abc"
    assert resp.headers["x-file-id"] == "file-1"
    assert seen == [
        ("application/x-www-form-urlencoded", {"purpose": "batch-api", "file_name": "a b.jsonl"})
    ]
    assert app_redirect.body == b'{"followed": true}'


async def test_put_file_streams_a_slice_without_the_key(
    serve: Serve, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = bytes(range(256)) * 8_000  # ~2 MB: more than one upload chunk
    path = tmp_path / "shard.jsonl"
    path.write_bytes(data)
    received: list[tuple[str, dict[str, str], bytes]] = []
    in_flight: list[int] = []

    async def storage(request: web.Request) -> web.Response:
        body = b"".join([chunk async for chunk in request.content.iter_chunked(1 << 16)])
        received.append((request.method, dict(request.headers), body))
        in_flight.append(client.gate("upload").statistics().in_flight)
        if len(received) == 1:
            return web.Response(status=503, text="<Error>SlowDown</Error>")
        return web.Response(status=200, headers={"ETag": '"etag-1"'})

    caplog.set_level(logging.DEBUG, logger="batchpump")
    storage_url = await serve(app_with("/v1/bucket/{key}", storage))
    signed = f"{storage_url}/bucket/obj?X-Amz-Signature=SIG%2Fsecret&X-Amz-Expires=60"
    async with make_client("http://127.0.0.1:9/v1") as client:  # the API host is elsewhere
        whole = await client.put_file(signed, str(path), content_type="application/jsonl")
        part = await client.put_file(signed, str(path), offset=10, length=100)
        stats = client.statistics()
    assert (whole.status, whole.headers["etag"], part.status) == (200, '"etag-1"', 200)
    assert [(m, len(body)) for m, _, body in received] == [
        ("PUT", len(data)),
        ("PUT", len(data)),
        ("PUT", 100),
    ]
    assert received[1][2] == data
    assert received[2][2] == data[10:110]
    for _, headers, body in received:
        assert "Authorization" not in headers
        assert not any(SECRET in value for value in headers.values())
        assert headers["Content-Length"] == str(len(body))
        assert "Transfer-Encoding" not in headers
    assert received[1][1]["Content-Type"] == "application/jsonl"
    assert received[2][1]["Content-Type"] == "application/octet-stream"
    assert (stats.requests, stats.retries, stats.server_errors) == (3, 1, 1)
    assert in_flight == [1, 1, 1], "each PUT holds an upload slot"
    for record in caplog.records:
        assert "SIG" not in record.getMessage(), "the signature was logged"


async def test_put_file_retries_a_dropped_connection_and_redacts_the_signature(
    serve: Serve, tmp_path: Path
) -> None:
    path = tmp_path / "s.jsonl"
    path.write_bytes(b"y" * 5_000)
    calls = 0

    async def storage(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        await request.read()
        if calls == 1:
            assert request.transport is not None
            request.transport.close()
            return web.Response(status=200)
        sig = request.query["sig"]
        return web.Response(status=403, text=f"<Error>SignatureProvided {sig}</Error>")

    url = f"{await serve(app_with('/v1/put', storage))}/put?sig=s1gnature-XYZ"
    async with make_client("http://127.0.0.1:9/v1") as client:
        with pytest.raises(AuthenticationError) as info:
            await client.put_file(url, str(path))
    assert calls == 2, "a dropped PUT is retried; a 403 is not"
    assert info.value.status == 403
    for text in (str(info.value), info.value.body):
        assert "s1gnature-XYZ" not in text


async def test_put_file_refuses_a_relative_url(tmp_path: Path) -> None:
    async with make_client("http://127.0.0.1:9/v1") as client:
        with pytest.raises(ValueError, match="absolute"):
            await client.put_file("/files/x", str(tmp_path / "nothing"))


async def test_redirects_keep_our_headers_only_on_the_same_origin(serve: Serve) -> None:
    """A signed download URL on another host must never receive the key (x-api-key style)."""
    seen: dict[str, dict[str, str]] = {}

    async def storage(request: web.Request) -> web.Response:
        seen["storage"] = dict(request.headers)
        return web.Response(body=b'{"a":1}\n{"b":2}\n')

    storage_url = await serve(app_with("/v1/blob", storage))

    async def api(request: web.Request) -> web.Response:
        seen.setdefault("api", dict(request.headers))
        if request.path.endswith("/moved"):
            raise web.HTTPFound("/v1/content")  # same origin: headers kept
        if request.path.endswith("/content"):
            seen["api-after-hop"] = dict(request.headers)
            raise web.HTTPFound(f"{storage_url}/blob?sig=abc")
        return web.Response(status=404)

    base = await serve(app_with("/v1/{tail:.*}", api))
    client = HttpClient(
        provider="testprov",
        base_url=base,
        headers={"x-api-key": SECRET},
        secrets=[SECRET],
        limits=Limits(),
        retry=RetryPolicy.no_wait(attempts=2),
        clock=ManualClock(),
    )
    async with client, client.stream("GET", "/moved") as response:
        lines = [line async for line in response.iter_lines()]
    assert lines == [b'{"a":1}', b'{"b":2}']
    assert seen["api"]["x-api-key"] == SECRET
    assert seen["api-after-hop"]["x-api-key"] == SECRET
    assert SECRET not in str(seen["storage"])
