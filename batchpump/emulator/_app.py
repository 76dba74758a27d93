"""The app factory: one ``aiohttp.web.Application`` from the providers asked for.

Adding a provider is one new route module exposing ``provider_routes()`` plus one line in
``PROVIDER_MODULES``. Modules are imported by name, so the factory and the route modules never
import each other.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import Final

import msgspec
from aiohttp import web

from ._faults import EmulatorConfig
from ._middleware import fault_middleware
from ._routing import EMULATOR_KEY, PROVIDERS_KEY, ROUTES_KEY, ProviderRoutes, RouteInfo
from ._state import Emulator

__all__ = ["PROVIDER_MODULES", "create_app"]

#: Provider name -> module with ``provider_routes()``.
PROVIDER_MODULES: Final[dict[str, str]] = {
    "openai": "batchpump.emulator._openai.routes",
    "together": "batchpump.emulator._together.routes",
    "azure": "batchpump.emulator._openai.azure",
    "anthropic": "batchpump.emulator._anthropic.routes",
    "telus": "batchpump.emulator._telus.routes",
    "llamacloud": "batchpump.emulator._llamacloud.routes",
}
#: Biggest non-streamed request body (JSON bodies; multipart parts are streamed), 64 MiB.
_CLIENT_MAX_SIZE: Final = 64 * 1024 * 1024
_encoder: Final = msgspec.json.Encoder()


def create_app(emulator: Emulator, *, providers: Iterable[str] = ("openai",)) -> web.Application:
    """Compose the emulator app.

    Args:
        emulator: the state (clock, knobs, stats) the routes serve.
        providers: which provider surfaces to mount, default ``("openai",)``; see
            ``PROVIDER_MODULES``.

    Raises:
        ValueError: an unknown provider name.
    """
    app = web.Application(middlewares=[fault_middleware], client_max_size=_CLIENT_MAX_SIZE)
    app[EMULATOR_KEY] = emulator
    table: dict[str, RouteInfo] = {}
    mounted: list[ProviderRoutes] = []
    for name in providers:
        module_name = PROVIDER_MODULES.get(name)
        if module_name is None:
            known = ", ".join(sorted(PROVIDER_MODULES))
            raise ValueError(f"unknown emulator provider {name!r} (known: {known})")
        spec: ProviderRoutes = importlib.import_module(module_name).provider_routes()
        mounted.append(spec)
        for route in spec.routes:
            app.router.add_route(route.method, route.path, route.handler, name=route.name)
            table[route.name] = RouteInfo(spec, route.endpoint_class, route.creates)
    app[ROUTES_KEY] = table
    app[PROVIDERS_KEY] = mounted
    app.router.add_get("/_emulator/stats", _stats, name="emulator.stats")
    app.router.add_get("/_emulator/config", _get_config, name="emulator.config.get")
    app.router.add_put("/_emulator/config", _put_config, name="emulator.config.put")
    return app


async def _stats(request: web.Request) -> web.Response:
    """Counters for out-of-process users (benchmarks, soaks)."""
    snapshot = request.app[EMULATOR_KEY].stats.snapshot()
    return web.Response(body=_encoder.encode(snapshot), content_type="application/json")


async def _get_config(request: web.Request) -> web.Response:
    config = request.app[EMULATOR_KEY].config
    return web.Response(body=_encoder.encode(config), content_type="application/json")


async def _put_config(request: web.Request) -> web.Response:
    """Replace the configuration (JSON ``EmulatorConfig``) of a running emulator."""
    try:
        config = msgspec.json.decode(await request.read(), type=EmulatorConfig)
    except msgspec.MsgspecError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    request.app[EMULATOR_KEY].configure(config)
    return web.Response(body=_encoder.encode(config), content_type="application/json")
