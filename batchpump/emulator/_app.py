"""The app factory: one ``aiohttp.web.Application`` from the providers asked for.

Adding a provider is one new route module exposing ``provider_routes()`` plus one line in
``PROVIDER_MODULES``. Modules are imported by name, so the factory and the route modules never
import each other.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import Final

from aiohttp import web

from ._control import add_control_routes
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
    add_control_routes(app)
    return app
