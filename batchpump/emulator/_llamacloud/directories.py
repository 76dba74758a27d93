"""LlamaCloud directory routes: ``/api/v1/beta/directories`` and the files in each.

Directories are created, listed (by ``name``/``type``), read and deleted; files are uploaded as
multipart (``upload_file`` streamed, only its first ``HEAD_BYTES`` kept, with the ``unique_id``
and ``display_name`` fields), listed (by ``unique_id``/``display_name``), read and deleted.
The rules live in ``store``.
"""

from __future__ import annotations

from typing import Final

import msgspec
from aiohttp import BodyPartReader, web

from .._routing import ApiError, Route, malformed_body
from .http import json_response, page, state_of, validated
from .records import DirectoryRecord, FileRecord, directory_view, file_view
from .store import HEAD_BYTES
from .wire import DirectoryCreateBody, Invalid, decode_body, missing

__all__ = ["directory_routes"]

_create_directory: Final = msgspec.json.Decoder(DirectoryCreateBody)
_CHUNK: Final = 256 * 1024


@validated
async def create_directory(request: web.Request) -> web.StreamResponse:
    body: DirectoryCreateBody = decode_body(await request.read(), _create_directory)
    if not body.name:
        msg = "String should have at least 1 character"
        raise Invalid([{"loc": ["body", "name"], "msg": msg, "type": "string_too_short"}])
    # The spec says ephemeral directories need expires_at, but the official SDKs no longer
    # send it (hidden by a Stainless change in 2026-06): accept its absence.
    state = state_of(request)
    return json_response(directory_view(state.project_id, state.create_directory(body)), 201)


@validated
async def list_directories(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    name, kind = request.query.get("name"), request.query.get("type")
    picked = [
        directory_view(state.project_id, d)
        for d in state.directories.values()
        if (name is None or d.name == name) and (kind is None or d.type == kind)
    ]
    return page(request, picked)


async def get_directory(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    directory = state.directory(request.match_info["directory_id"])
    return json_response(directory_view(state.project_id, directory))


async def delete_directory(request: web.Request) -> web.StreamResponse:
    state_of(request).delete_directory(request.match_info["directory_id"])
    return web.Response(status=204)


@validated
async def upload_file(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    state.check_upload_window()
    directory_id = request.match_info["directory_id"]
    state.directory(directory_id)
    if not request.content_type.startswith("multipart/"):
        raise missing("body", "upload_file")
    fields: dict[str, str] = {}
    found: tuple[str, int, bytes] | None = None
    with malformed_body():
        reader = await request.multipart()
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
    return json_response(file_view(state.project_id, record), 201)


@validated
async def list_files(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    directory = state.directory(request.match_info["directory_id"])
    uid, name = request.query.get("unique_id"), request.query.get("display_name")
    picked = [
        file_view(state.project_id, f)
        for f in directory.files.values()
        if (uid is None or f.unique_id == uid) and (name is None or f.display_name == name)
    ]
    return page(request, picked)


def _dir_file(request: web.Request) -> tuple[DirectoryRecord, FileRecord]:
    directory = state_of(request).directory(request.match_info["directory_id"])
    file_id = request.match_info["file_id"]
    record = directory.files.get(file_id)
    if record is None:
        raise ApiError(404, f"Directory file {file_id} not found")
    return directory, record


async def get_file(request: web.Request) -> web.StreamResponse:
    return json_response(file_view(state_of(request).project_id, _dir_file(request)[1]))


async def delete_file(request: web.Request) -> web.StreamResponse:
    directory, record = _dir_file(request)
    del directory.files[record.id]
    return web.Response(status=204)


def directory_routes() -> tuple[Route, ...]:
    """The directory and file routes, with each route's endpoint class."""
    dirs, files = "/api/v1/beta/directories", "/api/v1/beta/directories/{directory_id}/files"
    one_dir, one_file = f"{dirs}/{{directory_id}}", f"{files}/{{file_id}}"
    return (
        Route("POST", dirs, create_directory, "llamacloud.directories.create", "create"),
        Route("GET", dirs, list_directories, "llamacloud.directories.list", "poll"),
        Route("GET", one_dir, get_directory, "llamacloud.directories.get", "poll"),
        Route("DELETE", one_dir, delete_directory, "llamacloud.directories.delete", "create"),
        Route("POST", f"{files}/upload", upload_file, "llamacloud.files.upload", "upload"),
        Route("GET", files, list_files, "llamacloud.files.list", "poll"),
        Route("GET", one_file, get_file, "llamacloud.files.get", "poll"),
        Route("DELETE", one_file, delete_file, "llamacloud.files.delete", "create"),
    )
