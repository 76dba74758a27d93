"""LlamaCloud routes: ``/api/v1/beta/directories`` and ``/api/v2/{batches,parse,extract}``.

Handlers decode, call ``_llamacloud_store`` and encode. Auth is ``Authorization: Bearer <key>``
(any non-empty key; ``project_id``/``organization_id`` query parameters are accepted and
ignored everywhere). Errors are FastAPI's: ``422 {"detail": [{"loc", "msg", "type"}]}`` for
request validation, ``{"detail": "<message>"}`` for everything else, the shared middleware's
429s and 5xx included (a 429 keeps only ``retry-after``). Query arrays are read in repeat form
(``?expand=results&expand=...``, ``?job_ids=a&job_ids=b``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

import msgspec
from aiohttp import BodyPartReader, web

from ._llamacloud_jobs import (
    FileRecord,
    batch_view,
    directory_view,
    extract_job_view,
    file_view,
    parse_job_view,
    parse_result_view,
)
from ._llamacloud_store import HEAD_BYTES, DirectoryRecord, LlamaCloudState, paginate
from ._llamacloud_wire import (
    BATCH_STATUSES,
    BatchCreateBody,
    DirectoryCreateBody,
    Invalid,
    decode_body,
    missing,
)
from ._routing import EMULATOR_KEY, ApiError, ProviderRoutes, Route
from ._state import Emulator

__all__ = ["llamacloud_state", "provider_routes", "render_error"]

_encoder: Final = msgspec.json.Encoder()
_create_directory: Final = msgspec.json.Decoder(DirectoryCreateBody)
_create_batch: Final = msgspec.json.Decoder(BatchCreateBody)
_CHUNK: Final = 256 * 1024
_KEPT_HEADERS: Final = ("retry-after", "x-should-retry")
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def llamacloud_state(emulator: Emulator) -> LlamaCloudState:
    """The LlamaCloud state of an emulator (created on first use)."""
    return emulator.provider_state("llamacloud", LlamaCloudState)


def _state(request: web.Request) -> LlamaCloudState:
    return llamacloud_state(request.app[EMULATOR_KEY])


def _json(obj: Any, status: int = 200) -> web.Response:
    return web.Response(body=_encoder.encode(obj), status=status, content_type="application/json")


def render_error(error: ApiError) -> web.Response:
    """FastAPI's ``{"detail": "..."}`` body."""
    response = _json({"detail": error.message}, error.status)
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


