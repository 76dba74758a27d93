"""The control plane: ``/_emulator/*`` routes beside the provider APIs, on the same port.

- ``POST /_emulator/reset``: every store, counter, journal entry and scripted rule back to
  empty; a JSON ``EmulatorConfig`` body also replaces the configuration.
- ``GET /_emulator/clock`` -> ``{"now", "monotonic", "time_scale", "advanced"}``;
  ``POST /_emulator/clock`` with ``{"advance": SECONDS}`` and/or ``{"time_scale": X}``.
- ``POST /_emulator/script`` (a JSON list of rules, appended), ``GET`` (what is left),
  ``DELETE`` (clear).
- ``GET /_emulator/requests`` (``?provider=``, ``?limit=``): the request journal.
- ``GET /_emulator/verdict``: creates per tag, tags created twice, lines billed twice, share
  of 429s, requests per route.
- ``GET /_emulator/stats``, ``GET``/``PUT /_emulator/config``: counters and configuration.

Control errors answer 400 with ``{"error": {"message": ...}}``.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec
from aiohttp import web

from ._faults import EmulatorConfig
from ._routing import EMULATOR_KEY
from ._script import load_rules

__all__ = ["add_control_routes"]

_encoder: Final = msgspec.json.Encoder()


class _ClockChange(msgspec.Struct, forbid_unknown_fields=True):
    advance: float | None = None
    time_scale: float | None = None


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=_encoder.encode(data), status=status, content_type="application/json")


def _bad(message: str) -> web.Response:
    return _json({"error": {"message": message, "type": "invalid_request_error"}}, 400)


async def _reset(request: web.Request) -> web.Response:
    emu = request.app[EMULATOR_KEY]
    raw = await request.read()
    config = None
    if raw.strip():
        try:
            config = msgspec.json.decode(raw, type=EmulatorConfig)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return _bad(f"bad EmulatorConfig: {exc}")
    emu.reset(config)
    return _json({"reset": True, "config": emu.config})


def _clock_state(request: web.Request) -> dict[str, float]:
    emu = request.app[EMULATOR_KEY]
    clock = emu.emulated_clock
    return {
        "now": emu.now(),
        "monotonic": clock.monotonic(),
        "time_scale": clock.time_scale,
        "advanced": clock.skipped,
    }


async def _get_clock(request: web.Request) -> web.Response:
    return _json(_clock_state(request))


async def _post_clock(request: web.Request) -> web.Response:
    try:
        change = msgspec.json.decode(await request.read(), type=_ClockChange)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return _bad(f"expected {{'advance': seconds, 'time_scale': x}}: {exc}")
    emu = request.app[EMULATOR_KEY]
    try:
        if change.time_scale is not None:
            emu.set_time_scale(change.time_scale)
        if change.advance is not None:
            emu.advance(change.advance)
    except ValueError as exc:
        return _bad(str(exc))
    return _json(_clock_state(request))


async def _post_script(request: web.Request) -> web.Response:
    emu = request.app[EMULATOR_KEY]
    try:
        rules = load_rules(await request.read())
    except ValueError as exc:
        return _bad(str(exc))
    emu.script(rules)
    return _json({"added": len(rules), "rules": emu.scripted.pending()})


async def _get_script(request: web.Request) -> web.Response:
    return _json({"rules": request.app[EMULATOR_KEY].scripted.pending()})


async def _delete_script(request: web.Request) -> web.Response:
    emu = request.app[EMULATOR_KEY]
    dropped = len(emu.scripted)
    emu.scripted.clear()
    return _json({"cleared": dropped})


async def _requests(request: web.Request) -> web.Response:
    log = request.app[EMULATOR_KEY].requests
    limit_text = request.query.get("limit")
    try:
        limit = int(limit_text) if limit_text is not None else None
    except ValueError:
        return _bad("limit must be an integer")
    entries = log.entries(provider=request.query.get("provider"), limit=limit)
    return _json({"requests": entries, "dropped": log.dropped})


async def _verdict(request: web.Request) -> web.Response:
    return _json(request.app[EMULATOR_KEY].verdict())


async def _stats(request: web.Request) -> web.Response:
    """Counters for out-of-process users (benchmarks, soaks)."""
    return _json(request.app[EMULATOR_KEY].stats.snapshot())


async def _get_config(request: web.Request) -> web.Response:
    return _json(request.app[EMULATOR_KEY].config)


async def _put_config(request: web.Request) -> web.Response:
    """Replace the configuration (JSON ``EmulatorConfig``) of a running emulator."""
    try:
        config = msgspec.json.decode(await request.read(), type=EmulatorConfig)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return _bad(f"bad EmulatorConfig: {exc}")
    request.app[EMULATOR_KEY].configure(config)
    return _json(config)


def add_control_routes(app: web.Application) -> None:
    """Mount the ``/_emulator/*`` routes on ``app``."""
    router = app.router
    router.add_post("/_emulator/reset", _reset, name="emulator.reset")
    router.add_get("/_emulator/clock", _get_clock, name="emulator.clock.get")
    router.add_post("/_emulator/clock", _post_clock, name="emulator.clock.post")
    router.add_post("/_emulator/script", _post_script, name="emulator.script.post")
    router.add_get("/_emulator/script", _get_script, name="emulator.script.get")
    router.add_delete("/_emulator/script", _delete_script, name="emulator.script.delete")
    router.add_get("/_emulator/requests", _requests, name="emulator.requests")
    router.add_get("/_emulator/verdict", _verdict, name="emulator.verdict")
    router.add_get("/_emulator/stats", _stats, name="emulator.stats")
    router.add_get("/_emulator/config", _get_config, name="emulator.config.get")
    router.add_put("/_emulator/config", _put_config, name="emulator.config.put")
