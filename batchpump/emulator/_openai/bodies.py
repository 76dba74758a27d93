"""OpenAI batch result files: plausible response bodies per endpoint, built once per batch.

Output lines follow ``BatchRequestOutput``. Succeeded lines go to the output file; lines the
endpoint rejected go to the error file with ``response.status_code`` and an ``{"error": ...}``
body; lines never run go to the error file with ``response: null`` and
``error: {code: "batch_expired" | "batch_cancelled"}``.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from typing import Any, Final

import msgspec

from .._faults import LINE_FATAL, LINE_OK, LINE_RETRY_429
from .batch import BatchRecord

__all__ = ["ResultFiles", "build_result_files", "response_body"]

_ECHO_CHARS: Final = 80
_COMPLETION_TOKENS: Final = 8

_LINE_ERRORS: Final[dict[int, tuple[int, dict[str, Any]]]] = {
    LINE_RETRY_429: (
        429,
        {
            "message": "Rate limit reached for requests. Please try again in 1s.",
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        },
    ),
    LINE_FATAL: (
        400,
        {
            "message": "Invalid request (emulated non-retryable line failure).",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_value",
        },
    ),
}
_SERVER_ERROR: Final = (
    500,
    {
        "message": "The server had an error while processing your request. Sorry about that!",
        "type": "server_error",
        "param": None,
        "code": None,
    },
)
_UNRUN: Final = {
    "expired": (
        "batch_expired",
        "This request could not be executed before the completion window expired.",
    ),
    "cancelled": (
        "batch_cancelled",
        "This request was not executed because the batch was cancelled.",
    ),
}


class _LineResponse(msgspec.Struct):
    status_code: int
    request_id: str
    body: msgspec.Raw


class _LineError(msgspec.Struct):
    code: str
    message: str


class _OutputLine(msgspec.Struct):
    id: str
    custom_id: str
    response: _LineResponse | None
    error: _LineError | None


class ResultFiles(msgspec.Struct, kw_only=True):
    """The two files of a finished batch and the ``custom_id``s that ran to success."""

    output: bytes
    errors: bytes
    succeeded: list[str]


def _echo(body: Any) -> str:
    if not isinstance(body, dict):
        return ""
    for key in ("messages", "input", "prompt"):
        value = body.get(key)
        if isinstance(value, list) and value:
            value = value[-1]
            if isinstance(value, dict):
                value = value.get("content", "")
        if isinstance(value, str):
            return value[:_ECHO_CHARS]
        if value is not None:
            return str(value)[:_ECHO_CHARS]
    return ""


def _vector(seed: str) -> list[float]:
    digest = hashlib.blake2b(seed.encode(), digest_size=8).digest()
    return [round(b / 255.0 - 0.5, 4) for b in digest]


def response_body(endpoint: str, raw: bytes, custom_id: str, created: int) -> dict[str, Any]:
    """A plausible 200 body for one request to ``endpoint``, with ``usage``.

    Azure's form of an endpoint (``/chat/completions``, no ``/v1``) gets the same body.
    """
    if not endpoint.startswith("/v1/"):
        endpoint = f"/v1{endpoint}"
    body: Any = msgspec.json.decode(raw)
    model = body.get("model", "emulated-model") if isinstance(body, dict) else "emulated-model"
    prompt_tokens = max(1, len(raw) // 4)
    text = f"Emulated reply to: {_echo(body)}"
    short = hashlib.blake2b(custom_id.encode(), digest_size=6).hexdigest()
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": _COMPLETION_TOKENS,
        "total_tokens": prompt_tokens + _COMPLETION_TOKENS,
    }
    if endpoint == "/v1/chat/completions":
        message = {"role": "assistant", "content": text, "refusal": None}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}
        return {
            "id": f"chatcmpl-{short}",
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [choice],
            "usage": usage,
            "system_fingerprint": None,
        }
    if endpoint == "/v1/embeddings":
        inputs = body.get("input") if isinstance(body, dict) else None
        count = len(inputs) if isinstance(inputs, list) else 1
        data = [
            {"object": "embedding", "index": i, "embedding": _vector(f"{custom_id}:{i}")}
            for i in range(count)
        ]
        usage = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
        return {"object": "list", "data": data, "model": model, "usage": usage}
    if endpoint == "/v1/responses":
        content = [{"type": "output_text", "text": text, "annotations": []}]
        output = {
            "type": "message",
            "id": f"msg_{short}",
            "status": "completed",
            "role": "assistant",
            "content": content,
        }
        return {
            "id": f"resp_{short}",
            "object": "response",
            "created_at": created,
            "status": "completed",
            "model": model,
            "output": [output],
            "usage": {
                "input_tokens": prompt_tokens,
                "output_tokens": _COMPLETION_TOKENS,
                "total_tokens": prompt_tokens + _COMPLETION_TOKENS,
            },
        }
    if endpoint == "/v1/completions":
        choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": "stop"}
        return {
            "id": f"cmpl-{short}",
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [choice],
            "usage": usage,
        }
    if endpoint == "/v1/moderations":
        result = {"flagged": False, "categories": {}, "category_scores": {}}
        return {"id": f"modr-{short}", "model": model, "results": [result]}
    return {
        "id": f"emu-{short}",
        "object": "emulated.response",
        "created": created,
        "model": model,
        "usage": usage,
    }


def build_result_files(
    batch: BatchRecord,
    *,
    done: int,
    unrun: str,
    created: int,
    new_id: Callable[[str], str],
    shuffle: random.Random | None,
) -> ResultFiles:
    """Write the output and error files of a finished batch.

    Args:
        batch: the batch.
        done: lines that ran (the first ``done`` in input order).
        unrun: ``"expired"`` or ``"cancelled"``: how lines that never ran are reported.
        created: the files' timestamp (unix seconds), used in response bodies.
        new_id: id factory (``batch_req_``, ``req_`` prefixes).
        shuffle: when given, the order of lines is shuffled with this RNG.
    """
    encoder = msgspec.json.Encoder()
    out = bytearray()
    err = bytearray()
    buf = bytearray()
    succeeded: list[str] = []
    order = list(range(len(batch.lines)))
    if shuffle is not None:
        shuffle.shuffle(order)
    for i in order:
        line = batch.lines[i]
        custom_id = line.custom_id or ""
        response: _LineResponse | None = None
        error: _LineError | None = None
        if i < done:
            code = batch.codes[i]
            if code == LINE_OK:
                raw = bytes(line.body) if line.body else b"{}"
                body = response_body(batch.endpoint, raw, custom_id, created)
                status = 200
                succeeded.append(custom_id)
            elif i in batch.scripted:
                outcome = batch.scripted[i]
                status, body = outcome.status, {"error": outcome.error}
            else:
                status, error_body = _LINE_ERRORS.get(code, _SERVER_ERROR)
                body = {"error": error_body}
            response = _LineResponse(status, new_id("req_"), msgspec.Raw(encoder.encode(body)))
        else:
            error = _LineError(*_UNRUN[unrun])
        encoder.encode_into(_OutputLine(new_id("batch_req_"), custom_id, response, error), buf)
        target = out if response is not None and response.status_code == 200 else err
        target += buf
        target += b"\n"
    return ResultFiles(output=bytes(out), errors=bytes(err), succeeded=succeeded)