def _validated(handler: _Handler) -> _Handler:
    """Answer ``Invalid`` as FastAPI's 422 ``{"detail": [...]}``."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except Invalid as exc:
            return _json({"detail": exc.detail}, 422)

    return wrapped


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


def _page(request: web.Request, items: list[Any]) -> web.Response:
    page = paginate(items, _int_query(request, "page_size"), request.query.get("page_token"))
    return _json(page)


# -- directories ------------------------------------------------------------------------------


@_validated
async def create_directory(request: web.Request) -> web.StreamResponse:
    body: DirectoryCreateBody = decode_body(await request.read(), _create_directory)
    if not body.name:
        msg = "String should have at least 1 character"
        raise Invalid([{"loc": ["body", "name"], "msg": msg, "type": "string_too_short"}])
    # The spec says ephemeral directories need expires_at, but the official SDKs no longer
    # send it (hidden by a Stainless change in 2026-06): accept its absence.
    state = _state(request)
    return _json(directory_view(state.project_id, state.create_directory(body)), 201)


@_validated
async def list_directories(request: web.Request) -> web.StreamResponse:
    state = _state(request)
    name, kind = request.query.get("name"), request.query.get("type")
    picked = [
        directory_view(state.project_id, d)
        for d in state.directories.values()
        if (name is None or d.name == name) and (kind is None or d.type == kind)
    ]
    return _page(request, picked)


async def get_directory(request: web.Request) -> web.StreamResponse:
    state = _state(request)
    directory = state.directory(request.match_info["directory_id"])
    return _json(directory_view(state.project_id, directory))


async def delete_directory(request: web.Request) -> web.StreamResponse:
    _state(request).delete_directory(request.match_info["directory_id"])
    return web.Response(status=204)


@_validated
async def upload_file(request: web.Request) -> web.StreamResponse:
    state = _state(request)
    state.check_upload_window()
    directory_id = request.match_info["directory_id"]
    state.directory(directory_id)
    if not request.content_type.startswith("multipart/"):
        raise missing("body", "upload_file")
    reader = await request.multipart()
    fields: dict[str, str] = {}
    found: tuple[str, int, bytes] | None = None
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader) or part.name is None:
            continue
        if part.name == "upload_file":
            size, head = 0, bytearray()
            while chunk := await part.read_chunk(_CHUNK):
                size += len(chunk)
                head += chunk[: max(0, HEAD_BYTES - len(head))]
            found = (part.filename or "upload", size, bytes(head))
        else:
            fields[part.name] = await part.text()
    if found is None:
        raise missing("body", "upload_file")
    filename, size, first = found
    record = state.upload(
        directory_id,
        filename=filename,
        size=size,
        head=first,
        unique_id=fields.get("unique_id") or None,
        display_name=fields.get("display_name") or None,
    )
    return _json(file_view(state.project_id, record), 201)


@_validated
async def list_files(request: web.Request) -> web.StreamResponse:
    state = _state(request)
    directory = state.directory(request.match_info["directory_id"])
    uid, name = request.query.get("unique_id"), request.query.get("display_name")
    picked = [
        file_view(state.project_id, f)
        for f in directory.files.values()
        if (uid is None or f.unique_id == uid) and (name is None or f.display_name == name)
    ]
    return _page(request, picked)


def _dir_file(request: web.Request) -> tuple[DirectoryRecord, FileRecord]:
    directory = _state(request).directory(request.match_info["directory_id"])
    file_id = request.match_info["file_id"]
    record = directory.files.get(file_id)
    if record is None:
        raise ApiError(404, f"Directory file {file_id} not found")
    return directory, record


async def get_file(request: web.Request) -> web.StreamResponse:
    return _json(file_view(_state(request).project_id, _dir_file(request)[1]))


async def delete_file(request: web.Request) -> web.StreamResponse:
    directory, record = _dir_file(request)
    del directory.files[record.id]
    return web.Response(status=204)


# -- batches ------------------------------------------------------------------------------------


@_validated
async def create_batch(request: web.Request) -> web.StreamResponse:
    body: BatchCreateBody = decode_body(await request.read(), _create_batch)
    if not body.config.job.configuration_id:
        raise missing("body", "config", "job", "configuration_id")
    state = _state(request)
    batch = state.create_batch(body)
    return _json(batch_view(state.project_id, batch, state.emulator.now(), expand=False), 201)


@_validated
async def list_batches(request: web.Request) -> web.StreamResponse:
    status = request.query.get("status")
    if status is not None and status not in BATCH_STATUSES:
        msg = f"Input should be {', '.join(repr(s) for s in BATCH_STATUSES)}"
        raise Invalid([{"loc": ["query", "status"], "msg": msg, "type": "enum", "input": status}])
    state = _state(request)
    t = state.emulator.now()
    found = state.list_batches(
        status=status, source_directory_id=request.query.get("source_directory_id")
    )
    return _page(request, [batch_view(state.project_id, b, t, expand=False) for b in found])


async def get_batch(request: web.Request) -> web.StreamResponse:
    state = _state(request)
    batch = state.batch(request.match_info["batch_id"])
    expand = "results" in request.query.getall("expand", [])
    return _json(batch_view(state.project_id, batch, state.emulator.now(), expand=expand))


async def cancel_batch(request: web.Request) -> web.StreamResponse:
    state = _state(request)
    batch = state.cancel_batch(request.match_info["batch_id"])
    return _json(batch_view(state.project_id, batch, state.emulator.now(), expand=False))


# -- per-file jobs ------------------------------------------------------------------------------


@_validated
async def list_parse_jobs(request: web.Request) -> web.StreamResponse:
    state = _state(request)
    jobs = state.list_jobs(
        "parse_v2", request.query.getall("job_ids", []), request.query.get("status")
    )
    t = state.emulator.now()
    return _page(request, [parse_job_view(state.project_id, j, t) for j in jobs])


async def get_parse_job(request: web.Request) -> web.StreamResponse:
    state = _state(request)
    job = state.job("parse_v2", request.match_info["job_id"])
    expand = set(request.query.getall("expand", []))
    return _json(parse_result_view(state.project_id, job, state.emulator.now(), expand))


@_validated
async def list_extract_jobs(request: web.Request) -> web.StreamResponse:
    state = _state(request)
    jobs = state.list_jobs(
        "extract_v2", request.query.getall("job_ids", []), request.query.get("status")
    )
    t = state.emulator.now()
    return _page(request, [extract_job_view(state.project_id, j, t) for j in jobs])


async def get_extract_job(request: web.Request) -> web.StreamResponse:
    state = _state(request)
    job = state.job("extract_v2", request.match_info["job_id"])
    return _json(extract_job_view(state.project_id, job, state.emulator.now()))


def provider_routes() -> ProviderRoutes:
    """The LlamaCloud surface, with each route's endpoint class (for faults and rate limits)."""
    dirs, files = "/api/v1/beta/directories", "/api/v1/beta/directories/{directory_id}/files"
    one_file = f"{files}/{{file_id}}"
    routes = (
        Route("POST", dirs, create_directory, "llamacloud.directories.create", "create"),
        Route("GET", dirs, list_directories, "llamacloud.directories.list", "poll"),
        Route(
            "GET", f"{dirs}/{{directory_id}}", get_directory, "llamacloud.directories.get", "poll"
        ),
        Route(
            "DELETE",
            f"{dirs}/{{directory_id}}",
            delete_directory,
            "llamacloud.directories.delete",
            "create",
        ),
        Route("POST", f"{files}/upload", upload_file, "llamacloud.files.upload", "upload"),
        Route("GET", files, list_files, "llamacloud.files.list", "poll"),
        Route("GET", one_file, get_file, "llamacloud.files.get", "poll"),
        Route("DELETE", one_file, delete_file, "llamacloud.files.delete", "create"),
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
