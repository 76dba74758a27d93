"""OpenAI routes: ``/v1/files``, ``/v1/uploads``, ``/v1/batches`` (what the SDK calls).

Handlers only decode and encode; the rules live in ``store`` (batches) and ``files`` (files,
uploads). Registered by the app factory through ``provider_routes()``.
"""

from __future__ import annotations

import re
from typing import Any, Final, TypeVar

import msgspec
from aiohttp import BodyPartReader, web

from .._routing import EMULATOR_KEY, ApiError, ProviderRoutes, Route, malformed_body
from .store import OpenAIState
from .wire import CompleteUploadBody, CreateBatchBody, CreateUploadBody, DeletedFile

__all__ = ["openai_state", "provider_routes"]

_T = TypeVar("_T")
_CHUNK: Final = 1 << 16
_encoder: Final = msgspec.json.Encoder()
_UNKNOWN_FIELD: Final = re.compile(r"unknown field `([^`]*)`")
_AT_PATH: Final = re.compile(r"at `\$\.?([^`]*)`")


def openai_state(request: web.Request) -> OpenAIState:
    """The OpenAI state of the app's emulator."""
    return request.app[EMULATOR_KEY].provider_state("openai", OpenAIState)


def _json(obj: Any, status: int = 200) -> web.Response:
    return web.Response(body=_encoder.encode(obj), status=status, content_type="application/json")


def render_error(error: ApiError) -> web.Response:
    """OpenAI's error body: ``{"error": {"message", "type", "param", "code"}}``."""
    body = {
        "error": {
            "message": error.message,
            "type": error.type,
            "param": error.param,
            "code": error.code,
        }
    }
    response = _json(body, error.status)
    response.headers.update(error.headers)
    return response


