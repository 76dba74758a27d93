"""How the LlamaCloud emulator answers, like the FastAPI service it imitates.

Auth is ``Authorization: Bearer <key>`` (any non-empty key). Errors are FastAPI's:
``422 {"detail": [{"loc", "msg", "type"}]}`` for request validation (a handler raises
``Invalid``, ``validated`` renders it), ``{"detail": "<message>"}`` for everything else, the
shared middleware's 429s and 5xx included (a 429 keeps only ``retry-after``). Listings are
pages of ``page_size`` items (default 50, at most 1,000) with an opaque ``page_token``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

import msgspec
from aiohttp import web

from .._routing import EMULATOR_KEY, ApiError
from .._state import Emulator
from .store import LlamaCloudState
from .wire import Invalid, Page

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "Handler",
    "authorize",
    "json_response",
    "llamacloud_state",
    "page",
    "paginate",
    "render_error",
    "state_of",
    "validated",
]

DEFAULT_PAGE_SIZE: Final = 50
MAX_PAGE_SIZE: Final = 1000
_KEPT_HEADERS: Final = ("retry-after", "x-should-retry")
_encoder: Final = msgspec.json.Encoder()
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def llamacloud_state(emulator: Emulator) -> LlamaCloudState:
    """The LlamaCloud state of an emulator (created on first use)."""
    return emulator.provider_state("llamacloud", LlamaCloudState)


def state_of(request: web.Request) -> LlamaCloudState:
    """The LlamaCloud state of the request's emulator."""
    return llamacloud_state(request.app[EMULATOR_KEY])


def json_response(obj: Any, status: int = 200) -> web.Response:
    return web.Response(body=_encoder.encode(obj), status=status, content_type="application/json")


def render_error(error: ApiError) -> web.Response:
    """FastAPI's ``{"detail": "..."}`` body."""
    response = json_response({"detail": error.message}, error.status)
    for name, value in error.headers.items():
        if name.lower() in _KEPT_HEADERS:
            response.headers[name] = value
    return response


def authorize(request: web.Request) -> ApiError | None:
    """A non-empty bearer token."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return ApiError(401, "Invalid authentication credentials")
    return None


def validated(handler: Handler) -> Handler:
    """Answer ``Invalid`` as FastAPI's 422 ``{"detail": [...]}``."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except Invalid as exc:
            return json_response({"detail": exc.detail}, 422)

    return wrapped


def paginate(items: list[object], page_size: int | None, page_token: str | None) -> Page:
    """One page of ``items`` (token = opaque offset)."""
    size = DEFAULT_PAGE_SIZE if page_size is None else page_size
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise ApiError(400, f"page_size must be between 1 and {MAX_PAGE_SIZE}")
    start = 0
    if page_token:
        try:
            start = int(page_token.removeprefix("pt_"), 16)
        except ValueError:
            raise ApiError(400, "Invalid page_token") from None
    end = start + size
    token = f"pt_{end:x}" if end < len(items) else None
    return Page(items=items[start:end], next_page_token=token)


def page(request: web.Request, items: list[Any]) -> web.Response:
    """The page of ``items`` the request's ``page_size`` and ``page_token`` ask for."""
    return json_response(
        paginate(items, _int_query(request, "page_size"), request.query.get("page_token"))
    )


def _int_query(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        msg = "Input should be a valid integer, unable to parse string as an integer"
        raise Invalid(
            [{"loc": ["query", name], "msg": msg, "type": "int_parsing", "input": raw}]
        ) from None
