"""The seam between the app factory, the fault middleware and the provider route modules.

A provider module exposes ``provider_routes() -> ProviderRoutes``: its routes (each with the
endpoint class its faults and rate limits are keyed by), how it renders an ``ApiError`` and how
it checks auth. The factory registers them; the middleware finds a request's ``RouteInfo`` by
route name. Neither imports the other.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final, final

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from .._ratelimit import EndpointClass
from ._state import Emulator

__all__ = [
    "EMULATOR_KEY",
    "PROVIDERS_KEY",
    "ROUTES_KEY",
    "ApiError",
    "Authorize",
    "ErrorRenderer",
    "ProviderRoutes",
    "Route",
    "RouteInfo",
    "malformed_body",
]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ErrorRenderer = Callable[["ApiError"], web.Response]
#: Returns the error to answer with, or ``None`` when the request may proceed.
Authorize = Callable[[web.Request], "ApiError | None"]


@final
class ApiError(Exception):
    """An error answer, rendered in the provider's own body shape by its ``ErrorRenderer``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers: dict[str, str] = dict(headers or {})

    def __repr__(self) -> str:
        return f"ApiError({self.status}, {self.message!r}, code={self.code!r})"


@dataclass(frozen=True, slots=True)
class Route:
    """One route: ``name`` is unique across providers (``openai.batches.create``)."""

    method: str
    path: str
    handler: Handler
    name: str
    endpoint_class: EndpointClass | None
    #: The route creates a batch (``reset_after_create_rate`` applies).
    creates: bool = False


@dataclass(frozen=True, slots=True)
class ProviderRoutes:
    """What a provider module contributes to the app."""

    name: str
    routes: tuple[Route, ...]
    render_error: ErrorRenderer
    authorize: Authorize
    #: Path prefix under which unknown URLs get this provider's 404 body (e.g. ``/v1/``).
    prefix: str = "/"


@dataclass(frozen=True, slots=True)
class RouteInfo:
    """What the middleware needs to know about a matched route."""

    provider: ProviderRoutes
    endpoint_class: EndpointClass | None
    creates: bool = False


EMULATOR_KEY: Final = web.AppKey("batchpump_emulator", Emulator)
ROUTES_KEY: Final = web.AppKey("batchpump_emulator_routes", dict[str, RouteInfo])
PROVIDERS_KEY: Final = web.AppKey("batchpump_emulator_providers", list[ProviderRoutes])


@contextmanager
def malformed_body(what: str = "multipart/form-data body") -> Iterator[None]:
    """Turn aiohttp's errors on a malformed request body (bad multipart boundary, broken part
    headers, a body cut short) into a 400 ``ApiError`` the provider renders, never a 500."""
    try:
        yield
    except (HttpProcessingError, ValueError, AssertionError) as exc:
        detail = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        raise ApiError(400, f"Could not parse the {what}: {detail}".strip()) from None