def authorize(request: web.Request) -> ApiError | None:
    """Any non-empty bearer token passes; the token is never echoed."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return None
    return ApiError(
        401,
        "You didn't provide an API key. You need to provide your API key in an Authorization"
        " header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
        code="missing_api_key" if not header else "invalid_api_key",
    )


async def _decode(request: web.Request, decoder: msgspec.json.Decoder[_T]) -> _T:
    raw = await request.read()
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as exc:
        text = str(exc)
        unknown = _UNKNOWN_FIELD.search(text)
        if unknown:
            name = unknown.group(1)
            raise ApiError(
                400,
                f"Unrecognized request argument supplied: {name}",
                param=name,
                code="unknown_parameter",
            ) from None
        at = _AT_PATH.search(text)
        raise ApiError(
            400, f"Invalid type: {text}", param=at.group(1) if at else None, code="invalid_type"
        ) from None
    except msgspec.DecodeError:
        raise ApiError(
            400,
            "We could not parse the JSON body of your request. (HINT: This likely means you"
            " aren't using your HTTP library correctly. The OpenAI API expects a JSON payload,"
            " but what was sent was not valid JSON.)",
        ) from None


async def _multipart(
    request: web.Request, file_field: str
) -> tuple[str | None, bytes | None, dict[str, str]]:
    """Stream a multipart form: the file part to memory in chunks, the rest as text fields."""
    if not request.content_type.startswith("multipart/"):
        raise ApiError(
            400, "This endpoint expects a multipart/form-data body.", code="invalid_content_type"
        )
    filename: str | None = None
    data: bytes | None = None
    fields: dict[str, str] = {}
    with malformed_body():
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader) or part.name is None:
                continue
            if part.name == file_field:
                buf = bytearray()
                while chunk := await part.read_chunk(_CHUNK):
                    buf += chunk
                filename, data = part.filename or "upload", bytes(buf)
            else:
                fields[part.name] = await part.text()
    return filename, data, fields


def _limit(request: web.Request, default: int, maximum: int) -> int:
    raw = request.query.get("limit")
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= maximum:
        raise ApiError(
            400,
            f"Invalid 'limit': expected an integer between 1 and {maximum}.",
            param="limit",
            code="invalid_value",
        )
    return value


_create_batch: Final = msgspec.json.Decoder(CreateBatchBody)
_create_upload: Final = msgspec.json.Decoder(CreateUploadBody)
_complete_upload: Final = msgspec.json.Decoder(CompleteUploadBody)


# -- files --------------------------------------------------------------------------------------


async def create_file(request: web.Request) -> web.Response:
    filename, data, fields = await _multipart(request, "file")
    record = openai_state(request).files.upload_file(filename, fields.get("purpose"), data or b"")
    return _json(record.to_wire())


async def retrieve_file(request: web.Request) -> web.Response:
    return _json(openai_state(request).files.get_file(request.match_info["file_id"]).to_wire())


async def file_content(request: web.Request) -> web.Response:
    record = openai_state(request).files.get_file(request.match_info["file_id"])
    return web.Response(body=record.data, content_type="application/octet-stream")


async def delete_file(request: web.Request) -> web.Response:
    file_id = request.match_info["file_id"]
    openai_state(request).files.delete_file(file_id)
    return _json(DeletedFile(id=file_id))


async def list_files(request: web.Request) -> web.Response:
    order = request.query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise ApiError(
            400, "Invalid 'order': expected 'asc' or 'desc'.", param="order", code="invalid_value"
        )
    page = openai_state(request).files.list_files(
        purpose=request.query.get("purpose"),
        limit=_limit(request, 10_000, 10_000),
        order=order,
        after=request.query.get("after"),
    )
    return _json(page)


# -- uploads ------------------------------------------------------------------------------------


async def create_upload(request: web.Request) -> web.Response:
    body = await _decode(request, _create_upload)
    state = openai_state(request)
    return _json(state.files.create_upload(body).to_wire(state.emulator.now()))


async def add_upload_part(request: web.Request) -> web.Response:
    _, data, _ = await _multipart(request, "data")
    if data is None:
        raise ApiError(
            400,
            "Missing required parameter: 'data'.",
            param="data",
            code="missing_required_parameter",
        )
    return _json(openai_state(request).files.add_part(request.match_info["upload_id"], data))


async def complete_upload(request: web.Request) -> web.Response:
    body = await _decode(request, _complete_upload)
    state = openai_state(request)
    upload = state.files.complete_upload(request.match_info["upload_id"], body)
    return _json(upload.to_wire(state.emulator.now()))


async def cancel_upload(request: web.Request) -> web.Response:
    state = openai_state(request)
    return _json(
        state.files.cancel_upload(request.match_info["upload_id"]).to_wire(state.emulator.now())
    )


# -- batches ------------------------------------------------------------------------------------


async def create_batch(request: web.Request) -> web.Response:
    body = await _decode(request, _create_batch)
    state = openai_state(request)
    azure = request.path.startswith("/openai/")  # the same handler serves Azure's routes
    batch = state.create_batch(body, azure=azure)
    return _json(state.wire(batch, at=batch.created_at))  # as made, however late the answer


async def retrieve_batch(request: web.Request) -> web.Response:
    state = openai_state(request)
    return _json(state.wire(state.get_batch(request.match_info["batch_id"])))


async def cancel_batch(request: web.Request) -> web.Response:
    state = openai_state(request)
    return _json(state.wire(state.cancel_batch(request.match_info["batch_id"])))


async def list_batches(request: web.Request) -> web.Response:
    state = openai_state(request)
    return _json(
        state.list_batches(after=request.query.get("after"), limit=_limit(request, 20, 100))
    )


def provider_routes() -> ProviderRoutes:
    """The OpenAI surface, with each route's endpoint class (for faults and rate limits)."""
    routes = (
        Route("POST", "/v1/files", create_file, "openai.files.create", "upload"),
        Route("GET", "/v1/files", list_files, "openai.files.list", "poll"),
        Route("GET", "/v1/files/{file_id}", retrieve_file, "openai.files.retrieve", "poll"),
        Route("DELETE", "/v1/files/{file_id}", delete_file, "openai.files.delete", "poll"),
        Route(
            "GET", "/v1/files/{file_id}/content", file_content, "openai.files.content", "download"
        ),
        Route("POST", "/v1/uploads", create_upload, "openai.uploads.create", "upload"),
        Route(
            "POST",
            "/v1/uploads/{upload_id}/parts",
            add_upload_part,
            "openai.uploads.parts",
            "upload",
        ),
        Route(
            "POST",
            "/v1/uploads/{upload_id}/complete",
            complete_upload,
            "openai.uploads.complete",
            "upload",
        ),
        Route(
            "POST",
            "/v1/uploads/{upload_id}/cancel",
            cancel_upload,
            "openai.uploads.cancel",
            "upload",
        ),
        Route("POST", "/v1/batches", create_batch, "openai.batches.create", "create", creates=True),
        Route("GET", "/v1/batches", list_batches, "openai.batches.list", "poll"),
        Route("GET", "/v1/batches/{batch_id}", retrieve_batch, "openai.batches.retrieve", "poll"),
        Route(
            "POST", "/v1/batches/{batch_id}/cancel", cancel_batch, "openai.batches.cancel", "create"
        ),
    )
    return ProviderRoutes(
        name="openai", routes=routes, render_error=render_error, authorize=authorize, prefix="/v1/"
    )
