"""The fault middleware: auth, rate limits and injected faults in front of every route.

Order per request: auth (401), the endpoint class's token bucket (429 with OpenAI's headers,
unless ``advertise_rate_limits``/``send_retry_after`` turn them off), then at most one drawn
fault (storm 429, JSON 5xx, HTML 502, reset before handling, slow answer, truncated body),
then, on a create, a late create (the handler runs only ``late_create_seconds`` later), then
the handler, then ``reset_after_create`` (the answer is lost *after* the batch exists). With a
``clock_offset_seconds`` the ``Date`` header shows the server's shifted clock. Faults never
touch provider state: a fault either happens before the handler runs (a late create only
delays it) or only damages the answer's transport.
"""

from __future__ import annotations

import math
from contextvars import ContextVar
from email.utils import formatdate
from typing import Final

import msgspec
from aiohttp import web

from ._faults import Faults, TokenBucket, format_duration, pick_fault
from ._requests import RequestRecord
from ._routing import EMULATOR_KEY, PROVIDERS_KEY, ROUTES_KEY, ApiError, Handler, ProviderRoutes
from ._script import Rule
from ._state import Emulator
from ._stats import CREATED_TAGS

__all__ = ["fault_middleware"]

_HTML_502: Final = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)
#: Path parameters that name the object a request is about (journal ``tag`` when no create).
_ID_KEYS: Final = ("batch_id", "job_id", "file_id", "upload_id", "directory_id")
#: The fault or scripted action that shaped the current request's answer (for the journal).
_FAULT: Final[ContextVar[str | None]] = ContextVar("emulator_fault", default=None)
_encoder: Final = msgspec.json.Encoder()
#: Placeholder status of an aborted answer (never reaches the client; counted as status 0).
_RESET_STATUS: Final = 499
_5XX: Final = (
    (500, "The server had an error while processing your request. Sorry about that!"),
    (502, "Bad gateway."),
    (503, "The engine is currently overloaded, please try again later."),
)


def _retry_after(wait: float) -> dict[str, str]:
    return {
        "retry-after-ms": str(max(1, math.ceil(wait * 1000))),
        "retry-after": str(max(1, math.ceil(wait))),
    }


def _limit_headers(bucket: TokenBucket) -> dict[str, str]:
    per_minute = round(bucket.limit.requests * 60 / bucket.limit.per_seconds)
    return {
        # OpenAI states the limit per minute, whatever window the bucket refills over; the
        # bucket counts real seconds (the quota clock), so these are real minutes and seconds.
        "x-ratelimit-limit-requests": str(max(1, per_minute)),
        "x-ratelimit-remaining-requests": str(bucket.remaining),
        "x-ratelimit-reset-requests": format_duration(bucket.seconds_until_full()),
    }


def _429_headers(faults: Faults, advertised: dict[str, str], wait: float) -> dict[str, str]:
    """What a 429 carries: the advertised limits and the wait, each unless turned off."""
    headers = dict(advertised) if faults.advertise_rate_limits else {}
    if faults.send_retry_after:
        headers.update(_retry_after(wait))
    return headers


def _rate_limited(limit: int, used: int, retry_after: float, headers: dict[str, str]) -> ApiError:
    message = (
        "Rate limit reached for requests in organization org-emulator on requests per min (RPM):"
        f" Limit {limit}, Used {used}, Requested 1. Please try again in {retry_after:.3g}s."
    )
    return ApiError(429, message, type="requests", code="rate_limit_exceeded", headers=headers)


def _abort(request: web.Request) -> web.Response:
    if request.transport is not None:
        request.transport.abort()
    return web.Response(status=_RESET_STATUS)


