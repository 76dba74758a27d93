"""Azure OpenAI routes: the OpenAI surface under ``/openai/...``, Azure's auth and versioning.

Every OpenAI route (files, uploads, batches) is re-mounted from ``_openai.provider_routes()``
with ``/v1`` replaced by ``/openai``, the same handlers and the same state: the emulator's URL
is the Azure *endpoint* (``AzureOpenAI(azure_endpoint=emu.azure_endpoint)``). What differs is
checked here, before any handler runs:

- auth is the ``api-key`` header (or an Entra ID ``Authorization: Bearer`` token);
- every call needs the ``api-version`` query parameter (Azure answers 404 without it);
- batch lines name a *deployment* as ``model``; the emulator takes any name.

Both surfaces share one ``OpenAIState`` (mount one or the other per test to keep them apart).
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

from .._routing import ApiError, ProviderRoutes, Route
from .routes import provider_routes as openai_routes
from .routes import render_error

__all__ = ["API_VERSION_PARAM", "PREFIX", "provider_routes"]

PREFIX: Final = "/openai"
API_VERSION_PARAM: Final = "api-version"


def authorize(request: web.Request) -> ApiError | None:
    """``api-version`` must be present; then any non-empty ``api-key`` (or bearer) passes."""
    if not request.query.get(API_VERSION_PARAM):
        return ApiError(404, "Resource not found", code="404")
    if request.headers.get("api-key", "").strip():
        return None
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return None
    return ApiError(
        401,
        "Access denied due to missing subscription key. Make sure to include subscription key"
        " when making requests to an API.",
        code="401",
    )


def _azure(route: Route) -> Route:
    return Route(
        route.method,
        PREFIX + route.path.removeprefix("/v1"),
        route.handler,
        "azure." + route.name.removeprefix("openai."),
        route.endpoint_class,
        route.creates,
    )


def provider_routes() -> ProviderRoutes:
    """The OpenAI routes under ``/openai``, with Azure's ``authorize``."""
    return ProviderRoutes(
        name="azure",
        routes=tuple(_azure(r) for r in openai_routes().routes),
        render_error=render_error,
        authorize=authorize,
        prefix=f"{PREFIX}/",
    )
