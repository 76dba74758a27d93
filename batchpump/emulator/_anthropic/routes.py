"""Anthropic routes: ``/v1/messages/batches`` (what ``anthropic.AsyncAnthropic`` calls).

Handlers only decode and encode; the rules live in ``store``. Auth is ``x-api-key``
(or ``Authorization: Bearer``) plus the required ``anthropic-version`` header. Errors, the
shared middleware's 429s and 5xx included, are rendered as Anthropic's
``{"type": "error", "error": {"type", "message"}}`` with a ``request-id`` header; a 429 keeps
only ``retry-after`` (whole seconds) and the request limit as ``anthropic-ratelimit-*``.
"""

from __future__ import annotations

import itertools
import re
from typing import Any, Final

import msgspec
from aiohttp import web

from .._routing import EMULATOR_KEY, ApiError, ProviderRoutes, Route
from .store import AnthropicState
from .wire import ANTHROPIC_ERROR_TYPES, CreateBatchBody, DeletedBatch

__all__ = ["anthropic_state", "provider_routes", "render_error"]

_encoder: Final = msgspec.json.Encoder()
_create: Final = msgspec.json.Decoder(CreateBatchBody)
_AT_PATH: Final = re.compile(r"at `\$\.?([^`]*)`")
_UNKNOWN_FIELD: Final = re.compile(r"unknown field `([^`]*)`")
_STATUS_TYPES: Final = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_KEPT_HEADERS: Final = {
    "retry-after": "retry-after",
    "x-ratelimit-limit-requests": "anthropic-ratelimit-requests-limit",
    "x-ratelimit-remaining-requests": "anthropic-ratelimit-requests-remaining",
}
_LIST_LIMIT: Final = (20, 1000)  # default, maximum
_RESULTS_TYPE: Final = "application/x-jsonl"


def anthropic_state(request: web.Request) -> AnthropicState:
    """The Anthropic state of the app's emulator."""
    return request.app[EMULATOR_KEY].provider_state("anthropic", AnthropicState)


_ids: Final = itertools.count(1)


def _request_id() -> str:
    return f"req_emu{next(_ids):017x}"


def _json(obj: Any, status: int = 200) -> web.Response:
    response = web.Response(
        body=_encoder.encode(obj), status=status, content_type="application/json"
    )
    response.headers["request-id"] = _request_id()
    return response


def render_error(error: ApiError) -> web.Response:
    """Anthropic's error body; the type follows the status unless already Anthropic's."""
    kind = error.type if error.type in ANTHROPIC_ERROR_TYPES else None
    kind = (
        kind
        or _STATUS_TYPES.get(error.status)
        or ("api_error" if error.status >= 500 else "invalid_request_error")
    )
    rid = _request_id()
    body = {"type": "error", "error": {"type": kind, "message": error.message}, "request_id": rid}
    response = web.Response(
        body=_encoder.encode(body), status=error.status, content_type="application/json"
    )
    response.headers["request-id"] = rid
    for name, value in error.headers.items():
        renamed = _KEPT_HEADERS.get(name.lower())
        if renamed is not None:
            response.headers[renamed] = value
    return response


def authorize(request: web.Request) -> ApiError | None:
    """A non-empty ``x-api-key`` (or bearer token) and an ``anthropic-version`` header."""
    key = request.headers.get("x-api-key", "").strip()
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if not key and not (scheme.lower() == "bearer" and token.strip()):
        return ApiError(401, "x-api-key header is required", type="authentication_error")
    if not request.headers.get("anthropic-version"):
        return ApiError(400, "anthropic-version: header is required")
    return None


def _origin(request: web.Request) -> str:
    return str(request.url.origin())


async def create_batch(request: web.Request) -> web.Response:
    raw = await request.read()
    try:
        body = _create.decode(raw)
    except msgspec.ValidationError as exc:
        text = str(exc)
        unknown = _UNKNOWN_FIELD.search(text)
        at = _AT_PATH.search(text)
        where = at.group(1) if at else "body"
        if unknown:
            raise ApiError(400, f"{where}: Extra inputs are not permitted") from None
        raise ApiError(400, f"{where}: {text}") from None
    except msgspec.DecodeError:
        raise ApiError(400, "There was an issue with your request body: invalid JSON") from None
    state = anthropic_state(request)
    for i, item in enumerate(body.requests):
        if not re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", item.custom_id):
            raise ApiError(
                400,
                f"requests.{i}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'",
            )
        if not bytes(item.params).lstrip().startswith(b"{"):
            raise ApiError(400, f"requests.{i}.params: Input should be a valid dictionary")
    return _json(state.wire(state.create(body), _origin(request)))


async def retrieve_batch(request: web.Request) -> web.Response:
    state = anthropic_state(request)
    batch = state.get(request.match_info["batch_id"])
    return _json(state.wire(batch, _origin(request)))


async def list_batches(request: web.Request) -> web.Response:
    default, maximum = _LIST_LIMIT
    raw = request.query.get("limit")
    try:
        limit = int(raw) if raw is not None else default
    except ValueError:
        limit = 0
    if not 1 <= limit <= maximum:
        raise ApiError(400, f"limit: Input should be between 1 and {maximum}")
    page = anthropic_state(request).list(
        origin=_origin(request),
        limit=limit,
        after_id=request.query.get("after_id"),
        before_id=request.query.get("before_id"),
    )
    return _json(page)


async def cancel_batch(request: web.Request) -> web.Response:
    state = anthropic_state(request)
    batch = state.cancel(request.match_info["batch_id"])
    return _json(state.wire(batch, _origin(request)))


async def delete_batch(request: web.Request) -> web.Response:
    batch_id = request.match_info["batch_id"]
    anthropic_state(request).delete(batch_id)
    return _json(DeletedBatch(id=batch_id))


async def batch_results(request: web.Request) -> web.StreamResponse:
    batch = anthropic_state(request).results(request.match_info["batch_id"])
    response = web.StreamResponse(headers={"request-id": _request_id()})
    response.content_type = _RESULTS_TYPE
    await response.prepare(request)
    emulator = request.app[EMULATOR_KEY]
    for i, chunk in enumerate(batch.result_lines()):
        await response.write(emulator.malformed(chunk, f"{batch.id}:{i}"))
    await response.write_eof()
    return response


def provider_routes() -> ProviderRoutes:
    """The Anthropic surface, with each route's endpoint class (for faults and rate limits)."""
    base = "/v1/messages/batches"
    routes = (
        Route("POST", base, create_batch, "anthropic.batches.create", "create", creates=True),
        Route("GET", base, list_batches, "anthropic.batches.list", "poll"),
        Route("GET", f"{base}/{{batch_id}}", retrieve_batch, "anthropic.batches.retrieve", "poll"),
        Route(
            "POST",
            f"{base}/{{batch_id}}/cancel",
            cancel_batch,
            "anthropic.batches.cancel",
            "create",
        ),
        Route("DELETE", f"{base}/{{batch_id}}", delete_batch, "anthropic.batches.delete", "poll"),
        Route(
            "GET",
            f"{base}/{{batch_id}}/results",
            batch_results,
            "anthropic.batches.results",
            "download",
        ),
    )
    return ProviderRoutes(
        name="anthropic",
        routes=routes,
        render_error=render_error,
        authorize=authorize,
        prefix="/v1/messages/",
    )