async def _truncate(request: web.Request, response: web.Response) -> web.StreamResponse:
    body = bytes(response.body) if isinstance(response.body, bytes | bytearray) else b""
    stream = web.StreamResponse(status=response.status, headers=response.headers)
    stream.content_length = len(body) + max(16, len(body))
    await stream.prepare(request)
    await stream.write(body[: len(body) // 2])
    if request.transport is not None:
        request.transport.abort()
    return stream


async def _faulted(
    request: web.Request, handler: Handler, emu: Emulator, name: str
) -> web.StreamResponse:
    info = request.app[ROUTES_KEY][name]
    stats = emu.raw_stats
    error = info.provider.authorize(request)
    if error is not None:
        raise error
    if len(emu.scripted):
        rule = emu.scripted.take(
            method=request.method, path=request.path, provider=info.provider.name, route=name
        )
        if rule is not None:
            return await _scripted(request, handler, emu, rule)
    cls = info.endpoint_class
    faults = emu.faults
    extra: dict[str, str] = {}
    bucket = emu.bucket(cls) if cls is not None else None
    if bucket is not None:
        if not bucket.try_acquire():
            stats.faults["rate_limited"] += 1
            wait = bucket.seconds_until_token()
            headers = _429_headers(faults, _limit_headers(bucket), wait)
            raise _rate_limited(bucket.limit.requests, bucket.limit.requests, wait, headers)
        extra = _limit_headers(bucket) if faults.advertise_rate_limits else {}
    fault = pick_fault(faults, emu.streams) if cls is not None else "none"
    if fault not in ("none", "truncate"):  # a truncation is counted once it is applied
        stats.faults[fault] += 1
        _FAULT.set(fault)
    if fault == "storm429":
        wait = faults.retry_after_seconds
        advertised = {
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": format_duration(wait),
        }
        # A storm is not a quota: advertise a limit only when a bucket really sets one.
        limit = extra.get("x-ratelimit-limit-requests")
        if limit is not None:
            advertised["x-ratelimit-limit-requests"] = limit
        shown = int(limit) if limit is not None else 10_000
        raise _rate_limited(shown, shown, wait, _429_headers(faults, advertised, wait))
    if fault == "5xx":
        status, message = _5XX[emu.rng.randrange(len(_5XX))]
        raise ApiError(status, message, type="server_error")
    if fault == "html502":
        return web.Response(status=502, text=_HTML_502, content_type="text/html")
    if fault == "reset":
        return _abort(request)
    if fault == "slow":
        await emu.emulated_clock.sleep(faults.slow_seconds)
    late = faults.late_create_rate
    if info.creates and late > 0.0 and emu.streams.draw("late_create", late):
        stats.faults["late_create"] += 1
        _FAULT.set("late_create")
        await request.read()  # taken now: the body stays readable if the client goes away
        await emu.emulated_clock.sleep(faults.late_create_seconds)
    response = await handler(request)
    response.headers.update(extra)
    rate = faults.reset_after_create_rate
    created = 200 <= response.status < 300
    if info.creates and created and rate > 0.0 and emu.streams.draw("reset_after_create", rate):
        stats.faults["reset_after_create"] += 1
        _FAULT.set("reset_after_create")
        return _abort(request)
    if fault == "truncate" and isinstance(response, web.Response):
        stats.faults["truncate"] += 1
        _FAULT.set("truncate")
        return await _truncate(request, response)
    return response


async def _scripted(
    request: web.Request, handler: Handler, emu: Emulator, rule: Rule
) -> web.StreamResponse:
    """Serve a request the way a scripted rule says (rate buckets and random faults skipped)."""
    stats = emu.raw_stats
    stats.faults["scripted"] += 1
    if rule.respond is not None:
        _FAULT.set("script:respond")
        respond = rule.respond
        body = b"" if respond.body is None else _encoder.encode(respond.body)
        canned = web.Response(status=respond.status, body=body, headers=respond.headers)
        if respond.body is not None and "content-type" not in {k.lower() for k in respond.headers}:
            canned.content_type = "application/json"
        return canned
    if rule.reset:
        _FAULT.set("script:reset")
        return _abort(request)
    if rule.delay is not None:
        _FAULT.set("script:delay")
        await emu.emulated_clock.sleep(rule.delay)
    if rule.late_create is not None:
        _FAULT.set("script:late_create")
        await request.read()  # taken now: the body stays readable if the client goes away
        await emu.emulated_clock.sleep(rule.late_create)
    response = await handler(request)
    if rule.truncate and isinstance(response, web.Response):
        _FAULT.set("script:truncate")
        return await _truncate(request, response)
    return response


@web.middleware
async def fault_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Apply auth, limits and faults; render ``ApiError`` in the provider's body shape."""
    emu = request.app[EMULATOR_KEY]
    name = request.match_info.route.name
    provider = None
    _FAULT.set(None)
    tags: list[str] = []
    CREATED_TAGS.set(tags)
    try:
        if name is None or name not in request.app[ROUTES_KEY]:
            response = await handler(request)
        else:
            provider = request.app[ROUTES_KEY][name].provider
            response = await _faulted(request, handler, emu, name)
    except ApiError as error:
        provider = provider or _provider_for(request)
        if provider is None:
            raise web.HTTPException(text=error.message) from None
        response = provider.render_error(error)
    except (web.HTTPNotFound, web.HTTPMethodNotAllowed) as exc:
        provider = _provider_for(request)
        if provider is None:
            raise
        message = f"Invalid URL ({request.method} {request.path})"
        response = provider.render_error(ApiError(exc.status, message))
    offset = emu.faults.clock_offset_seconds
    if offset and isinstance(response, web.Response):
        response.headers["Date"] = formatdate(emu.now(), usegmt=True)
    status = 0 if response.status == _RESET_STATUS else response.status
    if name is None or not name.startswith("emulator."):  # the control plane is not counted
        emu.raw_stats.requests[(name or request.path, status)] += 1
    if provider is not None:
        ids = request.match_info
        tag = tags[-1] if tags else next((ids[k] for k in _ID_KEYS if k in ids), None)
        emu.record(
            RequestRecord(
                time=emu.now(),
                provider=provider.name,
                method=request.method,
                path=request.path,
                route=name or "",
                status=status,
                fault=_FAULT.get(),
                tag=tag,
            )
        )
    return response


def _provider_for(request: web.Request) -> ProviderRoutes | None:
    for provider in request.app[PROVIDERS_KEY]:
        if request.path.startswith(provider.prefix):
            return provider
    return None
