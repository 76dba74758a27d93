"""Together routes, mounted under ``/together/v1`` (Together's ``/files`` and ``/batches`` would
collide with OpenAI's ``/v1/...``): point a client's base URL at ``{url}/together/v1``.

Both upload flows are served:

- signed URL (what the SDKs do): ``POST /files`` (form fields, no file) answers **302** with
  ``Location`` (a loopback ``PUT`` target on this emulator, ``/together/_storage/{id}?sig=``)
  and ``X-Together-File-Id``; the ``PUT`` carries the raw bytes and no Together auth (the
  signature is the credential); ``POST /files/{id}/preprocess`` answers the ``FileResponse``;
- direct multipart: ``POST /files/upload`` (or ``POST /files`` with a ``file`` part) -> 200.

Errors come in Together's two shapes: ``{"error": "<string>"}`` (``BatchErrorResponse``) on
``/batches*`` and ``ErrorData`` elsewhere; 429s carry Together's ``x-ratelimit-*`` names plus
``retry-after``. Handlers only decode and encode; the rules live in ``store``.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from contextvars import ContextVar
from typing import Any, Final

import msgspec
from aiohttp import BodyPartReader, web

from .._routing import EMULATOR_KEY, ApiError, ProviderRoutes, Route, malformed_body
from .store import TogetherState
from .wire import CreateBatchBody, DeletedFile, FileList, JobWithWarning

__all__ = ["PREFIX", "provider_routes", "together_state"]

PREFIX: Final = "/together/v1"
STORAGE: Final = "/together/_storage"
_CHUNK: Final = 1 << 16
#: The middleware's placeholder status of an aborted answer (counted as status 0).
_SIGNING_KEY: Final = b"batchpump-emulator-together-storage"
_encoder: Final = msgspec.json.Encoder()
_create_batch: Final = msgspec.json.Decoder(CreateBatchBody)
#: Whether the request being answered is on ``/batches*`` (``BatchErrorResponse`` shape). Set
#: by ``authorize``, which the middleware calls first for every Together route, in the
#: request's own task; read by ``render_error``, which gets only the error.
_BATCH_SHAPE: ContextVar[bool] = ContextVar("together_batch_shape", default=False)


def together_state(request: web.Request) -> TogetherState:
    """The Together state of the app's emulator."""
    return request.app[EMULATOR_KEY].provider_state("together", TogetherState)


def _json(obj: Any, status: int = 200) -> web.Response:
    return web.Response(body=_encoder.encode(obj), status=status, content_type="application/json")


def _sign(file_id: str) -> str:
    return hmac.new(_SIGNING_KEY, file_id.encode(), hashlib.sha256).hexdigest()[:32]


def _together_429_headers(headers: dict[str, str]) -> dict[str, str]:
    """OpenAI-named limit headers (from the shared middleware) renamed as Together's."""
    out = {k: v for k, v in headers.items() if k in ("retry-after", "retry-after-ms")}
    if "x-ratelimit-limit-requests" in headers:
        out["x-ratelimit-limit"] = headers["x-ratelimit-limit-requests"]
    out["x-ratelimit-remaining"] = headers.get("x-ratelimit-remaining-requests", "0")
    wait = float(headers.get("retry-after-ms", "1000")) / 1000.0
    out["x-ratelimit-reset"] = str(max(1, math.ceil(wait)))
    return out


def render_error(error: ApiError) -> web.Response:
    """``{"error": "<message>"}`` on batch routes, ``ErrorData`` on the others."""
    headers = dict(error.headers)
    message = error.message
    if error.status == 429:
        headers = _together_429_headers(headers)
        message = "You have exceeded the rate limit. Please slow down and retry later."
    if _BATCH_SHAPE.get():
        body: Any = {"error": message}
    else:
        kind = "rate_limit_exceeded" if error.status == 429 else error.type
        detail = {"message": message, "type": kind, "param": error.param, "code": error.code}
        body = {"error": detail}
    response = _json(body, error.status)
    response.headers.update(headers)
    return response


def authorize(request: web.Request) -> ApiError | None:
    """Bearer auth on the API; the signature in the URL on storage ``PUT``s."""
    _BATCH_SHAPE.set(request.path.startswith(f"{PREFIX}/batches"))
    if request.path.startswith(STORAGE):
        file_id = request.match_info.get("file_id", "")
        if hmac.compare_digest(request.query.get("sig", ""), _sign(file_id)):
            return None
        return ApiError(403, "The request signature does not match.", type="forbidden")
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return None
    return ApiError(
        401,
        "Invalid API key provided. You can find your API key at"
        " https://api.together.xyz/settings/api-keys.",
        type="invalid_api_key",
        code="invalid_api_key",
    )


async def _form(request: web.Request) -> tuple[dict[str, str], tuple[str, bytes] | None]:
    """Text fields and the ``file`` part (multipart, streamed) or fields of a plain form."""
    if not request.content_type.startswith("multipart/"):
        with malformed_body("form body"):
            return {k: str(v) for k, v in (await request.post()).items()}, None
    fields: dict[str, str] = {}
    upload: tuple[str, bytes] | None = None
    with malformed_body():
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader) or part.name is None:
                continue
            if part.name == "file":
                buf = bytearray()
                while chunk := await part.read_chunk(_CHUNK):
                    buf += chunk
                upload = (part.filename or "upload.jsonl", bytes(buf))
            else:
                fields[part.name] = await part.text()
    return fields, upload


