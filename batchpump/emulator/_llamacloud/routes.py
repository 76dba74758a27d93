"""LlamaCloud routes: ``/api/v1/beta/directories`` and ``/api/v2/{batches,parse,extract}``.

Handlers decode, call ``store`` and encode; this module serves the v2 batches and their
per-file jobs, ``directories`` the directories and their files, and ``http`` holds how every
answer looks (FastAPI's error bodies, bearer auth, pages). ``project_id``/``organization_id``
query parameters are accepted and ignored everywhere. Query arrays are read in repeat form
(``?expand=results&expand=...``, ``?job_ids=a&job_ids=b``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import msgspec
from aiohttp import web

from .._routing import ProviderRoutes, Route
from .directories import directory_routes
from .http import (
    Handler,
    authorize,
    json_response,
    page,
    render_error,
    state_of,
    validated,
)
from .records import (
    LlamaJob,
    batch_view,
    extract_job_view,
    parse_job_view,
    parse_result_view,
)
from .wire import BATCH_STATUSES, BatchCreateBody, Invalid, decode_body, missing

__all__ = ["provider_routes"]

_create_batch: Final = msgspec.json.Decoder(BatchCreateBody)


# -- batches ------------------------------------------------------------------------------------


@validated
async def create_batch(request: web.Request) -> web.StreamResponse:
    body: BatchCreateBody = decode_body(await request.read(), _create_batch)
    if not body.config.job.configuration_id:
        raise missing("body", "config", "job", "configuration_id")
    state = state_of(request)
    batch = state.create_batch(body)
    return json_response(
        batch_view(state.project_id, batch, state.emulator.now(), expand=False), 201
    )


@validated
async def list_batches(request: web.Request) -> web.StreamResponse:
    status = request.query.get("status")
    if status is not None and status not in BATCH_STATUSES:
        msg = f"Input should be {', '.join(repr(s) for s in BATCH_STATUSES)}"
        raise Invalid([{"loc": ["query", "status"], "msg": msg, "type": "enum", "input": status}])
    state = state_of(request)
    t = state.emulator.now()
    found = state.list_batches(
        status=status, source_directory_id=request.query.get("source_directory_id")
    )
    return page(request, [batch_view(state.project_id, b, t, expand=False) for b in found])


async def get_batch(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    batch = state.batch(request.match_info["batch_id"])
    expand = "results" in request.query.getall("expand", [])
    return json_response(batch_view(state.project_id, batch, state.emulator.now(), expand=expand))


async def cancel_batch(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    batch = state.cancel_batch(request.match_info["batch_id"])
    return json_response(batch_view(state.project_id, batch, state.emulator.now(), expand=False))


# -- per-file jobs ------------------------------------------------------------------------------


def _job_lister(kind: str, view: Callable[[str, LlamaJob, float], object]) -> Handler:
    """``GET /api/v2/parse`` or ``/api/v2/extract``: jobs of ``kind`` by ``job_ids``/``status``."""

    @validated
    async def list_jobs(request: web.Request) -> web.StreamResponse:
        state = state_of(request)
        jobs = state.list_jobs(
            kind, request.query.getall("job_ids", []), request.query.get("status")
        )
        t = state.emulator.now()
        return page(request, [view(state.project_id, j, t) for j in jobs])

    return list_jobs


list_parse_jobs: Final = _job_lister("parse_v2", parse_job_view)
list_extract_jobs: Final = _job_lister("extract_v2", extract_job_view)


async def get_parse_job(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    job = state.job("parse_v2", request.match_info["job_id"])
    expand = set(request.query.getall("expand", []))
    return json_response(parse_result_view(state.project_id, job, state.emulator.now(), expand))


async def get_extract_job(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    job = state.job("extract_v2", request.match_info["job_id"])
    return json_response(extract_job_view(state.project_id, job, state.emulator.now()))


def provider_routes() -> ProviderRoutes:
    """The LlamaCloud surface, with each route's endpoint class (for faults and rate limits)."""
    routes = (
        *directory_routes(),
        Route("POST", "/api/v2/batches", create_batch, "llamacloud.batches.create", "create", True),
        Route("GET", "/api/v2/batches", list_batches, "llamacloud.batches.list", "poll"),
        Route("GET", "/api/v2/batches/{batch_id}", get_batch, "llamacloud.batches.get", "poll"),
        Route(
            "POST",
            "/api/v2/batches/{batch_id}/cancel",
            cancel_batch,
            "llamacloud.batches.cancel",
            "create",
        ),
        Route("GET", "/api/v2/parse", list_parse_jobs, "llamacloud.parse.list", "poll"),
        Route("GET", "/api/v2/parse/{job_id}", get_parse_job, "llamacloud.parse.get", "download"),
        Route("GET", "/api/v2/extract", list_extract_jobs, "llamacloud.extract.list", "poll"),
        Route(
            "GET", "/api/v2/extract/{job_id}", get_extract_job, "llamacloud.extract.get", "download"
        ),
    )
    return ProviderRoutes(
        name="llamacloud",
        routes=routes,
        render_error=render_error,
        authorize=authorize,
        prefix="/api/",
    )
