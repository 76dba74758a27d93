"""TELUS GT Studio (Playment) routes, mounted under ``/telus`` (``/v1/attachments`` and friends
would otherwise share OpenAI's ``/v1`` namespace): a client's base URL is ``{url}/telus``.

Served (v1, plus the legacy singular ``/v1/project/:pid/batch``):

- ``POST /v1/projects/:pid/batch`` -> ``{batch_id}``; unique names (``BATCH_CREATION``);
- ``POST /v1/projects/:pid/jobs`` -> ``{job_id, reference_id, work_flow_id}``; the documented
  codes ``FS_0001..FS_00012``, ``GE_0001``; no ``batch_id`` -> the project's Default batch;
- ``GET /v1/projects/:pid/jobs/:job_id`` -> status, ``result`` URL once completed;
- ``GET /v1/projects/:pid/batch/:batch_id?page_token=`` -> 100 jobs per page, a numeric
  ``next_page_token``, ``""`` on the last page, ``invalid_request_error`` for a bad token;
- ``GET /v1/projects/:pid/details`` -> every batch with counters and status;
- ``GET /v1/attachments?url=`` -> 302 to the signed result file ``/telus/_results/:id.json``.

Every answer is the documented envelope; errors are ``{"success": false, "error": {"code",
"message"}}`` with HTTP 400 (401 for a bad key by default; 429 past 20 POST/s; 5xx only from
injected faults, code ``api_error``). Auth is ``x-api-key``; result files need the signature.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final, TypeVar

import msgspec
from aiohttp import web

from .._routing import EMULATOR_KEY, ApiError, ProviderRoutes, Route
from .store import RESULTS_PATH, TelusState
from .wire import (
    CREATE_BATCH_DECODER,
    CREATE_JOB_DECODER,
    BatchCreated,
    JobCreated,
    encode,
    fail,
    ok,
)

__all__ = ["PREFIX", "provider_routes", "telus_state"]

_B = TypeVar("_B")

PREFIX: Final = "/telus"
_SIGNING_KEY: Final = b"batchpump-emulator-telus-results"
_AUTH_CODES: Final = {401: "unauthorized_request", 400: "auth-failure"}


def telus_state(request: web.Request) -> TelusState:
    """The GT Studio state of the app's emulator."""
    return request.app[EMULATOR_KEY].provider_state("telus", TelusState)


def _sign(job_id: str) -> str:
    return hmac.new(_SIGNING_KEY, job_id.encode(), hashlib.sha256).hexdigest()[:32]


def _json(body: bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, content_type="application/json")


def render_error(error: ApiError) -> web.Response:
    """The failure envelope; the status is the error's own (400 for API errors)."""
    if error.code is not None:
        code = error.code
    elif error.status >= 500:
        code = "api_error"
    elif error.status == 429:
        code = "rate_limit_exceeded"
    else:
        code = "invalid_request_error"
    message = error.message
    if error.status == 429:
        message = "too many requests: the POST API allows 20 requests per second"
    response = _json(fail(code, message), error.status)
    response.headers.update(error.headers)
    return response


def authorize(request: web.Request) -> ApiError | None:
    """``x-api-key`` on the API; the signature in the URL on result files."""
    if request.path.startswith(f"{PREFIX}/_results/"):
        job_id = request.match_info.get("job_id", "")
        if hmac.compare_digest(request.query.get("sig", ""), _sign(job_id)):
            return None
        return ApiError(403, "AccessDenied: this file is private", code="unauthorized")
    settings = telus_state(request).settings
    key = request.headers.get("x-api-key", "").strip()
    if key and (not settings.api_keys or key in settings.api_keys):
        return None
    status = settings.auth_status
    return ApiError(status, "API key is wrong", code=_AUTH_CODES[status])


def _post_token(request: web.Request) -> None:
    """The documented 20 POST/s, on the emulator clock (429 beyond it, counted)."""
    if not telus_state(request).take_post():
        request.app[EMULATOR_KEY].raw_stats.faults["rate_limited"] += 1
        raise ApiError(429, "rate limited")