# -- files --------------------------------------------------------------------------------------


async def create_file(request: web.Request) -> web.StreamResponse:
    """Signed-URL flow step 1 (302), or a direct upload when a ``file`` part is present."""
    fields, upload = await _form(request)
    state = together_state(request)
    if upload is not None:
        return await _store_direct(state, fields, upload)
    record = state.files.new_file(
        fields.get("file_name"), fields.get("purpose"), fields.get("file_type")
    )
    location = request.url.with_path(f"{STORAGE}/{record.id}").with_query(sig=_sign(record.id))
    headers = {"Location": str(location), "X-Together-File-Id": record.id}
    return web.Response(status=302, headers=headers)


async def upload_file(request: web.Request) -> web.StreamResponse:
    """``POST /files/upload``: multipart with the bytes; answers the processed file."""
    fields, upload = await _form(request)
    if upload is None:
        raise ApiError(400, "Missing required field: file", param="file")
    return await _store_direct(together_state(request), fields, upload)


async def _store_direct(
    state: TogetherState, fields: dict[str, str], upload: tuple[str, bytes]
) -> web.Response:
    name = fields.get("file_name") or upload[0]
    record = state.files.new_file(name, fields.get("purpose"), fields.get("file_type"))
    record.data, record.processed = upload[1], True
    return _json(record.to_wire())


async def storage_put(request: web.Request) -> web.Response:
    """Signed-URL flow step 2: the raw bytes, streamed in (no size cap but the body's)."""
    record = together_state(request).files.get_file(request.match_info["file_id"], uploaded=False)
    buf = bytearray()
    async for chunk in request.content.iter_chunked(_CHUNK):
        buf += chunk
    record.data = bytes(buf)
    return web.Response(status=200, headers={"ETag": f'"{hashlib.md5(buf).hexdigest()}"'})


async def preprocess(request: web.Request) -> web.Response:
    """Signed-URL flow step 3."""
    return _json(together_state(request).files.preprocess(request.match_info["file_id"]).to_wire())


async def list_files(request: web.Request) -> web.Response:
    files = together_state(request).files.values()
    return _json(FileList(data=[f.to_wire() for f in files if f.data is not None]))


async def retrieve_file(request: web.Request) -> web.Response:
    return _json(together_state(request).files.get_file(request.match_info["file_id"]).to_wire())


async def file_content(request: web.Request) -> web.Response:
    record = together_state(request).files.get_file(request.match_info["file_id"])
    return web.Response(body=record.data, content_type="text/plain")


async def delete_file(request: web.Request) -> web.Response:
    state = together_state(request)
    file_id = request.match_info["file_id"]
    state.files.delete_file(file_id)
    return _json(DeletedFile(id=file_id))


# -- batches ------------------------------------------------------------------------------------


async def create_batch(request: web.Request) -> web.Response:
    """201 ``{"job", "warning"}``."""
    try:
        body = _create_batch.decode(await request.read())
    except msgspec.ValidationError as exc:
        raise ApiError(400, f"Invalid request: {exc}") from None
    except msgspec.DecodeError:
        raise ApiError(400, "Invalid JSON body") from None
    state = together_state(request)
    batch = state.create_batch(body)
    job = state.wire(batch, at=batch.created_at)  # as made, however late the answer
    return _json(JobWithWarning(job=job, warning=state.warnings.get(batch.id)), 201)


async def list_batches(request: web.Request) -> web.Response:
    """A bare JSON array."""
    return _json(together_state(request).list_batches())


async def retrieve_batch(request: web.Request) -> web.Response:
    state = together_state(request)
    return _json(state.wire(state.get_batch(request.match_info["batch_id"])))


async def cancel_batch(request: web.Request) -> web.Response:
    state = together_state(request)
    return _json(state.wire(state.cancel_batch(request.match_info["batch_id"])))


def provider_routes() -> ProviderRoutes:
    """The Together surface, with each route's endpoint class (for faults and rate limits)."""
    p = PREFIX
    routes = (
        Route("POST", f"{p}/files", create_file, "together.files.create", "upload"),
        Route("POST", f"{p}/files/upload", upload_file, "together.files.upload", "upload"),
        Route("PUT", f"{STORAGE}/{{file_id}}", storage_put, "together.storage.put", "upload"),
        Route(
            "POST",
            f"{p}/files/{{file_id}}/preprocess",
            preprocess,
            "together.files.preprocess",
            "upload",
        ),
        Route("GET", f"{p}/files", list_files, "together.files.list", "poll"),
        Route("GET", f"{p}/files/{{file_id}}", retrieve_file, "together.files.retrieve", "poll"),
        Route("DELETE", f"{p}/files/{{file_id}}", delete_file, "together.files.delete", "poll"),
        Route(
            "GET",
            f"{p}/files/{{file_id}}/content",
            file_content,
            "together.files.content",
            "download",
        ),
        Route("POST", f"{p}/batches", create_batch, "together.batches.create", "create", True),
        Route("GET", f"{p}/batches", list_batches, "together.batches.list", "poll"),
        Route(
            "GET", f"{p}/batches/{{batch_id}}", retrieve_batch, "together.batches.retrieve", "poll"
        ),
        Route(
            "POST",
            f"{p}/batches/{{batch_id}}/cancel",
            cancel_batch,
            "together.batches.cancel",
            "create",
        ),
    )
    return ProviderRoutes(
        name="together",
        routes=routes,
        render_error=render_error,
        authorize=authorize,
        prefix="/together/",
    )
