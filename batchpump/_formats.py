"""Results files in other shapes: OpenAI's batch output lines (``--format openai``).

batchpump's own results file (one ``Result`` per line, tagged by ``status``; see
``docs/results.md``) is what the journal tracks and what ``resume`` appends to. For users who
already parse OpenAI's batch output, ``write_openai`` writes the same results in that shape::

    {"id": "batch_req_...", "custom_id": "...",
     "response": {"status_code": 200, "request_id": null, "body": {...}}, "error": null}

A request the provider answered (``Succeeded``, or ``Errored`` with the provider's error body)
has a ``response``; one that never ran (expired, cancelled, rejected, or an error without a
body) has ``response: null`` and an ``error`` with a ``code`` and ``message``. batchpump does
not receive the provider's per-request ``request_id``, so it is ``null``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Final

import msgspec

from ._models import Canceled, Errored, Expired, Rejected, Result, Succeeded, Usage

__all__ = ["native_results_path", "openai_line", "usage_by_batch", "write_openai"]

_decoder: Final = msgspec.json.Decoder(Result)
_encoder: Final = msgspec.json.Encoder()


class _Response(msgspec.Struct):
    status_code: int
    request_id: str | None
    body: msgspec.Raw


class _Error(msgspec.Struct):
    code: str
    message: str


class _Line(msgspec.Struct):
    id: str
    custom_id: str
    response: _Response | None
    error: _Error | None


def _request_id(result: Result) -> str:
    digest = hashlib.blake2b(digest_size=12)
    digest.update(f"{result.batch_id}\0{result.custom_id}\0{result.attempt}".encode())
    return f"batch_req_{digest.hexdigest()}"


def openai_line(result: Result) -> bytes:
    """One result as an OpenAI batch output line (JSON, no newline)."""
    response: _Response | None = None
    error: _Error | None = None
    match result:
        case Succeeded():
            response = _Response(result.status_code, None, result.response)
        case Errored() if not isinstance(result.body, msgspec.UnsetType):
            response = _Response(result.status_code or 500, None, result.body)
        case Errored():
            error = _Error(result.code, result.message)
        case Expired():
            error = _Error("batch_expired", result.message)
        case Canceled():
            error = _Error("batch_cancelled", result.message)
        case Rejected():
            error = _Error("invalid_request", f"line {result.line}: {result.message}")
    return _encoder.encode(_Line(_request_id(result), result.custom_id, response, error))


def write_openai(native: Path, out: Path) -> int:
    """Write every result of the batchpump results file ``native`` to ``out`` in OpenAI's
    shape (atomically: a temporary file renamed over ``out``); return the lines written."""
    tmp = out.with_name(out.name + ".tmp")
    count = 0
    with native.open("rb") as src, tmp.open("wb") as dst:
        for raw in src:
            if raw.strip():
                dst.write(openai_line(_decoder.decode(raw)) + b"\n")
                count += 1
        dst.flush()
        os.fsync(dst.fileno())
    tmp.replace(out)
    return count


def native_results_path(out: Path) -> Path:
    """Where batchpump keeps its own results when ``out`` gets another format:
    ``x.results.jsonl`` -> ``x.results.batchpump.jsonl``."""
    return out.with_name(out.name.removesuffix(".jsonl") + ".batchpump.jsonl")


def usage_by_batch(results: Path, models: dict[str, str | None]) -> dict[str, Usage]:
    """Tokens per model in a results file, the model known from each result's batch id."""
    totals: dict[str, list[int]] = {}
    if not results.exists():
        return {}
    with results.open("rb") as f:
        for raw in f:
            if b'"usage"' not in raw:
                continue
            result = _decoder.decode(raw)
            if isinstance(result, Succeeded) and result.usage is not None:
                model = models.get(result.batch_id or "") or "?"
                pair = totals.setdefault(model, [0, 0])
                pair[0] += result.usage.input_tokens
                pair[1] += result.usage.output_tokens
    return {m: Usage(input_tokens=i, output_tokens=o) for m, (i, o) in totals.items()}