async def _body(request: web.Request, decoder: msgspec.json.Decoder[_B]) -> _B:
    try:
        return decoder.decode(await request.read())
    except msgspec.ValidationError as exc:
        raise ApiError(400, f"invalid payload: {exc}", code="GE_0001") from None
    except msgspec.DecodeError:
        raise ApiError(400, "malformed JSON", code="GE_0001") from None


async def create_batch(request: web.Request) -> web.Response:
    _post_token(request)
    body = await _body(request, CREATE_BATCH_DECODER)
    batch = telus_state(request).create_batch(request.match_info["project_id"], body)
    return _json(ok(BatchCreated(batch_id=batch.id)))


async def create_job(request: web.Request) -> web.Response:
    _post_token(request)
    body = await _body(request, CREATE_JOB_DECODER)
    job = telus_state(request).create_job(request.match_info["project_id"], body)
    created = JobCreated(
        job_id=job.id, reference_id=job.reference_id, work_flow_id=job.work_flow_id
    )
    return _json(ok(created))


async def get_job(request: web.Request) -> web.Response:
    state = telus_state(request)
    project_id = request.match_info["project_id"]
    job = state.job(project_id, request.match_info["job_id"])
    origin = f"{request.scheme}://{request.host}"
    return _json(ok(state.job_details(project_id, job, origin)))


async def batch_jobs(request: web.Request) -> web.Response:
    page = telus_state(request).batch_page(
        request.match_info["project_id"],
        request.match_info["batch_id"],
        request.query.get("page_token", ""),
    )
    return _json(ok(page))


async def details(request: web.Request) -> web.Response:
    return _json(ok(telus_state(request).details(request.match_info["project_id"])))


async def attachment(request: web.Request) -> web.Response:
    """302 to the signed URL of a result file of this emulator."""
    url = request.query.get("url", "")
    path = url.split("?", 1)[0]
    marker = f"{RESULTS_PATH}/"
    job_id = path.rsplit(marker, 1)[-1].removesuffix(".json") if marker in path else ""
    if not job_id or telus_state(request).result_file(job_id) is None:
        raise ApiError(400, "url is not an attachment of this project", code="GE_0001")
    location = request.url.with_path(f"{RESULTS_PATH}/{job_id}.json").with_query(sig=_sign(job_id))
    return web.Response(status=302, headers={"Location": str(location)})


async def result_file(request: web.Request) -> web.Response:
    content = telus_state(request).result_file(request.match_info["job_id"])
    if content is None:
        raise ApiError(404, "NoSuchKey", code="resource_error")
    return _json(encode(content))


def provider_routes() -> ProviderRoutes:
    """The GT Studio surface, with each route's endpoint class (for faults and rate limits)."""
    v1 = f"{PREFIX}/v1"
    pid = "{project_id}"
    routes = (
        Route(
            "POST", f"{v1}/projects/{pid}/batch", create_batch, "telus.batch.create", "create", True
        ),
        Route(
            "POST",
            f"{v1}/project/{pid}/batch",
            create_batch,
            "telus.batch.create_legacy",
            "create",
            True,
        ),
        Route("POST", f"{v1}/projects/{pid}/jobs", create_job, "telus.jobs.create", "item", True),
        Route("GET", f"{v1}/projects/{pid}/jobs/{{job_id}}", get_job, "telus.jobs.get", "download"),
        Route(
            "GET", f"{v1}/projects/{pid}/batch/{{batch_id}}", batch_jobs, "telus.batch.jobs", "poll"
        ),
        Route("GET", f"{v1}/projects/{pid}/details", details, "telus.project.details", "poll"),
        Route("GET", f"{v1}/attachments", attachment, "telus.attachments", "download"),
        Route(
            "GET", f"{RESULTS_PATH}/{{job_id}}.json", result_file, "telus.results.file", "download"
        ),
    )
    return ProviderRoutes(
        name="telus",
        routes=routes,
        render_error=render_error,
        authorize=authorize,
        prefix=f"{PREFIX}/",
    )
